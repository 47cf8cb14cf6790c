"""Per-block step rollups: what lets a 100,000-step run answer a 1,000-point query fast.

For each (run, block of ``ROLLUP_BLOCK`` steps) and metric we keep ``[min, min_step, max, max_step,
nan_step]`` (ties go to the earliest step; ``nan_step`` is the first NaN), the block's step count and
its summed log-ratio histogram. A batch of new steps is merged into the stored rows of the blocks it
touches; a batch that replaces stored steps (a replay, or writers interleaving in one range) has
its blocks recomputed from the stored rows, so rollups stay exact either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

import orjson
from sapo_monitor.client.wire import LOG_RATIO_HIST_NAME
from sqlalchemy import select
from sqlalchemy.orm import Session

from .bulk import upsert_rows
from .models import CATALOGUE_COLUMNS, ROLLUP_BLOCK, ROLLUP_STATS, StepRollup, rollup_column
from .rows import CATALOGUE_NAMES, decode_histograms, decode_row, json_float, step_columns

__all__ = [
    "ROLLUP_COLUMN_NAMES",
    "BlockStats",
    "Stats",
    "block_stats",
    "merge_stats",
    "read_blocks",
    "refresh_blocks",
]

_B = ROLLUP_BLOCK
_N_CAT = len(CATALOGUE_NAMES)
_CAT = frozenset(CATALOGUE_NAMES)
_NSTAT = len(ROLLUP_STATS)
ROLLUP_COLUMN_NAMES: tuple[str, ...] = (
    "run_pk", "block", "steps", "hist", "extra",
    *(rollup_column(n, s) for n in CATALOGUE_COLUMNS for s, _ in ROLLUP_STATS),
)
_WIRE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

# [min, min_step, max, max_step, nan_step]; None where the block has no such value.
Stats = list


class StepLike(Protocol):
    step: int
    metrics: dict[str, float]
    histograms: dict[str, list[int]]


@dataclass
class _Stored:
    step: int
    metrics: dict[str, float]
    histograms: dict[str, list[int]]


@dataclass
class BlockStats:
    steps: int = 0
    metrics: dict[str, Stats] = field(default_factory=dict)
    hist: list[int] | None = None


def _metric_stats(grp: Sequence[StepLike], name: str) -> Stats | None:
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
    vmax, neg = max((v, -s) for v, s in pairs)
    return [vmin, min_step, vmax, -neg, nan_step]


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
    for i, name in enumerate(CATALOGUE_NAMES):
        col = cols[3 + i]
        nan_step = nan_first.get(name)
        pairs = [(v, s) for v, s in zip(col, steps, strict=True) if v is not None]
        if pairs:
            vmin, min_step = min(pairs)
            vmax, neg = max([(v, -s) for v, s in pairs])
            stats[name] = [vmin, min_step, vmax, -neg, nan_step]
        elif nan_step is not None:
            stats[name] = [None, None, None, None, nan_step]
    return stats


def block_stats(records: Sequence[StepLike], rows: Sequence[tuple] | None = None) -> dict[int, BlockStats]:
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
        for name in names:
            st = _metric_stats(grp, name)
            if st is not None:
                stats[name] = st
        hists = [r.histograms[LOG_RATIO_HIST_NAME] for r in grp if LOG_RATIO_HIST_NAME in r.histograms]
        hist = [sum(c) for c in zip(*hists, strict=False)] if hists else None
        out[block] = BlockStats(len(grp), stats, hist)
    return out


def merge_stats(a: Stats, b: Stats) -> Stats:
    out = list(a)
    if b[0] is not None and (a[0] is None or (b[0], b[1]) < (a[0], a[1])):
        out[0], out[1] = b[0], b[1]
    if b[2] is not None and (a[2] is None or (b[2], -b[3]) > (a[2], -a[3])):
        out[2], out[3] = b[2], b[3]
    if b[4] is not None and (a[4] is None or b[4] < a[4]):
        out[4] = b[4]
    return out


def _merge(a: BlockStats, b: BlockStats) -> BlockStats:
    metrics = dict(a.metrics)
    for name, st in b.metrics.items():
        metrics[name] = merge_stats(metrics[name], st) if name in metrics else st
    hist = a.hist or b.hist if a.hist is None or b.hist is None else [x + y for x, y in zip(a.hist, b.hist, strict=False)]
    return BlockStats(a.steps + b.steps, metrics, hist)


def _to_row(run_pk: int, block: int, bs: BlockStats) -> tuple:
    extra = {
        k: [json_float(v) if isinstance(v, float) else v for v in st]
        for k, st in bs.metrics.items()
        if k not in _CAT
    }
    cells: list[Any] = [
        run_pk,
        block,
        bs.steps,
        None if bs.hist is None else orjson.dumps(bs.hist).decode(),
        orjson.dumps(extra).decode() if extra else None,
    ]
    none5 = (None,) * _NSTAT
    for name in CATALOGUE_NAMES:
        cells.extend(bs.metrics.get(name, none5))
    return tuple(cells)


def _from_row(row: Sequence[Any]) -> BlockStats:
    metrics: dict[str, Stats] = {}
    i = 5
    for name in CATALOGUE_NAMES:
        st = list(row[i : i + _NSTAT])
        i += _NSTAT
        if st[0] is not None or st[4] is not None:
            metrics[name] = st
    if row[4]:
        for k, st in orjson.loads(row[4]).items():
            metrics[k] = [_WIRE[v] if isinstance(v, str) else v for v in st]
    return BlockStats(row[2], metrics, orjson.loads(row[3]) if row[3] else None)


def _columns() -> list:
    return [StepRollup.__table__.c[n] for n in ROLLUP_COLUMN_NAMES]


def read_blocks(
    session: Session, *, run_pk: int, first: int, last: int, metrics: Iterable[str] | None = None
) -> dict[int, BlockStats]:
    """Stored rollups of blocks ``first..last`` (inclusive)."""
    cols = _columns()
    rows = session.execute(
        select(*cols).where(cols[0] == run_pk, cols[1] >= first, cols[1] <= last).order_by(cols[1])
    ).all()
    return {int(r[1]): _from_row(r) for r in rows}


def _stored_steps(session: Session, run_pk: int, first: int, last: int) -> list[_Stored]:
    cols = step_columns()
    rows = session.execute(
        select(*cols).where(cols[0] == run_pk, cols[1] >= first * _B, cols[1] < (last + 1) * _B)
        .order_by(cols[1])
    ).all()
    return [_Stored(int(r[1]), decode_row(r), decode_histograms(r)) for r in rows]


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
    records: Sequence[StepLike],
    fresh: bool,
    rows: Sequence[tuple] | None = None,
) -> None:
    """Bring the rollups of the blocks ``records`` touch up to date (after the steps are stored).

    ``fresh``: none of the records' steps was stored before, so their stats can be merged into the
    stored block rows; otherwise the touched blocks are recomputed from the stored steps. ``rows``:
    the records' ``steps`` row tuples (a faster path for the catalogue metrics).
    """
    new = block_stats(records, rows)
    result: dict[int, BlockStats] = {}
    for first, last in _ranges(new):
        if fresh:
            # Blocks this batch fills completely need no stored row.
            partial = [b for b in range(first, last + 1) if b in new and new[b].steps < _B]
            stored = (
                read_blocks(session, run_pk=run_pk, first=min(partial), last=max(partial)) if partial else {}
            )
            for block in range(first, last + 1):
                if block in new:
                    result[block] = _merge(stored[block], new[block]) if block in stored else new[block]
        else:
            result.update(block_stats(_stored_steps(session, run_pk, first, last)))
    upsert_rows(
        session,
        "step_rollups",
        ROLLUP_COLUMN_NAMES,
        ("run_pk", "block"),
        [_to_row(run_pk, b, bs) for b, bs in sorted(result.items())],
    )
