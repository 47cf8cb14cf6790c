"""Pure rule evaluation: (rule state, step record) -> (new state, condition), and the alert lifecycle.

No database, no clock: the storage layer loads a run's :class:`RunRuleState` once per ingested batch,
calls :func:`evaluate_batch` over the batch's steps in step order, and writes the state and the
returned transitions back in the same transaction.

Lifecycle per (run, rule), as in Prometheus: the first step where the condition holds opens an alert
in ``pending``; after ``for_steps`` consecutive such steps it becomes ``firing``. A pending alert
ends (``resolved``) at the first step where the condition no longer holds; a firing one after
``clear_steps`` consecutive such steps (hysteresis against flapping on noisy metrics). With
``for_steps == 1`` the alert opens directly as ``firing``. A step without the metrics a rule reads changes nothing for that rule.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sapo_monitor.client.wire import StepRecord, encode_float

from .detectors import KINDS, QuietFn, StepFn
from .model import Rule

__all__ = [
    "Condition",
    "RunRuleState",
    "StepInput",
    "Transition",
    "advance",
    "compile_rule",
    "evaluate",
    "evaluate_batch",
    "rule_values",
]

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


def new_id() -> str:
    """A random 32-hex-digit id for alerts and events (uuid4's format; cheaper to make)."""
    return os.urandom(16).hex()


# What the evaluator reads from a step (step, time, metrics): the wire's one step record.
StepInput = StepRecord


@dataclass(frozen=True)
class Condition:
    """One rule's verdict on one step: ``active`` is None when the step lacked its metrics."""

    active: bool | None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """An alert changed state at a step; ``values`` holds the metric values that caused it."""

    id: str  # unique event id (also the webhook event id receivers dedupe by)
    alert_id: str
    run_id: str
    rule_id: str
    severity: str
    from_state: str | None
    to_state: str
    step: int
    time: float | None
    values: dict[str, Any]
    # On pending -> firing: the transition that opened the alert (None -> pending). Storage writes an
    # alert only once it fires, with this as its first transition; an alert that clears while still
    # pending leaves no rows (as in Prometheus), so a metric that flickers costs no writes.
    opened: Transition | None = None
    wall: float | None = None  # on ``opened``: when the service saw the pending step


@dataclass
class RunRuleState:
    """All rule state of one run: the last evaluated step and, per rule, detector + lifecycle state.

    Per rule: ``{"v": rule version, "k": rule kind, "d": detector state, "s": alert state or None, "n":
    consecutive steps the condition held, "a": open alert id or None}``. Plain JSON, so it survives
    restarts. The detector state belongs to one (version, kind): a built-in whose kind changed in a new
    release keeps its id and version, and its old state would mean nothing (or raise) in the new kind.
    """

    last_step: int | None = None
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # Derived entries (keys ending in "~", e.g. a sorted copy of a window) are rebuilt on demand:
        # leaving them out keeps the row written per batch small.
        rules = {}
        for rid, lc in self.rules.items():
            det = lc.get("d")
            if det and any(k[-1] == "~" for k in det):
                lc = {**lc, "d": {k: v for k, v in det.items() if k[-1] != "~"}}
            rules[rid] = lc
        return {"last_step": self.last_step, "rules": rules}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> RunRuleState:
        if not doc:
            return cls()
        return cls(last_step=doc.get("last_step"), rules=dict(doc.get("rules") or {}))


_compiled: dict[tuple[str, str, int, str], StepFn] = {}


_by_object: dict[int, tuple[Rule, StepFn, QuietFn | None]] = {}
USE_BATCH_FAST_PATH = True  # tests turn it off to check the fast path changes nothing


def compile_rule(rule: Rule) -> StepFn:
    """The rule's step function, cached per (id, kind, version, params)."""
    key = (rule.id, rule.kind, rule.version, json.dumps(dict(rule.params), sort_keys=True, default=list))
    fn = _compiled.get(key)
    if fn is None:
        if len(_compiled) > 4096:  # bounded: rule definitions change rarely
            _compiled.clear()
        fn = _compiled[key] = KINDS[rule.kind].compile(rule.params)
    return fn


def _compiled_for(rule: Rule) -> tuple[StepFn, QuietFn | None]:
    """Step function and batch scan of a rule object; the same objects come back batch after batch
    (the rule cache), so this skips even the key of :func:`compile_rule`."""
    hit = _by_object.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1], hit[2]
    kind = KINDS[rule.kind]
    fn = compile_rule(rule)
    quiet: QuietFn | None = None
    if kind.quiet is not None:
        quiet = kind.quiet(rule.params)
    elif kind.scan is not None:
        scan = kind.scan(rule.params)

        def quiet(_st: dict, batch: list) -> bool:  # stateless: nothing to update
            return not scan(batch)

    if len(_by_object) > 4096:
        _by_object.clear()
    _by_object[id(rule)] = (rule, fn, quiet)
    return fn, quiet


def _json_number(x: Any) -> Any:
    return encode_float(x) if isinstance(x, float) else x


def rule_values(rule: Rule, detector_state: Mapping[str, Any], metrics: Mapping[str, float]) -> dict[str, Any]:
    """The metric values (and the baseline the rule compared with) to store with a transition."""
    kind = KINDS[rule.kind]
    out: dict[str, Any] = {}
    for name in kind.metrics(rule.params):
        if name in metrics:
            out[name] = _json_number(metrics[name])
    for key in ("ref", "z"):
        if key in detector_state:
            out["baseline" if key == "ref" else "z"] = _json_number(detector_state[key])
    return out


def fresh_state(rule: Rule) -> dict[str, Any]:
    return {"v": rule.version, "k": rule.kind, "d": {}, "s": None, "n": 0, "a": None, "sev": rule.severity}


