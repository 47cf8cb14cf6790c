"""Reads behind the UI's views of one run: which metrics it has, and its log-ratio histogram over steps.

``fetch_many`` reads what several series of one run need in one query per table (one pass over
the steps of the range, one over its rollup blocks) instead of one per metric: the run page asks
for about forty metrics at once. All read ``step_rollups`` (one row per block of ``ROLLUP_BLOCK`` steps) where they can, so a
100,000-step run costs a few hundred rows, not every step.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import orjson
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from .models import (
    CATALOGUE_COLUMNS,
    ROLLUP_BLOCK,
    ROLLUP_STATS,
    Run,
    Step,
    StepRollup,
    hist_column,
    rollup_column,
)
from .read_cache import VersionedCache
from .rollups import HIST_SATURATED
from .series import BlockColumns, Pieces, fetch

__all__ = ["HeatmapBuckets", "fetch_many", "histogram_buckets", "metric_names"]

_B = ROLLUP_BLOCK


def metric_names(session: Session, *, run_pk: int) -> tuple[list[str], list[str]]:
    """``(catalogue, custom)``: the catalogue metrics (catalogue order) and the other metrics (sorted)
    with at least one stored value (NaN counts) in the run."""
    t = StepRollup.__table__
    names = list(CATALOGUE_COLUMNS)
    # count(min) counts finite-or-infinite values, count(nan_step) blocks holding a NaN.
    cols = [func.count(t.c[rollup_column(m, "min")]) + func.count(t.c[rollup_column(m, "nan_step")]) for m in names]
    row = session.execute(select(*cols).where(t.c.run_pk == run_pk)).one()
    catalogue = [m for m, n in zip(names, row, strict=True) if n]
    custom: set[str] = set()
    for (extra,) in session.execute(select(t.c.extra).where(t.c.run_pk == run_pk, t.c.extra.is_not(None))):
        custom.update(orjson.loads(extra))
    return catalogue, sorted(custom - set(CATALOGUE_COLUMNS))


@dataclass
class HeatmapBuckets:
    """Histogram counts per bucket of steps: bucket ``i`` covers ``[start[i], end[i]]`` and sums
    ``steps[i]`` steps' histograms into ``counts[i]`` (one count per bin)."""

    width: int
    start: list[int]
    end: list[int]
    steps: list[int]
    counts: list[list[int]]


