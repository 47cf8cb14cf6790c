"""``/api/v1/alerts`` and ``/api/v1/runs/{run_id}/alerts``: alerts and their transitions (read role)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ..auth import Principal
from ..errors import ErrorOut, NotFound
from ..storage.alert_queries import AlertInfo, list_alerts, run_transitions
from ..storage.runs import get_run
from .deps import AuthDep, DbDep
from .schemas import NAME_PATTERN, RUN_ID_PATTERN

__all__ = ["AlertOut", "read_scope", "router"]

router = APIRouter(tags=["alerts"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}


class AlertOut(BaseModel):
    id: str
    run_id: str
    project: str
    rule: str
    severity: Literal["warning", "critical"]
    state: Literal["pending", "firing", "resolved"]
    started_step: int = Field(description="First step at which the condition held.")
    started_at: float = Field(description="Epoch seconds when the service saw that step.")
    fired_step: int | None = Field(description="Step at which the alert fired (null: never fired).")
    fired_at: float | None
    resolved_step: int | None
    resolved_at: float | None
    values: dict[str, Any] = Field(description="Metric values at the latest transition (non-finite as strings).")


class TransitionOut(BaseModel):
    event_id: str = Field(description="Unique id of the transition (webhooks carry incident notification ids).")
    alert_id: str
    rule: str
    severity: str
    from_state: str | None
    to_state: str
    step: int
    at: float
    values: dict[str, Any]


class RunAlertsOut(BaseModel):
    run_id: str
    alerts: list[AlertOut]
    transitions: list[TransitionOut] = Field(description="Every transition of the run's alerts, in order.")


def _out(a: AlertInfo) -> AlertOut:
    return AlertOut(**a.__dict__)


def read_scope(principal: Principal, project: str | None) -> str | None:
    """The project a read lists: the one asked for, checked against the token; a project-scoped token
    lists its own project only (alerts and incidents alike)."""
    principal.require("read", project)
    return principal.project if principal.project is not None else project


@router.get("/alerts", response_model=list[AlertOut], responses=_ERRORS, summary="List alerts")
def list_alerts_route(
    db: DbDep,
    principal: AuthDep,
    state: Annotated[Literal["pending", "firing", "resolved"] | None, Query()] = None,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    run: Annotated[str | None, Query(pattern=RUN_ID_PATTERN, description="Run id.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[AlertOut]:
    """Newest first. A project-scoped token sees only its project's alerts."""
    project = read_scope(principal, project)
    with db.read() as session:
        alerts = list_alerts(session, state=state, project=project, run_id=run, limit=limit, offset=offset)
    return [_out(a) for a in alerts]


@router.get("/runs/{run_id}/alerts", response_model=RunAlertsOut, responses=_ERRORS, summary="A run's alerts")
def run_alerts_route(
    run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN)], db: DbDep, principal: AuthDep
) -> RunAlertsOut:
    principal.require("read", None)
    with db.read() as session:
        info = get_run(session, run_id=run_id)
        hidden = NotFound(f"run {run_id!r} not found", ["path", "run_id"])
        if info is None:
            raise hidden
        principal.require_visible("read", info.project, hidden)
        alerts = list_alerts(session, run_id=run_id, limit=10_000)
        transitions = run_transitions(session, run_pk=info.pk, limit=100_000)
    return RunAlertsOut(
        run_id=run_id,
        alerts=[_out(a) for a in alerts],
        transitions=[TransitionOut(**t.__dict__) for t in transitions],
    )
