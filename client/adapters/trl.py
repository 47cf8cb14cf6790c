"""``client.attach(trainer)`` for Hugging Face TRL's ``GRPOTrainer`` (SAPO, GRPO family, GSPO).

How a TRL step maps onto the monitor (facts checked against TRL 1.16's source):

- ``training_step`` runs once per micro-batch of an optimizer step; evaluation never calls it, so a
  flag set around it separates training from evaluation (``prediction_step`` -> ``compute_loss``).
- Inside ``compute_loss`` TRL calls ``_get_per_token_logps_and_entropies`` once, with grad enabled,
  for the current policy. Its other calls (old and reference log-probs) run earlier, in
  ``_generate_and_score_completions`` under ``torch.no_grad()``: the adapter captures only the
  first grad-enabled call made while ``compute_loss`` runs inside ``training_step``.
- ``inputs`` carries ``completion_mask``, ``advantages`` (one per sequence), ``old_per_token_logps``
  (only when TRL computes them, see :func:`trl_config.computes_old_logps`; otherwise TRL's ratio is
  1 everywhere and so is ours) and, with vLLM, ``sampling_per_token_logps`` (-> ``logp_rollout``).
- Rewards are not in ``inputs``. ``_calculate_rewards`` returns every completion's reward per
  function; the adapter weights them as TRL does for its ``reward`` log, and carries each
  sequence's reward through TRL's shuffle and split as one extra key of the generation batch
  (``_REWARD_KEY``), which ``compute_loss`` removes again before TRL's loss sees ``inputs``.
- A ``TrainerCallback`` closes the step: ``on_optimizer_step`` reads the learning rate that
  ``Trainer`` logs for the step, ``on_step_end`` hands the step to ``Monitor.end_step`` with the summed
  micro-batch losses (what ``Trainer`` logs as ``loss`` with ``logging_steps=1``) and the
  pre-clip gradient norm returned by ``Trainer._get_grad_norm``.

Nothing here changes what TRL computes: the wrappers pass every argument through and return TRL's
own results; the adapter only reads detached tensors and drops them at the end of each step.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
import weakref
from typing import Any

from sapo_monitor.client.adapters import trl_compat, trl_config
from sapo_monitor.client.errors import ConfigError
from sapo_monitor.client.monitor import Monitor, init
from sapo_monitor.client.stats import StatsConfig

__all__ = ["MIRROR_KEYS", "TRLAdapter", "TRLLogpsMissingWarning", "adapter_for", "attach_trl"]

logger = logging.getLogger("sapo_monitor.client.trl")

# The extra generation-batch key that carries per-sequence rewards to compute_loss.
_REWARD_KEY = "_sapo_monitor_rewards"

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

# Everything the monitor cannot compute without the current policy's per-token log-probs.
_NEEDS_LOGPS = (
    "ratio.*, log_ratio.*, kl.*, clip.*, seq_ratio.*, gate.*, sign.*, entropy.mean, mismatch.*, "
    "hist.log_ratio and token counts"
)


class TRLLogpsMissingWarning(UserWarning):
    """TRL's loss ran without materialising per-token log-probs (Liger fused loss or a custom loss)."""


