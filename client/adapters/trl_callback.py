"""The TRL adapter's ``TrainerCallback``: closes each optimizer step (imports transformers, so it is loaded
only when a TRL trainer is attached)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

__all__ = ["SapoMonitorCallback"]


class SapoMonitorCallback(TrainerCallback):  # type: ignore[misc]
    """Hands TRL's optimizer steps to a ``TRLAdapter``: the learning rate, then the step's end."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.adapter.on_optimizer_step()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.adapter.end_step(int(state.global_step))
