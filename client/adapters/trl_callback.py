"""The TRL adapter's ``TrainerCallback``: closes each optimizer step, and stops training when ``stop_on``
matched an alert (imports transformers, so it is loaded only when a TRL trainer is attached)."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

__all__ = ["SapoMonitorCallback"]

log = logging.getLogger("sapo_monitor")


class SapoMonitorCallback(TrainerCallback):  # type: ignore[misc]
    """Hands TRL's optimizer steps to a ``TRLAdapter``: the learning rate, then the step's end."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.adapter.on_optimizer_step()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.adapter.end_step(int(state.global_step))
        # stop_on: save a checkpoint through the Trainer's own save path, then stop after this step.
        stop = self.adapter.monitor.alert_watch.stop_alert
        if stop is not None and not control.should_training_stop:
            log.warning("sapo-monitor: saving a checkpoint and stopping TRL training at step %d on %s",
                        state.global_step, stop.describe())
            control.should_save = True
            control.should_training_stop = True
