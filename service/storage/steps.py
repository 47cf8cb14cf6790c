"""Storing a batch of steps: one transaction, idempotent per (run, step).

Order inside the transaction: lock the run (create it if new), upsert the step rows in one
statement, recompute the touched rollup blocks, widen the run's step range, then hand the batch to
the rules hook (:func:`sapo_monitor.service.rules.hooks.on_steps_stored`) so alerts and their outbox
rows commit or roll back together with the steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..decode import StepIn
from ..rules import hooks
from .bulk import upsert_rows
from .models import Step
from .rollups import refresh_blocks
from .rows import STEP_COLUMN_NAMES, encode_rows
from .runs import extend_step_range, lock_run_for_ingest

__all__ = ["IngestedRun", "any_stored", "store_steps"]

@dataclass(frozen=True)
class IngestedRun:
    """The run a batch went into, as the rules hook sees it."""

    pk: int
    run_id: str
    project_id: int


def any_stored(session: Session, *, run_pk: int, lo: int, hi: int) -> bool:
    """Whether the run has any stored step in ``[lo, hi]`` (an index-only range probe)."""
    t = Step.__table__
    return (
        session.execute(
            select(t.c.step).where(t.c.run_pk == run_pk, t.c.step >= lo, t.c.step <= hi).limit(1)
        ).first()
        is not None
    )


def store_steps(
    session: Session,
    *,
    run_id: str,
    project_id: int,
    records: Sequence[StepIn],
    now: float,
    any_project: bool = False,
) -> IngestedRun:
    """Store ``records`` (sorted by step, one per step) into run ``run_id``; returns the run.

    The run is created in ``project_id`` if missing. An existing run of another project is left
    untouched (the caller answers 403) unless ``any_project`` (auth off).
    """
    run_pk, stored_project = lock_run_for_ingest(session, run_id=run_id, project_id=project_id, now=now)
    run = IngestedRun(run_pk, run_id, stored_project)
    if (stored_project != project_id and not any_project) or not records:
        return run
    lo, hi = records[0].step, records[-1].step
    fresh = not any_stored(session, run_pk=run_pk, lo=lo, hi=hi)
    rows = encode_rows(run_pk, records)
    upsert_rows(session, "steps", STEP_COLUMN_NAMES, ("run_pk", "step"), rows)
    refresh_blocks(session, run_pk=run_pk, records=records, fresh=fresh, rows=rows)
    extend_step_range(session, run_pk=run_pk, lo=lo, hi=hi)
    hooks.on_steps_stored(session, run, records)
    return run
