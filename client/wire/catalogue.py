"""The metric catalogue and the log-ratio histogram's bins (what the client computes, the service stores)."""

from __future__ import annotations

import math

__all__ = ["CATALOGUE", "LOG_RATIO_HIST_BINS", "LOG_RATIO_HIST_EDGES", "LOG_RATIO_HIST_NAME", "log_ratio_hist_edges"]

# hist.log_ratio: lr < -2, then 40 bins of width 0.1 covering [-2, 2) left-closed, then lr >= 2.
LOG_RATIO_HIST_NAME = "log_ratio"
LOG_RATIO_HIST_BINS = 42


def log_ratio_hist_edges() -> list[float]:
    """The 43 bin edges of the log-ratio histogram, ``-inf`` and ``+inf`` at the ends."""
    inner = [round(-2.0 + 0.1 * k, 10) for k in range(41)]
    return [-math.inf, *inner, math.inf]


LOG_RATIO_HIST_EDGES: tuple[float, ...] = tuple(log_ratio_hist_edges())

# The metric catalogue: wire name -> one-line meaning (used for Prometheus HELP text and docs).
# Statistics over an empty set are absent from a record, never NaN.
CATALOGUE: dict[str, str] = {
    "tokens.count": "Masked (response) tokens in the step.",
    "sequences.count": "Sequences with at least one masked token.",
    "response_len.mean": "Mean masked tokens per sequence.",
    "response_len.max": "Most masked tokens in one sequence.",
    "ratio.mean": "Mean token importance ratio r = pi_theta / pi_old.",
    "ratio.std": "Population std of token importance ratios.",
    "ratio.min": "Smallest token importance ratio.",
    "ratio.max": "Largest token importance ratio.",
    "log_ratio.mean": "Mean token log-ratio log pi_theta - log pi_old.",
    "log_ratio.std": "Population std of token log-ratios.",
    "log_ratio.abs_max": "Largest absolute token log-ratio.",
    "log_ratio.p01": "1st percentile of token log-ratios.",
    "log_ratio.p05": "5th percentile of token log-ratios.",
    "log_ratio.p50": "Median token log-ratio.",
    "log_ratio.p95": "95th percentile of token log-ratios.",
    "log_ratio.p99": "99th percentile of token log-ratios.",
    "kl.k1": "KL(pi_old || pi_theta) estimate k1 = mean(-log r).",
    "kl.k3": "KL(pi_old || pi_theta) estimate k3 = mean(r - 1 - log r).",
    "clip.token_frac_high": "Share of tokens with A > 0 and r > 1 + eps_high (GRPO would clip).",
    "clip.token_frac_low": "Share of tokens with A < 0 and r < 1 - eps_low (GRPO would clip).",
    "clip.token_frac": "Share of tokens GRPO's hard clip would silence.",
    "seq_ratio.mean": "Mean sequence ratio s_i (geometric mean of token ratios).",
    "seq_ratio.std": "Population std of sequence ratios.",
    "seq_ratio.min": "Smallest sequence ratio.",
    "seq_ratio.max": "Largest sequence ratio.",
    "clip.seq_frac": "Share of sequences GSPO's sequence clip would silence.",
    "seq.log_ratio_dispersion": "Mean over sequences of the std of log-ratios within the sequence.",
    "gate.weight_mean": "Mean SAPO gradient weight w = 4p(1-p) over tokens with A != 0.",
    "gate.value_mean": "Mean SAPO gate value f = 4p/tau over tokens with A != 0.",
    "gate.saturated_frac": "Share of tokens with A != 0 whose SAPO weight w is below the saturation threshold.",
    "sign.pos.token_frac": "Share of tokens with positive advantage.",
    "sign.pos.ratio_mean": "Mean ratio of positive-advantage tokens.",
    "sign.pos.ratio_std": "Std of ratio of positive-advantage tokens.",
    "sign.pos.log_ratio_mean": "Mean log-ratio of positive-advantage tokens.",
    "sign.pos.gate_weight_mean": "Mean SAPO weight of positive-advantage tokens.",
    "sign.pos.saturated_frac": "Share of positive-advantage tokens with saturated SAPO gate.",
    "sign.pos.clip_frac": "Share of positive-advantage tokens with r > 1 + eps_high.",
    "sign.pos.grad_share": "Share of gradient mass sum(w|A|) from positive-advantage tokens.",
    "sign.neg.token_frac": "Share of tokens with negative advantage.",
    "sign.neg.ratio_mean": "Mean ratio of negative-advantage tokens.",
    "sign.neg.ratio_std": "Std of ratio of negative-advantage tokens.",
    "sign.neg.log_ratio_mean": "Mean log-ratio of negative-advantage tokens.",
    "sign.neg.gate_weight_mean": "Mean SAPO weight of negative-advantage tokens.",
    "sign.neg.saturated_frac": "Share of negative-advantage tokens with saturated SAPO gate.",
    "sign.neg.clip_frac": "Share of negative-advantage tokens with r < 1 - eps_low.",
    "sign.neg.grad_share": "Share of gradient mass sum(w|A|) from negative-advantage tokens.",
    "sign.zero.token_frac": "Share of tokens with zero advantage.",
    "groups.zero_signal_frac": "Share of sequences with |A| < 1e-8 (no learning signal).",
    "entropy.mean": "Mean token entropy of the current policy.",
    "reward.mean": "Mean reward of the step's sequences.",
    "reward.std": "Population std of the step's rewards.",
    "mismatch.log_ratio_mean": "Mean of logp_old - logp_rollout (training-inference mismatch).",
    "mismatch.kl_k3": "k3 KL estimate of the training-inference mismatch.",
    "mismatch.abs_max": "Largest |logp_old - logp_rollout|.",
    "moe.route_flip_frac": "Share of (layer, token) pairs whose chosen expert set changed.",
    "loss": "Training loss of the optimizer step.",
    "grad_norm": "Gradient norm of the optimizer step (before clipping).",
    "lr": "Learning rate of the optimizer step.",
    "nonfinite.token_count": "Masked tokens whose log-ratio is NaN or infinite.",
}
