"""A metric over a step range in one figure: its mean, its first and last values, and the log-ratio
histogram summed over the range. From ``step_rollups`` where whole blocks cover the range (a few rows),
from ``steps`` at the edges; per-session memos let one request read each once.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS
from sqlalchemy import ColumnClause, func, literal_column, select
from sqlalchemy.orm import Session

from .models import CATALOGUE_COLUMNS, ROLLUP_BLOCK, Step, StepRollup, hist_column, rollup_column
from .rollups import HIST_SATURATED
from .series import block_has, full_blocks, raw_points

__all__ = ["first_last", "histogram_sum", "mean", "prime_means"]

_B = ROLLUP_BLOCK


def mean(session: Session, *, run_pk: int, metric: str, lo: int, hi: int, nan_free: bool = False) -> float | None:
    """Mean of ``metric`` over ``[lo, hi]`` (NaN if any value there is NaN; None if it has no value).

    ``nan_free``: the caller knows there is no NaN in the range (skips that check).
    """
    if metric not in CATALOGUE_COLUMNS:
        pts = [v for _, v in raw_points(session, run_pk=run_pk, metric=metric, lo=lo, hi=hi)]
        if not pts:
            return None
        return sum(pts) / len(pts) if all(v == v for v in pts) else math.nan
    # The blocks holding [lo, hi] bound its values and say whether it may hold a NaN (one read of
    # a few rollup rows); when that bound shows the sum cannot overflow, one pass over the steps
    # gives min, max, count and sum together instead of two.
    r = StepRollup.__table__
    bmin, bmax, bnan = session.execute(
        select(func.min(r.c[rollup_column(metric, "min")]), func.max(r.c[rollup_column(metric, "max")]),
               func.count(r.c[rollup_column(metric, "nan_step")]))
        .where(r.c.run_pk == run_pk, r.c.block >= lo // _B, r.c.block <= hi // _B)
    ).one()
    if not nan_free and bnan and any(
        v != v for _, v in raw_points(session, run_pk=run_pk, metric=metric, lo=lo, hi=hi)
    ):
        return math.nan
    t = Step.__table__
    col = t.c[CATALOGUE_COLUMNS[metric]]
    where = (t.c.run_pk == run_pk, t.c.step >= lo, t.c.step <= hi)
    if bmin is not None and _no_shift(max(abs(bmin), abs(bmax)), hi - lo + 1):
        hit = session.info.get(_MEANS, {}).get((run_pk, metric, lo, hi))
        vmin, vmax, n, total = hit if hit is not None else session.execute(
            select(func.min(col), func.max(col), func.count(col), func.sum(col)).where(*where)).one()
        if not n:
            return None
        if vmax == math.inf or vmin == -math.inf:
            return math.nan if vmax == math.inf and vmin == -math.inf else (math.inf if vmax == math.inf else -math.inf)
        return float(total) / n
    vmin, vmax, n = session.execute(select(func.min(col), func.max(col), func.count(col)).where(*where)).one()
    if not n:
        return None
    if vmax == math.inf or vmin == -math.inf:  # no finite value outweighs an infinity
        return math.nan if vmax == math.inf and vmin == -math.inf else (math.inf if vmax == math.inf else -math.inf)
    # Not SQL AVG: PostgreSQL's float AVG also sums the squares, which overflows (an error) from
    # about 1e154 on. The values are scaled by a power of two (exact) so that their sum stays finite.
    top = max(abs(vmin), abs(vmax))
    shift = max(0, (math.frexp(top)[1] if top else 0) + int(n).bit_length() - 1000)
    total = session.scalar(select(func.sum(col * math.ldexp(1.0, -shift))).where(*where))
    return math.ldexp(float(total) / n, shift)


_MEANS = "sapo_monitor.series.means"  # session.info key: {(run_pk, metric, lo, hi): (min, max, count, sum)}
_FIRST_LAST = "sapo_monitor.series.first_last"  # session.info key: {(run_pk, metric, lo, hi): first_last(...)}


def prime_means(session: Session, *, run_pk: int, ranges: dict[str, tuple[int, int]]) -> None:
    """Read what :func:`mean` needs for several catalogue metrics at once: one pass over the steps
    of each distinct ``[lo, hi]`` of ``ranges`` (metric -> range) instead of one per metric. Kept in
    ``session.info``, so later ``mean`` calls in this session for exactly these ranges read nothing;
    any other call reads as usual. Metrics whose unscaled sum could overflow are left to ``mean``."""
    by_range: dict[tuple[int, int], list[str]] = {}
    for m, rng in ranges.items():
        if m in CATALOGUE_COLUMNS:
            by_range.setdefault(rng, []).append(m)
    memo: dict[tuple[int, str, int, int], tuple[Any, ...]] = session.info.setdefault(_MEANS, {})
    r = StepRollup.__table__
    t = Step.__table__
    for (lo, hi), names in by_range.items():
        if len(names) < 2:
            continue
        bounds = session.execute(
            select(*(agg(r.c[rollup_column(m, stat)]) for m in names for agg, stat in ((func.min, "min"), (func.max, "max"))))
            .where(r.c.run_pk == run_pk, r.c.block >= lo // _B, r.c.block <= hi // _B)
        ).one()
        safe = [m for i, m in enumerate(names) if bounds[2 * i] is not None
                and _no_shift(max(abs(bounds[2 * i]), abs(bounds[2 * i + 1])), hi - lo + 1)]
        if not safe:
            continue
        cols = [t.c[CATALOGUE_COLUMNS[m]] for m in safe]
        row = session.execute(
            select(*(agg(c) for c in cols for agg in (func.min, func.max, func.count, func.sum)))
            .where(t.c.run_pk == run_pk, t.c.step >= lo, t.c.step <= hi)
        ).one()
        for i, m in enumerate(safe):
            memo[(run_pk, m, lo, hi)] = tuple(row[4 * i:4 * i + 4])


def _no_shift(top: float, n: int) -> bool:
    """Whether ``n`` values of magnitude at most ``top`` sum without scaling (see :func:`mean`)."""
    return top != math.inf and max(0, (math.frexp(top)[1] if top else 0) + int(n).bit_length() - 1000) == 0


def _edge(session: Session, run_pk: int, metric: str, lo: int, hi: int, *, last: bool) -> tuple[int, float] | None:
    """The first (or last) ``(step, value)`` of ``metric`` in ``[lo, hi]``.

    The rollups name the first (last) block holding the metric, so only that block's rows are read;
    a partial block at the window's edge may hold it only outside the window: then the next block.
    """
    t = StepRollup.__table__
    a, b = lo, hi
    while a <= b:
        # ORDER BY ... LIMIT 1 walks the (run_pk, block) index from the wanted end and stops at the
        # first block holding the metric; min()/max() with this filter read every block of the range.
        block = session.scalar(
            select(t.c.block).where(t.c.run_pk == run_pk, t.c.block >= a // _B, t.c.block <= b // _B,
                                    block_has(metric))
            .order_by(t.c.block.desc() if last else t.c.block).limit(1)
        )
        if block is None:
            return None
        pts = raw_points(session, run_pk=run_pk, metric=metric, lo=max(lo, block * _B),
                         hi=min(hi, (block + 1) * _B - 1), desc=last, limit=1)
        if pts:
            return pts[0]
        if last:
            b = block * _B - 1
        else:
            a = (block + 1) * _B
    return None


def first_last(session: Session, *, run_pk: int, metric: str, lo: int, hi: int
               ) -> tuple[tuple[int, float], tuple[int, float]] | None:
    """The first and last ``(step, value)`` of ``metric`` in ``[lo, hi]``, or None if it has none there.

    Kept in ``session.info`` for the session's later calls (``/compare`` asks twice per run and metric)."""
    key = (run_pk, metric, lo, hi)
    memo: dict[tuple[int, str, int, int], Any] = session.info.setdefault(_FIRST_LAST, {})
    if key in memo:
        return memo[key]  # type: ignore[no-any-return]
    head = _edge(session, run_pk, metric, lo, hi, last=False)
    out = None
    if head is not None:
        tail = _edge(session, run_pk, metric, head[0], hi, last=True)
        out = head, tail if tail is not None else head
    memo[key] = out
    return out


