"""``/api/v1/incidents``: runs' incidents (grouped alerts with their story) and one incident with its
member alerts (read role, scoped like the alerts)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ..errors import ErrorOut, NotFound
from ..incidents import story
from ..storage.incidents import IncidentInfo, get_incident, incident_alerts, list_incidents
from .alerts import AlertOut, read_scope
from .deps import AuthDep, DbDep
from .schemas import NAME_PATTERN, RUN_ID_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["incidents"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}
INCIDENT_ID_PATTERN = r"^[0-9a-f]{32}$"


class StoryPointOut(BaseModel):
    alert_id: str
    rule: str
    severity: Literal["warning", "critical"]
    step: int = Field(description="Step at which this member alert fired.")
    at: float = Field(description="Epoch seconds when the service saw it fire.")


class ResolutionOut(BaseModel):
    step: int = Field(description="Step at which the incident's last firing alert resolved.")
    at: float | None


class StoryOut(BaseModel):
    first_precursor: StoryPointOut | None = Field(
        description="The first warning that fired before any critical alert (null: it opened critical).")
    confirmation: StoryPointOut | None = Field(description="The first critical alert (null: warnings only).")
    resolution: ResolutionOut | None = Field(description="Null while the incident fires.")
    summary: str = Field(description="The story in one line, as webhook messages carry it.")


class IncidentOut(BaseModel):
    id: str
    run_id: str
    project: str
    state: Literal["firing", "resolved"]
    severity: Literal["warning", "critical"] = Field(description="The highest severity a member alert reached.")
    opened_step: int
    opened_at: float
    resolved_step: int | None
    resolved_at: float | None
    reopened: int = Field(description="Times an alert fired shortly after the resolution and reopened it.")
    alert_count: int = Field(description="Member alerts (every alert of the run that fired during it).")
    story: StoryOut
    notifications: int = Field(
        description="Notifications made about it so far (each goes to every webhook that covers it).")
    last_notified_at: float | None


class IncidentDetailOut(IncidentOut):
    alerts: list[AlertOut] = Field(description="Member alerts in the order they fired.")


def _out(info: IncidentInfo) -> dict[str, Any]:
    inc = info.incident
    return {
        "id": inc.id, "run_id": info.run_id, "project": info.project, "state": inc.state, "severity": inc.severity,
        "opened_step": inc.opened_step, "opened_at": inc.opened_at, "resolved_step": inc.resolved_step,
        "resolved_at": inc.resolved_at, "reopened": inc.reopened, "alert_count": info.alert_count,
        "story": story(inc), "notifications": inc.notifications, "last_notified_at": inc.last_notified_at,
    }


@router.get("/incidents", response_model=list[IncidentOut], responses=_ERRORS, summary="List incidents")
def list_incidents_route(
    db: DbDep,
    principal: AuthDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    run: Annotated[str | None, Query(pattern=RUN_ID_PATTERN, description="Run id.")] = None,
    state: Annotated[Literal["firing", "resolved"] | None, Query()] = None,
    severity: Annotated[Literal["warning", "critical"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[IncidentOut]:
    """Newest first (by when they opened). A project-scoped token sees only its project's incidents."""
    project = read_scope(principal, project)
    with db.read() as session:
        found = list_incidents(session, project=project, run_id=run, state=state, severity=severity, limit=limit,
                               offset=offset)
    return [IncidentOut(**_out(i)) for i in found]


@router.get("/incidents/{incident_id}", response_model=IncidentDetailOut, responses=_ERRORS,
            summary="One incident with its alerts")
def get_incident_route(
    incident_id: Annotated[str, Path(pattern=INCIDENT_ID_PATTERN)], db: DbDep, principal: AuthDep
) -> IncidentDetailOut:
    principal.require("read", None)
    with db.read() as session:
        info = get_incident(session, incident_id)
        hidden = NotFound(f"incident {incident_id!r} not found", ["path", "incident_id"])
        if info is None:
            raise hidden
        principal.require_visible("read", info.project, hidden)
        members = incident_alerts(session, [incident_id])[incident_id]
    return IncidentDetailOut(**_out(info), alerts=[AlertOut(**a.__dict__) for a in members])
