"""Reading metric series: raw points, min/max downsampling, extremes, first/last values, histograms.

Downsampling splits ``[lo, hi]`` into buckets of ``width`` steps aligned at multiples of ``width`` (so
runs compared side by side share buckets) and keeps, per bucket, the minimum and the maximum with the
steps where they occur, plus the first NaN: a one-step spike of any sign, or a NaN, survives any
``max_points``. When ``width`` is a multiple of ``ROLLUP_BLOCK`` the whole blocks inside ``[lo, hi]``
come from ``step_rollups`` (a few hundred rows), and only the partial blocks at the edges from
``steps``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS, decode_float, decode_value
from sqlalchemy import ColumnClause, func, literal_column, or_, select
from sqlalchemy.orm import Session

from .models import (
    CATALOGUE_COLUMNS,
    ROLLUP_BLOCK,
    ROLLUP_STATS,
    Step,
    StepRollup,
    hist_column,
    rollup_column,
)
from .rollups import HIST_SATURATED, Stats, merge_stats

__all__ = [
    "RAW_LIMIT",
    "BlockColumns",
    "Pieces",
    "Points",
    "bucket_width",
    "extremes",
    "fetch",
    "first_last",
    "histogram_sum",
    "may_have_nan",
    "mean",
    "points",
    "prime_means",
    "raw_points",
    "uses_blocks",
]

_B = ROLLUP_BLOCK
RAW_LIMIT = 16_384  # above this many steps, buckets are whole rollup blocks


@dataclass
class Points:
    step: list[int]
    value: list[float]
    overall: Stats | None = None  # [min, min_step, max, max_step, nan_step] over the whole range


def bucket_width(lo: int, hi: int, max_points: int, per_bucket: int) -> int | None:
    """Steps per bucket for ``[lo, hi]`` at ``max_points``; ``None`` when no downsampling is needed.

    Buckets are aligned at multiples of the width, so ``[lo, hi]`` can touch one more bucket than
    ``span / width``: the width leaves room for it, and with room for a single bucket only, that
    bucket is ``[0, hi]``. Never more than ``max_points`` points come out.
    """
    span = hi - lo + 1
    if span <= max_points:
        return None
    buckets = max_points // per_bucket
    width = -(-span // (buckets - 1)) if buckets >= 2 else hi + 1
    if span > RAW_LIMIT:
        width = -(-width // _B) * _B
    return width


def _catalogue_raw(session: Session, run_pk: int, metric: str, lo: int, hi: int, *, desc: bool = False,
                   limit: int | None = None) -> list[tuple[int, float]]:
    t = Step.__table__
    col = t.c[CATALOGUE_COLUMNS[metric]]
    q = (
        select(t.c.step, col, t.c.nan)
        .where(t.c.run_pk == run_pk, t.c.step >= lo, t.c.step <= hi, or_(col.is_not(None), t.c.nan.is_not(None)))
        .order_by(t.c.step.desc() if desc else t.c.step)
    )
    out = []
    result = session.execute(q)
    for step, v, nan in result if limit is not None else result.all():  # stream when a few rows suffice
        if v is not None:
            out.append((step, v))
        elif metric in nan.split(","):
            out.append((step, math.nan))
        if limit is not None and len(out) >= limit:
            break
    return out


def _extra_raw(session: Session, run_pk: int, metric: str, lo: int, hi: int, *, desc: bool = False,
               limit: int | None = None) -> list[tuple[int, float]]:
    t = Step.__table__
    needle = orjson.dumps(metric).decode()
    q = (
        select(t.c.step, t.c.extra)
        .where(t.c.run_pk == run_pk, t.c.step >= lo, t.c.step <= hi, t.c.extra.contains(needle))
        .order_by(t.c.step.desc() if desc else t.c.step)
    )
    out = []
    for step, extra in session.execute(q):
        v = orjson.loads(extra).get("m", {}).get(metric)
        if v is not None:
            out.append((step, decode_float(v)))
            if limit is not None and len(out) >= limit:
                break
    return out


def raw_points(session: Session, *, run_pk: int, metric: str, lo: int, hi: int, desc: bool = False,
               limit: int | None = None) -> list[tuple[int, float]]:
    """Every stored ``(step, value)`` of ``metric`` in ``[lo, hi]``, NaN included."""
    fn = _catalogue_raw if metric in CATALOGUE_COLUMNS else _extra_raw
    return fn(session, run_pk, metric, lo, hi, desc=desc, limit=limit)


def _full_blocks(lo: int, hi: int) -> tuple[int, int]:
    """First and last block lying wholly inside ``[lo, hi]`` (first > last when there is none)."""
    return -(-lo // _B), (hi + 1) // _B - 1


def _metric_blocks(session: Session, run_pk: int, metric: str, first: int, last: int) -> Iterable[tuple[int, Stats]]:
    """``(block, stats)`` of one metric for blocks ``first..last``, reading only its columns."""
    t = StepRollup.__table__
    where = (t.c.run_pk == run_pk, t.c.block >= first, t.c.block <= last)
    if metric in CATALOGUE_COLUMNS:
        cols = [t.c[rollup_column(metric, stat)] for stat, _ in ROLLUP_STATS]
        for block, *st in session.execute(select(t.c.block, *cols).where(*where, _present(metric))).all():
            yield block, st
        return
    for block, extra in session.execute(select(t.c.block, t.c.extra).where(*where, _present(metric))):
        st = orjson.loads(extra).get(metric)
        if st is not None:
            yield block, [decode_value(v) for v in st]


def _point_stats(step: int, v: float) -> Stats:
    return [None, None, None, None, step] if v != v else [v, step, v, step, None]


# One metric's rollup blocks column-wise: (block, min, min_step, max, max_step, nan_step), one entry per block.
BlockColumns = tuple[Sequence[Any], Sequence[Any], Sequence[Any], Sequence[Any], Sequence[Any], Sequence[Any]]


class Pieces:
    """One metric over ``[lo, hi]``: stats of whole rollup blocks, and raw points everywhere else.

    The blocks come either as ``(block, stats)`` pairs or column-wise (``cols``, what ``fetch_many``
    reads for ~40 metrics at once); the pairs are then built only if someone asks for them."""

    def __init__(self, blocks: list[tuple[int, Stats]] | None, raw: list[tuple[int, float]],
                 cols: BlockColumns | None = None) -> None:
        self._blocks = blocks
        self.raw = raw
        self.cols = cols
        self.points: dict[int | None, Points] = {}  # points(self, width), kept (these pieces may be cached)

    @property
    def blocks(self) -> list[tuple[int, Stats]]:
        if self._blocks is None:
            c = self.cols
            self._blocks = [] if c is None else [(b, [*st]) for b, *st in zip(*c, strict=True)]
        return self._blocks

    @property
    def has_nan(self) -> bool:
        if self._blocks is None and self.cols is not None:
            blocks_nan = self.cols[5].count(None) != len(self.cols[5])  # C-level
        else:
            blocks_nan = any(st[4] is not None for _, st in self.blocks)
        return blocks_nan or any(map(math.isnan, [v for _, v in self.raw]))

    def __repr__(self) -> str:
        return f"Pieces(blocks={self.blocks!r}, raw={self.raw!r})"


def uses_blocks(lo: int, hi: int, max_points: int) -> bool:
    """Whether a query over ``[lo, hi]`` at ``max_points`` reads rollup blocks (see :func:`bucket_width`)."""
    span = hi - lo + 1
    return span > max_points and span > RAW_LIMIT


def fetch(session: Session, *, run_pk: int, metric: str, lo: int, hi: int, blocks: bool) -> Pieces:
    """The data a (downsampled) series of ``metric`` over ``[lo, hi]`` needs: whole blocks from the
    rollups when ``blocks``, and the raw points of the partial blocks at the edges (or of everything)."""
    first, last = _full_blocks(lo, hi)
    if not blocks or first > last:
        return Pieces([], raw_points(session, run_pk=run_pk, metric=metric, lo=lo, hi=hi))
    raw: list[tuple[int, float]] = []
    for a, b in ((lo, first * _B - 1), ((last + 1) * _B, hi)):
        if a <= b:
            raw.extend(raw_points(session, run_pk=run_pk, metric=metric, lo=a, hi=b))
    return Pieces(list(_metric_blocks(session, run_pk, metric, first, last)), raw)


def _buckets(pieces: Pieces, width: int) -> dict[int, Stats]:
    """Stats per bucket ``step // width``: ``merge_stats`` inlined (this loop runs once per block and
    metric, ~60,000 times for a 100,000-step run page). Blocks and points come in step order and cover
    disjoint steps, so ties keep the earliest step as ``merge_stats`` does."""
    acc: dict[int, list] = {}
    get = acc.get
    blocks: Iterable[tuple[Any, ...]]
    if pieces.cols is not None and pieces._blocks is None:
        blocks = zip(*pieces.cols, strict=True)
    else:
        blocks = ((block, *st) for block, st in pieces.blocks)
    for block, mn, mn_s, mx, mx_s, nan_s in blocks:  # width is a multiple of the block size here
        b = block * _B // width
        cur = get(b)
        if cur is None:
            acc[b] = [mn, mn_s, mx, mx_s, nan_s]
            continue
        if mn is not None:
            cmn = cur[0]
            if cmn is None or mn < cmn or (mn == cmn and mn_s < cur[1]):
                cur[0] = mn
                cur[1] = mn_s
            cmx = cur[2]
            if cmx is None or mx > cmx or (mx == cmx and mx_s < cur[3]):
                cur[2] = mx
                cur[3] = mx_s
        if nan_s is not None and (cur[4] is None or nan_s < cur[4]):
            cur[4] = nan_s
    for step, v in pieces.raw:
        b = step // width
        cur = get(b)
        if v != v:
            if cur is None:
                acc[b] = [None, None, None, None, step]
            elif cur[4] is None or step < cur[4]:
                cur[4] = step
            continue
        if cur is None:
            acc[b] = [v, step, v, step, None]
            continue
        cmn = cur[0]
        if cmn is None or v < cmn or (v == cmn and step < cur[1]):
            cur[0] = v
            cur[1] = step
        cmx = cur[2]
        if cmx is None or v > cmx or (v == cmx and step < cur[3]):
            cur[2] = v
            cur[3] = step
    return acc


def points(pieces: Pieces, width: int | None) -> Points:
    """The series: every raw point when ``width`` is None, else min/max (and first NaN) per bucket.
    Built once per ``pieces`` and width (the caller must not change the lists)."""
    done = pieces.points.get(width)
    if done is None:
        done = pieces.points[width] = _points(pieces, width)
    return done


def _points(pieces: Pieces, width: int | None) -> Points:
    if width is None:
        assert not pieces.blocks, "raw series from rollup blocks"
        raw = pieces.raw
        return Points([s for s, _ in raw], [v for _, v in raw], _overall_raw(raw) if raw else None)
    out = Points([], [])
    steps, values = out.step, out.value
    acc = _buckets(pieces, width)
    keys = sorted(acc)
    for b in keys:
        mn, mn_s, mx, mx_s, nan_s = acc[b]
        if mn is None:  # only a NaN in this bucket
            steps.append(nan_s)
            values.append(math.nan)
            continue
        if nan_s is None:  # the usual bucket: min and max in step order (one point when at one step)
            if mn_s < mx_s:
                steps += (mn_s, mx_s)
                values += (mn, mx)
            elif mx_s < mn_s:
                steps += (mx_s, mn_s)
                values += (mx, mn)
            else:
                steps.append(mn_s)
                values.append(mx)
            continue
        # The bucket's points in step order: min and max (one point when at one step), and the NaN.
        pts = [(mn_s, mn), (mx_s, mx)] if mn_s < mx_s else [(mx_s, mx), (mn_s, mn)] if mx_s < mn_s else [(mn_s, mx)]
        if nan_s is not None:
            pts.append((nan_s, math.nan))
            pts.sort(key=_first)
        for s, v in pts:
            steps.append(s)
            values.append(v)
    if keys:
        # Over the buckets in step order, with min/max ties to the earliest step (as merge_stats).
        mins = [(st[0], st[1]) for st in acc.values() if st[0] is not None]
        maxes = [(st[2], -st[3]) for st in acc.values() if st[2] is not None]
        nans = [st[4] for st in acc.values() if st[4] is not None]
        lo_v, lo_s = min(mins) if mins else (None, None)
        hi_v, neg_hi_s = max(maxes) if maxes else (None, None)
        out.overall = [lo_v, lo_s, hi_v, None if neg_hi_s is None else -neg_hi_s, min(nans) if nans else None]
    return out


def _overall_raw(raw: list[tuple[int, float]]) -> Stats:
    """``merge_stats`` over every point (ties: the earliest step), with C-level ``min``/``max`` over
    the values instead of one call per point. ``raw`` is in step order (as ``fetch`` returns it)."""
    vals = [v for _, v in raw]
    nan_free = not any(map(math.isnan, vals))
    finite = vals if nan_free else [v for v in vals if v == v]
    nan_step = None if nan_free else next(s for s, v in raw if v != v)
    if not finite:
        return [None, None, None, None, nan_step]
    lo_v, hi_v = min(finite), max(finite)
    lo_s, lo_v = next((s, v) for s, v in raw if v == lo_v)  # the earliest equal value (0.0 == -0.0)
    hi_s, hi_v = next((s, v) for s, v in raw if v == hi_v)
    return [lo_v, lo_s, hi_v, hi_s, nan_step]


def _first(p: tuple[int, float]) -> int:
    return p[0]


def extremes(session: Session, *, run_pk: int, metric: str, lo: int, hi: int) -> Stats | None:
    """``[min, min_step, max, max_step, nan_step]`` of ``metric`` over ``[lo, hi]``."""
    width = -(-(hi + 1) // _B) * _B  # one bucket (aligned at 0) holding all of [lo, hi]
    acc = _buckets(fetch(session, run_pk=run_pk, metric=metric, lo=lo, hi=hi, blocks=True), width)
    merged: Stats | None = None
    for st in acc.values():
        merged = st if merged is None else merge_stats(merged, st)
    return merged


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


def _present(metric: str):  # type: ignore[no-untyped-def]
    t = StepRollup.__table__
    if metric in CATALOGUE_COLUMNS:
        return or_(t.c[rollup_column(metric, "min")].is_not(None), t.c[rollup_column(metric, "nan_step")].is_not(None))
    return t.c.extra.contains(orjson.dumps(metric).decode())


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
                                    _present(metric))
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


def may_have_nan(session: Session, *, run_pk: int, metrics: Iterable[str], lo: int, hi: int) -> bool:
    """Whether any of ``metrics`` may hold a NaN in ``[lo, hi]`` (exact for catalogue metrics)."""
    t = StepRollup.__table__
    conds = []
    for m in metrics:
        if m not in CATALOGUE_COLUMNS:
            return True
        conds.append(t.c[rollup_column(m, "nan_step")].is_not(None))
    if not conds:
        return False
    q = select(t.c.block).where(
        t.c.run_pk == run_pk, t.c.block >= lo // _B, t.c.block <= hi // _B, or_(*conds)
    ).limit(1)
    return session.execute(q).first() is not None


# Literals, not parameters: PostgreSQL has no ``bigint >> bigint``.
_32: ColumnClause[Any] = literal_column("32")
_LOW32: ColumnClause[Any] = literal_column("4294967295")


def histogram_sum(session: Session, *, run_pk: int, lo: int, hi: int) -> tuple[list[int], int]:
    """The log-ratio histogram summed over ``[lo, hi]`` (exact, any size), and how many steps carried one."""
    total = [0] * LOG_RATIO_HIST_BINS
    n = 0
    first, last = _full_blocks(lo, hi)
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
