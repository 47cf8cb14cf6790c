"""Per-step stability statistics of a SAPO / GRPO / GSPO update, computed on the tensors' own device.

The public function is :func:`compute_step_stats`; :class:`StepAccumulator` is the same computation
split over several calls (micro-batches) of one optimizer step. Definitions (issue 4's catalogue):
M = masked tokens, lr = logp_new - logp_old, r = exp(lr), A = the token's advantage.

Choices the catalogue leaves open, fixed here:

- Masked tokens whose lr is NaN or +-Inf are counted in ``nonfinite.token_count`` and excluded from
  every statistic of token *values* (ratios, log-ratios, gates, shares, entropy, mismatch, routing,
  histogram). ``tokens.count``, ``sequences.count`` and ``response_len.*`` describe the mask itself,
  so they include those tokens; the denominator of the token shares is
  ``tokens.count - nonfinite.token_count``.
- Sequence ratios use each sequence's finite masked tokens; a sequence without any is left out.
  ``groups.zero_signal_frac`` is a share of ``sequences.count``.
- With per-token advantages [B, T], a sequence's advantage (for ``clip.seq_frac`` and
  ``groups.zero_signal_frac``) is the mean of A over its masked tokens.
- ``reward.*`` are over all B entries of ``rewards``.
- Log-ratio quantiles use linear interpolation between order statistics (numpy's default). On a CPU,
  a step of at most 65,536 tokens sorts its log-ratios: exact. Larger steps, and every step on an
  accelerator, use a fine histogram (bin width 1/512 over [-8, 8) with each bin's exact min and max):
  exact when the bracketing order statistics are alone in their bin or tied, within 1/512 otherwise;
  an order statistic outside [-8, 8) is then computed exactly from the kept log-ratios.

Everything is computed in float64 on the inputs' device (float32 or bf16 inputs are upcast after the
tokens are gathered), without gradients. On an accelerator (masked layout, no data-dependent shapes)
a step's numbers reach the host in one transfer (a second one only for a quantile outside [-8, 8));
on a CPU, where a transfer costs nothing, the finite masked tokens are gathered first (faster).
Log-ratios above ~709 overflow the float64 ratio: ratio statistics of such a step are infinite/NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sapo_monitor.client.errors import InputError
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS

if TYPE_CHECKING:
    import torch

__all__ = ["QUANTILES", "StatsConfig", "StepAccumulator", "compute_step_stats"]

QUANTILES: tuple[tuple[str, float], ...] = (
    ("log_ratio.p01", 0.01),
    ("log_ratio.p05", 0.05),
    ("log_ratio.p50", 0.50),
    ("log_ratio.p95", 0.95),
    ("log_ratio.p99", 0.99),
)
ZERO_SIGNAL_ABS = 1e-8  # |A_i| below this: the sequence carries no learning signal

# The quantile grid: bins of width 1/_GRID_SCALE over [-_GRID_HALF, _GRID_HALF), plus an under- and
# an overflow bin. A power-of-two scale keeps bin edges exact in binary floating point.
_GRID_HALF = 8.0
_GRID_SCALE = 512.0
_GRID_BINS = int(2 * _GRID_HALF * _GRID_SCALE)


@dataclass(frozen=True)
class StatsConfig:
    """The thresholds the statistics use; defaults are SAPO's and GSPO's published values."""

    tau_pos: float = 1.0  # SAPO gate temperature for A > 0
    tau_neg: float = 1.05  # SAPO gate temperature for A < 0
    eps_low: float = 0.2  # GRPO token band [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.2
    seq_eps_low: float = 3e-4  # GSPO sequence band [1 - seq_eps_low, 1 + seq_eps_high]
    seq_eps_high: float = 4e-4
    saturation_threshold: float = 0.1  # a token's SAPO gate is "saturated" when w < this


def compute_step_stats(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    config: StatsConfig = StatsConfig(),
    **optional_tensors: torch.Tensor | None,
) -> dict[str, float | list[int]]:
    """The catalogue statistics of one optimizer step's tokens.

    Args:
        logp_new: [B, T] log-probs of the sampled tokens under the current policy.
        logp_old: [B, T] log-probs under the rollout (old) policy.
        advantages: [B] one advantage per sequence, or [B, T] per token.
        mask: [B, T] 1 (or True) on tokens that count, 0 on padding.
        config: thresholds (SAPO temperatures, GRPO and GSPO bands, saturation threshold).
        **optional_tensors: any of ``entropy`` [B, T], ``rewards`` [B], ``logp_rollout`` [B, T],
            ``experts_old`` / ``experts_new`` [B, T, k] or [L, B, T, k] (integer expert ids).

    Returns:
        Catalogue name -> float, plus ``"hist.log_ratio"`` -> the 42 counts of
        ``wire.LOG_RATIO_HIST_EDGES``. Statistics over an empty set are absent, never NaN.

    Raises:
        InputError: shapes that do not fit together, or an unknown optional tensor name.
    """
    acc = StepAccumulator(config)
    acc.add(logp_new, logp_old, advantages, mask, **optional_tensors)
    return acc.result()


_OPTIONAL = ("entropy", "rewards", "logp_rollout", "experts_old", "experts_new")


class StepAccumulator:
    """Sufficient statistics of one step, merged over micro-batches on the device.

    ``add`` once per micro-batch, then ``result`` once: the result equals one ``add`` of all the
    tokens (quantiles within the grid tolerance). Holds only tensors it computed itself, never the
    caller's. Per micro-batch, every per-token quantity becomes a row of a feature matrix that one
    matrix product sums per group (all tokens, A > 0, A < 0); per-sequence quantities likewise. Those
    sums are shifted by pivot values fixed at the step's first micro-batch (so variances of near-constant
    data keep full precision) and therefore simply add across micro-batches; extremes take max and
    histograms add. The log-ratios are kept (our own float64 copy) only for the rare exact quantile
    outside the grid. Few, large operations: the cost stays low on small steps too.
    """

    def __init__(self, config: StatsConfig = StatsConfig(), *, compact: bool | None = None) -> None:
        self.config = config
        # compact=True gathers the finite masked tokens into a vector (fastest on a CPU); False keeps
        # the [B, T] layout with a mask, which needs no host sync (the default on accelerators).
        self.compact = compact
        self.reset()

    @property
    def empty(self) -> bool:
        return self.calls == 0

    def reset(self) -> None:
        """Forget everything (drops the references to the kept tensors)."""
        self._pivots: torch.Tensor | None = None  # [lr, r - 1, s - 1, reward] of the step's first batch
        self._sums: dict[str, torch.Tensor] = {}  # additive
        self._maxes: dict[str, torch.Tensor] = {}  # max-merged
        self._hist: torch.Tensor | None = None
        self._grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # counts, min, max
        self._kept_lr: list[torch.Tensor] = []
        self.calls = 0

    def _add_sum(self, name: str, value: torch.Tensor) -> None:
        old = self._sums.get(name)
        self._sums[name] = value if old is None else old + value

    def _add_max(self, name: str, value: torch.Tensor) -> None:
        import torch

        old = self._maxes.get(name)
        self._maxes[name] = value if old is None else torch.maximum(old, value)

    # ------------------------------------------------------------------------------------ adding
    def add(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        **optional_tensors: torch.Tensor | None,
    ) -> None:
        """Fold one micro-batch into the step (see :func:`compute_step_stats` for the arguments)."""
        import torch

        unknown = sorted(set(optional_tensors) - set(_OPTIONAL))
        if unknown:
            raise InputError(f"unknown tensor argument(s) {unknown}; expected any of {list(_OPTIONAL)}")
        with torch.no_grad():
            self._add(logp_new, logp_old, advantages, mask, optional_tensors)
        self.calls += 1

    def _add(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        opt: dict[str, torch.Tensor | None],
    ) -> None:
        import torch

        f64 = torch.float64
        _check_2d("logp_new", logp_new)
        shape = tuple(logp_new.shape)
        device = logp_new.device
        for name, t in (("logp_old", logp_old), ("mask", mask)):
            _check_shape(name, t, shape)
        if tuple(advantages.shape) not in (shape[:1], shape):
            raise InputError(
                f"advantages has shape {tuple(advantages.shape)}; expected [B]={shape[:1]} or [B, T]={shape}"
            )
        cfg = self.config
        n_rows = shape[0]

        m = _on(mask.detach(), device) > 0
        new, old = logp_new.detach(), _on(logp_old.detach(), device)
        # lr is finite exactly when both log-probs are (their float64 difference cannot overflow).
        # v - v is exactly 0 for finite v and NaN for NaN and +-Inf: isfinite(new) & isfinite(old) in
        # four elementwise passes (torch.isfinite on floats takes five per tensor).
        finite = ((new - new) + (old - old)) == 0
        valid = m & finite
        adv = _on(advantages.detach(), device, f64)
        len64 = m.sum(1, dtype=f64)  # masked tokens per sequence

        tokens = _Tokens(valid, compact=self.compact if self.compact is not None else device.type == "cpu")
        # Gather in the input dtype, then compute in float64: the log-ratios (0 where excluded, masked mode).
        old64 = _on(tokens.take(old), device, f64)
        x = _on(tokens.take(new), device, f64) - old64
        a = tokens.take(adv) if adv.dim() == 2 else tokens.spread(adv)
        ones = tokens.ones(x)
        if self._pivots is None:
            lr_pivot = tokens.pivot(x)
            rw = opt.get("rewards")
            rw_pivot = _on(rw.detach().reshape(-1)[:1], device, f64).sum() if rw is not None else lr_pivot * 0
            self._pivots = torch.stack([lr_pivot, lr_pivot.exp() - 1.0, lr_pivot * 0, rw_pivot])
        lr_pivot, r_pivot = self._pivots[0], self._pivots[1]

        # Per-token features, summed per group (all, A > 0, A < 0) by one matrix product per chunk:
        # chunks keep every temporary in cache, which matters more than anything else on a CPU.
        sel = tokens.sel
        # The masked layout (what accelerators use) sums sequences over the whole [B, T] grid at once.
        chunk = _CPU_CHUNK if device.type == "cpu" and sel is None else max(x.numel(), 1)
        buffers = _FeatureBuffers(min(chunk, x.numel()), device)
        row_sums = torch.zeros(2, n_rows, dtype=f64, device=device)  # per sequence: sum of d_lr, of d_lr^2
        for i in range(0, max(x.numel(), 1), chunk):
            if x.numel() <= chunk:  # one chunk: no slicing
                x_c, a_c, ones_c, sel_c = x, a, ones, sel
            else:
                part = slice(i, i + chunk)
                x_c, a_c, ones_c, sel_c = x[part], a[part], ones[part], None if sel is None else sel[part]
            self._add_sum("tok", _token_sums(x_c, a_c, ones_c, lr_pivot, r_pivot, cfg, buffers,
                                             masked=sel is not None))
            tokens.add_row_sums(row_sums, buffers.features[1:3, : x_c.numel()], i, ones_c)
            self._add_histograms(x_c, sel_c, grid=sel is not None)
        self._kept_lr.append(x if tokens.sel is None else torch.where(tokens.sel, x, math.nan))

        # Sequences: geometric-mean ratio (GSPO), its band, dispersion within a sequence, zero signal.
        n_i = tokens.row_counts()
        ok = n_i > 0
        seq_ok = ok.to(f64)
        shift, shift_sq = (row_sums / n_i.clamp(min=1)).unbind(0)  # sequence means of lr - pivot, its square
        seq_mean = lr_pivot + shift
        seq_std = (shift_sq - shift.square()).clamp(min=0).sqrt()
        s = seq_mean.exp()
        seq_adv = adv if adv.dim() == 1 else torch.where(m, adv, 0.0).sum(1) / len64.clamp(min=1)
        seq_clip = ((seq_adv > 0) & (s > 1.0 + cfg.seq_eps_high)) | ((seq_adv < 0) & (s < 1.0 - cfg.seq_eps_low))
        d_s = s - 1.0 - self._pivots[2]
        seq_features = torch.stack([
            torch.ones_like(s), d_s, d_s.square(), seq_clip.to(f64), seq_std,
            (seq_adv.abs() < ZERO_SIGNAL_ABS).to(f64), len64, len64 - n_i,  # non-finite
        ])
        has_tokens = len64.clamp(max=1.0)  # 1 for sequences with a masked token, else 0
        self._add_sum("seq", torch.stack([seq_ok, has_tokens]) @ seq_features.T)  # [2, len(_SEQ)]
        # Maxima of the response length (0 for a sequence without tokens: only read when some sequence
        # has one), of the sequence mean log-ratio and of its negative (-inf without finite tokens).
        self._add_max("seq", torch.stack([
            len64, torch.where(ok, seq_mean, -math.inf), torch.where(ok, -seq_mean, -math.inf),
        ]).amax(1) if n_rows else torch.full((3,), -math.inf, dtype=f64, device=device))

        self._add_optional(opt, shape, device, old64, tokens, ones)

    def _add_optional(
        self,
        opt: dict[str, torch.Tensor | None],
        shape: tuple[int, ...],
        device: torch.device,
        old64: torch.Tensor,
        tokens: _Tokens,
        ones: torch.Tensor,
    ) -> None:
        """``old64``: the float64 logp_old of the tokens (as gathered by ``_add``)."""
        import torch

        f64 = torch.float64
        n = ones.sum()
        entropy = opt.get("entropy")
        if entropy is not None:
            _check_shape("entropy", entropy, shape)
            ent = _on(tokens.take(_on(entropy.detach(), device)), device, f64)
            self._add_sum("entropy", torch.stack([ent @ ones, n]))
        rewards = opt.get("rewards")
        if rewards is not None:
            assert self._pivots is not None
            d = _on(rewards.detach(), device, f64).reshape(-1) - self._pivots[3]
            self._add_sum("reward", torch.stack([torch.ones_like(d), d, d.square()]).sum(1))
        rollout = opt.get("logp_rollout")
        if rollout is not None:
            _check_shape("logp_rollout", rollout, shape)
            d = old64 - _on(tokens.take(_on(rollout.detach(), device)), device, f64)
            self._add_sum("mismatch", torch.stack([d, d.exp() - 1.0 - d, ones]) @ ones)
            self._add_max("mismatch", (d.abs() * ones).amax() if d.numel() else torch.zeros((), dtype=f64))
        eo, en = opt.get("experts_old"), opt.get("experts_new")
        if (eo is None) != (en is None):
            raise InputError("experts_old and experts_new must be given together")
        if eo is not None and en is not None:
            if eo.shape != en.shape or eo.dim() not in (3, 4) or tuple(eo.shape[-3:-1]) != shape:
                raise InputError(
                    f"experts_old {tuple(eo.shape)} and experts_new {tuple(en.shape)} must both be "
                    f"[B, T, k] or [L, B, T, k] with [B, T] = {shape}"
                )
            eo4 = _on(eo.detach(), device).reshape(-1, *eo.shape[-3:])
            en4 = _on(en.detach(), device).reshape(-1, *en.shape[-3:])
            # Compare chosen sets, not orders: sort the k ids of each (layer, token).
            changed = (eo4.sort(-1).values != en4.sort(-1).values).any(-1).sum(0)  # [B, T]: layers that flipped
            flips = tokens.take(changed).to(f64) @ ones
            self._add_sum("moe", torch.stack([flips, n * eo4.shape[0]]))

    def _add_histograms(self, x: torch.Tensor, sel: torch.Tensor | None, *, grid: bool = True) -> None:
        import torch

        f64 = torch.float64
        # The wire histogram. Its inner edges are the doubles nearest to j / 10 (j = -20..20), which
        # an IEEE division j / 10.0 gives exactly; so a guess j = floor(10 x) corrected by one exact
        # comparison with each neighbouring edge puts every value in its left-closed bin. A binary
        # search over those same edges gives the same bins: one call, cheaper for a few tokens.
        if x.numel() <= _BUCKETIZE_UP_TO:
            bins = torch.bucketize(x, _hist_edges(x.device), right=True)
        else:
            j = (x * 10.0).floor()
            j = j - (x < j / 10.0).to(f64) + (x >= (j + 1.0) / 10.0).to(f64)
            bins = (j + 21.0).clamp(0, LOG_RATIO_HIST_BINS - 1).long()
        if sel is not None:
            bins = torch.where(sel, bins, LOG_RATIO_HIST_BINS)
        hist = torch.bincount(bins, minlength=LOG_RATIO_HIST_BINS + 1)[:LOG_RATIO_HIST_BINS]
        self._hist = hist if self._hist is None else self._hist + hist
        if grid:
            self._add_grid(x, sel)

    def _add_grid(self, x: torch.Tensor, sel: torch.Tensor | None) -> None:
        import torch

        f64, device = torch.float64, x.device

        # The quantile grid: 0 = underflow, 1.._GRID_BINS = grid, _GRID_BINS + 1 = overflow (and, in
        # masked mode, a dump bin for excluded tokens that is cut off at the end). Each bin keeps its
        # exact min and max; the step's arrays are updated in place.
        dump = _GRID_BINS + 2
        cell = (x * _GRID_SCALE).floor().clamp(-_GRID_HALF * _GRID_SCALE - 1, _GRID_HALF * _GRID_SCALE).long()
        cell += int(_GRID_HALF * _GRID_SCALE) + 1
        if sel is not None:
            cell = torch.where(sel, cell, dump)
        if self._grid is None:
            self._grid = (
                torch.zeros(dump + 1, dtype=torch.long, device=device),
                torch.full((dump + 1,), math.inf, dtype=f64, device=device),
                torch.full((dump + 1,), -math.inf, dtype=f64, device=device),
            )
        counts, lo, hi = self._grid
        counts += torch.bincount(cell, minlength=dump + 1)
        lo.scatter_reduce_(0, cell, x, "amin")
        hi.scatter_reduce_(0, cell, x, "amax")

    # ------------------------------------------------------------------------------------ result
    def _quantiles(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | list[float], torch.Tensor | list[float]]:
        """[min lr, max lr], order statistics j and j+1 of each quantile, their fractions, and flags for
        order statistics outside the grid (which ``result`` then computes exactly). Fractions and flags
        known on the host already (exact quantiles by sorting) come as lists."""
        import torch

        if self._grid is None:  # compact mode: the log-ratios are all at hand
            n = sum(t.numel() for t in self._kept_lr)
            values = self._kept_lr[0] if len(self._kept_lr) == 1 else torch.cat(self._kept_lr)
            if n <= _EXACT_QUANTILES_UP_TO:
                return self._sorted_quantiles(values.sort().values)
            chunk = _CPU_CHUNK
            for i in range(0, n, chunk):
                self._add_grid(values[i : i + chunk], None)
        est, frac, outside = self._quantile_estimates()
        _, lo, hi = (t[:-1] for t in self._grid)  # type: ignore[union-attr]
        return torch.stack([lo.amin(), hi.amax()]), est, frac, outside

    def _sorted_quantiles(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
        import torch

        f64, n = torch.float64, values.numel()
        if n == 0:
            empty = torch.zeros(2 * len(QUANTILES), dtype=f64, device=values.device)
            no_range = torch.tensor([math.inf, -math.inf], dtype=f64, device=values.device)
            return no_range, empty, [0.0] * len(QUANTILES), [0.0] * (2 * len(QUANTILES))
        positions = [(n - 1) * q for _, q in QUANTILES]
        lows = [math.floor(pos) for pos in positions]
        # One gather: the min, the max, then order statistics j and j + 1 of each quantile.
        order = torch.tensor([0, n - 1, *lows, *(min(j + 1, n - 1) for j in lows)], device=values.device)
        picked = values.index_select(0, order)
        frac = [pos - j for pos, j in zip(positions, lows, strict=True)]
        return picked[:2], picked[2:], frac, [0.0] * (2 * len(QUANTILES))

    def _quantile_estimates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Order statistics j and j+1 of each quantile (estimated from the grid), fractions, flags."""
        import torch

        assert self._grid is not None
        counts, lo, hi = (t[:-1] for t in self._grid)  # without the dump bin
        f64 = torch.float64
        n = counts.sum()
        last = (n - 1).clamp(min=0)
        qs = torch.tensor([q for _, q in QUANTILES], dtype=f64, device=counts.device)
        position = last.to(f64) * qs
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

    def _exact_order_stats(self, n: int) -> list[float]:
        """Order statistics j and j+1 of each quantile, exactly, from the kept log-ratios."""
        import torch

        values = torch.cat([t.reshape(-1) for t in self._kept_lr])
        values = values[~values.isnan()].sort().values
        lows = [math.floor((n - 1) * q) for _, q in QUANTILES]
        order = lows + [min(j + 1, n - 1) for j in lows]
        return values[torch.tensor(order, device=values.device)].tolist()

    def result(self) -> dict[str, float | list[int]]:
        """The step's statistics (one device-to-host transfer). Empty dict when nothing was added."""
        import torch

        if self.empty or self._hist is None or self._pivots is None:
            return {}
        lr_range, est, frac, outside = self._quantiles()
        parts: list[tuple[str, torch.Tensor]] = [
            ("pivots", self._pivots),
            ("lr_range", lr_range),
            *((f"sum.{k}", v.reshape(-1)) for k, v in self._sums.items()),
            *((f"max.{k}", v.reshape(-1)) for k, v in self._maxes.items()),
            ("hist", self._hist),
            ("est", est),
            *((name, v) for name, v in (("frac", frac), ("outside", outside)) if not isinstance(v, list)),
        ]
        # cat promotes the counts (int64) and flags (bool) to float64 exactly: the one transfer of the step.
        host_all = torch.cat([v for _, v in parts]).tolist()
        host: dict[str, list[float]] = {}
        at = 0
        for name, v in parts:
            host[name] = host_all[at : at + v.numel()]
            at += v.numel()
        for name, v in (("frac", frac), ("outside", outside)):
            if isinstance(v, list):
                host[name] = v

        h = _named_sums(host)
        nq = len(QUANTILES)
        est_h, frac_h = host["est"], host["frac"]
        n_valid = int(h["n_valid"])
        if n_valid > 0 and any(host["outside"]):
            est_h = self._exact_order_stats(n_valid)
        quantiles = {
            name: est_h[i] + frac_h[i] * (est_h[nq + i] - est_h[i]) if frac_h[i] > 0 else est_h[i]
            for i, (name, _) in enumerate(QUANTILES)
        }
        out = _assemble(h, quantiles)
        out["hist.log_ratio"] = [int(c) for c in host["hist"]]
        return out


