"""Replay corpus runs through a rule pack's pure evaluation and score what fired against the labels.

Two packs side by side: ``current`` (the service's built-in rules as they are in this checkout,
``sapo_monitor.service.rules``) and ``baseline`` (the pack before issue 12: the modules of
``service/rules`` at the commit in ``detection_baseline_rules.json``, loaded from git into a private
package, so later changes to the rules cannot change the baseline). No database: the evaluator is the
same pure ``evaluate_batch`` the service calls on ingest, fed the spooled records in delivery batches.
"""

from __future__ import annotations

import importlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["Outcome", "Pack", "load_baseline", "load_current", "replay", "score"]

BENCH = Path(__file__).resolve().parent
WINDOW = 30  # a critical alert within this many steps of onset counts as a detection
# Incidents and their notifications are the service's own (sapo_monitor.service.incidents: grouping with
# its reopen window, Alertmanager-style timers with the default policy), simulated with a step every
# STEP_S seconds (a typical LLM RL step; the toy corpus runs ~0.2 s a step, which would fold a whole run
# into one message). Without that module (an older checkout) the bench falls back to its own model:
# alerts overlapping or within INCIDENT_GAP steps are one incident, told when opened, escalated, resolved.
STEP_S = 10.0
INCIDENT_GAP = 30


@dataclass
class Pack:
    name: str
    rules: Sequence[Any]
    evaluate_batch: Callable[..., list[Any]]
    new_state: Callable[[], Any]
    step_input: Callable[..., Any]
    run: Callable[[str, Sequence[Any]], list[Fired]] | None = None  # the pack's own replay, when it has one


def _pack_from(name: str, builtin: ModuleType, evaluate: ModuleType) -> Pack:
    return Pack(name, list(builtin.BUILTIN_RULES), evaluate.evaluate_batch, evaluate.RunRuleState,
                evaluate.StepInput)


def load_current() -> Pack:
    """The checkout's built-in pack; replayed through ``service.rules.replay`` (the backtest's entry point)."""
    evaluate = importlib.import_module("sapo_monitor.service.rules.evaluate")
    builtin = importlib.import_module("sapo_monitor.service.rules.builtin")
    pack = _pack_from("current", builtin, evaluate)
    try:
        backtest = importlib.import_module("sapo_monitor.service.rules.replay")
    except ImportError:
        return pack

    def run(run_id: str, inputs: Sequence[Any]) -> list[Fired]:
        result = backtest.replay(pack.rules, inputs, run_id=run_id, batch=32)
        return [Fired(a.rule, a.severity, a.fired_step, a.resolved_step) for a in result.alerts
                if a.fired_step is not None]

    pack.run = run
    return pack


def load_baseline() -> Pack:
    """The pre-issue-12 pack, from git (the repository this bench lives in)."""
    meta = json.loads((BENCH / "detection_baseline_rules.json").read_text())
    commit, pkg = meta["commit"], f"detection_baseline_{meta['commit']}"
    root = Path(tempfile.mkdtemp(prefix="sapo-baseline-rules-"))
    (root / pkg).mkdir()
    (root / pkg / "__init__.py").write_text("")
    for module in ("model", "kinds", "evaluate", "builtin"):
        src = subprocess.run(["git", "-C", str(BENCH.parent), "show", f"{commit}:service/rules/{module}.py"],
                             check=True, capture_output=True, text=True).stdout
        (root / pkg / f"{module}.py").write_text(src)
    sys.path.insert(0, str(root))
    try:
        evaluate = importlib.import_module(f"{pkg}.evaluate")
        builtin = importlib.import_module(f"{pkg}.builtin")
    finally:
        sys.path.remove(str(root))
    pack = _pack_from("baseline", builtin, evaluate)
    got = {r.id: dict(r.params) for r in pack.rules}
    want = {r["id"]: r["params"] for r in meta["rules"]}
    if got.keys() != want.keys():
        raise RuntimeError(f"baseline pack at {commit} differs from detection_baseline_rules.json")
    return pack