def _detector_is_current(st: Mapping[str, Any], rule: Rule) -> bool:
    # State written before "k" existed is reset once: it may come from a built-in's earlier kind.
    return st.get("v") == rule.version and st.get("k") == rule.kind


def advance(
    lc: dict[str, Any], active: bool | None, for_steps: int, clear_steps: int = 1
) -> tuple[str | None, str] | None:
    """Move one rule's lifecycle by one step; the (from, to) transition, or None when nothing changed."""
    if active is None:
        return None
    state = lc["s"]
    if active:
        lc["c"] = 0
        n = lc["n"] = lc["n"] + 1
        if state is None:
            lc["a"] = new_id()
            lc["s"] = FIRING if n >= for_steps else PENDING
            return None, lc["s"]
        if state == PENDING and n >= for_steps:
            lc["s"] = FIRING
            return PENDING, FIRING
        return None
    lc["n"] = 0
    if state is None:
        return None
    if state == FIRING and clear_steps > 1:
        c = lc["c"] = lc.get("c", 0) + 1
        if c < clear_steps:
            return None
    lc["s"], lc["c"] = None, 0
    return state, RESOLVED


def evaluate(rule: Rule, state: Mapping[str, Any] | None, step: StepInput) -> tuple[dict[str, Any], Condition]:
    """One rule on one step, without touching ``state``: the new state and the condition."""
    st = copy.deepcopy(dict(state)) if state else fresh_state(rule)
    if not _detector_is_current(st, rule):
        st["d"], st["v"], st["k"] = {}, rule.version, rule.kind
    active = compile_rule(rule)(st["d"], step.metrics)
    values = rule_values(rule, st["d"], step.metrics) if active else {}
    return st, Condition(active, values)


def evaluate_batch(
    rules: Sequence[Rule], state: RunRuleState, run_id: str, steps: Iterable[StepInput]
) -> list[Transition]:
    """Evaluate ``rules`` over ``steps`` in step order, updating ``state`` in place.

    Steps at or below ``state.last_step`` were evaluated before (a replayed or late batch) and are
    skipped, so a transition is never produced twice or out of order. Duplicate steps in one batch
    count once (the last record wins, as in storage).
    """
    by_step: dict[int, StepInput] = {}
    last = state.last_step
    for s in steps:
        if last is None or s.step > last:
            by_step[s.step] = s
    if not by_step:
        return []
    ordered = [by_step[k] for k in sorted(by_step)]

    plan = []
    for rule in rules:
        st = state.rules.get(rule.id)
        if st is None:
            st = state.rules[rule.id] = fresh_state(rule)
        elif not _detector_is_current(st, rule):
            st["d"], st["v"], st["k"] = {}, rule.version, rule.kind  # a changed definition starts afresh
            st["sev"] = rule.severity
        plan.append((rule, *_compiled_for(rule), st, st["d"]))

    out: list[Transition] = []
    current = {r.id for r in rules}
    for rid in [k for k in state.rules if k not in current]:
        # A rule that was deleted, disabled or scoped away: its open alert ends, its state goes.
        lc = state.rules.pop(rid)
        if lc.get("s") is not None and lc.get("a"):
            out.append(
                Transition(
                    id=new_id(),
                    alert_id=lc["a"],
                    run_id=run_id,
                    rule_id=rid,
                    severity=lc.get("sev", "warning"),
                    from_state=lc["s"],
                    to_state=RESOLVED,
                    step=ordered[0].step,
                    time=ordered[0].time,
                    values={"reason": "rule removed or disabled"},
                )
            )
    # Rule by rule over the batch (rules are independent): the hot loop is one closure call per
    # (rule, step), and the common case, no open alert and a false condition, costs nothing more.
    # (With no alert open the consecutive-true counter is 0 already.) Transitions are then put in
    # step order, rules in pack order within a step.
    found: list[tuple[int, int, Transition]] = []
    batch = [s.metrics for s in ordered]
    for order, (rule, fn, quiet, lc, det) in enumerate(plan):
        idle = lc["s"] is None
        if idle and quiet is not None and USE_BATCH_FAST_PATH and quiet(det, batch):
            continue  # nothing open and the condition holds nowhere in the batch (state updated)
        for s, metrics in zip(ordered, batch, strict=True):
            active = fn(det, metrics)
            if idle and not active:
                continue
            if active and lc["s"] == FIRING:  # still firing: only the clear-streak restarts
                lc["c"] = 0
                continue
            alert_id = lc["a"]
            change = advance(lc, active, rule.for_steps, rule.clear_steps)
            idle = lc["s"] is None
            if change is None:
                continue
            t = Transition(
                id=new_id(),
                alert_id=lc["a"] or alert_id,
                run_id=run_id,
                rule_id=rule.id,
                severity=rule.severity,
                from_state=change[0],
                to_state=change[1],
                step=s.step,
                time=s.time,
                values=rule_values(rule, det, metrics),
            )
            if change[1] == PENDING:
                lc["o"] = {"id": t.id, "step": t.step, "time": t.time, "values": t.values, "wall": None}
            elif change[0] == PENDING:
                o = lc.pop("o", None)
                if change[1] == FIRING and o is not None:
                    t = replace(t, opened=Transition(
                        id=o["id"], alert_id=t.alert_id, run_id=run_id, rule_id=rule.id, severity=rule.severity,
                        from_state=None, to_state=PENDING, step=o["step"], time=o["time"], values=o["values"],
                        wall=o.get("wall"),
                    ))
            found.append((s.step, order, t))
            if change[1] == RESOLVED:
                lc["a"] = None
    found.sort(key=lambda x: (x[0], x[1]))
    out.extend(t for _, _, t in found)
    state.last_step = ordered[-1].step
    return out
