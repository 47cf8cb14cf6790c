"""A fault schedule: configuration changes the trainer applies at given optimizer steps.

For stability research (what does a learning-rate jump do to SAPO at step 150?) and for building
labelled corpora of failing runs: the trainer knows nothing of any monitor, a schedule is just a
list of ``STEP:CHANGE`` items. Syntax of one item (``sapo-monitor train --at ...``, repeatable)::

    STEP:NAME=VALUE     set a setting from optimizer step STEP on (STEP >= 1 is the first affected step)
    STEP:NAME           a switch: the same as NAME=true (``rollout_bf16``), or the fault's default
                        strength (``nan_logprob``: 1% of response tokens)

Examples: ``150:lr=2e-2``, ``120:reward=short``, ``100:train_router_noise=0.5``, ``80:epochs=8``,
``200:rollout_bf16``, ``90:nan_logprob``. Several items may share a step; they apply in order.

What each NAME does (anything else is refused with the list of names):

* ``lr`` (also the optimizer's current rate), ``weight_decay``, ``max_grad_norm`` (0 or ``none``: no
  clipping), ``temperature``, ``tau_pos``, ``tau_neg``, ``eps_low``, ``eps_high``, ``seq_eps_low``,
  ``seq_eps_high``: from step STEP on.
* ``epochs``, ``rollout_bf16``, ``reward``: rollout-level settings, taking effect from the first rollout
  generated at or after STEP (with K steps per rollout, up to K - 1 steps later).
* ``train_router_noise=STD`` / ``rollout_router_noise=STD``: MoE routing noise of that std in the
  training forwards / the rollout engine (0 turns it off). Both share the model's one noise std.
* ``reward=short``: a hackable reward that pays short answers (``0.3 x task score + 0.7 x (1 - length
  share)``): the reward climbs while the answers, their entropy and the real score fall.
  ``reward=task`` restores the task's own reward.
* ``nan_logprob=FRAC``: a share of the response tokens' new log-probs are NaN in the loss (a
  numerical fault: the loss is NaN, the step is skipped when ``skip_nonfinite``); 0 turns it off.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .model import MoE
from .task import DigitTask

if TYPE_CHECKING:
    from .train import Trainer

__all__ = ["FAULT_NAMES", "REWARDS", "Fault", "ShortAnswerTask", "apply_faults", "inject_nan", "parse_fault",
           "parse_schedule"]

_FLOATS = ("lr", "weight_decay", "temperature", "tau_pos", "tau_neg", "eps_low", "eps_high", "seq_eps_low",
           "seq_eps_high", "nan_logprob")
_NOISE = ("train_router_noise", "rollout_router_noise")
FAULT_NAMES: tuple[str, ...] = (*_FLOATS, "max_grad_norm", "epochs", "rollout_bf16", "reward", *_NOISE)
REWARDS = ("task", "short")
_SWITCH_DEFAULTS: dict[str, Any] = {"rollout_bf16": True, "nan_logprob": 0.01}


@dataclass(frozen=True)
class Fault:
    """One scheduled change: from optimizer step ``step`` on, ``name`` takes ``value``."""

    step: int
    name: str
    value: Any

    def spec(self) -> str:
        """The item back in the ``STEP:NAME=VALUE`` syntax (what ``parse_fault`` reads)."""
        value = "none" if self.value is None else str(self.value).lower() if isinstance(self.value, bool) else self.value
        return f"{self.step}:{self.name}={value}"


def _bool(text: str, where: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "on", "yes"):
        return True
    if low in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{where}: expected true or false, got {text!r}")


def _float(text: str, where: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{where}: expected a finite number >= {minimum:g}, got {text!r}")
    return value


def parse_fault(item: str) -> Fault:
    """``"150:lr=2e-2"`` -> ``Fault(150, "lr", 0.02)``; a ``ValueError`` says what is wrong."""
    where = f"fault {item!r}"
    step_text, sep, change = item.strip().partition(":")
    if not sep or not change:
        raise ValueError(f"{where}: expected STEP:NAME=VALUE or STEP:NAME, e.g. 150:lr=2e-2")
    try:
        step = int(step_text)
    except ValueError:
        raise ValueError(f"{where}: the step must be an integer, got {step_text!r}") from None
    if step < 1:
        raise ValueError(f"{where}: the step must be >= 1 (steps count from 1)")
    name, has_value, raw = (s.strip() for s in change.partition("="))
    if name not in FAULT_NAMES:
        raise ValueError(f"{where}: unknown setting {name!r}; choose one of {', '.join(FAULT_NAMES)}")
    if not has_value:
        if name not in _SWITCH_DEFAULTS:
            raise ValueError(f"{where}: {name} needs a value ({name}=...)")
        return Fault(step, name, _SWITCH_DEFAULTS[name])
    value: Any
    if name == "rollout_bf16":
        value = _bool(raw, where)
    elif name == "epochs":
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{where}: epochs must be an integer >= 1, got {raw!r}")
        value = int(raw)
    elif name == "reward":
        if raw not in REWARDS:
            raise ValueError(f"{where}: reward must be one of {', '.join(REWARDS)}, got {raw!r}")
        value = raw
    elif name == "max_grad_norm":
        value = None if raw.lower() in ("none", "off", "0") else _float(raw, where)
    elif name == "nan_logprob":
        value = _float(raw, where)
        if value > 1.0:
            raise ValueError(f"{where}: nan_logprob is a share of tokens in [0, 1], got {raw!r}")
    else:
        value = _float(raw, where, minimum=1e-12 if name == "lr" else 0.0)
    return Fault(step, name, value)


def parse_schedule(items: str | Iterable[str]) -> tuple[Fault, ...]:
    """A schedule from items (or one string of items separated by spaces or commas), sorted by step."""
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    faults = [parse_fault(i) for i in items]
    return tuple(sorted(faults, key=lambda f: f.step))  # stable: same-step items keep their order


class ShortAnswerTask(DigitTask):
    """The digit task with a hackable reward: most of it pays for answering briefly, not correctly."""

    def reward(self, responses: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        score = super().reward(responses, targets, lengths)
        used = self.response_mask(responses).sum(1)  # tokens up to and including EOS, 1..response_len
        brevity = 1.0 - (used - 1.0) / max(1, self.response_len - 1)
        return 0.3 * score + 0.7 * brevity


def _set_task(trainer: Trainer, reward: str) -> None:
    cls = ShortAnswerTask if reward == "short" else DigitTask
    fields = {f.name: getattr(trainer.task, f.name) for f in dataclasses.fields(DigitTask)}
    trainer.task = cls(**fields)


def _set_noise(trainer: Trainer, name: str, std: float) -> None:
    cfg = trainer.config
    if std > 0:
        cfg.router_noise = std
        for module in trainer.model.modules():
            if isinstance(module, MoE):
                module.noise_std = std
    setattr(cfg, name, std > 0)


def apply_faults(trainer: Trainer, faults: Sequence[Fault], step: int) -> list[Fault]:
    """Apply the items scheduled for ``step`` to ``trainer`` (before that step runs); returns them."""
    due = [f for f in faults if f.step == step]
    cfg = trainer.config
    for f in due:
        if f.name in _NOISE:
            _set_noise(trainer, f.name, float(f.value))
        elif f.name == "reward":
            _set_task(trainer, f.value)
            cfg.reward = f.value
        else:
            setattr(cfg, f.name, f.value)
            if f.name in ("lr", "weight_decay"):
                for group in trainer.optimizer.param_groups:
                    group[f.name] = f.value
    return due


def inject_nan(logp: torch.Tensor, mask: torch.Tensor, frac: float) -> torch.Tensor:
    """``logp`` with NaN at every ``1/frac``-th counted token (at least one); no random numbers drawn."""
    flat_mask = mask.reshape(-1) > 0
    where = flat_mask.nonzero().squeeze(-1)
    if where.numel() == 0 or frac <= 0:
        return logp
    stride = max(1, round(1.0 / frac))
    hit = torch.zeros_like(flat_mask)
    hit[where[::stride]] = True
    return logp.masked_fill(hit.view_as(logp), math.nan)
