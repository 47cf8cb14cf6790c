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
  accelerator, use a fine histogram (``sketch.py``: bin width 1/512 over [-8, 8) with each bin's exact
  min and max): exact when the bracketing order statistics are alone in their bin or tied, within 1/512
  otherwise; an order statistic outside [-8, 8) is then computed exactly from the kept log-ratios. The
  wire histogram comes from the same sort or grid, exactly either way.

Everything is computed in float64 on the inputs' device (float32 or bf16 inputs are upcast block by
block), without gradients, in the [B, T] layout: excluded positions are zeroed, never gathered, so no
shape depends on the data. A step's numbers reach the host in one transfer (a second one only for a
quantile outside [-8, 8)). On a CPU every log-ratio is also kept, for exact quantiles by sorting.
Log-ratios above ~709 overflow the float64 ratio: ratio statistics of such a step are infinite/NaN.

The package's parts: ``config`` (thresholds, torch-free), ``checks`` (input shapes), ``features`` (what
is summed), ``sketch`` (quantiles and histogram), ``accumulator`` (the merge over micro-batches) and
``catalogue`` (summary -> catalogue names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sapo_monitor.client.stats.accumulator import StepAccumulator
from sapo_monitor.client.stats.checks import check_inputs
from sapo_monitor.client.stats.config import CPU_BLOCK_POSITIONS, QUANTILES, ZERO_SIGNAL_ABS, StatsConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "CPU_BLOCK_POSITIONS",
    "QUANTILES",
    "ZERO_SIGNAL_ABS",
    "StatsConfig",
    "StepAccumulator",
    "check_inputs",
    "compute_step_stats",
]


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

