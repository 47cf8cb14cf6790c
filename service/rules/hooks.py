"""The ingest hook: called by :func:`sapo_monitor.service.storage.steps.store_steps` inside the
transaction that stored a batch, after the run row was locked.

``SAPO_MONITOR_RULES=off`` (or :func:`set_enabled`) skips evaluation; it exists so ``bench/ingest.py``
can measure what rules cost. Steps stored while it is off are never evaluated later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from ..outbox.settings import AlertingSettings
from .apply import RunRef, evaluate_run_steps
from .evaluate import StepInput

if TYPE_CHECKING:
    from ..decode import StepIn
    from ..storage.steps import IngestedRun

__all__ = ["on_steps_stored", "set_enabled"]

_enabled = AlertingSettings().rules


def set_enabled(enabled: bool) -> None:
    """Turn rule evaluation on ingest on or off for this process."""
    global _enabled
    _enabled = enabled


def on_steps_stored(session: Session, run: IngestedRun, records: Sequence[StepIn]) -> None:
    """Evaluate the run's rules over the stored records (in step order) and persist alerts + outbox."""
    if not _enabled or not records:
        return
    evaluate_run_steps(
        session,
        RunRef(run.pk, run.run_id, run.project_id),
        (StepInput(r.step, r.time, r.metrics) for r in records),
    )
