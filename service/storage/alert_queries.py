"""Reading alerts back: lists for the API, firing alerts for /metrics, first alert steps for compare.

:func:`in_scope` is the one filter by project name and run id for everything listed per run (pending
and stored alerts here, incidents in :mod:`.incidents`); the API passes its filters straight through.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .alert_models import Alert, AlertTransition, RuleState
from .models import Project, Run

__all__ = [
    "AlertInfo",
    "FiringAlert",
    "TransitionInfo",
    "alert_info",
    "firing_alerts",
    "first_alert_steps",
    "in_scope",
    "list_alerts",
    "pending_alerts",
    "run_transitions",
]


@dataclass(frozen=True)
class AlertInfo:
    id: str
    run_id: str
    project: str
    rule: str
    severity: str
    state: str
    started_step: int
    started_at: float
    fired_step: int | None
    fired_at: float | None
    resolved_step: int | None
    resolved_at: float | None
    values: dict[str, Any]


@dataclass(frozen=True)
class TransitionInfo:
    event_id: str
    alert_id: str
    rule: str
    severity: str
    from_state: str | None
    to_state: str
    step: int
    at: float
    values: dict[str, Any]


@dataclass(frozen=True)
class FiringAlert:
    project: str
    run_id: str
    rule: str
    severity: str


def in_scope(query: Any, *, project: str | None, run_id: str | None) -> Any:
    """``query`` (joined with ``Run`` and ``Project``) limited to a project name and a run id (None: any)."""
    if project is not None:
        query = query.where(Project.name == project)
    if run_id is not None:
        query = query.where(Run.run_id == run_id)
    return query


def alert_info(a: Alert, run_id: str, project: str) -> AlertInfo:
    return AlertInfo(
        id=a.id, run_id=run_id, project=project, rule=a.rule_id, severity=a.severity, state=a.state,
        started_step=a.started_step, started_at=a.started_at, fired_step=a.fired_step, fired_at=a.fired_at,
        resolved_step=a.resolved_step, resolved_at=a.resolved_at, values=json.loads(a.metric_values),
    )


def pending_alerts(session: Session, *, project: str | None = None, run_id: str | None = None) -> list[AlertInfo]:
    """Alerts pending now: they live in the runs' rule state until they fire (or clear)."""
    q = (
        select(RuleState.state, Run.run_id, Project.name)
        .join(Run, Run.id == RuleState.run_pk)
        .join(Project, Project.id == Run.project_id)
    )
    q = in_scope(q, project=project, run_id=run_id)
    out = []
    for doc, rid, pname in session.execute(q):
        for rule_id, lc in (orjson.loads(doc).get("rules") or {}).items():
            opened = lc.get("o")
            if lc.get("s") != "pending" or not opened:
                continue
            out.append(AlertInfo(
                id=lc["a"], run_id=rid, project=pname, rule=rule_id, severity=lc.get("sev", "warning"),
                state="pending", started_step=opened["step"], started_at=opened.get("wall") or 0.0,
                fired_step=None, fired_at=None, resolved_step=None, resolved_at=None, values=opened["values"],
            ))
    return out


def list_alerts(
    session: Session,
    *,
    state: str | None = None,
    project: str | None = None,
    run_id: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[AlertInfo]:
    """Alerts newest first, filtered by state, project name and run id (pending ones included)."""
    pending = pending_alerts(session, project=project, run_id=run_id) if state in (None, "pending") else []
    if state == "pending":
        pending.sort(key=lambda a: (-a.started_at, -a.started_step, a.id))
        return pending[offset : offset + limit]
    stored = _stored_alerts(session, state=state, project=project, run_id=run_id, limit=offset + limit)
    merged = sorted(pending + stored, key=lambda a: (-a.started_at, -a.started_step, a.id))
    return merged[offset : offset + limit]


def _stored_alerts(
    session: Session, *, state: str | None, project: str | None, run_id: str | None, limit: int
) -> list[AlertInfo]:
    q = (
        select(Alert, Run.run_id, Project.name)
        .join(Run, Run.id == Alert.run_pk)
        .join(Project, Project.id == Run.project_id)
    )
    if state is not None:
        q = q.where(Alert.state == state)
    q = in_scope(q, project=project, run_id=run_id)
    q = q.order_by(Alert.started_at.desc(), Alert.started_step.desc(), Alert.id).limit(limit)
    return [alert_info(a, rid, pname) for a, rid, pname in session.execute(q)]


def run_transitions(session: Session, *, run_pk: int, limit: int = 1000) -> list[TransitionInfo]:
    """A run's alert transitions in the order they happened."""
    q = select(AlertTransition).where(AlertTransition.run_pk == run_pk).order_by(AlertTransition.id).limit(limit)
    return [
        TransitionInfo(t.event_id, t.alert_id, t.rule_id, t.severity, t.from_state, t.to_state, t.step, t.at,
                       json.loads(t.metric_values))
        for t in session.scalars(q)
    ]


def firing_alerts(session: Session, *, seen_since: float | None = None) -> list[FiringAlert]:
    """Every alert firing now, with its run's project (for ``sapo_alert_firing``); with ``seen_since``,
    only runs seen since then (``/metrics`` keeps its cardinality bounded: idle runs drop out)."""
    q = (
        select(Project.name, Run.run_id, Alert.rule_id, Alert.severity)
        .join(Run, Run.id == Alert.run_pk)
        .join(Project, Project.id == Run.project_id)
        .where(Alert.state == "firing")
        .order_by(Run.run_id, Alert.rule_id)
    )
    if seen_since is not None:
        q = q.where(Run.last_seen_at >= seen_since)
    return [FiringAlert(*row) for row in session.execute(q)]


def first_alert_steps(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, int | None]]:
    """Per run: ``{"first_warning_step": .., "first_critical_step": ..}``: the earliest step at which an
    alert of that severity fired (the critical one is the run's "collapse step"); None when none did."""
    out: dict[str, dict[str, int | None]] = {
        rid: {"first_warning_step": None, "first_critical_step": None} for rid in run_ids
    }
    if not run_ids:
        return out
    q = (
        select(Run.run_id, Alert.severity, func.min(Alert.fired_step))
        .join(Run, Run.id == Alert.run_pk)
        .where(Run.run_id.in_(list(run_ids)), Alert.fired_step.is_not(None))
        .group_by(Run.run_id, Alert.severity)
    )
    for rid, severity, step in session.execute(q):
        if step is not None:
            out[rid][f"first_{severity}_step"] = int(step)
    return out
