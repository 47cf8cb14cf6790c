"""Rollouts: sample G responses per prompt from the old policy, score them, compute group advantages.

The "inference engine" is the same model, optionally perturbed to emulate the training-inference
mismatch of real systems (router noise on MoE layers, and/or a bfloat16 copy of the weights). What
that engine saw is kept as ``logp_rollout``; ``logp_old`` is pi_old recomputed at training precision,
which is what the losses use, as in most RL frameworks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .model import Policy
from .task import DigitTask

__all__ = ["Rollout", "generate_rollout", "group_advantages", "sequence_logprobs"]


@dataclass
class Rollout:
    """One rollout batch: P prompts x G responses, flattened to B = P * G rows (group-major)."""

    tokens: torch.Tensor  # [B, prompt_len + T] prompt followed by response
    responses: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T] float
    rewards: torch.Tensor  # [B]
    advantages: torch.Tensor  # [B]
    logp_old: torch.Tensor  # [B, T] pi_old at training precision
    logp_rollout: torch.Tensor  # [B, T] as the (possibly perturbed) rollout engine sampled them
    experts_old: torch.Tensor | None  # [L, B, T, k] experts pi_old chose for each response token
    group_size: int


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """``(R - mean) / (std + eps)`` within each consecutive group of ``group_size`` rewards.

    Population std (ddof = 0), so a group of equal rewards gets all-zero advantages.
    """
    groups = rewards.view(-1, group_size)
    mean = groups.mean(1, keepdim=True)
    std = groups.std(1, keepdim=True, unbiased=False)
    return ((groups - mean) / (std + eps)).view(-1)


def sequence_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, prompt_len: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [B, T] of the response tokens and the entropy [B, T] of each response position.

    The policy is the model's softmax at the sampling ``temperature``, in training as in rollouts.
    """
    # The logit at position j predicts token j + 1: response token t is predicted at prompt_len - 1 + t.
    resp_logits = logits[:, prompt_len - 1 : -1].float() / temperature
    logp_all = F.log_softmax(resp_logits, dim=-1)
    logp = logp_all.gather(-1, tokens[:, prompt_len:].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


@torch.no_grad()
def _sample(
    engine: Policy,
    prompts: torch.Tensor,
    task: DigitTask,
    temperature: float,
    router_noise: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Autoregressive temperature sampling; returns tokens [B, S] and the engine's log-probs [B, T]."""
    tokens = prompts
    logps = []
    for _ in range(task.response_len):
        logits = engine(tokens, router_noise=router_noise, generator=generator).logits[:, -1].float()
        logp = F.log_softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(logp.exp(), 1, generator=generator)
        logps.append(logp.gather(-1, nxt))
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens, torch.cat(logps, dim=1)


@torch.no_grad()
def generate_rollout(
    policy: Policy,
    task: DigitTask,
    *,
    n_prompts: int,
    group_size: int,
    temperature: float,
    generator: torch.Generator,
    rollout_router_noise: bool = False,
    rollout_bf16: bool = False,
) -> Rollout:
    """Sample, score and prepare one rollout batch from the current weights (which become pi_old)."""
    batch = task.sample(n_prompts, generator)
    prompts = batch.prompts.repeat_interleave(group_size, dim=0)
    engine = policy
    if rollout_bf16:
        engine = copy.deepcopy(policy).to(torch.bfloat16)
    was_training = policy.training
    policy.eval()
    tokens, logp_rollout = _sample(engine, prompts, task, temperature, rollout_router_noise, generator)
    # Padding after EOS: fixed token ids so the recomputed log-probs there are finite and ignored.
    responses = tokens[:, task.prompt_len :]
    mask = task.response_mask(responses)
    responses = torch.where(mask > 0, responses, torch.full_like(responses, task.pad))
    tokens = torch.cat([tokens[:, : task.prompt_len], responses], dim=1)
    out = policy(tokens)
    logp_old, _ = sequence_logprobs(out.logits, tokens, task.prompt_len, temperature)
    policy.train(was_training)
    rewards = task.reward(
        responses,
        batch.targets.repeat_interleave(group_size, 0),
        batch.lengths.repeat_interleave(group_size, 0),
    )
    experts_old = None
    if out.experts is not None:
        experts_old = out.experts[:, :, task.prompt_len - 1 : -1]
    return Rollout(
        tokens=tokens,
        responses=responses,
        mask=mask,
        rewards=rewards,
        advantages=group_advantages(rewards, group_size),
        logp_old=logp_old * mask,
        logp_rollout=logp_rollout * mask,
        experts_old=experts_old,
        group_size=group_size,
    )
