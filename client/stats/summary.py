"""A step's mergeable summary: what one data-parallel rank sends, and how rank 0 merges them.

:class:`StepSummary` is a small host-side copy of a rank's :class:`StepAccumulator` state for one step:
the summed features (counts, shifted sums of powers, clip / gate / saturation counts, per-sign parts,
zero-signal sequences, non-finite counts, route flips, mismatch sums), the maxima, the 42 histogram
counts, and the log-ratio sketch (:class:`SketchPart`). ``merge`` combines the ranks' summaries; the
merged summary's :meth:`StepSummary.stats` is the step's catalogue record.

Exact across ranks (up to float64 rounding): every count, sum, mean, standard deviation (sums of powers
re-shifted to one pivot, so no cancellation is introduced), fraction, share, extreme and the histogram.
Quantiles are exact while every rank sent its sorted log-ratios and the step has at most
``EXACT_QUANTILES_UP_TO`` of them; otherwise they come from the merged 1/512 grid (each cell's exact min
and max; within 1/512, exact for lone or tied order statistics; below -8 or from 8 up, exact for the
``OUTER_KEPT`` most extreme values of each rank).
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from sapo_monitor.client.stats.catalogue import assemble, named_sums
from sapo_monitor.client.stats.config import QUANTILES
from sapo_monitor.client.stats.features import GROUPS, TOK

__all__ = ["OUTER_KEPT", "SketchPart", "StepSummary", "merge"]

OUTER_KEPT = 64  # per rank: the most extreme log-ratios below -8 and from 8 up, for exact outer quantiles
_GRID_HALF, _GRID_SCALE = 8.0, 512.0
_UNDER, _OVER = 0, int(2 * _GRID_HALF * _GRID_SCALE) + 1  # the grid's under- and overflow cells


@dataclass
class SketchPart:
    """One step's log-ratios, sorted (``values``) or as grid cells (index, count, exact min and max)."""

    values: list[float] | None = None
    cells: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)
    outer_low: list[float] = field(default_factory=list)  # ascending, at most OUTER_KEPT
    outer_high: list[float] = field(default_factory=list)  # ascending, at most OUTER_KEPT

    @property
    def count(self) -> int:
        return len(self.values) if self.values is not None else int(sum(self.counts))

    def as_cells(self) -> dict[int, list[float]]:
        """cell -> [count, min, max] (values are binned like the device grid: x * 512 is exact)."""
        if self.values is None:
            return {int(c): [n, a, b] for c, n, a, b in zip(self.cells, self.counts, self.lo, self.hi, strict=True)}
        out: dict[int, list[float]] = {}
        half = int(_GRID_HALF * _GRID_SCALE)
        for x in self.values:
            c = min(max(math.floor(x * _GRID_SCALE), -half - 1), half) + half + 1
            cell = out.get(c)
            if cell is None:
                out[c] = [1.0, x, x]
            else:
                cell[0] += 1.0
                cell[1], cell[2] = min(cell[1], x), max(cell[2], x)
        return out

    def outers(self) -> tuple[list[float], list[float]]:
        if self.values is None:
            return self.outer_low, self.outer_high
        low = [x for x in self.values[:OUTER_KEPT] if x < -_GRID_HALF]
        high = [x for x in self.values[-OUTER_KEPT:] if x >= _GRID_HALF]
        return low, high


@dataclass
class StepSummary:
    """One rank's (or the merged) step: ``parts`` as the accumulator's host copy names them."""

    parts: dict[str, list[float]] = field(default_factory=dict)  # empty: a rank with nothing to report
    sketch: SketchPart = field(default_factory=SketchPart)

    @property
    def empty(self) -> bool:
        return not self.parts

    def stats(self) -> dict[str, float | list[int]]:
        """The catalogue record of this summary (as ``StepAccumulator.result`` gives it)."""
        if self.empty:
            return {}
        host = dict(self.parts)
        lr_range, quantiles = _quantiles(self.sketch)
        host["lr_range"] = lr_range
        out = assemble(named_sums(host), quantiles)
        out["hist.log_ratio"] = [int(c) for c in host["hist"]]
        return out

    def encode(self) -> bytes:
        """Bytes for the exchange between ranks: a JSON header (floats round-trip exactly, non-finite
        ones as JSON's Infinity / NaN) and the sketch's lists as float64 arrays."""
        s = self.sketch
        lists = [s.values or [], s.cells, s.counts, s.lo, s.hi, s.outer_low, s.outer_high]
        header = json.dumps({"parts": self.parts, "sorted": s.values is not None,
                             "lens": [len(v) for v in lists]}).encode()
        return struct.pack("<I", len(header)) + header + b"".join(array("d", v).tobytes() for v in lists)

    @staticmethod
    def decode(data: bytes) -> StepSummary:
        (size,) = struct.unpack_from("<I", data)
        header = json.loads(data[4 : 4 + size])
        at, lists = 4 + size, []
        for n in header["lens"]:
            lists.append(array("d", data[at : at + 8 * n]).tolist())
            at += 8 * n
        values, cells, counts, lo, hi, outer_low, outer_high = lists
        sketch = SketchPart(values if header["sorted"] else None, cells, counts, lo, hi, outer_low, outer_high)
        return StepSummary(header["parts"], sketch)


