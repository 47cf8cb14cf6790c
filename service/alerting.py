"""Alerting on ingest: evaluate a stored batch with the (pure) rules and write alerts, transitions and
the run's incident. Called by :mod:`.ingestion` (the use case) and :mod:`.silence_check` (the periodic check).

Alerts that fire or resolve are grouped into the run's incident (:mod:`.incidents`, pure); webhooks
hear of incidents, not of single alerts: the delivery worker renders and enqueues an incident's
notification when its timers say so (:mod:`.outbox.incident_notices`), not this transaction.

Runs inside the transaction that stored the steps, after the run row was locked (ingest into one run
is serialised), so alerts commit or roll back with the steps. Per batch: one read of the rule
definitions, one read and one write of the run's rule state; the evaluation itself is in memory
(:func:`.evaluate.evaluate_batch`); rows are written only for transitions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from .incidents import AlertChange, group
from .rules.evaluate import (
    FIRING,
    PENDING,
    RESOLVED,
    RunRuleState,
    StepInput,
    Transition,
    evaluate_batch,
    new_id,
)
from .storage.alert_models import Alert, AlertTransition
from .storage.incidents import latest_incident, save_grouped
from .storage.models import Project
from .storage.rule_defs import cached_rules
from .storage.rule_state import load_state, save_state

__all__ = ["Evaluation", "FiringAlert", "RunRef", "apply_transitions", "evaluate_run_steps", "firing_in", "project_name"]

_project_names: dict[tuple[str, int], str] = {}


@dataclass(frozen=True)
class RunRef:
    pk: int
    run_id: str
    project_id: int


def project_name(session: Session, project_id: int) -> str | None:
    """Project names never change, so they are cached per process (and database: ids repeat across them)."""
    key = (str(session.get_bind().engine.url), project_id)
    name = _project_names.get(key)
    if name is None:
        name = session.scalar(select(Project.name).where(Project.id == project_id))
        if name is not None:
            _project_names[key] = name
    return name


@dataclass(frozen=True)
class FiringAlert:
    """An alert of the run that is firing after a batch (from the run's rule state: no query)."""

    alert_id: str
    rule: str
    severity: str


@dataclass
class Evaluation:
    transitions: list[Transition]
    firing: list[FiringAlert]


def firing_in(state: RunRuleState) -> list[FiringAlert]:
    return [FiringAlert(lc["a"], rid, lc.get("sev", "warning")) for rid, lc in state.rules.items()
            if lc.get("s") == FIRING and lc.get("a")]


def evaluate_run_steps(session: Session, run: RunRef, steps: Iterable[StepInput], *, now: float | None = None) -> Evaluation:
    """Evaluate the run's rules over newly stored steps and persist the outcome.

    Returns the transitions written and the run's alerts firing afterwards.
    """
    now = time.time() if now is None else now
    steps = list(steps)
    state, exists = load_state(session, run.pk)
    if state.last_step is not None and all(s.step <= state.last_step for s in steps):
        return Evaluation([], firing_in(state))  # a replayed or late batch: nothing new to evaluate
    project = project_name(session, run.project_id)
    rules = [r for r in cached_rules(session) if r.applies_to(project, run.run_id)]
    transitions = evaluate_batch(rules, state, run.run_id, steps)
    for lc in state.rules.values():  # when the service saw each still-pending alert open
        opened = lc.get("o")
        if opened is not None and opened["wall"] is None:
            opened["wall"] = now
    save_state(session, run.pk, state, exists, now)
    if transitions:
        apply_transitions(session, run, transitions, now=now)
    return Evaluation(transitions, firing_in(state))


def _notifiable(t: Transition) -> bool:
    """Incidents hear about firing and about the end of a fired alert, not about pending."""
    return t.to_state == FIRING or (t.to_state == RESOLVED and t.from_state == FIRING)


def _transition_row(t: Transition, run_pk: int, at: float, values_doc: str | None = None) -> dict:
    return {
        "event_id": t.id, "alert_id": t.alert_id, "run_pk": run_pk, "rule_id": t.rule_id,
        "severity": t.severity, "from_state": t.from_state, "to_state": t.to_state, "step": t.step,
        "step_time": t.time, "at": at,
        "metric_values": values_doc or json.dumps(t.values, separators=(",", ":"), allow_nan=False),
    }


def apply_transitions(
    session: Session,
    run: RunRef,
    transitions: Sequence[Transition],
    *,
    now: float,
) -> None:
    """Write alert rows and transition rows, in order, and group what fired or resolved into the
    run's incident.

    Only alerts that fire are stored: a pending alert lives in the run's rule state (the API lists it
    from there) and, when it fires, is written with its opening transition; one that clears while
    pending leaves nothing. A handful of statements per batch whatever the number of transitions:
    new alerts in one insert, each changed alert updated once to its final state, transitions in one
    insert, then (only when an alert fired or resolved) the run's latest incident read and written.
    """
    alerts = cast(Table, Alert.__table__)
    new_alerts: dict[str, dict] = {}
    changed: dict[str, dict] = {}
    rows: list[dict] = []
    changes: list[AlertChange] = []
    for t in transitions:
        if t.to_state == PENDING or (t.from_state == PENDING and t.to_state == RESOLVED):
            continue  # never fired: nothing stored
        values_doc = json.dumps(t.values, separators=(",", ":"), allow_nan=False)
        if t.from_state is None or t.from_state == PENDING:  # the alert fires: its row is written now
            opened = t.opened if t.from_state == PENDING else None
            new_alerts[t.alert_id] = {
                "id": t.alert_id, "run_pk": run.pk, "rule_id": t.rule_id, "severity": t.severity,
                "state": FIRING, "started_step": opened.step if opened else t.step,
                "started_at": (opened.wall or now) if opened else now,
                "fired_step": t.step, "fired_at": now,
                "resolved_step": None, "resolved_at": None, "metric_values": values_doc,
            }
            if opened is not None:
                rows.append(_transition_row(opened, run.pk, opened.wall or now))
        else:
            target = new_alerts.get(t.alert_id) or changed.setdefault(t.alert_id, {"b_id": t.alert_id})
            if t.to_state == FIRING:
                target.update(state=FIRING, fired_step=t.step, fired_at=now, metric_values=values_doc)
            else:
                target.update(state=RESOLVED, resolved_step=t.step, resolved_at=now, metric_values=values_doc)
        rows.append(_transition_row(t, run.pk, now, values_doc))
        if _notifiable(t):
            changes.append(AlertChange(t.alert_id, t.rule_id, t.severity, t.to_state == FIRING, t.step, now))
    conn = session.connection()
    if new_alerts:
        conn.execute(insert(alerts), list(new_alerts.values()))
    by_keys: dict[frozenset, list[dict]] = {}
    for upd in changed.values():
        by_keys.setdefault(frozenset(upd), []).append(upd)
    for keys, group_rows in by_keys.items():
        stmt = update(alerts).where(alerts.c.id == bindparam("b_id")).values(
            {k: bindparam(k) for k in keys if k != "b_id"}
        )
        conn.execute(stmt, group_rows)
    if rows:
        conn.execute(insert(cast(Table, AlertTransition.__table__)), rows)
    if changes:
        grouped = group(latest_incident(session, run.pk), changes, new_id=new_id)
        save_grouped(session, run_pk=run.pk, touched=grouped.touched, new=grouped.new, joined=grouped.joined,
                     now=now)
