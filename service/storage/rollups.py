"""Per-block step rollups: what lets a 100,000-step run answer a 1,000-point query fast.

For each (run, block of ``ROLLUP_BLOCK`` steps) and metric we keep ``[min, min_step, max, max_step,
nan_step]`` (ties go to the earliest step; ``nan_step`` is the first NaN), the block's step count and
its summed log-ratio histogram.

* A batch of *new* steps (none stored before in its range, the normal case) is merged by the upsert
  itself: ``ON CONFLICT DO UPDATE`` keeps the smaller min, the larger max, adds the counts. Ingest
  never reads rollups back, except the JSON of metrics outside the catalogue when the batch has some.
* A batch that *replaces* stored steps (a replay, or writers interleaving in one range) has its
  blocks recomputed from the stored steps and written over, so rollups stay exact either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby, repeat
from typing import Any, cast

import orjson
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS, LOG_RATIO_HIST_NAME, StepRecord, decode_value
from sqlalchemy import select
from sqlalchemy.orm import Session

from .bulk import upsert_rows
from .models import CATALOGUE_COLUMNS, ROLLUP_BLOCK, ROLLUP_STATS, StepRollup, hist_column, rollup_column
from .rows import CATALOGUE_NAMES, decode_histograms, decode_row, json_float, step_columns

__all__ = [
    "HIST_SATURATED",
    "ROLLUP_COLUMN_NAMES",
    "BlockStats",
    "Stats",
    "block_stats",
    "merge_stats",
    "refresh_blocks",
]

_B = ROLLUP_BLOCK
_N_CAT = len(CATALOGUE_NAMES)
_CAT = frozenset(CATALOGUE_NAMES)
_NSTAT = len(ROLLUP_STATS)
_HIST_COLS = tuple(hist_column(i) for i in range(LOG_RATIO_HIST_BINS))
ROLLUP_COLUMN_NAMES: tuple[str, ...] = (
    "run_pk", "block", "steps", "hist_steps", "extra", *_HIST_COLS,
    *(rollup_column(n, s) for n in CATALOGUE_COLUMNS for s, _ in ROLLUP_STATS),
)
_KEY = ("run_pk", "block")
_ZERO_HIST = (0,) * LOG_RATIO_HIST_BINS
# A block's summed histogram count saturates here (each count may be up to 2**63-1, so 64 of them can
# pass a BIGINT); readers that meet it sum the block's steps instead, so answers stay exact.
HIST_SATURATED = 2**63 - 1

# [min, min_step, max, max_step, nan_step]; None where the block has no such value.
Stats = list


@dataclass
class BlockStats:
    steps: int = 0
    metrics: dict[str, Stats] = field(default_factory=dict)
    hist: list[int] | None = None
    hist_steps: int = 0


def _metric_stats(grp: Sequence[StepRecord], name: str) -> Stats | None:
    pairs = []
    nan_step = None
    for r in grp:
        v = r.metrics.get(name)
        if v is None:
            continue
        if v != v:
            if nan_step is None:
                nan_step = r.step
        else:
            pairs.append((v, r.step))
    if not pairs:
        return None if nan_step is None else [None, None, None, None, nan_step]
    vmin, min_step = min(pairs)
    vmax, neg = max([(v, -s) for v, s in pairs])
    return [vmin, min_step, vmax, -neg, nan_step]


def _other_stats(grp: Sequence[StepRecord], names: Iterable[str]) -> dict[str, Stats]:
    """Stats of metrics outside the catalogue, as fast as the catalogue's columns: each metric's values
    are gathered in C (``map(dict.get, ...)``), and only a column holding a gap or a non-finite value
    takes the per-value path."""
    steps = [r.step for r in grp]
    dicts = [r.metrics for r in grp]
    keys = tuple(dicts[0])
    columns: dict[str, Sequence[float | None]] = {}
    if all(tuple(d) == keys for d in dicts):  # one trainer sends one shape: transpose it in C
        columns = dict(zip(keys, zip(*[d.values() for d in dicts], strict=True), strict=True))
    out: dict[str, Stats] = {}
    for name in names:
        col = columns.get(name) or list(map(dict.get, dicts, repeat(name)))
        if None not in col:
            full = cast("Sequence[float]", col)
            total = sum(full)
            if total - total == 0:  # every value finite (a sum overflowing to inf takes the slow path)
                vmin, vmax = min(full), max(full)  # steps are sorted: .index() finds a tie's earliest step
                out[name] = [vmin, steps[col.index(vmin)], vmax, steps[col.index(vmax)], None]
                continue
        st = _metric_stats(grp, name)
        if st is not None:
            out[name] = st
    return out


def _catalogue_stats(rows: Sequence[tuple]) -> dict[str, Stats]:
    """Stats of the catalogue metrics from ``steps`` row tuples (NaN is NULL plus a name in ``nan``)."""
    cols = list(zip(*rows, strict=True))
    steps = cols[1]
    nan_first: dict[str, int] = {}
    for s, nan in zip(steps, cols[3 + _N_CAT], strict=True):
        if nan:
            for name in nan.split(","):
                nan_first.setdefault(name, s)
    stats: dict[str, Stats] = {}
    n = len(steps)
    for i, name in enumerate(CATALOGUE_NAMES):
        nan_step = nan_first.get(name)
        col = cols[3 + i]
        if col.count(None) == n:  # a metric the steps do not carry (a run of custom metrics: all 59 of them)
            if nan_step is not None:
                stats[name] = [None, None, None, None, nan_step]
            continue
        if None not in col:  # the common case, all in C: rows are in step order, so .index() finds
            vmin, vmax = min(col), max(col)  # the earliest step of a tie
            stats[name] = [vmin, steps[col.index(vmin)], vmax, steps[col.index(vmax)], nan_step]
            continue
        pairs = [(v, s) for v, s in zip(col, steps, strict=True) if v is not None]
        if pairs:
            vmin, min_step = min(pairs)
            vmax, neg = max([(v, -s) for v, s in pairs])
            stats[name] = [vmin, min_step, vmax, -neg, nan_step]
        elif nan_step is not None:
            stats[name] = [None, None, None, None, nan_step]
    return stats


def block_stats(records: Sequence[StepRecord], rows: Sequence[tuple] | None = None) -> dict[int, BlockStats]:
    """Statistics of ``records`` (sorted by step) per block.

    ``rows``: the records' ``steps`` row tuples, when at hand (catalogue metrics are then read from
    their columns, several times faster than from the dicts).
    """
    out: dict[int, BlockStats] = {}
    row_iter = iter(rows) if rows is not None else None
    for block, it in groupby(records, key=lambda r: r.step // _B):
        grp = list(it)
        names: set[str] = set()
        for r in grp:
            names.update(r.metrics)
        if row_iter is not None:
            stats = _catalogue_stats([next(row_iter) for _ in grp])
            names -= _CAT
        else:
            stats = {}
        if names:
            stats.update(_other_stats(grp, names))
        hists = [r.histograms[LOG_RATIO_HIST_NAME] for r in grp if LOG_RATIO_HIST_NAME in r.histograms]
        hist = [min(sum(c), HIST_SATURATED) for c in zip(*hists, strict=True)] if hists else None
        out[block] = BlockStats(len(grp), stats, hist, len(hists))
    return out


def merge_stats(a: Stats, b: Stats) -> Stats:
    """Stats of the union of two disjoint step sets (the SQL merge below does the same)."""
    out = list(a)
    if b[0] is not None and (a[0] is None or (b[0], b[1]) < (a[0], a[1])):
        out[0], out[1] = b[0], b[1]
    if b[2] is not None and (a[2] is None or (b[2], -b[3]) > (a[2], -a[3])):
        out[2], out[3] = b[2], b[3]
    if b[4] is not None and (a[4] is None or b[4] < a[4]):
        out[4] = b[4]
    return out


def _extra_doc(metrics: dict[str, Stats]) -> str | None:
    extra = {
        k: [json_float(v) if isinstance(v, float) else v for v in st] for k, st in metrics.items() if k not in _CAT
    }
    return orjson.dumps(extra).decode() if extra else None


def _parse_extra(doc: str | None) -> dict[str, Stats]:
    if not doc:
        return {}
    return {k: [decode_value(v) for v in st] for k, st in orjson.loads(doc).items()}


def _to_row(run_pk: int, block: int, bs: BlockStats, extra: str | None) -> tuple:
    cells: list[Any] = [run_pk, block, bs.steps, bs.hist_steps, extra, *(bs.hist or _ZERO_HIST)]
    none5 = (None,) * _NSTAT
    for name in CATALOGUE_NAMES:
        cells.extend(bs.metrics.get(name, none5))
    return tuple(cells)


@cache
def _merge_updates() -> dict[str, str]:
    """``SET`` expressions merging a new block row (``excluded``) into the stored one."""
    t = "step_rollups"
    sets = {
        "steps": f"{t}.steps + excluded.steps",
        "hist_steps": f"{t}.hist_steps + excluded.hist_steps",
        "extra": f"COALESCE(excluded.extra, {t}.extra)",
    }
    for h in _HIST_COLS:  # saturating: a sum past int64 is an error on PostgreSQL and a float on SQLite
        sets[h] = (f"CASE WHEN excluded.{h} > {HIST_SATURATED} - {t}.{h} THEN {HIST_SATURATED} "
                   f"ELSE {t}.{h} + excluded.{h} END")
    for name in CATALOGUE_NAMES:
        c = {stat: rollup_column(name, stat) for stat, _ in ROLLUP_STATS}
        new_min = (
            f"excluded.{c['min']} IS NOT NULL AND ({t}.{c['min']} IS NULL OR excluded.{c['min']} < {t}.{c['min']}"
            f" OR (excluded.{c['min']} = {t}.{c['min']} AND excluded.{c['min_step']} < {t}.{c['min_step']}))"
        )
        new_max = (
            f"excluded.{c['max']} IS NOT NULL AND ({t}.{c['max']} IS NULL OR excluded.{c['max']} > {t}.{c['max']}"
            f" OR (excluded.{c['max']} = {t}.{c['max']} AND excluded.{c['max_step']} < {t}.{c['max_step']}))"
        )
        new_nan = (
            f"excluded.{c['nan_step']} IS NOT NULL AND ({t}.{c['nan_step']} IS NULL"
            f" OR excluded.{c['nan_step']} < {t}.{c['nan_step']})"
        )
        for stat, cond in (("min", new_min), ("min_step", new_min), ("max", new_max), ("max_step", new_max),
                           ("nan_step", new_nan)):
            col = c[stat]
            sets[col] = f"CASE WHEN {cond} THEN excluded.{col} ELSE {t}.{col} END"
    return sets


def _stored_extra(session: Session, run_pk: int, blocks: Sequence[int]) -> dict[int, str | None]:
    t = StepRollup.__table__
    rows = session.execute(
        select(t.c.block, t.c.extra).where(t.c.run_pk == run_pk, t.c.block >= min(blocks), t.c.block <= max(blocks))
    ).all()
    return {int(b): e for b, e in rows}


def _stored_steps(session: Session, run_pk: int, first: int, last: int) -> list[StepRecord]:
    cols = step_columns()
    rows = session.execute(
        select(*cols).where(cols[0] == run_pk, cols[1] >= first * _B, cols[1] < (last + 1) * _B)
        .order_by(cols[1])
    ).all()
    return [StepRecord(int(r[1]), None, decode_row(r), decode_histograms(r)) for r in rows]


def _ranges(blocks: Iterable[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for b in sorted(set(blocks)):
        if out and b == out[-1][1] + 1:
            out[-1][1] = b
        else:
            out.append([b, b])
    return [(a, b) for a, b in out]


def refresh_blocks(
    session: Session,
    *,
    run_pk: int,
    records: Sequence[StepRecord],
    fresh: bool,
    rows: Sequence[tuple] | None = None,
) -> None:
    """Bring the rollups of the blocks ``records`` touch up to date (after the steps are stored).

    ``fresh``: none of the records' steps was stored before, so their stats are merged into the
    stored block rows by the upsert; otherwise the touched blocks are recomputed from the stored
    steps. ``rows``: the records' ``steps`` row tuples (a faster path for the catalogue metrics).
    """
    if not records:
        return
    if fresh:
        new = block_stats(records, rows)
        blocks = sorted(new)
        has_extra = any(k not in _CAT for bs in new.values() for k in bs.metrics)
        stored = _stored_extra(session, run_pk, blocks) if has_extra else {}
        out = []
        for b in blocks:
            bs = new[b]
            extra = None
            if has_extra:
                merged = _parse_extra(stored.get(b))
                for k, st in bs.metrics.items():
                    if k not in _CAT:
                        merged[k] = merge_stats(merged[k], st) if k in merged else st
                extra = _extra_doc(merged)
            out.append(_to_row(run_pk, b, bs, extra))
        upsert_rows(session, "step_rollups", ROLLUP_COLUMN_NAMES, _KEY, out, updates=_merge_updates())
        return
    out = []
    for first, last in _ranges(r.step // _B for r in records):
        for b, bs in block_stats(_stored_steps(session, run_pk, first, last)).items():
            out.append(_to_row(run_pk, b, bs, _extra_doc(bs.metrics)))
    upsert_rows(session, "step_rollups", ROLLUP_COLUMN_NAMES, _KEY, out)
