"""The TRL adapter's hooks: ``TRLAdapter`` wraps one ``GRPOTrainer`` instance's methods (see ``trl.py`` for
how a TRL step maps onto the monitor) and closes each optimizer step, mirroring key statistics into TRL's
own logs."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

from sapo_monitor.client.adapters import trl_config
from sapo_monitor.client.adapters.trl_batches import REWARD_KEY, TRLMicroBatches, to_host

__all__ = ["MIRROR_KEYS", "MIRROR_PREFIX", "TRLAdapter"]

logger = logging.getLogger("sapo_monitor.client.trl")

# Statistics mirrored into TRL's own logs (W&B, trackio, ... see them as sapo_monitor/<name>).
MIRROR_PREFIX = "sapo_monitor/"
MIRROR_KEYS: tuple[str, ...] = (
    "ratio.std",
    "log_ratio.abs_max",
    "kl.k3",
    "clip.token_frac",
    "clip.seq_frac",
    "gate.weight_mean",
    "gate.saturated_frac",
    "sign.neg.saturated_frac",
)


class TRLAdapter(TRLMicroBatches):
    """Hooks one ``GRPOTrainer`` instance and feeds its optimizer steps to a ``Monitor``.

    Use :func:`attach_trl` (or ``client.attach``); this class is public for tests and subclasses.
    """

    def __init__(self, trainer: Any, monitor: Any, *, mirror_to_trainer_logs: bool = True) -> None:
        self.trainer = trainer
        self.monitor = monitor
        self.mirror = mirror_to_trainer_logs
        self.on_policy = not trl_config.computes_old_logps(trainer.args, getattr(trainer, "num_iterations", None))
        self.steps_sent = 0
        self.micro_batches_seen = 0
        self._in_training_step = False
        self._capture_armed = False
        self._captured: tuple[Any, Any] | None = None
        self._last_rewards: Any = None
        self._loss_sum: Any = None
        self._fallback_rewards: list[float] = []  # rewards of a step whose log-probs were not captured
        self._lr: float | None = None
        self._grad_norm: Any = None
        self._warned: set[str] = set()
        self._disabled_reason: str | None = None
        self._originals: dict[str, tuple[Any, bool]] = {}  # name -> (original, was an instance attribute)

    # ---- installation -------------------------------------------------------------------------
    def install(self) -> TRLAdapter:
        """Wrap the instance's methods (never the class's) and add the step callback."""
        t = self.trainer
        for name, wrapper in (
            ("training_step", self._wrap_training_step),
            ("compute_loss", self._wrap_compute_loss),
            ("_get_per_token_logps_and_entropies", self._wrap_logps),
            ("_calculate_rewards", self._wrap_calculate_rewards),
            ("_generate_and_score_completions", self._wrap_generate),
            ("_get_grad_norm", self._wrap_grad_norm),
        ):
            original = getattr(t, name, None)
            if original is None:
                continue  # optional hook (checked and reported by trl_compat)
            self._originals[name] = (original, name in vars(t))
            setattr(t, name, functools.wraps(original)(wrapper(original)))
        from sapo_monitor.client.adapters.trl_callback import SapoMonitorCallback

        t.add_callback(SapoMonitorCallback(self))
        if self.on_policy:
            logger.warning(trl_config.on_policy_explanation(t.args))
        return self

    def uninstall(self) -> None:
        """Restore the trainer's original methods (the callback stays and becomes a no-op)."""
        for name, (original, own) in self._originals.items():
            if own:
                setattr(self.trainer, name, original)
            else:
                vars(self.trainer).pop(name, None)
        self._originals.clear()
        self._disabled_reason = "uninstalled"

    # ---- wrappers -----------------------------------------------------------------------------
    def _wrap_training_step(self, original: Any) -> Any:
        def training_step(*args: Any, **kwargs: Any) -> Any:
            self._in_training_step = True
            try:
                loss = original(*args, **kwargs)
            finally:
                self._in_training_step = False
            detached = loss.detach()
            self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
            return loss

        return training_step

    def _wrap_compute_loss(self, original: Any) -> Any:
        def compute_loss(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            rewards = None
            if isinstance(inputs, dict) and REWARD_KEY in inputs:
                rewards = inputs[REWARD_KEY]
                # TRL's loss sees exactly the dict it built, without our key.
                inputs = {k: v for k, v in inputs.items() if k != REWARD_KEY}
            if not self._in_training_step or self._disabled_reason is not None:
                return original(model, inputs, *args, **kwargs)
            self._captured = None
            self._capture_armed = True
            try:
                result = original(model, inputs, *args, **kwargs)
            finally:
                self._capture_armed = False
            captured, self._captured = self._captured, None
            self._observe(inputs, captured, rewards)
            return result

        return compute_loss

    def _wrap_logps(self, original: Any) -> Any:
        import torch

        def get_logps(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            model = args[0] if args else kwargs.get("model")
            if (
                self._capture_armed
                and self._captured is None
                and torch.is_grad_enabled()
                and model is not getattr(self.trainer, "ref_model", None)
            ):
                logps, entropies = out[0], out[1]
                self._captured = (logps.detach(), None if entropies is None else entropies.detach())
            return out

        return get_logps

    def _wrap_calculate_rewards(self, original: Any) -> Any:
        def calculate_rewards(*args: Any, **kwargs: Any) -> Any:
            rewards_per_func = original(*args, **kwargs)
            self._last_rewards = rewards_per_func.detach()
            return rewards_per_func

        return calculate_rewards

    def _wrap_generate(self, original: Any) -> Any:
        def generate_and_score(*args: Any, **kwargs: Any) -> Any:
            self._last_rewards = None
            output = original(*args, **kwargs)
            rewards_per_func, self._last_rewards = self._last_rewards, None
            if rewards_per_func is not None and isinstance(output, dict) and "advantages" in output:
                local = self._local_rewards(rewards_per_func, len(output["advantages"]))
                if local is not None:
                    output[REWARD_KEY] = local
            return output

        return generate_and_score

    def _wrap_grad_norm(self, original: Any) -> Any:
        def get_grad_norm(*args: Any, **kwargs: Any) -> Any:
            norm = original(*args, **kwargs)
            self._grad_norm = norm
            return norm

        return get_grad_norm


    # ---- per optimizer step -------------------------------------------------------------------
    def on_optimizer_step(self) -> None:
        getter = getattr(self.trainer, "_get_learning_rate", None)
        try:
            self._lr = float(getter()) if callable(getter) else float(self.trainer.lr_scheduler.get_last_lr()[0])
        except Exception:
            self._lr = None

    def end_step(self, step: int) -> Any:
        """Close optimizer step ``step``: send it, mirror key statistics, drop every tensor reference."""
        loss, grad_norm, lr = self._loss_sum, self._grad_norm, self._lr
        rewards, self._fallback_rewards = self._fallback_rewards, []
        self._loss_sum = self._grad_norm = self._lr = None
        self._captured = None
        if self._disabled_reason == "uninstalled":
            return None
        kwargs: dict[str, Any] = {}
        if rewards:
            mean = sum(rewards) / len(rewards)
            kwargs["metrics"] = {
                "reward.mean": mean,
                "reward.std": math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)),
            }
        if lr is not None:
            kwargs["lr"] = lr
        try:
            kwargs.update(to_host(loss=loss, grad_norm=grad_norm))
            record = self.monitor.end_step(step, **kwargs)
        except Exception as exc:
            self._warn_once("end_step", f"sapo-monitor: closing TRL step {step} failed ({exc!r}); training goes on")
            return None
        self.steps_sent += 1
        if self.mirror and record is not None:
            self._mirror(record)
        return record

    def _mirror(self, record: Any) -> None:
        metrics = getattr(record, "metrics", None) or {}
        buffers = getattr(self.trainer, "_metrics", None)
        if not isinstance(buffers, dict):
            return
        train = buffers.setdefault("train", {})
        for key in MIRROR_KEYS:
            if key in metrics:
                train.setdefault(MIRROR_PREFIX + key, []).append(float(metrics[key]))

