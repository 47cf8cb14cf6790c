"""Incidents in ``incidents`` and ``incident_alerts``: the SQL behind :mod:`sapo_monitor.service.incidents`.

Written on ingest only for batches whose alerts fired or resolved (a few rows), and by the delivery
worker when an incident's notification is due. Ingest locks the run's latest incident and the worker
locks the incidents it flushes (``FOR UPDATE``, the worker with ``SKIP LOCKED`` on PostgreSQL), so the
two never write one incident at the same time; SQLite serialises write transactions anyway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, func, insert, select, update
from sqlalchemy.orm import Session

from ..incidents import Incident, StoryPoint
from .alert_models import Alert, IncidentAlert
from .alert_models import Incident as IncidentRow
from .alert_queries import AlertInfo, alert_info, in_scope
from .db import for_update
from .models import Project, Run

__all__ = [
    "DueIncident",
    "IncidentInfo",
    "due_incidents",
    "get_incident",
    "incident_alerts",
    "latest_incident",
    "list_incidents",
    "save_flush",
    "save_grouped",
]

_I = cast(Table, IncidentRow.__table__)
_M = cast(Table, IncidentAlert.__table__)


def _incident(r: Row[Any]) -> Incident:
    story = json.loads(r.story)
    return Incident(
        id=r.id, state=r.state, severity=r.severity, opened_step=r.opened_step, opened_at=r.opened_at,
        precursor=StoryPoint.from_json(story.get("precursor")),
        confirmation=StoryPoint.from_json(story.get("confirmation")),
        resolved_step=r.resolved_step, resolved_at=r.resolved_at, reopened=r.reopened,
        firing=list(json.loads(r.firing_alerts)), changed_at=r.changed_at, notified_state=r.notified_state,
        notified_severity=r.notified_severity, last_notified_at=r.last_notified_at, notifications=r.notifications,
    )


def latest_incident(session: Session, run_pk: int) -> Incident | None:
    """The run's latest incident (firing, or the last one resolved: it may reopen), locked."""
    q = select(_I).where(_I.c.run_pk == run_pk).order_by(_I.c.opened_step.desc(), _I.c.opened_at.desc()).limit(1)
    row = session.execute(for_update(session, q, of=_I)).first()
    return None if row is None else _incident(row)


def _state_values(inc: Incident, now: float) -> dict[str, Any]:
    return {
        "state": inc.state, "severity": inc.severity, "resolved_step": inc.resolved_step,
        "resolved_at": inc.resolved_at, "reopened": inc.reopened,
        "story": json.dumps(inc.story_json(), separators=(",", ":")),
        "firing_alerts": json.dumps(inc.firing, separators=(",", ":")), "changed_at": inc.changed_at,
        "updated_at": now,
    }


def save_grouped(session: Session, *, run_pk: int, touched: Sequence[Incident], new: set[str],
                 joined: Sequence[tuple[str, str]], now: float) -> None:
    """Write what :func:`..incidents.group` did. A changed incident is due for a look by the delivery
    worker now (it applies the notification timers); its notification columns are the worker's."""
    conn = session.connection()
    fresh = [inc for inc in touched if inc.id in new]
    if fresh:
        conn.execute(insert(_I), [
            {**_state_values(inc, now), "id": inc.id, "run_pk": run_pk, "opened_step": inc.opened_step,
             "opened_at": inc.opened_at, "next_due_at": inc.changed_at, "notifications": 0,
             "notified_state": None, "notified_severity": None, "last_notified_at": None}
            for inc in fresh
        ])
    for inc in touched:
        if inc.id in new:
            continue
        values = _state_values(inc, now)
        if inc.changed_at is not None:  # look at it now; the worker defers it (group_wait / group_interval)
            values["next_due_at"] = inc.changed_at
        conn.execute(update(_I).where(_I.c.id == inc.id).values(values))
    if joined:
        conn.execute(insert(_M), [{"incident_id": i, "alert_id": a} for i, a in joined])


# --- the delivery worker's side ------------------------------------------------------------------


@dataclass(frozen=True)
class DueIncident:
    """An incident whose ``next_due_at`` has passed, locked for the flush, with its run."""

    incident: Incident
    run_pk: int
    run_id: str
    run_name: str | None
    algorithm: str | None
    project: str
    run_last_seen_at: float
    run_last_step: int | None
    run_running: bool