# Literals, not parameters: PostgreSQL has no ``bigint >> bigint``.
_32: ColumnClause[Any] = literal_column("32")
_LOW32: ColumnClause[Any] = literal_column("4294967295")


def histogram_sum(session: Session, *, run_pk: int, lo: int, hi: int) -> tuple[list[int], int]:
    """The log-ratio histogram summed over ``[lo, hi]`` (exact, any size), and how many steps carried one."""
    total = [0] * LOG_RATIO_HIST_BINS
    n = 0
    first, last = full_blocks(lo, hi)
    edges = [(lo, hi)]
    if first <= last:
        t = StepRollup.__table__
        cols = [t.c[hist_column(i)] for i in range(LOG_RATIO_HIST_BINS)]
        # Summed as high and low 32-bit halves: SQLite's SUM fails past int64, and each half cannot.
        row = session.execute(
            select(func.sum(t.c.hist_steps), *(func.max(c) for c in cols),
                   *(func.sum(c.op(">>")(_32)) for c in cols), *(func.sum(c.op("&")(_LOW32)) for c in cols))
            .where(t.c.run_pk == run_pk, t.c.block >= first, t.c.block <= last)
        ).one()
        k = LOG_RATIO_HIST_BINS
        if row[0] is not None and max(int(v) for v in row[1:1 + k]) < HIST_SATURATED:
            edges = [(lo, first * _B - 1), ((last + 1) * _B, hi)]
            n = int(row[0])
            total = [(int(h) << 32) + int(lw) for h, lw in zip(row[1 + k:1 + 2 * k], row[1 + 2 * k:], strict=True)]
    s = Step.__table__
    for a, b in edges:
        if a > b:
            continue
        for (hist,) in session.execute(
            select(s.c.hist).where(s.c.run_pk == run_pk, s.c.step >= a, s.c.step <= b, s.c.hist.is_not(None))
        ):
            total = [x + y for x, y in zip(total, orjson.loads(hist), strict=True)]
            n += 1
    return total, n