def _width(lo: int, hi: int, max_buckets: int) -> int:
    span = hi - lo + 1
    width = max(1, -(-span // max_buckets))
    if span > 16 * _B:  # long ranges: whole rollup blocks (a few hundred rows), not every step's histogram
        width = max(width, _B)
    if width >= _B:  # whole rollup blocks: aligned buckets are sums of stored rows
        width = -(-width // _B) * _B
        while -(-(hi + 1) // width) - lo // width > max_buckets:
            width += _B
    return width


def histogram_buckets(session: Session, *, run_pk: int, lo: int, hi: int, max_buckets: int) -> HeatmapBuckets:
    """The log-ratio histogram of ``[lo, hi]`` summed per bucket of ``width`` steps (aligned at
    multiples of the width, at most ``max_buckets`` buckets); buckets without a histogram are left out.
    Exact at any size: a block whose stored sum saturated (``HIST_SATURATED``) is summed from its steps."""
    width = _width(lo, hi, max_buckets)
    acc: dict[int, list[int]] = {}
    n: dict[int, int] = {}

    def add(step_or_block_start: int, counts: list[int], steps: int) -> None:
        b = step_or_block_start // width
        cur = acc.get(b)
        if cur is None:
            acc[b] = [int(c) for c in counts]
            n[b] = steps
        else:
            acc[b] = list(map(operator.add, cur, counts))  # C-level, not a Python step per bin
            n[b] += steps

    raw_ranges = [(lo, hi)]
    if width % _B == 0:
        first, last = -(-lo // _B), (hi + 1) // _B - 1
        if first <= last:
            raw_ranges = [(lo, first * _B - 1), ((last + 1) * _B, hi)]
            t = StepRollup.__table__
            q = select(t.c.block, t.c.hist_steps, *(t.c[hist_column(i)] for i in range(LOG_RATIO_HIST_BINS))).where(
                t.c.run_pk == run_pk, t.c.block >= first, t.c.block <= last, t.c.hist_steps > 0)
            for block, hist_steps, *counts in session.execute(q):
                if max(counts) >= HIST_SATURATED:  # a bin's sum did not fit: this block from its steps
                    raw_ranges.append((block * _B, block * _B + _B - 1))
                    continue
                add(block * _B, counts, int(hist_steps))
    s = Step.__table__
    for a, b in raw_ranges:
        if a > b:
            continue
        q = select(s.c.step, s.c.hist).where(s.c.run_pk == run_pk, s.c.step >= a, s.c.step <= b, s.c.hist.is_not(None))
        for step, hist in session.execute(q):
            add(step, orjson.loads(hist), 1)
    keys = sorted(acc)
    return HeatmapBuckets(
        width=width,
        start=[max(lo, k * width) for k in keys],
        end=[min(hi, (k + 1) * width - 1) for k in keys],
        steps=[n[k] for k in keys],
        counts=[acc[k] for k in keys],
    )


# The last few runs' pieces, for views of a run that has not changed since (a finished run looked
# at again, "Whole run" after a zoom, /compare of the same runs): ~10 MB each at most (41 metrics of
# a 100,000-step run). Pieces and the points built from them are shared: read them, never change them.
_PIECES: VersionedCache[dict[str, Pieces]] = VersionedCache(size=8)


def fetch_many(session: Session, *, run_pk: int, metrics: Sequence[str], lo: int, hi: int,
               blocks: bool) -> dict[str, Pieces]:
    """``series.fetch`` for each of ``metrics`` (same pieces), catalogue metrics read together.

    Kept while the run's ``last_seen_at`` and step range (which every ingest into it changes) stay
    those of the read: one small query checks them, from any replica."""
    version = session.execute(
        select(Run.last_seen_at, Run.first_step, Run.last_step).where(Run.id == run_pk)).first()
    if version is None:  # no such run: nothing to keep
        return _fetch_many(session, run_pk=run_pk, metrics=metrics, lo=lo, hi=hi, blocks=blocks)
    key = (str(cast(Engine, session.get_bind()).url), run_pk, tuple(metrics), lo, hi, blocks)  # Engine-bound
    return _PIECES.get(key, tuple(version),
                       lambda: _fetch_many(session, run_pk=run_pk, metrics=metrics, lo=lo, hi=hi, blocks=blocks))


def _fetch_many(session: Session, *, run_pk: int, metrics: Sequence[str], lo: int, hi: int,
                blocks: bool) -> dict[str, Pieces]:
    cat = [m for m in dict.fromkeys(metrics) if m in CATALOGUE_COLUMNS]
    out = {m: fetch(session, run_pk=run_pk, metric=m, lo=lo, hi=hi, blocks=blocks)
           for m in dict.fromkeys(metrics) if m not in CATALOGUE_COLUMNS}
    if not cat:
        return out
    first, last = -(-lo // _B), (hi + 1) // _B - 1  # whole blocks inside [lo, hi]
    use_blocks = blocks and first <= last
    ranges = [(lo, first * _B - 1), ((last + 1) * _B, hi)] if use_blocks else [(lo, hi)]
    raw: dict[str, list[tuple[int, float]]] = {m: [] for m in cat}
    t = Step.__table__
    cols = [t.c[CATALOGUE_COLUMNS[m]] for m in cat]
    for a, b in ranges:
        if a > b:
            continue
        q = select(t.c.step, t.c.nan, *cols).where(t.c.run_pk == run_pk, t.c.step >= a, t.c.step <= b).order_by(t.c.step)
        rows = [tuple(row) for row in session.execute(q).all()]  # one fetchall, not a fetch per row
        with_nan = any(row[1] for row in rows)
        for j, m in enumerate(cat, start=2):  # one comprehension per metric (column), not a loop per cell
            if with_nan:  # NULL with the metric named in ``nan``: a stored NaN
                raw[m] += [(row[0], math.nan if row[j] is None else row[j]) for row in rows
                           if row[j] is not None or (row[1] and m in row[1].split(","))]
            else:
                raw[m] += [(row[0], row[j]) for row in rows if row[j] is not None]
    bcols: dict[str, BlockColumns | None] = dict.fromkeys(cat)
    if use_blocks:
        r = StepRollup.__table__
        k = len(ROLLUP_STATS)
        rcols = [r.c[rollup_column(m, stat)] for m in cat for stat, _ in ROLLUP_STATS]
        q = select(r.c.block, *rcols).where(r.c.run_pk == run_pk, r.c.block >= first, r.c.block <= last)
        block_rows = session.execute(q.order_by(r.c.block)).all()  # one fetchall; Rows unpack like tuples
        columns = list(zip(*block_rows, strict=True)) if block_rows else [()] * (1 + k * len(cat))
        for i, m in enumerate(cat):  # column-wise: no per-block, per-metric object
            a = 1 + k * i
            c = (columns[0], *columns[a : a + k])
            if None not in c[1]:  # every block holds a value of it (the usual case): no per-block test
                bcols[m] = c  # type: ignore[assignment]
                continue
            keep = [j for j, (v, nan) in enumerate(zip(c[1], c[5], strict=True))
                    if v is not None or nan is not None]  # blocks holding the metric (series._present)
            if len(keep) < len(block_rows):
                c = tuple([col[j] for j in keep] for col in c)
            bcols[m] = c  # type: ignore[assignment]
    for m in cat:
        out[m] = Pieces(None if use_blocks else [], raw[m], bcols[m])
    return {m: out[m] for m in dict.fromkeys(metrics)}
