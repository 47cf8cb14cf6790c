"""The periodic check behind time-based rules (``silent_run``): no step for a while.

Steps drive every other rule; a run that stops sending steps produces none, so the service's
background task calls :func:`check_silent_runs` every ``silent_check_s`` seconds. It fires for runs
still marked ``running`` whose last step arrived more than ``after_s`` ago, and resolves open
silence alerts of runs that are no longer running. The next ingested step resolves it too (the
rule's step function is always false). Each run is locked as ingest locks it, so the check and an
arriving batch never both change the run's rule state.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .alerting import RunRef, apply_transitions, project_name
from .rules.detectors import KINDS
from .rules.evaluate import FIRING, RESOLVED, Transition, fresh_state, new_id
from .storage.alert_models import Alert
from .storage.db import for_update
from .storage.models import Run
from .storage.rule_defs import list_rules
from .storage.rule_state import load_state, save_state

__all__ = ["check_silent_runs"]


def check_silent_runs(session: Session, *, now: float, limit: int = 500) -> list[Transition]:
    """Fire and resolve silence alerts; returns the transitions written (in the caller's transaction)."""
    rules = [r for r in list_rules(session) if r.enabled and KINDS[r.kind].time_based]
    if not rules:
        return []
    shortest = min(float(r.params["after_s"]) for r in rules)
    rule_ids = [r.id for r in rules]
    open_silence = (
        select(Alert.id)
        .where(Alert.run_pk == Run.id, Alert.rule_id.in_(rule_ids), Alert.state.in_(("pending", FIRING)))
        .exists()
    )
    to_fire = select(Run.id).where(Run.status == "running", Run.last_seen_at < now - shortest, ~open_silence)
    to_resolve = select(Run.id).where(Run.status != "running", open_silence)
    pks = list(session.scalars(to_fire.limit(limit))) + list(session.scalars(to_resolve.limit(limit)))
    out: list[Transition] = []
    for pk in pks:
        run = session.scalars(for_update(session, select(Run).where(Run.id == pk))).one_or_none()
        if run is None:
            continue
        project = project_name(session, run.project_id)
        state, exists = load_state(session, run.id)
        made: list[Transition] = []
        for rule in rules:
            if not rule.applies_to(project, run.run_id):
                continue
            lc = state.rules.setdefault(rule.id, fresh_state(rule))
            silent_for = now - run.last_seen_at
            step = run.last_step if run.last_step is not None else 0
            if lc["s"] is None and run.status == "running" and silent_for > float(rule.params["after_s"]):
                lc.update(s=FIRING, n=1, a=new_id())
                change = (None, FIRING)
            elif lc["s"] is not None and run.status != "running":
                change = (lc["s"], RESOLVED)
            else:
                continue
            made.append(
                Transition(
                    id=new_id(),
                    alert_id=lc["a"],
                    run_id=run.run_id,
                    rule_id=rule.id,
                    severity=rule.severity,
                    from_state=change[0],
                    to_state=change[1],
                    step=step,
                    time=run.last_seen_at,
                    values={"silent_for_s": round(silent_for, 3), "status": run.status},
                )
            )
            if change[1] == RESOLVED:
                lc.update(s=None, n=0, a=None)
        if made:
            save_state(session, run.id, state, exists, now)
            apply_transitions(session, RunRef(run.id, run.run_id, run.project_id), made, now=now)
            out += made
    return out