class TRLAdapter:
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
        t.add_callback(_make_callback(self))
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
            if isinstance(inputs, dict) and _REWARD_KEY in inputs:
                rewards = inputs[_REWARD_KEY]
                # TRL's loss sees exactly the dict it built, without our key.
                inputs = {k: v for k, v in inputs.items() if k != _REWARD_KEY}
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
                    output[_REWARD_KEY] = local
            return output

        return generate_and_score

    def _wrap_grad_norm(self, original: Any) -> Any:
        def get_grad_norm(*args: Any, **kwargs: Any) -> Any:
            norm = original(*args, **kwargs)
            self._grad_norm = norm
            return norm

        return get_grad_norm

    # ---- per micro-batch --------------------------------------------------------------------------
    def _local_rewards(self, rewards_per_func: Any, n_local: int) -> Any:
        """This process's rows of TRL's weighted reward (NaN where every reward function returned None)."""
        import torch

        t = self.trainer
        rpf = rewards_per_func.float().cpu()  # rewards are few; one small copy per generation
        weights = getattr(t, "reward_weights", None)
        weights = torch.ones(rpf.shape[1]) if weights is None else weights.detach().float().cpu()
        rewards = (rpf * weights.unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        rank = int(getattr(getattr(t, "accelerator", None), "process_index", 0))
        local = rewards[rank * n_local : (rank + 1) * n_local]
        return local if local.shape[0] == n_local else None

    def _observe(self, inputs: dict[str, Any], captured: tuple[Any, Any] | None, rewards: Any) -> None:
        import torch

        self.micro_batches_seen += 1
        try:
            missing = [k for k in trl_compat.REQUIRED_INPUT_KEYS if k not in inputs]
            if missing:
                self._disable(f"TRL's micro-batch no longer has {missing}; the adapter stops observing")
                return
            if captured is None:
                self._warn_once(
                    "logps",
                    "sapo-monitor: TRL's compute_loss did not compute per-token log-probs through "
                    "_get_per_token_logps_and_entropies (use_liger_kernel's fused loss or a custom loss): "
                    f"{_NEEDS_LOGPS} are missing from this run; loss, grad_norm, lr and reward are still sent.",
                    TRLLogpsMissingWarning,
                )
                if rewards is not None:
                    self._fallback_rewards += [r for r in rewards.tolist() if math.isfinite(r)]
                return
            logp_new, entropy = captured
            mask = inputs["completion_mask"]
            if inputs.get("tool_mask") is not None:
                mask = mask * inputs["tool_mask"]
            # Without old log-probs TRL sets old := new, so the ratio is exactly 1 (see the on-policy note).
            logp_old = inputs.get("old_per_token_logps")
            if (logp_old is None) != self.on_policy:
                tag = "on_policy" if self.on_policy else "old_logps"
                seen = "no old log-probs (ratios are 1 by construction)" if logp_old is None else "old log-probs"
                self._warn_once(
                    "ratio_source",
                    f"sapo-monitor: the run is tagged ratio_source={tag} from TRL's config, "
                    f"but TRL's batches carry {seen}",
                )
            logp_old = logp_new if logp_old is None else logp_old.detach()
            optional: dict[str, Any] = {}
            if entropy is not None:
                optional["entropy"] = entropy
            if rewards is not None:
                optional["rewards"] = rewards[torch.isfinite(rewards)].to(logp_new.device)
            rollout = inputs.get("sampling_per_token_logps")
            if rollout is not None:
                # vLLM leaves NaN where it could not score a token; TRL treats those as no mismatch.
                rollout = torch.where(torch.isnan(rollout), logp_old, rollout.detach())
                optional["logp_rollout"] = rollout
            self.monitor.observe(
                logp_new=logp_new,
                logp_old=logp_old,
                advantages=inputs["advantages"].detach(),
                mask=mask.detach(),
                **optional,
            )
        except Exception as exc:  # never break training; say it once
            if getattr(self.monitor, "strict", False):
                raise
            self._warn_once("observe", f"sapo-monitor: observing a TRL micro-batch failed ({exc!r}); training goes on")

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
            kwargs.update(_to_host(loss=loss, grad_norm=grad_norm))
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

    # ---- helpers ------------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str, category: type[Warning] = RuntimeWarning) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(message)
        warnings.warn(message, category, stacklevel=3)

    def _disable(self, reason: str) -> None:
        self._disabled_reason = reason
        self._warn_once("disabled", f"sapo-monitor: {reason}")


def _to_host(**values: Any) -> dict[str, float]:
    """Scalars (0-d tensors or numbers) as floats, with one device-to-host copy for all device tensors."""
    import torch

    out = {k: float(v) for k, v in values.items() if v is not None and not isinstance(v, torch.Tensor)}
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    if tensors:
        devices = {t.device for t in tensors.values()}
        if len(devices) == 1:
            stacked = torch.stack([t.detach().reshape(()).double() for t in tensors.values()])
            out.update(zip(tensors, stacked.tolist(), strict=True))
        else:
            out.update({k: float(t) for k, t in tensors.items()})
    return out


def _make_callback(adapter: TRLAdapter) -> Any:
    """A ``TrainerCallback`` (imported here: transformers is only needed when a TRL trainer exists)."""
    from transformers import TrainerCallback

    class SapoMonitorCallback(TrainerCallback):
        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            adapter.on_optimizer_step()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            adapter.end_step(int(state.global_step))

    return SapoMonitorCallback()


# trainer -> its adapter; weak, so attaching never keeps a trainer alive.
_ADAPTERS: weakref.WeakKeyDictionary[Any, TRLAdapter] = weakref.WeakKeyDictionary()


def adapter_for(trainer: Any) -> TRLAdapter | None:
    """The adapter :func:`attach_trl` installed on ``trainer`` (None if it was never attached)."""
    return _ADAPTERS.get(trainer)


def attach_trl(
    trainer: Any,
    *,
    algo: str | None = None,
    config: Any = None,
    stats_config: StatsConfig | None = None,
    tags: dict[str, Any] | None = None,
    mirror_to_trainer_logs: bool = True,
    **init_kwargs: Any,
) -> Monitor:
    """Monitor a TRL ``GRPOTrainer`` (or subclass) run; the registry's factory behind ``client.attach``.

    The algorithm, the ``StatsConfig`` and the run config (the whole ``GRPOConfig``, secrets
    redacted) come from ``trainer.args`` unless given. The run is tagged ``trainer=trl``,
    ``trl_version``, ``loss_type=<TRL loss_type>`` and ``ratio_source``: ``on_policy`` when TRL computes no old
    log-probs (ratios are 1 by construction; the reason is logged once), else ``old_logps``.
    With ``mirror_to_trainer_logs`` (default) a few key statistics also go into TRL's own logs
    as ``sapo_monitor/<name>``.

    Raises:
        IncompatibleTRLError: the installed TRL lacks a name the adapter hooks into.
        ConfigError: the trainer is already attached, or ``init`` rejected an argument.
    """
    if trainer in _ADAPTERS:
        raise ConfigError("this trainer is already attached to sapo-monitor (one Monitor per trainer)")
    for gap in trl_compat.check_trainer(trainer, need_metrics=mirror_to_trainer_logs):
        logger.warning("sapo-monitor: this TRL/transformers lacks a hook, so a statistic is missing: %s", gap)
    args = trainer.args
    algorithm = algo or trl_config.algorithm_for(args)
    on_policy = not trl_config.computes_old_logps(args, getattr(trainer, "num_iterations", None))
    _check_liger(trainer)
    if mirror_to_trainer_logs:  # mirroring needs each step's record at end_step: no deferred statistics
        init_kwargs.setdefault("stats_batch", 1)
    monitor = init(
        algo=algorithm,
        config=trl_config.run_config(args) if config is None else config,
        stats_config=stats_config or StatsConfig(**trl_config.stats_config_kwargs(args)),
        tags={
            "trainer": "trl",
            "trl_version": trl_compat.trl_version(),
            "loss_type": str(args.loss_type),
            "ratio_source": "on_policy" if on_policy else "old_logps",
            **(tags or {}),
        },
        **init_kwargs,
    )
    _ADAPTERS[trainer] = TRLAdapter(trainer, monitor, mirror_to_trainer_logs=mirror_to_trainer_logs).install()
    return monitor


def _check_liger(trainer: Any) -> None:
    """Say up front when Liger's fused GRPO loss will hide the per-token log-probs.

    TRL before 1.x routed ``use_liger_kernel=True`` through a fused loss (``trainer.liger_grpo_loss``)
    that never materialises per-token log-probs. TRL 1.16 applies only Liger's layer kernels and still
    computes them, so every statistic stays available; either way the adapter also checks at run time.
    """
    if not getattr(trainer.args, "use_liger_kernel", False):
        return
    if getattr(trainer, "liger_grpo_loss", None) is not None:
        message = (
            "sapo-monitor: use_liger_kernel=True computes TRL's loss in a fused kernel without per-token "
            f"log-probs: {_NEEDS_LOGPS} will be missing; loss, grad_norm, lr and reward are still sent. "
            "Set use_liger_kernel=False for the full statistics."
        )
        logger.warning(message)
        warnings.warn(message, TRLLogpsMissingWarning, stacklevel=3)
    else:
        logger.info("sapo-monitor: use_liger_kernel=True applies layer kernels only; log-probs stay available")