_BUCKETIZE_UP_TO = 4096  # histogram bins by binary search up to this many tokens (elementwise beyond)
_HIST_EDGES: dict[torch.device, torch.Tensor] = {}


def _hist_edges(device: torch.device) -> torch.Tensor:
    """The 41 inner edges j / 10.0 (j = -20..20) of the wire histogram, float64, on ``device``."""
    edges = _HIST_EDGES.get(device)
    if edges is None:
        import torch

        edges = torch.tensor([j / 10.0 for j in range(-20, 21)], dtype=torch.float64, device=device)
        _HIST_EDGES[device] = edges
    return edges


_CPU_CHUNK = 1 << 15  # tokens per chunk of feature work on a CPU (temporaries stay in cache)
_EXACT_QUANTILES_UP_TO = 1 << 16  # on a CPU, steps with at most this many tokens get exact quantiles by sorting


class _FeatureBuffers:
    """Preallocated feature and group matrices for one micro-batch's chunks (written in place: no stacking)."""

    def __init__(self, size: int, device: torch.device) -> None:
        import torch

        self.features = torch.empty(len(_TOK), size, dtype=torch.float64, device=device)
        self.groups = torch.empty(3, size, dtype=torch.float64, device=device)


def _token_sums(x: torch.Tensor, a: torch.Tensor, ones: torch.Tensor, lr_pivot: torch.Tensor,
                r_pivot: torch.Tensor, cfg: StatsConfig, buffers: _FeatureBuffers, *, masked: bool) -> torch.Tensor:
    """[3, len(_TOK)]: per-token features (columns named by _TOK) summed over all tokens, A > 0, A < 0."""
    import torch

    n = x.numel()
    feat, groups = buffers.features[:, :n], buffers.groups[:, :n]
    (f_n, f_dlr, f_dlr2, f_dr, f_dr2, f_k3, f_w, f_f, f_sat, f_hi, f_lo, f_gm, f_zero) = feat.unbind(0)
    g_all, g_pos, g_neg = groups.unbind(0)
    g_all.copy_(ones)
    g_pos.copy_(a > 0)
    g_neg.copy_(a < 0)
    if masked:
        g_pos.mul_(ones)
        g_neg.mul_(ones)
    f_n.copy_(ones)
    torch.sub(x, lr_pivot, out=f_dlr)
    torch.mul(f_dlr, f_dlr, out=f_dlr2)
    r = x.exp()
    rm1 = r - 1.0
    torch.sub(rm1, r_pivot, out=f_dr)
    torch.mul(f_dr, f_dr, out=f_dr2)
    torch.sub(rm1, x, out=f_k3)
    tau = g_pos * (cfg.tau_pos - cfg.tau_neg)
    tau += cfg.tau_neg
    p = torch.sigmoid(tau * rm1)
    torch.mul(p, 1.0 - p, out=f_w)
    f_w.mul_(4.0)  # SAPO gradient weight w = 4p(1 - p)
    torch.div(p, tau, out=f_f)
    f_f.mul_(4.0)  # gate value f = 4p / tau
    f_sat.copy_(f_w < cfg.saturation_threshold)
    f_hi.copy_(r > 1.0 + cfg.eps_high)
    f_lo.copy_(r < 1.0 - cfg.eps_low)
    torch.mul(f_w, a.abs(), out=f_gm)  # gradient mass w |A|
    f_zero.copy_(a == 0)
    return torch.mm(groups, feat.T)


