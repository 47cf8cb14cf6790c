"""Incident notifications: the delivery worker's flush of incidents whose timers are due.

Ingest groups alerts into incidents and marks a changed incident due (``next_due_at``); every worker
round calls :func:`flush_incident_notifications`, which applies the timers and decides what to send
(:func:`..incidents.flush_one`: group_wait, group_interval, repeat_interval; a told incident's
resolution is held while it may still reopen) and writes one outbox row per covering webhook,
rendered from the incident and its member alerts as they are now. Outbox rows are keyed by run, so a
run's notifications are delivered in order.

One short transaction; the incidents it reads are locked (``SKIP LOCKED`` on PostgreSQL), so two
replicas never notify the same change twice.
"""

from __future__ import annotations

import os

from sqlalchemy.orm import Session

from ..incidents import Incident, NotifyPolicy, flush_one, story
from ..storage.alert_queries import AlertInfo
from ..storage.incidents import DueIncident, due_incidents, incident_alerts, save_flush
from ..storage.rule_defs import cached_rules
from ..ui.links import run_page_url
from .payloads import IncidentEvent, MemberAlert, render
from .store import enqueue_rows, outbox_row
from .webhooks import enabled_webhooks

__all__ = ["flush_incident_notifications", "incident_event", "member_alert"]


def member_alert(a: AlertInfo, description: str = "") -> MemberAlert:
    return MemberAlert(id=a.id, rule=a.rule, severity=a.severity, state=a.state, started_step=a.started_step,
                       fired_step=a.fired_step, fired_at=a.fired_at, resolved_step=a.resolved_step,
                       resolved_at=a.resolved_at, values=a.values, description=description)


def incident_event(d: DueIncident, kind: str, members: list[MemberAlert], *, now: float) -> IncidentEvent:
    inc: Incident = d.incident
    focus = inc.confirmation.step if inc.confirmation is not None else inc.opened_step
    return IncidentEvent(
        event_id=os.urandom(16).hex(), type=f"incident.{kind}", at=now, incident_id=inc.id, state=inc.state,
        severity=inc.severity, run_id=d.run_id, project=d.project, opened_step=inc.opened_step,
        opened_at=inc.opened_at, story=story(inc), alerts=members, run_name=d.run_name, algorithm=d.algorithm,
        resolved_step=inc.resolved_step, resolved_at=inc.resolved_at, reopened=inc.reopened,
        run_url=run_page_url(d.run_id, step=focus),
    )


def flush_incident_notifications(session: Session, *, now: float, policy: NotifyPolicy, limit: int = 100) -> int:
    """Send what is due at ``now`` (inside the caller's transaction); the number of notifications."""
    due = due_incidents(session, now=now, limit=limit)
    if not due:
        return 0
    plan: list[tuple[DueIncident, str]] = []
    for d in due:
        inc = d.incident
        active = inc.last_notified_at is None or d.run_last_seen_at > inc.last_notified_at
        kind, again = flush_one(inc, now=now, policy=policy, run_step=d.run_last_step, run_running=d.run_running,
                                run_active=active)
        save_flush(session, inc, next_due_at=again, now=now)
        if kind is not None:
            plan.append((d, kind))
    if not plan:
        return 0
    members = incident_alerts(session, [d.incident.id for d, _ in plan])
    descriptions = {r.id: r.description for r in cached_rules(session)}
    hooks = enabled_webhooks(session)
    rows: list[dict] = []
    for d, kind in plan:
        targets = [h for h in hooks if h.covers(d.project, d.run_id, d.incident.severity)]
        if not targets:
            continue
        event = incident_event(d, kind, [member_alert(a, descriptions.get(a.rule, ""))
                                         for a in members[d.incident.id]], now=now)
        rows += [outbox_row(webhook_id=h.id, event_id=event.event_id, order_key=d.run_id,
                            body=render(h.format, event), now=now) for h in targets]
    if rows:
        enqueue_rows(session, rows)
    return len(plan)
