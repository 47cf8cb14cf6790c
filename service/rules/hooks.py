"""The service's seams for collapse detection (the alerts helper fills these in).

The service calls exactly these functions; they do nothing until rules are implemented:

* :func:`on_steps_stored` runs inside the ingest transaction, right after a batch's steps are stored,
  with the batch sorted by step (one record per step; a replayed step appears again). Anything it
  writes (alert transitions, outbox rows, rule state) commits or rolls back with the steps.
* :func:`routers` adds API routers (``/api/v1/rules``, ``/alerts``, ``/webhooks``) to the app.
* :func:`metric_families` adds Prometheus families to ``/metrics`` from stored state.
* :func:`lifespan` runs background work (webhook delivery, silent-run checks) while the app runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from prometheus_client.metrics_core import Metric
    from sqlalchemy.orm import Session

    from ..decode import StepIn

__all__ = ["lifespan", "metric_families", "on_steps_stored", "routers"]


def on_steps_stored(session: Session, run: Any, records: Sequence[StepIn]) -> None:
    """Evaluate rules for ``records`` of ``run`` (``storage.steps.IngestedRun``: pk, run_id, project_id)."""


def routers() -> list[APIRouter]:
    """Routers to mount under ``/api/v1``."""
    return []


def metric_families(session: Session, *, now: float, project: str | None) -> Iterable[Metric]:
    """Extra families for ``/metrics`` (``project`` set: only that project's series)."""
    return ()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Background work for the app's lifetime; ``app.state.db`` and ``app.state.settings`` are set."""
    yield