# Column order of the summed feature matrices built in StepAccumulator._add.
_TOK = ("n", "d_lr", "d_lr2", "d_r", "d_r2", "k3", "w", "f", "sat", "hi", "lo", "gm", "zero")
_SEQ = ("n", "d_s", "d_s2", "clip", "std", "zero_signal", "len", "nonfinite")


def _moments(h: dict[str, float], name: str, n: float, shifted_sum: float, shifted_sq: float, pivot: float) -> None:
    """(count, mean, M2) from sums of (x - pivot) and (x - pivot)^2."""
    safe = max(n, 1.0)
    h[f"{name}.n"] = n
    h[f"{name}.mean"] = pivot + shifted_sum / safe
    h[f"{name}.m2"] = max(shifted_sq - shifted_sum * shifted_sum / safe, 0.0)


def _named_sums(host: dict[str, list[float]]) -> dict[str, float]:
    """The host copy of the summed feature matrices, under the names ``_assemble`` reads."""
    lr_p, r_p, s_p, rw_p = host["pivots"]
    tok = {g: dict(zip(_TOK, host["sum.tok"][i * len(_TOK) : (i + 1) * len(_TOK)], strict=True))
           for i, g in enumerate(("all", "pos", "neg"))}
    seq = {g: dict(zip(_SEQ, host["sum.seq"][i * len(_SEQ) : (i + 1) * len(_SEQ)], strict=True))
           for i, g in enumerate(("ok", "has"))}
    t, pos, neg = tok["all"], tok["pos"], tok["neg"]
    len_max, seq_max, seq_negmin = host["max.seq"]
    h: dict[str, float] = {
        "n_mask": seq["has"]["len"],
        "n_nonfinite": seq["has"]["nonfinite"],
        "n_seq": seq["has"]["n"],
        "len_max": len_max,
        "zero_signal": seq["has"]["zero_signal"],
        "n_valid": t["n"],
        "lr_negmin": -host["lr_range"][0],
        "lr_max": host["lr_range"][1],
        "k3_sum": t["k3"],
        "clip_high": pos["hi"],
        "clip_low": neg["lo"],
        "n_pos": pos["n"],
        "n_neg": neg["n"],
        "n_zero": t["zero"],
        "n_nonzero": pos["n"] + neg["n"],
        "w_sum": pos["w"] + neg["w"],
        "f_sum": pos["f"] + neg["f"],
        "sat": pos["sat"] + neg["sat"],
        "seq_lr_max": seq_max,
        "seq_lr_negmin": seq_negmin,
        "seq_clip": seq["ok"]["clip"],
        "disp_sum": seq["ok"]["std"],
    }
    _moments(h, "lr", t["n"], t["d_lr"], t["d_lr2"], lr_p)
    _moments(h, "ratio", t["n"], t["d_r"], t["d_r2"], r_p)
    _moments(h, "seq_ratio", seq["ok"]["n"], seq["ok"]["d_s"], seq["ok"]["d_s2"], s_p)
    for sign, g, clip in (("pos", pos, "hi"), ("neg", neg, "lo")):
        _moments(h, f"ratio_{sign}", g["n"], g["d_r"], g["d_r2"], r_p)
        h[f"lr_sum_{sign}"] = g["d_lr"] + lr_p * g["n"]
        h[f"w_sum_{sign}"] = g["w"]
        h[f"sat_{sign}"] = g["sat"]
        h[f"clip_{sign}"] = g[clip]
        h[f"gm_{sign}"] = g["gm"]
    if "sum.entropy" in host:
        h["ent_sum"], h["ent_n"] = host["sum.entropy"]
    if "sum.reward" in host:
        _moments(h, "reward", *host["sum.reward"], rw_p)
    if "sum.mismatch" in host:
        h["mm_sum"], h["mm_k3_sum"], h["mm_n"] = host["sum.mismatch"]
        h["mm_abs_max"] = host["max.mismatch"][0]
    if "sum.moe" in host:
        h["flip_sum"], h["flip_n"] = host["sum.moe"]
    return h