@dataclass
class Fired:
    rule: str
    severity: str
    start: int
    end: int | None  # step it resolved at (None: still firing at the end)


def replay(pack: Pack, run_id: str, steps: Sequence[dict[str, Any]], batch: int = 32) -> list[Fired]:
    """Evaluate ``pack`` over a run's wire step documents; the alerts that fired (pending ones never notify)."""
    from sapo_monitor.client.wire import decode_float

    state = pack.new_state()
    open_: dict[str, Fired] = {}
    out: list[Fired] = []
    inputs = [pack.step_input(step=int(d["step"]), time=d.get("time"),
                              metrics={k: decode_float(v) for k, v in d.get("metrics", {}).items()}) for d in steps]
    if pack.run is not None:
        return pack.run(run_id, inputs)
    for i in range(0, len(inputs), batch):
        for t in pack.evaluate_batch(pack.rules, state, run_id, inputs[i : i + batch]):
            if t.to_state == "firing":
                f = open_[t.alert_id] = Fired(t.rule_id, t.severity, t.step, None)
                out.append(f)
            elif t.to_state == "resolved" and t.alert_id in open_:
                open_.pop(t.alert_id).end = t.step
    return out


@dataclass
class Outcome:
    """Per run: what the pack did relative to the label."""

    kind: str
    steps: int
    onset: int | None
    alerts: list[Fired] = field(default_factory=list)
    collapsed: bool = False  # the hindsight rule sees a collapse (for a fault run: the fault broke it)
    precursor_only: bool = False  # a fault kind that does not collapse runs: detected by a warning

    def criticals(self) -> list[Fired]:
        return [a for a in self.alerts if a.severity == "critical"]

    def detection_delay(self) -> int | None:
        """Steps from onset to the first critical firing in [onset, onset + WINDOW] (0 if one was open);
        for a precursor-only kind, the first warning's."""
        assert self.onset is not None
        best: int | None = None
        wanted = "warning" if self.precursor_only else "critical"
        for a in (a for a in self.alerts if a.severity == wanted):
            if a.start <= self.onset + WINDOW and (a.end is None or a.end >= self.onset):
                d = max(0, a.start - self.onset)
                best = d if best is None else min(best, d)
        return best

    def warned(self) -> bool:
        """Any alert (warning or critical) firing within [onset, onset + WINDOW]."""
        assert self.onset is not None
        return any(a.start <= self.onset + WINDOW and (a.end is None or a.end >= self.onset) for a in self.alerts)

    def first_warning(self) -> int | None:
        """First warning firing from 10 steps before the onset on (earlier ones are noise, counted apart)."""
        assert self.onset is not None
        starts = [a.start for a in self.alerts if a.severity == "warning" and a.start >= self.onset - 10]
        return min(starts) if starts else None

    def before_onset(self) -> int:
        assert self.onset is not None
        return sum(a.start < self.onset - 10 for a in self.alerts)

    def notifications(self) -> int:
        """Webhook notifications under per-alert delivery: one per firing, one per resolution."""
        return sum(1 + (a.end is not None) for a in self.alerts)

    def incidents(self) -> list[list[Fired]]:
        """The run's alerts grouped into incidents (see INCIDENT_GAP), in firing order."""
        out: list[list[Fired]] = []
        end: float = -1.0
        for a in sorted(self.alerts, key=lambda a: a.start):
            if out and a.start <= end + INCIDENT_GAP:
                out[-1].append(a)
            else:
                out.append([a])
                end = -1.0
            end = max(end, float("inf") if a.end is None else a.end)
        return out

    def _service(self) -> tuple[int, int] | None:
        """(warning-only incidents, notifications) under the service's incident model, or None."""
        try:
            from sapo_monitor.service import incidents as svc
        except ImportError:
            return None
        changes = []
        for k, a in enumerate(self.alerts):
            changes.append(svc.AlertChange(f"a{k}", a.rule, a.severity, True, a.start, a.start * STEP_S))
            if a.end is not None:
                changes.append(svc.AlertChange(f"a{k}", a.rule, a.severity, False, a.end, a.end * STEP_S))
        changes.sort(key=lambda c: (c.at, c.step, not c.fired))
        policy = svc.NotifyPolicy()
        times = {k: k * STEP_S for k in range(self.steps + 1)}
        until = self.steps * STEP_S + policy.group_wait_s + policy.group_interval_s + svc.recheck_s(policy)
        found, sent = svc.simulate(changes, policy=policy, step_times=times, finished_at=self.steps * STEP_S,
                                   until=until)
        return sum(inc.severity == "warning" for inc in found), len(sent)

    def incident_notifications(self) -> int:
        """Notifications per incident: the service's model (see STEP_S), else opened / escalated / resolved."""
        service = self._service()
        if service is not None:
            return service[1]
        n = 0
        for inc in self.incidents():
            n += 1 + (inc[0].severity == "warning" and any(a.severity == "critical" for a in inc))
            n += all(a.end is not None for a in inc)
        return n

    def warning_incidents(self) -> int:
        service = self._service()
        if service is not None:
            return service[0]
        return sum(all(a.severity == "warning" for a in inc) for inc in self.incidents())

    def criticals_near(self) -> bool:
        """Any critical alert firing within [onset - 10, onset + WINDOW]."""
        assert self.onset is not None
        return any(a.start <= self.onset + WINDOW and (a.end is None or a.end >= self.onset - 10)
                   for a in self.criticals())


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def score(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """The bench's figures per failure kind, over all failing runs (``all failing``), and on healthy runs."""
    table: dict[str, dict[str, Any]] = {}
    failing = [o for o in outcomes if o.kind != "healthy"]
    for kind in [*sorted({o.kind for o in failing}), "all failing"]:
        runs = failing if kind == "all failing" else [o for o in failing if o.kind == kind]
        delays = [d for o in runs if (d := o.detection_delay()) is not None]
        leads, crit_leads = [], []
        for o in runs:
            w = o.first_warning()
            if w is None:
                continue
            leads.append(w - o.onset)  # type: ignore[operator]
            d = o.detection_delay()
            if d is not None:
                crit_leads.append(o.onset + d - w)  # type: ignore[operator]
        table[kind] = {
            "runs": len(runs),
            "collapsed": sum(o.collapsed for o in runs),
            "detected": len(delays),
            "warned": sum(o.warned() for o in runs),
            "median_delay": _median([float(d) for d in delays]),
            "worst_delay": max(delays) if delays else None,
            "warning_vs_onset": _median([float(x) for x in leads]),
            "lead_vs_critical": _median([float(x) for x in crit_leads]),
            "alerts_before_onset": sum(o.before_onset() for o in runs),
            "notifications_per_run": statistics.mean(o.notifications() for o in runs) if runs else None,
            "incident_notifications_per_run": statistics.mean(o.incident_notifications() for o in runs)
            if runs else None,
            "max_notifications": max((o.notifications() for o in runs), default=None),
            "precursor_only": bool(runs) and all(o.precursor_only for o in runs),
            # a critical where the hindsight rule sees no collapse (for a precursor-only kind: a contract break)
            "runs_with_critical": sum(bool(o.criticals()) and not o.collapsed for o in runs),
        }
    healthy = [o for o in outcomes if o.kind == "healthy"]
    steps = sum(o.steps for o in healthy)
    table["healthy"] = {
        "runs": len(healthy),
        "runs_with_critical": sum(bool(o.criticals()) for o in healthy),
        "criticals": sum(len(o.criticals()) for o in healthy),
        "warnings_per_1k_steps": 1000 * sum(len(o.alerts) - len(o.criticals()) for o in healthy) / max(1, steps),
        "max_warning_incidents": max((o.warning_incidents() for o in healthy), default=0),
        "notifications_per_run": statistics.mean(o.notifications() for o in healthy) if healthy else None,
        "incident_notifications_per_run": statistics.mean(o.incident_notifications() for o in healthy)
        if healthy else None,
    }
    return table
