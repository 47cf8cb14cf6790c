"""Attach-time check that the installed TRL still has every name the TRL adapter hooks into.

The adapter wraps private TRL methods and reads dictionary keys that TRL may rename in any release.
A renamed name must fail here, loudly and with the name, when ``client.attach`` is called (and in
this project's tests), never by silently sending empty records from a user's run.
"""

from __future__ import annotations

import inspect
from typing import Any

from sapo_monitor.client.errors import SapoMonitorError

GRPO_TRAINER_PATH = "trl.trainer.grpo_trainer.GRPOTrainer"

# method name -> parameters the adapter relies on (by name)
REQUIRED_METHODS: dict[str, tuple[str, ...]] = {
    "compute_loss": ("model", "inputs", "return_outputs", "num_items_in_batch"),
    "training_step": ("model", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "compute_entropy",
    ),
    "_generate_and_score_completions": (),
    "_calculate_rewards": (),
    "add_callback": ("callback",),
}

REQUIRED_ARGS = (
    "loss_type",
    "importance_sampling_level",
    "sapo_temperature_pos",
    "sapo_temperature_neg",
    "epsilon",
    "epsilon_high",
    "num_iterations",
    "steps_per_generation",
    "gradient_accumulation_steps",
)

# Keys of the micro-batch dict that TRL's `_generate_and_score_completions` builds; the adapter
# reads them in `compute_loss`. Checked against TRL's own source when it is available.
INPUT_KEYS = ("completion_mask", "advantages", "old_per_token_logps", "sampling_per_token_logps")
REQUIRED_INPUT_KEYS = ("completion_mask", "advantages")

# Optional hooks: without them one statistic is missing, which is said once at attach time.
OPTIONAL_METHODS = {
    "_get_grad_norm": "grad_norm (transformers < 5 has no Trainer._get_grad_norm)",
    "_get_learning_rate": "lr from Trainer._get_learning_rate (falls back to lr_scheduler.get_last_lr)",
}


class IncompatibleTRLError(SapoMonitorError, RuntimeError):
    """The trainer lacks a name the TRL adapter needs (TRL renamed or removed it)."""


def trl_version() -> str:
    """The installed TRL's version string ("unknown" if it cannot be read)."""
    try:
        import trl  # the trainer is a TRL trainer, so trl is importable here

        return str(trl.__version__)
    except Exception:  # pragma: no cover - only when trl is broken
        return "unknown"


def _grpo_base(trainer: Any) -> type[Any] | None:
    for cls in type(trainer).__mro__:
        if f"{cls.__module__}.{cls.__qualname__}" == GRPO_TRAINER_PATH:
            return cls
    return None


def check_trainer(trainer: Any, *, need_metrics: bool = True) -> list[str]:
    """Raise :class:`IncompatibleTRLError` naming every missing required name; return soft gaps.

    The returned list names statistics that will be missing (optional hooks absent), for the caller
    to log once.
    """
    problems: list[str] = []
    for name, params in REQUIRED_METHODS.items():
        fn = getattr(trainer, name, None)
        if not callable(fn):
            problems.append(f"method {type(trainer).__name__}.{name} is missing")
            continue
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # pragma: no cover - builtins / C extensions
            continue
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        missing = [p for p in params if p not in sig.parameters and not has_var_kw]
        if missing:
            problems.append(f"{name}() no longer takes {', '.join(missing)}")

    args = getattr(trainer, "args", None)
    if args is None:
        problems.append("trainer.args is missing")
    else:
        problems += [f"GRPOConfig.{a} is missing" for a in REQUIRED_ARGS if not hasattr(args, a)]
    if need_metrics and not isinstance(getattr(trainer, "_metrics", None), dict):
        problems.append("trainer._metrics (TRL's per-mode metric buffers) is missing")

    base = _grpo_base(trainer)
    if base is not None:
        try:
            source = inspect.getsource(base._generate_and_score_completions)
        except (OSError, TypeError):  # source not shipped: the runtime check in the adapter remains
            source = ""
        if source:
            problems += [
                f"TRL's _generate_and_score_completions no longer builds the {key!r} input"
                for key in INPUT_KEYS
                if f'"{key}"' not in source
            ]

    if problems:
        raise IncompatibleTRLError(
            f"sapo-monitor's TRL adapter does not match trl {trl_version()} "
            f"({type(trainer).__module__}.{type(trainer).__qualname__}): "
            + "; ".join(problems)
            + ". Pin trl to a version listed in the sapo-monitor[trl] extra or report this."
        )
    return [what for name, what in OPTIONAL_METHODS.items() if not callable(getattr(trainer, name, None))]
