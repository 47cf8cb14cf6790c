"""The policy losses, exactly as in ``docs/sapo-primer.md``: pure functions, no state.

Every loss takes ``(logp_new, logp_old, advantages, mask, config)``: log-probs of the sampled tokens
[B, T] under the current and the rollout policy, one advantage per response [B], and a float mask
[B, T] (1 on response tokens, 0 on padding). It returns the scalar loss and its per-token pieces.

Aggregation: ``sapo``, ``grpo`` and ``pg`` average tokens within each response and then responses
("sequence-mean of token-mean"); ``gspo`` averages its per-response terms. Responses with no masked
token are left out of the mean; padding never reaches the loss or its gradient, even when its
log-probs are non-finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["ALGORITHMS", "LossConfig", "LossOutput", "get_loss", "grpo", "gspo", "pg", "sapo"]


@dataclass(frozen=True)
class LossConfig:
    tau_pos: float = 1.0  # SAPO gate temperature for A > 0
    tau_neg: float = 1.05  # SAPO gate temperature for A <= 0: closes faster (primer)
    eps_low: float = 0.2  # GRPO token band [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.2
    seq_eps_low: float = 3e-4  # GSPO sequence band
    seq_eps_high: float = 4e-4


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    ratio: torch.Tensor  # [B, T] token ratio r = exp(logp_new - logp_old), 1 on padding
    objective: torch.Tensor  # [B, T] per-token surrogate before aggregation, 0 on padding
    weight: torch.Tensor  # [B, T] token weight in the mean (mask / |y_i| / n_seq); sums to 1


def _masked_log_ratio(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where() rather than multiply: 0 * inf is NaN, and NaN would leak through the backward pass.
    return torch.where(mask > 0, logp_new - logp_old, torch.zeros_like(logp_new))


def _token_weights(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token weights of the sequence-mean of token-means, and per-sequence weights [B]."""
    lengths = mask.sum(1)
    has_tokens = (lengths > 0).to(mask.dtype)
    seq_w = has_tokens / has_tokens.sum().clamp(min=1)
    return mask / lengths.clamp(min=1).unsqueeze(1) * seq_w.unsqueeze(1), seq_w


def _aggregate(objective: torch.Tensor, mask: torch.Tensor, ratio: torch.Tensor) -> LossOutput:
    weight, _ = _token_weights(mask)
    objective = torch.where(mask > 0, objective, torch.zeros_like(objective))
    return LossOutput(loss=-(objective * weight).sum(), ratio=ratio, objective=objective, weight=weight)


def sapo(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig = LossConfig(),
) -> LossOutput:
    """Soft gate ``f(r) = (4/tau) sigmoid(tau (r - 1))``, tau by the sign of A; gradient weight 4p(1-p)."""
    ratio = _masked_log_ratio(logp_new, logp_old, mask).exp()
    adv = advantages.unsqueeze(1).expand_as(ratio)
    tau = torch.where(adv > 0, torch.full_like(ratio, config.tau_pos), torch.full_like(ratio, config.tau_neg))
    gate = 4.0 / tau * torch.sigmoid(tau * (ratio - 1.0))
    return _aggregate(gate * adv, mask, ratio)


def grpo(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig = LossConfig(),
) -> LossOutput:
    """Token-level hard clip: ``min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``."""
    ratio = _masked_log_ratio(logp_new, logp_old, mask).exp()
    adv = advantages.unsqueeze(1).expand_as(ratio)
    clipped = ratio.clamp(1.0 - config.eps_low, 1.0 + config.eps_high)
    return _aggregate(torch.minimum(ratio * adv, clipped * adv), mask, ratio)


def gspo(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig = LossConfig(),
) -> LossOutput:
    """Sequence-level hard clip on ``s_i = exp(mean_t log r_{i,t})`` (geometric mean over masked tokens)."""
    log_ratio = _masked_log_ratio(logp_new, logp_old, mask)
    lengths = mask.sum(1)
    seq_ratio = (log_ratio.sum(1) / lengths.clamp(min=1)).exp()  # [B]
    clipped = seq_ratio.clamp(1.0 - config.seq_eps_low, 1.0 + config.seq_eps_high)
    seq_obj = torch.minimum(seq_ratio * advantages, clipped * advantages)  # [B]
    _, seq_w = _token_weights(mask)
    # Per-token pieces: each token carries its sequence's term, weighted 1/|y_i| so they sum to it.
    token_weight = mask / lengths.clamp(min=1).unsqueeze(1) * seq_w.unsqueeze(1)
    objective = torch.where(mask > 0, seq_obj.unsqueeze(1).expand_as(mask), torch.zeros_like(mask))
    return LossOutput(
        loss=-(seq_obj * seq_w).sum(), ratio=log_ratio.exp(), objective=objective, weight=token_weight
    )


def pg(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig = LossConfig(),
) -> LossOutput:
    """Unclipped importance-weighted policy gradient ``r A``: the unstable baseline."""
    ratio = _masked_log_ratio(logp_new, logp_old, mask).exp()
    return _aggregate(ratio * advantages.unsqueeze(1), mask, ratio)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LossConfig], LossOutput]
ALGORITHMS: dict[str, LossFn] = {"sapo": sapo, "grpo": grpo, "gspo": gspo, "pg": pg}


def get_loss(algo: str) -> LossFn:
    """The loss function named ``algo``; raises ``ValueError`` naming the choices otherwise."""
    try:
        return ALGORITHMS[algo]
    except KeyError:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {sorted(ALGORITHMS)}") from None
