"""Silence: no step for a while (fired by the periodic check, resolved by any step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import (
    Kind,
    StepFn,
)

__all__ = ["SILENCE"]

# --- silence ------------------------------------------------------------------------------------


def _compile_silence(p: Mapping[str, Any]) -> StepFn:
    # On ingest a step has arrived, so a silent-run alert resolves; firing is the periodic check's job.
    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        return False

    return step


SILENCE = Kind(
    "silence",
    "No step received for `after_s` seconds while the run is marked running (checked periodically).",
    (Param("after_s", "float", 600.0, "Seconds without a step before the alert fires.", minimum=1.0),),
    _compile_silence,
    lambda p: (),
    time_based=True,
    scan=lambda p: lambda batch: False,
)
