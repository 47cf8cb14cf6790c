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
  a step of at most 65,536 positions sorts its log-ratios: exact. Larger steps, and every step on an
  accelerator, use a fine histogram (bin width 1/512 over [-8, 8) with each bin's exact min and max):
  exact when the bracketing order statistics are alone in their bin or tied, within 1/512 otherwise;
  an order statistic outside [-8, 8) is then computed exactly from the kept log-ratios. The wire
  histogram comes from the same sort or grid, exactly either way (``_GridTables``).

Everything is computed in float64 on the inputs' device (float32 or bf16 inputs are upcast block by
block), without gradients, in the [B, T] layout: excluded positions are zeroed, never gathered, so no
shape depends on the data. A step's numbers reach the host in one transfer (a second one only for a
quantile outside [-8, 8)). On a CPU every log-ratio is also kept, for exact quantiles by sorting.
Log-ratios above ~709 overflow the float64 ratio: ratio statistics of such a step are infinite/NaN.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sapo_monitor.client.errors import ConfigError, InputError
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS, LOG_RATIO_HIST_EDGES

if TYPE_CHECKING:
    import torch

__all__ = ["CPU_BLOCK_POSITIONS", "QUANTILES", "StatsConfig", "StepAccumulator", "check_inputs", "compute_step_stats"]

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

    def __post_init__(self) -> None:
        # The bounds are what make the definitions meaningful (and let the statistics skip masking the
        # flags of excluded tokens, where r = 1 and w = 1).
        for name in ("tau_pos", "tau_neg"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"StatsConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("eps_low", "eps_high", "seq_eps_low", "seq_eps_high"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"StatsConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.saturation_threshold <= 1:
            raise ConfigError(f"StatsConfig.saturation_threshold must be in (0, 1], got {self.saturation_threshold!r}")


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
    """Sufficient statistics of one step (or of a batch of K steps), merged over micro-batches on the device.

    ``add`` once per micro-batch, then ``result`` once: the result equals one ``add`` of all the
    tokens (quantiles within the grid tolerance). ``add_steps`` takes K whole steps of one shape at once
    and ``results`` gives their K records: small steps cost per operation, not per token, so K steps
    together cost about what one does. Holds only tensors it computed itself, never the caller's.

    The work keeps the [rows, T] layout: no gathers, no data-dependent shapes. Per-token features
    (``_TOK``) are summed per sequence, and the sums weighted by each sequence's groups (``_GROUPS``:
    all, A > 0, A < 0, ...) give the per-step, per-group sums in one small batched matrix product.
    Sums are shifted by pivot values fixed at each step's first micro-batch (so variances of
    near-constant data keep full precision) and therefore simply add across micro-batches; extremes
    take max. The log-ratios are kept (compact) or binned into the grid (masked) for the quantiles and
    the histogram. Every stored tensor has the step as its leading dimension.
    """

    def __init__(self, config: StatsConfig = StatsConfig(), *, compact: bool | None = None) -> None:
        self.config = config
        # compact=True keeps every log-ratio for exact quantiles by sorting (cheap on a CPU); False bins
        # them into the grid on the device as they come (the default on accelerators).
        self.compact = compact
        self.reset()

    @property
    def empty(self) -> bool:
        return self.calls == 0

    def reset(self) -> None:
        """Forget everything (drops the references to the kept tensors)."""
        self._pivots: torch.Tensor | None = None  # [K, 3]: lr, r - 1, reward of each step's first batch
        self._sums: dict[str, torch.Tensor] = {}  # additive, [K, ...]
        self._maxes: dict[str, torch.Tensor] = {}  # max-merged, [K, ...]
        # The quantile grid (masked layout, or a large compact step at result time; one step): per cell
        # its count, exact min and max, and how many of its values lie below a wire-histogram edge inside it.
        self._grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._kept_lr: list[torch.Tensor] = []  # [K, n]: log-ratios, +inf where excluded
        self.calls = 0
        self.steps = 1

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

        if self.steps != 1 and not self.empty:
            raise InputError("this accumulator holds a batch of steps (add_steps); reset it first")
        with torch.no_grad():
            self._add(logp_new, logp_old, advantages, mask, optional_tensors, 1)
        self.calls += 1

    def add_steps(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        **optional_tensors: torch.Tensor | None,
    ) -> None:
        """K whole steps of one shape: tensors as for ``add`` with a leading step dimension ([K, B, T],
        [K, B], expert ids [K, L, B, T, k]). Once, on an empty accumulator; ``results`` gives K records."""
        import torch

        _check_optional_names(optional_tensors)
        if not self.empty:
            raise InputError("add_steps needs an empty accumulator")
        if logp_new.dim() != 3:
            raise InputError(f"logp_new must be [K, B, T], got shape {tuple(logp_new.shape)}")
        k = logp_new.shape[0]

        def rows(t: torch.Tensor | None, name: str) -> torch.Tensor | None:
            if t is None:
                return None
            if t.shape[:1] != (k,):
                raise InputError(f"{name} has shape {tuple(t.shape)}; expected K={k} steps first")
            if name.startswith("experts"):  # [K, L, B, T, k] -> [L, K*B, T, k]
                t = t if t.dim() == 5 else t.unsqueeze(1)
                return t.transpose(0, 1).reshape(t.shape[1], -1, *t.shape[3:])
            return t.reshape(-1, *t.shape[2:])

        flat = {name: rows(t, name) for name, t in optional_tensors.items()}
        with torch.no_grad():
            self._add(rows(logp_new, "logp_new"), rows(logp_old, "logp_old"),  # type: ignore[arg-type]
                      rows(advantages, "advantages"), rows(mask, "mask"), flat, k)  # type: ignore[arg-type]
        self.steps = k
        self.calls += 1

    def _add(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        opt: dict[str, torch.Tensor | None],
        steps: int,
    ) -> None:
        # Runs under no_grad: nothing computed here requires grad, so nothing is detached. ``steps`` (K)
        # whole steps come as K equal blocks of rows.
        import torch

        f64 = torch.float64
        per_row = check_inputs(logp_new, logp_old, advantages, mask, **opt)
        shape = tuple(logp_new.shape)
        device = logp_new.device
        cfg = self.config
        n_rows, n_cols = shape

        adv = _on(advantages, device, f64)
        per_token = adv.dim() == 2
        pos, neg = adv > 0, adv < 0
        groups = _groups(adv, pos, neg)  # [len(_GROUPS), rows] or [len(_GROUPS), rows, T]
        # SAPO's temperature per sequence (or token) follows the advantage's sign.
        tau = groups[1] * (cfg.tau_pos - cfg.tau_neg) + cfg.tau_neg
        if not per_token:
            tau = tau.unsqueeze(1)  # broadcasts over positions

        # A block of sequences at a time. On a CPU every float64 temporary of a block stays in cache
        # and is reused: full-size temporaries would cost more in allocation and page faults than in
        # arithmetic. A small step (or batch of steps) is one block, where each operation counts.
        rows = max(1, CPU_BLOCK_POSITIONS // max(n_cols, 1)) if device.type == "cpu" else max(n_rows, 1)
        feat = torch.empty(len(_TOK), min(rows, n_rows), n_cols, dtype=f64, device=device)
        compact = self.compact if self.compact is not None else device.type == "cpu"
        if rows >= n_rows or steps > 1:
            row_sums, len64, tok, m = self._add_block(logp_new, logp_old, mask, tau,
                                                      groups if per_token else None, per_row, feat, compact, steps)
        else:
            row_sums = torch.empty(len(_TOK), n_rows, dtype=f64, device=device)
            len64 = torch.empty(n_rows, dtype=f64, device=device)
            tok = torch.zeros(1, len(_TOK), len(_GROUPS), dtype=f64, device=device) if per_token else None
            for r0 in range(0, n_rows, rows):
                b = slice(r0, min(r0 + rows, n_rows))
                sums, lens, tok_b, _ = self._add_block(
                    logp_new[b], logp_old[b], mask[b], tau[b], groups[:, b] if per_token else None,
                    {k: v[:, b] if k.startswith("experts") else v[b] for k, v in per_row.items()}, feat, compact, 1,
                )
                row_sums[:, b], len64[b] = sums, lens
                if tok is not None and tok_b is not None:
                    tok += tok_b
            m = _on(mask, device) > 0 if per_token else None
        if tok is None:  # per-sequence groups: weight each sequence's sums, step by step
            tok = _per_step(row_sums, groups, steps)
        self._add_sum("tok", tok)  # [K, len(_TOK), len(_GROUPS)]
        self._add_sequences(row_sums, len64, adv, pos, neg, m, steps)
        rewards = opt.get("rewards")
        if rewards is not None:
            assert self._pivots is not None
            d = _on(rewards, device, f64).reshape(steps, -1) - self._pivots[:, 2:]
            self._add_sum("reward", torch.stack([torch.ones_like(d), d, d.square()], 1).sum(2))

    def _add_block(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        mask: torch.Tensor,
        tau: torch.Tensor,
        groups: torch.Tensor | None,
        opt: dict[str, torch.Tensor],
        feat: torch.Tensor,
        compact: bool,
        steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One block of sequences (all K steps' when K > 1): the token features summed per sequence
        [len(_TOK), b], masked tokens per sequence [b], the per-step group sums when ``groups`` is per
        token, and the mask as booleans."""
        import torch

        f64, device = torch.float64, logp_new.device
        m = _on(mask, device) > 0
        old64 = _on(logp_old, device, f64)
        x = _on(logp_new, device, f64) - old64
        # v - v is 0 exactly for finite v and NaN for NaN and +-Inf: one test for lr's finiteness.
        valid = m & ((x - x) == 0)
        vf = valid.to(f64)
        x = torch.where(valid, x, 0.0)  # lr 0 where excluded: r - 1, k3 and the clip flags vanish there
        if self._pivots is None:  # each step's first kept value (0 if none): the shift that keeps ties exact
            lr_pivot = x.reshape(steps, -1).gather(1, valid.reshape(steps, -1).to(torch.uint8).argmax(1, keepdim=True))
            rw = opt.get("rewards")
            rw_pivot = _on(rw.reshape(steps, -1)[:, :1], device, f64) if rw is not None else lr_pivot
            self._pivots = torch.cat([lr_pivot, lr_pivot.exp() - 1.0, rw_pivot], 1)  # [K, 3]
        n_rows = x.shape[0]
        if feat.shape[1] != n_rows:
            feat = feat[:, :n_rows]
        if steps == 1:
            _token_features(x, vf, tau, self._pivots[0, 0], self._pivots[0, 1], self.config, feat)
        else:  # [K, B, T] views: each step's pivots broadcast over its own rows
            t = x.shape[1]
            _token_features(x.view(steps, -1, t), vf.view(steps, -1, t), tau.view(steps, -1, tau.shape[1]),
                            self._pivots[:, :1, None], self._pivots[:, 1:2, None], self.config,
                            feat.view(len(_TOK), steps, -1, t))
        row_sums = feat.sum(2)
        tok = None if groups is None else _per_step(feat.reshape(len(_TOK), n_rows, -1),
                                                    groups.reshape(len(_GROUPS), n_rows, -1), steps)
        if not compact:  # the grid as the tokens come (no data-dependent shape, no host sync)
            if steps != 1:
                raise InputError("a batch of steps is computed in the compact layout only")
            self._add_grid(x.reshape(-1), valid.reshape(-1))
        # The log-ratios themselves, +inf where excluded: exact quantiles (compact) or the rare exact
        # order statistic outside the grid (masked).
        self._kept_lr.append(torch.where(valid, x, math.inf).reshape(steps, -1))
        if len(opt) > ("rewards" in opt):
            self._add_optional(opt, old64, valid, row_sums[0].reshape(steps, -1).sum(1), steps)
        return row_sums, m.sum(1, dtype=f64), tok, m

    def _add_optional(self, opt: dict[str, torch.Tensor], old64: torch.Tensor, valid: torch.Tensor,
                      n: torch.Tensor, steps: int) -> None:
        """The optional per-token tensors of one block (shapes checked): ``old64`` the float64 logp_old,
        ``valid`` the finite masked tokens, ``n`` [K] their count per step."""
        import torch

        f64, device = torch.float64, old64.device
        entropy = opt.get("entropy")
        if entropy is not None:
            ent = torch.where(valid, _on(entropy, device, f64), 0.0).reshape(steps, -1).sum(1)
            self._add_sum("entropy", torch.stack([ent, n], 1))
        rollout = opt.get("logp_rollout")
        if rollout is not None:
            d = torch.where(valid, old64 - _on(rollout, device, f64), 0.0)
            sums = torch.stack([d, d.expm1() - d]).reshape(2, steps, -1).sum(2)
            self._add_sum("mismatch", torch.cat([sums, n.unsqueeze(0)]).T)
            self._add_max("mismatch", d.abs().reshape(steps, -1).amax(1, keepdim=True) if d.numel()
                          else torch.zeros(steps, 1, dtype=f64, device=device))
        eo, en = opt.get("experts_old"), opt.get("experts_new")
        if eo is not None and en is not None:  # [L, b, T, k]
            # Compare chosen sets, not orders: sort the k ids of each (layer, token).
            changed = (_on(eo, device).sort(-1).values != _on(en, device).sort(-1).values).any(-1).sum(0)
            flips = torch.where(valid, changed, 0).reshape(steps, -1).sum(1, dtype=f64)  # flipped (layer, token)
            self._add_sum("moe", torch.stack([flips, n * eo.shape[0]], 1))

    def _add_sequences(self, row_sums: torch.Tensor, len64: torch.Tensor, adv: torch.Tensor, pos: torch.Tensor,
                       neg: torch.Tensor, m: torch.Tensor | None, steps: int) -> None:
        """GSPO's sequence ratio s_i (geometric mean), its band, dispersion within a sequence, zero signal.

        ``row_sums``: the token features summed per sequence; ``len64``: masked tokens per sequence
        (non-finite ones included); ``m``: the mask as booleans (read for per-token advantages only)."""
        import torch

        assert self._pivots is not None
        cfg, f64 = self.config, torch.float64
        n_i = row_sums[0]
        shift, shift_sq = (row_sums[1:3] / n_i.clamp(min=1)).unbind(0)  # means of lr - pivot, of its square
        lr_pivot = self._pivots[0, 0] if steps == 1 else self._pivots[:, 0].repeat_interleave(n_i.numel() // steps)
        seq_mean = lr_pivot + shift
        s = seq_mean.exp()
        if adv.dim() == 2:  # a sequence's advantage: the mean over its masked tokens
            assert m is not None
            adv = torch.where(m, adv, 0.0).sum(1) / len64.clamp(min=1)
            pos, neg = adv > 0, adv < 0
        seq_clip = torch.where(pos, s > 1.0 + cfg.seq_eps_high, neg & (s < 1.0 - cfg.seq_eps_low))
        d_s = s - 1.0
        seq_features = torch.stack([
            len64.clamp(max=1.0), d_s, d_s.square(), seq_clip, (shift_sq - shift.square()).clamp(min=0).sqrt(),
            adv.abs() < ZERO_SIGNAL_ABS, len64, len64 - n_i,  # non-finite
        ])  # rows of _SEQ (booleans become 0/1); row 0: 1 for sequences with a masked token
        ok = n_i > 0
        # Summed over the sequences with a finite token (the ratio statistics), and with any masked token.
        self._add_sum("seq", _per_step(torch.stack([ok.to(f64), seq_features[0]]), seq_features, steps))
        # Maxima of the response length (0 for a sequence without tokens: only read when some sequence
        # has one), of the sequence mean log-ratio and of its negative (-inf without finite tokens).
        seq_mean = torch.where(ok, seq_mean, -math.inf)
        maxima = torch.stack([len64, seq_mean, torch.where(ok, -seq_mean, -math.inf)])
        self._add_max("seq", maxima.reshape(3, steps, -1).amax(2).T if n_i.numel()
                      else torch.full((steps, 3), -math.inf, dtype=f64, device=n_i.device))

    def _add_grid(self, x: torch.Tensor, valid: torch.Tensor) -> None:
        import torch

        f64, device = torch.float64, x.device
        # The quantile grid: cell 0 = underflow, 1.._GRID_BINS = grid, _GRID_BINS + 1 = overflow, and a dump
        # cell for excluded tokens that is cut off at the end. x * 512 is exact (a power of two), so each
        # cell holds exactly the values of its interval; each keeps its exact min and max, and the count
        # of its values below the wire histogram's edge inside it (see ``_GridTables``).
        tables = _grid_tables(device)
        cell = (x * _GRID_SCALE).floor().clamp(-_GRID_HALF * _GRID_SCALE - 1, _GRID_HALF * _GRID_SCALE).long()
        cell += int(_GRID_HALF * _GRID_SCALE) + 1
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
    def _quantiles(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per step: [min lr, max lr], order statistics j and j+1 of each quantile, their fractions, flags
        for order statistics outside the grid (which ``results`` then computes exactly), and the wire
        histogram: all from one sort of the log-ratios, or from the grid."""
        import torch

        f64 = torch.float64
        if self._grid is None:  # compact mode: the log-ratios are all at hand (+inf where excluded)
            values = self._kept_lr[0] if len(self._kept_lr) == 1 else torch.cat(self._kept_lr, 1)
            if values.shape[1] <= _EXACT_QUANTILES_UP_TO:
                return self._sorted_quantiles(values)
            values = values.reshape(-1)  # one step (batches of steps are small)
            for i in range(0, values.numel(), CPU_BLOCK_POSITIONS):
                part = values[i : i + CPU_BLOCK_POSITIONS]
                self._add_grid(part, part < math.inf)
        est, frac, outside = self._quantile_estimates()
        _, lo, hi, _ = (t[:-1] for t in self._grid)  # type: ignore[union-attr]
        lr_range = torch.stack([lo.amin(), hi.amax()])
        return (lr_range.unsqueeze(0), est.unsqueeze(0), frac.unsqueeze(0), outside.unsqueeze(0).to(f64),
                self._grid_histogram())

    def _sorted_quantiles(
        self, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact quantiles and histogram of each step by sorting its row of ``values`` (excluded tokens,
        +inf, sort last)."""
        import torch

        f64, steps, device = torch.float64, values.shape[0], values.device
        nq = len(QUANTILES)
        if values.shape[1] == 0:  # no positions at all: nothing is read (no kept token)
            zeros = torch.zeros(steps, 2 * nq + LOG_RATIO_HIST_BINS, dtype=f64, device=device)
            return zeros[:, :2], zeros[:, : 2 * nq], zeros[:, :nq], zeros[:, : 2 * nq], zeros[:, -LOG_RATIO_HIST_BINS:]
        ordered = values.sort(1).values
        n = self._sums["tok"][:, 0, :1]  # kept tokens per step, [K, 1]
        # Values below each edge (exact comparisons with the edge doubles), so the left-closed bins:
        below = torch.searchsorted(ordered, _hist_edges(device).expand(steps, -1).contiguous()).to(f64)
        hist = torch.cat([below, n], 1).diff(dim=1, prepend=torch.zeros_like(n))
        last = (n - 1.0).clamp(min=0)
        position = last * _quantile_levels(device)
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
        position = last.to(f64) * _quantile_levels(counts.device)
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
        """Order statistics j and j+1 of each quantile, exactly, from the kept log-ratios (one step)."""
        import torch

        values = torch.cat([t.reshape(-1) for t in self._kept_lr])
        values = values[values < math.inf].sort().values
        lows = [math.floor((n - 1) * q) for _, q in QUANTILES]
        order = lows + [min(j + 1, n - 1) for j in lows]
        return values[torch.tensor(order, device=values.device)].tolist()

    def result(self) -> dict[str, float | list[int]]:
        """The step's statistics (one device-to-host transfer). Empty dict when nothing was added."""
        records = self.results()
        return records[0] if records else {}

    def results(self) -> list[dict[str, float | list[int]]]:
        """Each step's statistics (``add_steps``: K records, in order), in one device-to-host transfer."""
        import torch

        if self.empty or self._pivots is None:
            return []
        steps = self.steps
        lr_range, est, frac, outside, hist = self._quantiles()
        parts: list[tuple[str, torch.Tensor]] = [
            ("pivots", self._pivots),
            ("lr_range", lr_range),
            *((f"sum.{k}", v) for k, v in self._sums.items()),
            *((f"max.{k}", v) for k, v in self._maxes.items()),
            ("hist", hist),
            ("est", est),
            ("frac", frac),
            ("outside", outside),
        ]
        # cat promotes the counts (int64) to float64 exactly: the one transfer of the batch.
        host_rows = torch.cat([v.reshape(steps, -1) for _, v in parts], 1).tolist()
        widths = [v.numel() // steps for _, v in parts]
        records = []
        for row in host_rows:
            host: dict[str, list[float]] = {}
            at = 0
            for (name, _), width in zip(parts, widths, strict=True):
                host[name] = row[at : at + width]
                at += width
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
            records.append(out)
        return records


@functools.cache
def _quantile_levels(device: torch.device) -> torch.Tensor:
    """The levels of ``QUANTILES`` as a float64 tensor on ``device`` (built once per device)."""
    import torch

    return torch.tensor([q for _, q in QUANTILES], dtype=torch.float64, device=device)


def _per_step(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """[K, p, q]: for each step, the sum over its rows (and positions) of a[p] * b[q]. ``a`` [p, rows, ...]
    and ``b`` [q, rows, ...] hold the K steps' rows one step after the other."""
    import torch

    p, q = a.shape[0], b.shape[0]
    if steps == 1:
        return (a.reshape(p, -1) @ b.reshape(q, -1).T).unsqueeze(0)
    return torch.matmul(a.reshape(p, steps, -1).transpose(0, 1), b.reshape(q, steps, -1).permute(1, 2, 0))


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
        half = int(_GRID_HALF * _GRID_SCALE)
        self.dump = _GRID_BINS + 2
        edges = _INNER_EDGES
        # Upper bound of each cell: (c - half) / 512 (exact), +inf for the overflow cell.
        upper = [(c - half) / _GRID_SCALE for c in range(self.dump)] + [math.inf]
        upper[self.dump - 1] = math.inf
        above = torch.searchsorted(torch.tensor(edges, dtype=f64), torch.tensor(upper, dtype=f64))  # edges < U
        above[self.dump] = LOG_RATIO_HIST_BINS
        inside = torch.full((self.dump + 1,), -math.inf, dtype=f64)
        for e in edges:
            scaled = e * _GRID_SCALE
            if scaled != math.floor(scaled):  # an edge strictly inside its cell
                inside[math.floor(scaled) + half + 1] = e
        self.bin_above = above.to(device)
        self.bin_below = (above - 1).clamp(min=0).to(device)
        self.edge_inside = inside.to(device)


@functools.cache
def _grid_tables(device: torch.device) -> _GridTables:
    return _GridTables(device)


# [B, T] positions per block of work on a CPU (temporaries stay in cache); a batch of small steps
# (``_deferred.py``) stays within one block.
CPU_BLOCK_POSITIONS = 1 << 15
_EXACT_QUANTILES_UP_TO = 1 << 16  # on a CPU, steps of at most this many positions get exact quantiles by sorting

# Per-token features (rows of the summed matrices) and the token groups they are summed over (columns).
# Every feature is 0 at excluded positions, so a sum over a group is a sum over its finite masked tokens.
_TOK = ("n", "d_lr", "d_lr2", "d_r", "d_r2", "k3", "w", "f", "sat", "hi", "lo")
_GROUPS = ("all", "pos", "neg", "zero", "abs_pos", "abs_neg")  # abs_*: weighted by |A| (gradient mass)
_SEQ = ("n", "d_s", "d_s2", "clip", "std", "zero_signal", "len", "nonfinite")


def _groups(adv: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """[len(_GROUPS), *adv.shape]: each sequence's (or token's) weight in each group."""
    import torch

    signs = torch.stack([torch.ones_like(pos), pos, neg, adv == 0]).to(adv.dtype)
    # |A| on the signed rows; a NaN advantage is in no signed group and must not leak into the sums.
    weights = torch.where(signs[1:3] > 0, adv.abs(), 0.0)
    return torch.cat([signs, weights])


def _token_features(x: torch.Tensor, vf: torch.Tensor, tau: torch.Tensor, lr_pivot: torch.Tensor,
                    r_pivot: torch.Tensor, cfg: StatsConfig, feat: torch.Tensor) -> None:
    """Write the ``_TOK`` features of the log-ratios ``x`` (0 where excluded; ``vf`` 1.0 where kept) into
    ``feat`` [len(_TOK), *x.shape], in place: every temporary is reused, nothing is stacked. The gate's
    factor 4 is left to the host (multiplying by 4 is exact): ``w`` holds p(1 - p), ``f`` holds p / tau."""
    import torch

    f_n, f_dlr, f_dlr2, f_dr, f_dr2, f_k3, f_w, f_f, f_sat, f_hi, f_lo = feat.unbind(0)
    f_n.copy_(vf)
    torch.sub(x, lr_pivot, out=f_dlr).mul_(vf)
    torch.mul(f_dlr, f_dlr, out=f_dlr2)
    r = x.exp()
    # At an excluded position x = 0, so r = 1 and w = 1: no flag is raised there (StatsConfig's bounds).
    torch.gt(r, 1.0 + cfg.eps_high, out=f_hi)
    torch.lt(r, 1.0 - cfg.eps_low, out=f_lo)
    rm1 = r.sub_(1.0)
    torch.sub(rm1, r_pivot, out=f_dr).mul_(vf)
    torch.mul(f_dr, f_dr, out=f_dr2)
    torch.sub(rm1, x, out=f_k3)
    p = rm1.mul_(tau).sigmoid_()  # SAPO's gate p = sigmoid(tau (r - 1))
    torch.div(p, tau, out=f_f).mul_(vf)
    torch.mul(p, torch.rsub(p, 1.0), out=f_w)
    torch.lt(f_w, cfg.saturation_threshold / 4.0, out=f_sat)  # w = 4p(1 - p) < threshold
    f_w.mul_(vf)


def _moments(h: dict[str, float], name: str, n: float, shifted_sum: float, shifted_sq: float, pivot: float) -> None:
    """(count, mean, M2) from sums of (x - pivot) and (x - pivot)^2."""
    safe = max(n, 1.0)
    h[f"{name}.n"] = n
    h[f"{name}.mean"] = pivot + shifted_sum / safe
    h[f"{name}.m2"] = max(shifted_sq - shifted_sum * shifted_sum / safe, 0.0)


def _named_sums(host: dict[str, list[float]]) -> dict[str, float]:
    """The host copy of the summed feature matrices, under the names ``_assemble`` reads."""
    lr_p, r_p, rw_p = host["pivots"]
    tok_sums, n_groups = host["sum.tok"], len(_GROUPS)  # row-major [len(_TOK), len(_GROUPS)]
    tok = {g: {f: tok_sums[i * n_groups + j] for i, f in enumerate(_TOK)} for j, g in enumerate(_GROUPS)}
    for sums in tok.values():  # the gate's factor 4, left out on the device (exact in binary)
        sums["w"] *= 4.0
        sums["f"] *= 4.0
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
        "n_zero": tok["zero"]["n"],
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
    _moments(h, "seq_ratio", seq["ok"]["n"], seq["ok"]["d_s"], seq["ok"]["d_s2"], 0.0)
    for sign, g, clip in (("pos", pos, "hi"), ("neg", neg, "lo")):
        _moments(h, f"ratio_{sign}", g["n"], g["d_r"], g["d_r2"], r_p)
        h[f"lr_sum_{sign}"] = g["d_lr"] + lr_p * g["n"]
        h[f"w_sum_{sign}"] = g["w"]
        h[f"sat_{sign}"] = g["sat"]
        h[f"clip_{sign}"] = g[clip]
        h[f"gm_{sign}"] = tok[f"abs_{sign}"]["w"]
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


def check_inputs(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 **optional_tensors: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Check one micro-batch's shapes (what ``StepAccumulator.add`` accepts) without computing anything.

    Returns the optional tensors that were given, expert ids as [L, B, T, k].

    Raises:
        InputError: naming the argument whose shape does not fit, or an unknown optional tensor name.
    """
    _check_optional_names(optional_tensors)
    _check_2d("logp_new", logp_new)
    shape = tuple(logp_new.shape)
    for name, t in (("logp_old", logp_old), ("mask", mask)):
        _check_shape(name, t, shape)
    if not hasattr(advantages, "shape") or tuple(advantages.shape) not in (shape[:1], shape):
        raise InputError(
            f"advantages has shape {tuple(getattr(advantages, 'shape', ()))}; expected [B]={shape[:1]} or [B, T]={shape}"
        )
    return _check_optional(optional_tensors, shape)


def _check_optional_names(opt: dict[str, object]) -> None:
    unknown = sorted(set(opt) - set(_OPTIONAL))
    if unknown:
        raise InputError(f"unknown tensor argument(s) {unknown}; expected any of {list(_OPTIONAL)}")


def _check_optional(opt: dict[str, torch.Tensor | None], shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The optional tensors that were given, shapes checked; expert ids as [L, B, T, k]."""
    out = {k: v for k, v in opt.items() if v is not None}
    for name in ("entropy", "logp_rollout"):
        if name in out:
            _check_shape(name, out[name], shape)
    eo, en = out.get("experts_old"), out.get("experts_new")
    if (eo is None) != (en is None):
        raise InputError("experts_old and experts_new must be given together")
    if eo is not None and en is not None:
        if eo.shape != en.shape or eo.dim() not in (3, 4) or tuple(eo.shape[-3:-1]) != shape:
            raise InputError(
                f"experts_old {tuple(eo.shape)} and experts_new {tuple(en.shape)} must both be "
                f"[B, T, k] or [L, B, T, k] with [B, T] = {shape}"
            )
        out["experts_old"], out["experts_new"] = eo.reshape(-1, *eo.shape[-3:]), en.reshape(-1, *en.shape[-3:])
    return out


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
