"""Backtesting: replay a run's step records through a set of rules, in memory.

Pure (no database, no webhooks, no clock): the same evaluation ingest runs
(:func:`.evaluate.evaluate_batch` over a fresh :class:`.evaluate.RunRuleState`), fed in batches as
ingest would be. ``sapo-monitor rules backtest`` and ``bench/detection.py`` call :func:`replay`.
Time-based rules (``silence``) need a clock and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .builtin import BUILTIN_RULES
from .detectors import KINDS
from .evaluate import FIRING, PENDING, RESOLVED, RunRuleState, StepInput, Transition, evaluate_batch
from .model import Rule, RuleValidationError
from .spec import apply_override, build_rule

__all__ = ["AlertEpisode", "Replay", "load_rule_file", "replay"]


@dataclass
class AlertEpisode:
    """One alert a rule would have raised: where it went pending, fired and resolved (None: never)."""

    rule: str
    severity: str
    pending_step: int
    fired_step: int | None = None
    resolved_step: int | None = None
    values: dict[str, Any] = field(default_factory=dict)  # at firing (or opening), wire-encoded


@dataclass
class Replay:
    run_id: str
    steps: int
    transitions: list[Transition]
    alerts: list[AlertEpisode]

    def first_step(self, severity: str | None = None) -> int | None:
        """The first step at which an alert of ``severity`` (any when None) fired."""
        steps = [a.fired_step for a in self.alerts
                 if a.fired_step is not None and (severity is None or a.severity == severity)]
        return min(steps) if steps else None


def replay(
    rules: Sequence[Rule],
    steps: Iterable[StepInput],
    *,
    run_id: str = "backtest",
    project: str | None = None,
    batch: int = 32,
) -> Replay:
    """What ``rules`` would have done on ``steps`` (any order; one record per step, the last wins).

    ``batch`` steps are evaluated at a time, as the client delivers them; the outcome is the same for
    any batch size (evaluation is step by step), only the speed differs.
    """
    active = [r for r in rules if r.applies_to(project, run_id) and not KINDS[r.kind].time_based]
    by_step = {s.step: s for s in steps}
    ordered = [by_step[k] for k in sorted(by_step)]
    state = RunRuleState()
    transitions: list[Transition] = []
    for i in range(0, len(ordered), max(1, batch)):
        transitions += evaluate_batch(active, state, run_id, ordered[i : i + batch])
    return Replay(run_id, len(ordered), transitions, _episodes(transitions))


def _episodes(transitions: Sequence[Transition]) -> list[AlertEpisode]:
    open_: dict[str, AlertEpisode] = {}
    out: list[AlertEpisode] = []
    for t in transitions:
        if t.from_state is None:
            ep = AlertEpisode(t.rule_id, t.severity, t.step, values=dict(t.values))
            open_[t.alert_id] = ep
            out.append(ep)
        ep = open_[t.alert_id]
        if t.to_state == FIRING:
            ep.fired_step, ep.values = t.step, dict(t.values)
        elif t.to_state == RESOLVED:
            ep.resolved_step = t.step
            del open_[t.alert_id]
        else:
            assert t.to_state == PENDING
    return out


def load_rule_file(doc: Any) -> list[Rule]:
    """Rules from a candidate rule file's JSON: ``{"rules": [...]}`` or a list. An entry whose ``id`` is a
    built-in overrides it (``{"id": "kl_blowup", "params": {...}}``; ``"enabled": false`` turns it off);
    other entries are custom rules. Built-ins not named keep their defaults. Raises
    :class:`RuleValidationError` naming ``rules[i].field``.
    """
    entries = doc.get("rules") if isinstance(doc, Mapping) else doc
    if not isinstance(entries, list):
        raise RuleValidationError("rules", "must be a list of rule definitions")
    builtins = {r.id: r for r in BUILTIN_RULES}
    custom: list[Rule] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise RuleValidationError(f"rules[{i}]", "must be an object")
        try:
            if entry.get("id") in builtins:
                builtins[entry["id"]] = apply_override(entry["id"], entry)
            else:
                custom.append(build_rule(entry))
        except RuleValidationError as exc:
            raise RuleValidationError(f"rules[{i}].{exc.field}", exc.message) from None
    return list(builtins.values()) + custom