def due_incidents(session: Session, *, now: float, limit: int = 100) -> list[DueIncident]:
    """Incidents due for a look at ``now``, locked (skipping ones another worker or ingest holds)."""
    q = (
        select(_I, Run.run_id.label("run_client_id"), Run.name.label("run_name"), Run.algorithm,
               Run.last_seen_at, Run.last_step.label("run_last_step"), Run.status.label("run_status"),
               Project.name.label("project_name"))
        .join(Run, Run.id == _I.c.run_pk)
        .join(Project, Project.id == Run.project_id)
        .where(_I.c.next_due_at.is_not(None), _I.c.next_due_at <= now)
        .order_by(_I.c.next_due_at, _I.c.id)
        .limit(limit)
    )
    return [
        DueIncident(_incident(r), r.run_pk, r.run_client_id, r.run_name, r.algorithm, r.project_name, r.last_seen_at,
                    r.run_last_step, r.run_status == "running")
        for r in session.execute(for_update(session, q, skip_locked=True, of=_I))
    ]


def save_flush(session: Session, inc: Incident, *, next_due_at: float | None, now: float) -> None:
    """Record a flush: what it told (``notified_*``), the changes it consumed, when to look again."""
    session.execute(update(_I).where(_I.c.id == inc.id).values(
        changed_at=inc.changed_at, next_due_at=next_due_at, notified_state=inc.notified_state,
        notified_severity=inc.notified_severity, last_notified_at=inc.last_notified_at,
        notifications=inc.notifications, updated_at=now,
    ))


def incident_alerts(session: Session, incident_ids: Sequence[str]) -> dict[str, list[AlertInfo]]:
    """Member alerts per incident, in the order they fired."""
    out: dict[str, list[AlertInfo]] = {i: [] for i in incident_ids}
    if not incident_ids:
        return out
    q = (
        select(_M.c.incident_id, Alert, Run.run_id, Project.name)
        .join(Alert, Alert.id == _M.c.alert_id)
        .join(Run, Run.id == Alert.run_pk)
        .join(Project, Project.id == Run.project_id)
        .where(_M.c.incident_id.in_(list(incident_ids)))
        .order_by(Alert.fired_step, Alert.fired_at, Alert.id)
    )
    for incident_id, alert, rid, pname in session.execute(q):
        out[incident_id].append(alert_info(alert, rid, pname))
    return out


# --- reading back (the API) ----------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentInfo:
    incident: Incident
    run_id: str
    project: str
    alert_count: int


def list_incidents(
    session: Session,
    *,
    project: str | None = None,
    run_id: str | None = None,
    state: str | None = None,
    severity: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[IncidentInfo]:
    """Incidents newest first (by when they opened), filtered like the alerts are."""
    members = select(func.count()).select_from(_M).where(_M.c.incident_id == _I.c.id).scalar_subquery()
    q = (
        select(_I, Run.run_id.label("run_client_id"), Project.name.label("project_name"),
               members.label("alert_count"))
        .join(Run, Run.id == _I.c.run_pk)
        .join(Project, Project.id == Run.project_id)
    )
    q = in_scope(q, project=project, run_id=run_id)
    if state is not None:
        q = q.where(_I.c.state == state)
    if severity is not None:
        q = q.where(_I.c.severity == severity)
    q = q.order_by(_I.c.opened_at.desc(), _I.c.opened_step.desc(), _I.c.id).limit(limit).offset(offset)
    return [IncidentInfo(_incident(r), r.run_client_id, r.project_name, int(r.alert_count)) for r in session.execute(q)]


def get_incident(session: Session, incident_id: str) -> IncidentInfo | None:
    q = (
        select(_I, Run.run_id.label("run_client_id"), Project.name.label("project_name"))
        .join(Run, Run.id == _I.c.run_pk)
        .join(Project, Project.id == Run.project_id)
        .where(_I.c.id == incident_id)
    )
    r = session.execute(q).first()
    if r is None:
        return None
    count = session.scalar(select(func.count()).select_from(_M).where(_M.c.incident_id == incident_id)) or 0
    return IncidentInfo(_incident(r), r.run_client_id, r.project_name, int(count))
