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

The adapter's parts: ``trl_hooks.py`` (the wrapped methods and the step's end), ``trl_batches.py`` (one
micro-batch -> ``observe``), ``trl_callback.py`` (the ``TrainerCallback``), ``trl_config.py`` and
``trl_compat.py`` (what TRL's config means, what the installed TRL offers).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from typing import Any

from sapo_monitor.client.adapters import trl_compat, trl_config
from sapo_monitor.client.adapters.trl_batches import NEEDS_LOGPS, TRLLogpsMissingWarning
from sapo_monitor.client.adapters.trl_batches import REWARD_KEY as _REWARD_KEY  # noqa: F401 (tests read it)
from sapo_monitor.client.adapters.trl_hooks import MIRROR_KEYS, MIRROR_PREFIX, TRLAdapter
from sapo_monitor.client.errors import ConfigError
from sapo_monitor.client.monitor import Monitor, init
from sapo_monitor.client.stats import StatsConfig

__all__ = ["MIRROR_KEYS", "MIRROR_PREFIX", "TRLAdapter", "TRLLogpsMissingWarning", "adapter_for", "attach_trl"]

logger = logging.getLogger("sapo_monitor.client.trl")

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
    # Data-parallel: rank 0's end_step returns the record merged over every rank, for the mirrored keys.
    monitor.wait_for_merged_record = mirror_to_trainer_logs
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
            f"log-probs: {NEEDS_LOGPS} will be missing; loss, grad_norm, lr and reward are still sent. "
            "Set use_liger_kernel=False for the full statistics."
        )
        logger.warning(message)
        warnings.warn(message, TRLLogpsMissingWarning, stacklevel=3)
    else:
        logger.info("sapo-monitor: use_liger_kernel=True applies layer kernels only; log-probs stay available")
