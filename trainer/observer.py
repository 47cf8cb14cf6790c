"""The trainer's observer hook: how the outside world (the client, tests) sees each optimizer step.

Register with ``trainer.add_observer(fn)``; ``fn(batch: StepBatch)`` is called once after every
optimizer step. Observers cannot change training: they get detached copies of the step's tensors,
their exceptions are logged and swallowed, and the trainer's random number generators are restored
after each call, so a run with observers is bitwise the run without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Observer", "StepBatch"]


@dataclass(frozen=True)
class StepBatch:
    """The tensors and scalars of one optimizer step (one mini-batch of one rollout).

    Shapes: B sequences (responses) in the mini-batch, T response positions, L MoE layers, k experts
    chosen per token. ``mask`` is 1.0 on response tokens that count and 0.0 on padding.
    """

    step: int  # global optimizer step, starting at 1
    logp_new: torch.Tensor  # [B, T] log pi_theta of the sampled tokens (before this step's update)
    logp_old: torch.Tensor  # [B, T] log pi_old: what the rollout policy gave (training precision)
    advantages: torch.Tensor  # [B] group-relative advantage of each response
    mask: torch.Tensor  # [B, T] float, 1 on counted response tokens
    rewards: torch.Tensor  # [B] reward of each response
    group_size: int  # G responses per prompt
    loss: float
    grad_norm: float  # total gradient norm before clipping
    lr: float
    config: dict[str, Any] = field(default_factory=dict)  # the run's TrainConfig as plain data
    entropy: torch.Tensor | None = None  # [B, T] entropy of pi_theta at each position
    logp_rollout: torch.Tensor | None = None  # [B, T] log-probs as the (perturbed) rollout engine saw them
    experts_old: torch.Tensor | None = None  # [L, B, T, k] expert ids chosen under pi_old (MoE only)
    experts_new: torch.Tensor | None = None  # [L, B, T, k] expert ids chosen under pi_theta (MoE only)
    rollout: int = 0  # index of the rollout batch this step trained on
    minibatch: int = 0  # index of the mini-batch update within that rollout (0..K-1)


Observer = Callable[[StepBatch], None]
