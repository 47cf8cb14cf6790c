"""Reading metric series: raw points, min/max downsampling, extremes (range summaries: range_reads.py).

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
from sapo_monitor.client.wire import decode_float, decode_value
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .models import (
    CATALOGUE_COLUMNS,
    ROLLUP_BLOCK,
    ROLLUP_STATS,
    Step,
    StepRollup,
    rollup_column,
)
from .rollups import Stats, merge_stats

__all__ = [
    "RAW_LIMIT",
    "BlockColumns",
    "Pieces",
    "Points",
    "block_has",
    "bucket_width",
    "extremes",
    "fetch",
    "full_blocks",
    "points",
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


def block_has(metric: str):  # type: ignore[no-untyped-def]
    """Whether a rollup block holds any value of ``metric`` (a WHERE clause on ``step_rollups``)."""
    t = StepRollup.__table__
    if metric in CATALOGUE_COLUMNS:
        return or_(t.c[rollup_column(metric, "min")].is_not(None), t.c[rollup_column(metric, "nan_step")].is_not(None))
    return t.c.extra.contains(orjson.dumps(metric).decode())


def full_blocks(lo: int, hi: int) -> tuple[int, int]:
    """First and last block lying wholly inside ``[lo, hi]`` (first > last when there is none)."""
    return -(-lo // _B), (hi + 1) // _B - 1


def _metric_blocks(session: Session, run_pk: int, metric: str, first: int, last: int) -> Iterable[tuple[int, Stats]]:
    """``(block, stats)`` of one metric for blocks ``first..last``, reading only its columns."""
    t = StepRollup.__table__
    where = (t.c.run_pk == run_pk, t.c.block >= first, t.c.block <= last)
    if metric in CATALOGUE_COLUMNS:
        cols = [t.c[rollup_column(metric, stat)] for stat, _ in ROLLUP_STATS]
        for block, *st in session.execute(select(t.c.block, *cols).where(*where, block_has(metric))).all():
            yield block, st
        return
    for block, extra in session.execute(select(t.c.block, t.c.extra).where(*where, block_has(metric))):
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
    first, last = full_blocks(lo, hi)
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