# Shifted sums in sum.tok ([len(TOK), len(GROUPS)], row-major): (first, square) feature rows per pivot.
_SHIFTED = ((TOK.index("d_lr"), TOK.index("d_lr2"), 0), (TOK.index("d_r"), TOK.index("d_r2"), 1))


def _repivot(parts: dict[str, list[float]], target: list[float]) -> dict[str, list[float]]:
    """The same sums shifted to ``target`` pivots: sum w(x - P) = S1 + d W, sum w(x - P)^2 = S2 + 2 d S1 + d^2 W
    with d = p - P and W the group's weight (exact in real arithmetic; float64 rounding only)."""
    out = {k: list(v) for k, v in parts.items()}
    pivots, n_groups = parts["pivots"], len(GROUPS)
    tok = out["sum.tok"]
    for first, square, which in _SHIFTED:
        d = pivots[which] - target[which]
        if d == 0:
            continue
        for j in range(n_groups):
            w, s1 = tok[j], tok[first * n_groups + j]  # row 0 of TOK is the weight ("n")
            tok[first * n_groups + j] = s1 + d * w
            tok[square * n_groups + j] += 2 * d * s1 + d * d * w
    if "sum.reward" in out:
        n, s1, _ = out["sum.reward"]
        d = pivots[2] - target[2]
        out["sum.reward"] = [n, s1 + d * n, out["sum.reward"][2] + 2 * d * s1 + d * d * n]
    out["pivots"] = list(target)
    return out


def merge(summaries: list[StepSummary]) -> StepSummary:
    """One summary of all the ranks' tokens (empty ones are skipped)."""
    present = [s for s in summaries if not s.empty]
    if not present:
        return StepSummary()
    # Pivots from a rank with finite tokens, so shifted sums stay small where the values are.
    base = next((s for s in present if s.parts["sum.tok"][0] > 0), present[0])
    target = base.parts["pivots"]
    merged: dict[str, list[float]] = {"pivots": list(target)}
    for s in present:
        parts = _repivot(s.parts, target)
        for name, values in parts.items():
            if name == "pivots":
                continue
            old = merged.get(name)
            if old is None:
                merged[name] = list(values)
            elif name.startswith("max."):
                merged[name] = [max(a, b) for a, b in zip(old, values, strict=True)]
            else:  # sum.* and hist add
                merged[name] = [a + b for a, b in zip(old, values, strict=True)]
    return StepSummary(merged, merge_sketches([s.sketch for s in present]))


def merge_sketches(parts: list[SketchPart]) -> SketchPart:
    """Sorted values while every part has them (exact quantiles) and they are few; else grid cells."""
    from sapo_monitor.client.stats import sketch as device_sketch  # the limit, read at call time

    if all(p.values is not None for p in parts) and sum(p.count for p in parts) <= device_sketch.EXACT_QUANTILES_UP_TO:
        return SketchPart(values=list(heapq.merge(*(p.values or [] for p in parts))))
    cells: dict[int, list[float]] = {}
    lows: list[float] = []
    highs: list[float] = []
    for p in parts:
        for c, (n, a, b) in p.as_cells().items():
            cell = cells.get(c)
            if cell is None:
                cells[c] = [n, a, b]
            else:
                cells[c] = [cell[0] + n, min(cell[1], a), max(cell[2], b)]
        low, high = p.outers()
        lows.extend(low)
        highs.extend(high)
    order = sorted(cells)
    return SketchPart(
        cells=[float(c) for c in order], counts=[cells[c][0] for c in order],
        lo=[cells[c][1] for c in order], hi=[cells[c][2] for c in order],
        outer_low=sorted(lows)[:OUTER_KEPT], outer_high=sorted(highs)[-OUTER_KEPT:] if highs else [],
    )


def _quantiles(part: SketchPart) -> tuple[list[float], dict[str, float]]:
    """([min, max], catalogue quantiles) with numpy's linear interpolation between order statistics."""
    n = part.count
    if n == 0:
        return [0.0, 0.0], {}
    last = n - 1
    at: Callable[[int], float]
    if part.values is not None:
        at = part.values.__getitem__
        lr_range = [part.values[0], part.values[-1]]
    else:
        at = _grid_order_stat(part)
        lr_range = [part.lo[0], part.hi[-1]]
    out: dict[str, float] = {}
    for name, q in QUANTILES:
        position = last * q
        j = math.floor(position)
        frac = position - j
        low = at(j)
        out[name] = low + frac * (at(min(j + 1, last)) - low) if frac > 0 else low
    return lr_range, out


def _grid_order_stat(part: SketchPart) -> Callable[[int], float]:
    """Order statistic i (0-based) from the cells: ranks spread evenly between a cell's exact min and max;
    in the under- or overflow cell, exact from the kept outer values where they reach."""
    cum: list[float] = []
    total = 0.0
    for c in part.counts:
        total += c
        cum.append(total)

    def at(i: int) -> float:
        b = bisect.bisect_right(cum, i)
        cnt, rank = part.counts[b], i - (cum[b] - part.counts[b])
        cell = int(part.cells[b])
        if cell == _UNDER and rank < len(part.outer_low):
            return part.outer_low[int(rank)]
        if cell == _OVER and cnt - 1 - rank < len(part.outer_high):
            return part.outer_high[len(part.outer_high) - int(cnt - rank)]
        lo, hi = part.lo[b], part.hi[b]
        return lo + (hi - lo) * rank / (cnt - 1) if cnt > 1 else lo

    return at
