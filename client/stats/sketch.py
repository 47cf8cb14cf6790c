"""The log-ratio quantiles and the wire histogram of a step: one interface over a sort or a grid.

:class:`QuantileSketch` keeps a step's log-ratios (compact layout: at the end they are sorted, for exact
quantiles and the histogram) or bins them as they come into a fine grid (masked layout, the default on
accelerators: bin width 1/512 over [-8, 8) with an under- and an overflow cell, each cell with its exact
min and max and the count of its values below the wire-histogram edge inside it). The grid gives the
histogram exactly and quantiles exact when the bracketing order statistics are alone in their cell or
tied, within 1/512 otherwise; an order statistic outside [-8, 8) is computed exactly from the kept values.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from sapo_monitor.client.errors import InputError
from sapo_monitor.client.stats.config import CPU_BLOCK_POSITIONS, QUANTILES
from sapo_monitor.client.stats.summary import OUTER_KEPT, SketchPart
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS, LOG_RATIO_HIST_EDGES

if TYPE_CHECKING:
    import torch

__all__ = ["EXACT_QUANTILES_UP_TO", "GRID_BINS", "GRID_HALF", "GRID_SCALE", "QuantileSketch", "quantile_levels"]

# The quantile grid: bins of width 1/GRID_SCALE over [-GRID_HALF, GRID_HALF), plus an under- and
# an overflow bin. A power-of-two scale keeps bin edges exact in binary floating point.
GRID_HALF = 8.0
GRID_SCALE = 512.0
GRID_BINS = int(2 * GRID_HALF * GRID_SCALE)
EXACT_QUANTILES_UP_TO = 1 << 16  # on a CPU, steps of at most this many positions get exact quantiles by sorting

# What a sketch gives per step: [min lr, max lr], order statistics j and j+1 of each quantile, their
# interpolation fractions, flags for order statistics outside the grid, and the 42 histogram counts.
SketchResult = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]


class QuantileSketch:
    """One step's (or a batch of K steps') log-ratios, for the quantiles and the histogram."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (drops the references to the kept tensors)."""
        # The grid (masked layout, or a large compact step at result time; one step): per cell its count,
        # exact min and max, and how many of its values lie below a wire-histogram edge inside it.
        self._grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._kept_lr: list[torch.Tensor] = []  # [K, n]: log-ratios, +inf where excluded

    def add(self, x: torch.Tensor, valid: torch.Tensor, *, compact: bool, steps: int) -> None:
        """One block's log-ratios ``x`` ([rows, T], K steps' rows one after the other), ``valid`` where kept."""
        import torch

        if not compact:  # the grid as the tokens come (no data-dependent shape, no host sync)
            if steps != 1:
                raise InputError("a batch of steps is computed in the compact layout only")
            self._add_grid(x.reshape(-1), valid.reshape(-1))
        # The log-ratios themselves, +inf where excluded: exact quantiles (compact) or the rare exact
        # order statistic outside the grid (masked).
        self._kept_lr.append(torch.where(valid, x, math.inf).reshape(steps, -1))

    def _add_grid(self, x: torch.Tensor, valid: torch.Tensor) -> None:
        import torch

        f64, device = torch.float64, x.device
        # The quantile grid: cell 0 = underflow, 1..GRID_BINS = grid, GRID_BINS + 1 = overflow, and a dump
        # cell for excluded tokens that is cut off at the end. x * 512 is exact (a power of two), so each
        # cell holds exactly the values of its interval; each keeps its exact min and max, and the count
        # of its values below the wire histogram's edge inside it (see ``_GridTables``).
        tables = _grid_tables(device)
        cell = (x * GRID_SCALE).floor().clamp(-GRID_HALF * GRID_SCALE - 1, GRID_HALF * GRID_SCALE).long()
        cell += int(GRID_HALF * GRID_SCALE) + 1
        cell = torch.where(valid, cell, tables.dump)
        if self._grid is None:
            size = tables.dump + 1
            self._grid = (
                torch.zeros(size, dtype=torch.long, device=device),
                torch.full((size,), math.inf, dtype=f64, device=device),
                torch.full((size,), -math.inf, dtype=f64, device=device),
                torch.zeros(size, dtype=f64, device=device),
            )
        counts, lo, hi, below = self._grid
        counts += torch.bincount(cell, minlength=tables.dump + 1)
        lo.scatter_reduce_(0, cell, x, "amin")
        hi.scatter_reduce_(0, cell, x, "amax")
        below += torch.bincount(cell, weights=(x < tables.edge_inside.index_select(0, cell)).to(f64),
                                minlength=tables.dump + 1)

    def _grid_histogram(self) -> torch.Tensor:
        """[1, 42]: the wire histogram from the grid's cells (exact: see ``_GridTables``)."""
        import torch

        assert self._grid is not None
        counts, _, _, below = self._grid
        tables = _grid_tables(counts.device)
        hist = torch.zeros(LOG_RATIO_HIST_BINS + 1, dtype=torch.float64, device=counts.device)
        hist.index_add_(0, tables.bin_above, counts.to(torch.float64) - below)
        hist.index_add_(0, tables.bin_below, below)
        return hist[:LOG_RATIO_HIST_BINS].unsqueeze(0)

    # ------------------------------------------------------------------------------------ result
    def result(self, n: torch.Tensor) -> SketchResult:
        """Per step (``n`` [K, 1]: its kept tokens): [min lr, max lr], order statistics j and j+1 of each
        quantile, their fractions, flags for order statistics outside the grid (which the caller then
        gets from :meth:`exact_order_stats`), and the wire histogram: from one sort of the log-ratios,
        or from the grid."""
        import torch

        f64 = torch.float64
        if self._grid is None:  # compact mode: the log-ratios are all at hand (+inf where excluded)
            values = self._kept_lr[0] if len(self._kept_lr) == 1 else torch.cat(self._kept_lr, 1)
            if values.shape[1] <= EXACT_QUANTILES_UP_TO:
                return self._sorted_quantiles(values, n)
            values = values.reshape(-1)  # one step (batches of steps are small)
            for i in range(0, values.numel(), CPU_BLOCK_POSITIONS):
                part = values[i : i + CPU_BLOCK_POSITIONS]
                self._add_grid(part, part < math.inf)
        est, frac, outside = self._quantile_estimates()
        _, lo, hi, _ = (t[:-1] for t in self._grid)  # type: ignore[union-attr]
        lr_range = torch.stack([lo.amin(), hi.amax()])
        return (lr_range.unsqueeze(0), est.unsqueeze(0), frac.unsqueeze(0), outside.unsqueeze(0).to(f64),
                self._grid_histogram())

    def parts(self, n: torch.Tensor) -> list[SketchPart]:
        """Per step (``n`` [K, 1]: its kept tokens), the mergeable host copy: the sorted log-ratios when
        they were kept for sorting, else the grid's non-empty cells and the most extreme outer values.
        After :meth:`result` (which bins a large compact step into the grid)."""
        import torch

        f64 = torch.float64
        values = self._kept_lr[0] if len(self._kept_lr) == 1 else torch.cat(self._kept_lr, 1)
        if self._grid is None:
            ordered = values.sort(1).values  # excluded (+inf) last
            return [SketchPart(values=ordered[k, :c].tolist()) for k, c in enumerate(n.reshape(-1).long().tolist())]
        counts, lo, hi, _ = (t[:-1] for t in self._grid)
        idx = counts.nonzero().reshape(-1)
        cells = torch.stack([idx.to(f64), counts[idx].to(f64), lo[idx], hi[idx]]).tolist()
        kept = values.reshape(-1)
        low = kept[kept < -GRID_HALF].sort().values[:OUTER_KEPT]
        high = kept[(kept >= GRID_HALF) & (kept < math.inf)].sort().values[-OUTER_KEPT:]
        c_idx, c_counts, c_lo, c_hi = cells
        return [SketchPart(None, c_idx, c_counts, c_lo, c_hi, low.tolist(), high.tolist())]

    @staticmethod
    def _sorted_quantiles(values: torch.Tensor, n: torch.Tensor) -> SketchResult:
        """Exact quantiles and histogram of each step by sorting its row of ``values`` (excluded tokens,
        +inf, sort last)."""
        import torch

        f64, steps, device = torch.float64, values.shape[0], values.device
        nq = len(QUANTILES)
        if values.shape[1] == 0:  # no positions at all: nothing is read (no kept token)
            zeros = torch.zeros(steps, 2 * nq + LOG_RATIO_HIST_BINS, dtype=f64, device=device)
            return zeros[:, :2], zeros[:, : 2 * nq], zeros[:, :nq], zeros[:, : 2 * nq], zeros[:, -LOG_RATIO_HIST_BINS:]
        ordered = values.sort(1).values
        # Values below each edge (exact comparisons with the edge doubles), so the left-closed bins:
        below = torch.searchsorted(ordered, _hist_edges(device).expand(steps, -1).contiguous()).to(f64)
        hist = torch.cat([below, n], 1).diff(dim=1, prepend=torch.zeros_like(n))
        last = (n - 1.0).clamp(min=0)
        position = last * quantile_levels(device)
        j = position.floor()
        # One gather: the min, the max, then order statistics j and j + 1 of each quantile.
        order = torch.cat([torch.zeros_like(last), last, j, torch.minimum(j + 1.0, last)], 1).long()
        picked = ordered.gather(1, order)
        return picked[:, :2], picked[:, 2:], position - j, torch.zeros_like(picked[:, 2:]), hist

    def _quantile_estimates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Order statistics j and j+1 of each quantile (estimated from the grid), fractions, flags."""
        import torch

        assert self._grid is not None
        counts, lo, hi, _ = (t[:-1] for t in self._grid)  # without the dump bin
        f64 = torch.float64
        n = counts.sum()
        last = (n - 1).clamp(min=0)
        position = last.to(f64) * quantile_levels(counts.device)
        j = position.floor().long()
        frac = position - j.to(f64)
        order = torch.cat([j, torch.minimum(j + 1, last)])
        cum = counts.cumsum(0)
        b = torch.searchsorted(cum, order, right=True).clamp(max=counts.numel() - 1)
        cnt = counts[b]
        rank = (order - (cum[b] - cnt)).to(f64)
        # Within a bin, spread the ranks evenly between its exact min and max: exact for one value,
        # two values or ties, within the bin width otherwise.
        est = torch.where(cnt > 1, lo[b] + (hi[b] - lo[b]) * rank / (cnt - 1).clamp(min=1).to(f64), lo[b])
        outside = (b == 0) | (b == counts.numel() - 1)
        return est, frac, outside

    def exact_order_stats(self, n: int) -> list[float]:
        """Order statistics j and j+1 of each quantile, exactly, from the kept log-ratios (one step)."""
        import torch

        values = torch.cat([t.reshape(-1) for t in self._kept_lr])
        values = values[values < math.inf].sort().values
        lows = [math.floor((n - 1) * q) for _, q in QUANTILES]
        order = lows + [min(j + 1, n - 1) for j in lows]
        return values[torch.tensor(order, device=values.device)].tolist()


@functools.cache
def quantile_levels(device: torch.device) -> torch.Tensor:
    """The levels of ``QUANTILES`` as a float64 tensor on ``device`` (built once per device)."""
    import torch

    return torch.tensor([q for _, q in QUANTILES], dtype=torch.float64, device=device)



# The wire histogram's 41 inner edges: the doubles j / 10.0 (j = -20..20), compared with exactly.
_INNER_EDGES = LOG_RATIO_HIST_EDGES[1:-1]


@functools.cache
def _hist_edges(device: torch.device) -> torch.Tensor:
    """The inner edges of the wire histogram, float64, on ``device`` (built once per device)."""
    import torch

    return torch.tensor(_INNER_EDGES, dtype=torch.float64, device=device)


class _GridTables:
    """Per grid cell: the wire-histogram bin of its values at or above the edge inside it (``bin_above``;
    every value, for a cell no edge cuts), the bin of those below it (``bin_below``), and that edge
    (``edge_inside``, -inf for a cell no edge cuts). Cells are [L, L + 1/512) and edges j / 10 are 0.1
    apart, so a cell holds at most one edge; cells 0 and 8193 are the grid's under- and overflow; the
    last cell is the dump of excluded tokens (bin 42, cut off). With each cell's count of values below
    its edge, the grid gives the wire histogram exactly."""

    def __init__(self, device: torch.device) -> None:
        import torch

        f64 = torch.float64
        half = int(GRID_HALF * GRID_SCALE)
        self.dump = GRID_BINS + 2
        edges = _INNER_EDGES
        # Upper bound of each cell: (c - half) / 512 (exact), +inf for the overflow cell.
        upper = [(c - half) / GRID_SCALE for c in range(self.dump)] + [math.inf]
        upper[self.dump - 1] = math.inf
        above = torch.searchsorted(torch.tensor(edges, dtype=f64), torch.tensor(upper, dtype=f64))  # edges < U
        above[self.dump] = LOG_RATIO_HIST_BINS
        inside = torch.full((self.dump + 1,), -math.inf, dtype=f64)
        for e in edges:
            scaled = e * GRID_SCALE
            if scaled != math.floor(scaled):  # an edge strictly inside its cell
                inside[math.floor(scaled) + half + 1] = e
        self.bin_above = above.to(device)
        self.bin_below = (above - 1).clamp(min=0).to(device)
        self.edge_inside = inside.to(device)


@functools.cache
def _grid_tables(device: torch.device) -> _GridTables:
    return _GridTables(device)


