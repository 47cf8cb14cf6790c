"""Drive one run's alerts directly: steps (which keep the run active) and alert transitions written
through ``alerting.apply_transitions`` (what ingest calls after rule evaluation), at a fake clock's
time. Incident tests use it so they do not depend on what the built-in rules fire on a trace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sapo_monitor.client.wire import StepRecord
from sapo_monitor.service.alerting import RunRef, apply_transitions
from sapo_monitor.service.ingestion import ingest_steps
from sapo_monitor.service.rules.evaluate import Transition, new_id
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.runs import ensure_project


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class RunDriver:
    """One run: steps (which keep it active) and alert transitions, at the fake clock's time."""

    db: Database
    clock: Clock
    run_id: str
    project: str = "p"
    step: int = 0
    open_alerts: dict[str, tuple[str, str]] = field(default_factory=dict)  # rule -> (alert id, severity)

    def steps(self, n: int = 1) -> RunRef:
        records = [StepRecord(step=self.step + k + 1, time=self.clock.now, metrics={"x.custom": 1.0})
                   for k in range(n)]
        self.step += n
        with self.db.write() as s:
            pid = ensure_project(s, self.project)
            run = ingest_steps(s, run_id=self.run_id, project_id=pid, records=records, now=self.clock.now).run
        return RunRef(run.pk, run.run_id, run.project_id)

    def _apply(self, ts: list[Transition]) -> None:
        ref = self.steps()
        with self.db.write() as s:
            apply_transitions(s, ref, ts, now=self.clock.now)

    def fire(self, rule: str, severity: str) -> None:
        aid = new_id()
        self.open_alerts[rule] = (aid, severity)
        self._apply([Transition(new_id(), aid, self.run_id, rule, severity, None, "firing", self.step + 1, None,
                                {"x.custom": 1.0})])

    def resolve(self, rule: str) -> None:
        aid, severity = self.open_alerts.pop(rule)
        self._apply([Transition(new_id(), aid, self.run_id, rule, severity, "firing", "resolved", self.step + 1,
                                None, {"x.custom": 0.5})])
