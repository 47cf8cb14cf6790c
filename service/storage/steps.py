"""Storing a batch of steps: one transaction, idempotent per (run, step).

Order inside the transaction: lock the run (creating it if new, widening its step range), upsert
the step rows in one statement, merge (or recompute) the touched rollup blocks. Rules run after it in the same transaction
(:mod:`sapo_monitor.service.ingestion`), so alerts and their outbox rows commit or roll back with the steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sapo_monitor.client.wire import StepRecord
from sqlalchemy import text
from sqlalchemy.orm import Session

from .bulk import upsert_rows
from .rollups import refresh_blocks
from .rows import STEP_COLUMN_NAMES, encode_rows
from .runs import lock_run_for_ingest

__all__ = ["IngestedRun", "any_stored", "store_steps"]

@dataclass(frozen=True)
class IngestedRun:
    """The run a batch went into."""

    pk: int
    run_id: str
    project_id: int


_ANY_STORED = text("SELECT 1 FROM steps WHERE run_pk = :run_pk AND step >= :lo AND step <= :hi LIMIT 1")


def any_stored(session: Session, *, run_pk: int, lo: int, hi: int) -> bool:
    """Whether the run has any stored step in ``[lo, hi]`` (an index-only range probe)."""
    return session.execute(_ANY_STORED, {"run_pk": run_pk, "lo": lo, "hi": hi}).first() is not None


def store_steps(
    session: Session,
    *,
    run_id: str,
    project_id: int,
    records: Sequence[StepRecord],
    now: float,
    any_project: bool = False,
) -> IngestedRun:
    """Store ``records`` (sorted by step, one per step) into run ``run_id``; returns the run.

    The run is created in ``project_id`` if missing. An existing run of another project is left
    untouched (the caller answers 403) unless ``any_project`` (auth off).
    """
    lo, hi = (records[0].step, records[-1].step) if records else (None, None)
    run_pk, stored_project = lock_run_for_ingest(session, run_id=run_id, project_id=project_id, now=now, lo=lo,
                                                 hi=hi)
    run = IngestedRun(run_pk, run_id, stored_project)
    if (stored_project != project_id and not any_project) or lo is None or hi is None:
        return run
    fresh = not any_stored(session, run_pk=run_pk, lo=lo, hi=hi)
    rows = encode_rows(run_pk, records)
    upsert_rows(session, "steps", STEP_COLUMN_NAMES, ("run_pk", "step"), rows)
    refresh_blocks(session, run_pk=run_pk, records=records, fresh=fresh, rows=rows)
    return run
