"""Adapter for the bundled reference trainer (``sapo_monitor.trainer.Trainer``): its ``add_observer`` hook.

Each ``StepBatch`` is one optimizer step's whole mini-batch: one ``observe`` and one ``end_step``.
The trainer hands observers detached clones, so nothing here can change training.
"""

from __future__ import annotations

from typing import Any

from sapo_monitor.client.monitor import Monitor, init
from sapo_monitor.client.stats import StatsConfig

__all__ = ["TRAINER_STATS_BATCH", "TrainerObserver", "attach_trainer"]

TRAINER_STATS_BATCH = 32  # small steps computed together (see client/_deferred.py)


class TrainerObserver:
    """The observer added to the trainer: StepBatch -> observe + end_step."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def __call__(self, batch: Any) -> None:
        mon = self.monitor
        mon.observe(
            batch.logp_new,
            batch.logp_old,
            batch.advantages,
            batch.mask,
            entropy=batch.entropy,
            rewards=batch.rewards,
            logp_rollout=batch.logp_rollout,
            experts_old=batch.experts_old,
            experts_new=batch.experts_new,
        )
        mon.end_step(batch.step, loss=batch.loss, grad_norm=batch.grad_norm, lr=batch.lr)


def stats_config_for(config: Any) -> StatsConfig:
    """The trainer's own thresholds, so the statistics describe the loss it actually optimises."""
    return StatsConfig(
        tau_pos=config.tau_pos,
        tau_neg=config.tau_neg,
        eps_low=config.eps_low,
        eps_high=config.eps_high,
        seq_eps_low=config.seq_eps_low,
        seq_eps_high=config.seq_eps_high,
    )


def attach_trainer(trainer: Any, *, algo: str | None = None, config: Any = None,
                   stats_config: StatsConfig | None = None, tags: dict[str, Any] | None = None,
                   **init_kwargs: Any) -> Monitor:
    """Monitor a bundled-trainer run: algo, config and StatsConfig come from ``trainer.config``."""
    cfg = trainer.config
    # The bundled trainer's steps are small and CPU-bound: batching their statistics keeps the hook's
    # cost a small share of a step (an explicit stats_batch, or SAPO_MONITOR_STATS_BATCH, wins).
    # With stop_on, a step's record must reach the service soon for its alert to stop the run in time.
    init_kwargs.setdefault("default_stats_batch", TRAINER_STATS_BATCH if not init_kwargs.get("stop_on") else 4)
    monitor = init(
        algo=algo or cfg.algo,
        config=cfg.to_dict() if config is None else config,
        stats_config=stats_config or stats_config_for(cfg),
        tags={"trainer": "sapo-monitor", "preset": cfg.preset, **(tags or {})},
        **init_kwargs,
    )
    trainer.add_observer(TrainerObserver(monitor))
    if hasattr(trainer, "request_stop"):  # stop_on: the trainer ends after its current step
        monitor.alert_watch.on_stop(lambda alert: trainer.request_stop(f"sapo-monitor {alert.describe()}"))
    return monitor