def _std(h: dict[str, float], name: str) -> float:
    n = h[f"{name}.n"]
    return math.sqrt(max(h[f"{name}.m2"], 0.0) / n)


def _assemble(h: dict[str, float], quantiles: dict[str, float]) -> dict[str, float | list[int]]:
    """Catalogue names from the host copy of the sufficient statistics; empty sets stay absent."""
    out: dict[str, float | list[int]] = {
        "tokens.count": h["n_mask"],
        "sequences.count": h["n_seq"],
        "nonfinite.token_count": h["n_nonfinite"],
    }
    n_seq = h["n_seq"]
    if n_seq > 0:
        out["response_len.mean"] = h["n_mask"] / n_seq
        out["response_len.max"] = h["len_max"]
        out["groups.zero_signal_frac"] = h["zero_signal"] / n_seq
    n = h["n_valid"]
    if n > 0:
        out["ratio.mean"] = 1.0 + h["ratio.mean"]
        out["ratio.std"] = _std(h, "ratio")
        out["ratio.min"] = math.exp(-h["lr_negmin"])
        out["ratio.max"] = math.exp(h["lr_max"])
        out["log_ratio.mean"] = h["lr.mean"]
        out["log_ratio.std"] = _std(h, "lr")
        out["log_ratio.abs_max"] = max(h["lr_max"], h["lr_negmin"])
        out.update(quantiles)
        out["kl.k1"] = -h["lr.mean"]
        out["kl.k3"] = h["k3_sum"] / n
        out["clip.token_frac_high"] = h["clip_high"] / n
        out["clip.token_frac_low"] = h["clip_low"] / n
        out["clip.token_frac"] = (h["clip_high"] + h["clip_low"]) / n
        for sign in ("pos", "neg", "zero"):
            out[f"sign.{sign}.token_frac"] = h[f"n_{sign}"] / n
    n_nonzero = h["n_nonzero"]
    if n_nonzero > 0:
        out["gate.weight_mean"] = h["w_sum"] / n_nonzero
        out["gate.value_mean"] = h["f_sum"] / n_nonzero
        out["gate.saturated_frac"] = h["sat"] / n_nonzero
    for sign in ("pos", "neg"):
        n_s = h[f"n_{sign}"]
        if n_s > 0:
            out[f"sign.{sign}.ratio_mean"] = 1.0 + h[f"ratio_{sign}.mean"]
            out[f"sign.{sign}.ratio_std"] = _std(h, f"ratio_{sign}")
            out[f"sign.{sign}.log_ratio_mean"] = h[f"lr_sum_{sign}"] / n_s
            out[f"sign.{sign}.gate_weight_mean"] = h[f"w_sum_{sign}"] / n_s
            out[f"sign.{sign}.saturated_frac"] = h[f"sat_{sign}"] / n_s
            out[f"sign.{sign}.clip_frac"] = h[f"clip_{sign}"] / n_s
    grad_mass = h["gm_pos"] + h["gm_neg"]
    if grad_mass > 0:
        out["sign.pos.grad_share"] = h["gm_pos"] / grad_mass
        out["sign.neg.grad_share"] = h["gm_neg"] / grad_mass
    n_seq_valid = h["seq_ratio.n"]
    if n_seq_valid > 0:
        out["seq_ratio.mean"] = 1.0 + h["seq_ratio.mean"]
        out["seq_ratio.std"] = _std(h, "seq_ratio")
        out["seq_ratio.min"] = math.exp(-h["seq_lr_negmin"])
        out["seq_ratio.max"] = math.exp(h["seq_lr_max"])
        out["clip.seq_frac"] = h["seq_clip"] / n_seq_valid
        out["seq.log_ratio_dispersion"] = h["disp_sum"] / n_seq_valid
    if h.get("ent_n", 0) > 0:
        out["entropy.mean"] = h["ent_sum"] / h["ent_n"]
    if h.get("reward.n", 0) > 0:
        out["reward.mean"] = h["reward.mean"]
        out["reward.std"] = _std(h, "reward")
    if h.get("mm_n", 0) > 0:
        out["mismatch.log_ratio_mean"] = h["mm_sum"] / h["mm_n"]
        out["mismatch.kl_k3"] = h["mm_k3_sum"] / h["mm_n"]
        out["mismatch.abs_max"] = h["mm_abs_max"]
    if h.get("flip_n", 0) > 0:
        out["moe.route_flip_frac"] = h["flip_sum"] / h["flip_n"]
    return out


