"""The ingest use case: store a batch of steps, evaluate the run's rules, enqueue notifications.

All in the caller's transaction, so alerts and outbox rows commit or roll back with the steps. Storage
(:mod:`.storage.steps`) knows nothing of rules; the rules (:mod:`.rules`) know nothing of storage;
:mod:`.alerting` joins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sapo_monitor.client.wire import StepRecord
from sqlalchemy.orm import Session

from .alerting import FiringAlert, RunRef, evaluate_run_steps
from .storage.steps import IngestedRun, store_steps

__all__ = ["IngestResult", "ingest_steps"]


@dataclass(frozen=True)
class IngestResult:
    run: IngestedRun
    stored: bool  # False when the run belongs to another project (the caller answers 403)
    firing: list[FiringAlert] = field(default_factory=list)


def ingest_steps(
    session: Session,
    *,
    run_id: str,
    project_id: int,
    records: Sequence[StepRecord],
    now: float,
    any_project: bool = False,
    evaluate_rules: bool = True,
) -> IngestResult:
    """Store ``records`` (sorted by step, one per step) and, unless ``evaluate_rules`` is off (only to
    measure what rules cost: steps stored meanwhile are never evaluated), run the rules over them."""
    run = store_steps(session, run_id=run_id, project_id=project_id, records=records, now=now,
                      any_project=any_project)
    if run.project_id != project_id and not any_project:
        return IngestResult(run, stored=False)
    if not evaluate_rules or not records:
        return IngestResult(run, stored=True)
    # StepRecord has the fields the evaluator reads (step, time, metrics): no copies per record.
    outcome = evaluate_run_steps(session, RunRef(run.pk, run.run_id, run.project_id), records, now=now)  # type: ignore[arg-type]
    return IngestResult(run, stored=True, firing=outcome.firing)
