"""The synthetic verifiable task: transform a short digit string, scored with partial credit.

A prompt is ``PAD.. BOS d1 .. dn SEP`` (left-padded to a fixed length, so a batch needs no attention
mask); the answer is the transformed digits followed by ``EOS``. The reward is the share of target
positions answered correctly, divided by the longer of the target and the answer, so random answers
already score around ``1/base`` and a group of responses has reward variance from the first step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TASKS", "DigitTask", "TaskBatch"]

TASKS = ("reverse", "sort", "copy")


@dataclass(frozen=True)
class TaskBatch:
    prompts: torch.Tensor  # [P, prompt_len] token ids
    targets: torch.Tensor  # [P, max_digits] target digits, PAD beyond each target's length
    lengths: torch.Tensor  # [P] number of target digits


@dataclass(frozen=True)
class DigitTask:
    """Digits ``0..base-1`` are tokens ``0..base-1``; four special tokens follow them."""

    name: str = "reverse"
    base: int = 10
    min_digits: int = 3
    max_digits: int = 5

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.name!r}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError("need 1 <= min_digits <= max_digits")

    @property
    def pad(self) -> int:
        return self.base

    @property
    def bos(self) -> int:
        return self.base + 1

    @property
    def sep(self) -> int:
        return self.base + 2

    @property
    def eos(self) -> int:
        return self.base + 3

    @property
    def vocab_size(self) -> int:
        return self.base + 4

    @property
    def prompt_len(self) -> int:
        return self.max_digits + 2

    @property
    def response_len(self) -> int:
        return self.max_digits + 1  # the digits and EOS

    def _transform(self, digits: torch.Tensor) -> torch.Tensor:
        if self.name == "reverse":
            return digits.flip(0)
        if self.name == "sort":
            return digits.sort().values
        return digits

    def sample(self, n: int, generator: torch.Generator) -> TaskBatch:
        """``n`` random prompts with their targets."""
        lengths = torch.randint(self.min_digits, self.max_digits + 1, (n,), generator=generator)
        digits = torch.randint(0, self.base, (n, self.max_digits), generator=generator)
        prompts = torch.full((n, self.prompt_len), self.pad, dtype=torch.long)
        targets = torch.full((n, self.max_digits), self.pad, dtype=torch.long)
        for i, n_i in enumerate(lengths.tolist()):
            d = digits[i, :n_i]
            prompts[i, self.prompt_len - n_i - 2] = self.bos
            prompts[i, self.prompt_len - n_i - 1 : -1] = d
            prompts[i, -1] = self.sep
            targets[i, :n_i] = self._transform(d)
        return TaskBatch(prompts=prompts, targets=targets, lengths=lengths)

    def answers(self, batch: TaskBatch) -> torch.Tensor:
        """The correct responses [P, response_len] (digits, EOS, then PAD): used by the warm start."""
        out = torch.full((batch.targets.shape[0], self.response_len), self.pad, dtype=torch.long)
        out[:, : self.max_digits] = batch.targets
        out[torch.arange(out.shape[0]), batch.lengths] = self.eos
        return out

    def response_mask(self, responses: torch.Tensor) -> torch.Tensor:
        """1.0 on generated tokens up to and including the first EOS, 0.0 after it. [B, T]"""
        is_eos = (responses == self.eos).long()
        eos_before = is_eos.cumsum(1) - is_eos  # EOS tokens strictly before each position
        return (eos_before == 0).float()

    def reward(self, responses: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Graded reward in [0, 1] for responses [B, T] against targets [B, max_digits]."""
        mask = self.response_mask(responses)
        is_digit = (responses < self.base) & (mask > 0)
        # The answer's digits end at its first non-digit token (EOS or a stray special token).
        answer_len = (is_digit.long().cumprod(1)).sum(1)
        pos = torch.arange(self.max_digits)
        in_target = pos.unsqueeze(0) < lengths.unsqueeze(1)
        in_answer = pos.unsqueeze(0) < answer_len.unsqueeze(1)
        hits = ((responses[:, : self.max_digits] == targets) & in_target & in_answer).sum(1)
        return hits.float() / torch.maximum(lengths, answer_len).clamp(min=1).float()