class _Tokens:
    """The finite masked tokens of one micro-batch, seen as one vector, in sequence order.

    Compact mode gathers them (data-dependent size: cheap on a CPU, a host sync on an accelerator);
    masked mode keeps every position and carries ``sel``, so excluded positions are zeroed by
    :meth:`take` (callers multiply by :meth:`ones` where a feature of 0 is not 0).
    """

    def __init__(self, valid: torch.Tensor, *, compact: bool) -> None:
        self.sel: torch.Tensor | None
        self._shape = tuple(valid.shape)
        if compact:
            # One nonzero() for all the gathers of the micro-batch (masked_select would redo it each time).
            self._index = valid.reshape(-1).nonzero().squeeze(1)
            self._lengths = valid.sum(1)
            self._rows: torch.Tensor | None = None
            if self._index.numel() <= _CPU_CHUNK:  # one chunk: index by sequence (fewer, cheaper ops)
                self._rows = self._index // max(self._shape[1], 1)  # each token's sequence
            else:  # segments (faster on many tokens)
                self._ends = self._lengths.cumsum(0)
                self._starts = self._ends - self._lengths
            self.sel = None
        else:
            self.sel = valid.reshape(-1)

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """A [B, T] tensor's values at the tokens."""
        import torch

        if self.sel is None:
            return t.reshape(-1).index_select(0, self._index)
        return torch.where(self.sel, t.reshape(-1), torch.zeros((), dtype=t.dtype, device=t.device))

    def spread(self, per_row: torch.Tensor) -> torch.Tensor:
        """A [B] tensor's value of each token's sequence."""
        if self.sel is None:
            if self._rows is not None:
                return per_row.index_select(0, self._rows)
            return per_row.repeat_interleave(self._lengths)
        return per_row.repeat_interleave(self._shape[1])

    def ones(self, like: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.ones_like(like) if self.sel is None else self.sel.to(like.dtype)

    def pivot(self, v: torch.Tensor) -> torch.Tensor:
        """One of the values (0 when there is none): the shift that keeps ties exact."""
        if self.sel is None:
            return v[:1].sum()
        return v[self.sel.int().argmax()]

    def row_counts(self) -> torch.Tensor:
        """Tokens per sequence, float64 [B]."""
        import torch

        if self.sel is None:
            return self._lengths.to(torch.float64)
        return self.sel.reshape(self._shape).sum(1).to(torch.float64)

    def add_row_sums(self, out: torch.Tensor, data: torch.Tensor, start: int, ones: torch.Tensor) -> None:
        """Add to ``out`` [k, B] the per-sequence sums of ``data`` [k, n], the tokens ``start .. start + n``
        (a chunk)."""
        import torch

        k, n = data.shape
        if self.sel is not None:  # masked mode works on the whole batch in one chunk
            out += (data * ones).reshape(k, *self._shape).sum(2)
            return
        if self._rows is not None:  # the whole micro-batch (start == 0)
            for i in range(k):  # in token order within each sequence
                out[i].index_add_(0, self._rows, data[i])
            return
        # Each sequence's share of this chunk (tokens are in sequence order).
        lengths = (self._ends.clamp(max=start + n) - self._starts.clamp(min=start)).clamp(min=0)
        out += torch.segment_reduce(data, "sum", lengths=lengths.expand(k, -1), axis=1)


def _on(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t.to(device, dtype)`` without the call when nothing changes (many tiny calls per step)."""
    if t.device == device and (dtype is None or t.dtype == dtype):
        return t
    return t.to(device=device, dtype=dtype)


def _check_2d(name: str, t: object) -> None:
    if not hasattr(t, "dim") or not hasattr(t, "shape"):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:  # type: ignore[attr-defined]
        raise InputError(f"{name} must be [B, T], got shape {tuple(t.shape)}")  # type: ignore[attr-defined]


def _check_shape(name: str, t: object, shape: tuple[int, ...]) -> None:
    if not hasattr(t, "shape"):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:  # type: ignore[attr-defined]
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected {shape} like logp_new")  # type: ignore[attr-defined]
