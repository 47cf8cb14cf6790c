"""One rule over a list of metric rows, evaluated in batches as ingest does: for the detector tests."""

from __future__ import annotations

from sapo_monitor.service.rules import KINDS, Rule, RunRuleState, StepInput, evaluate_batch, validate_params

__all__ = ["events", "rule"]


def rule(kind: str, for_steps: int = 1, clear_steps: int = 1, **params) -> Rule:  # type: ignore[no-untyped-def]
    """A warning rule of ``kind`` with validated ``params``."""
    return Rule(id="t", kind=kind, severity="warning", params=validate_params(KINDS[kind], params),
                for_steps=for_steps, clear_steps=clear_steps)


def events(r: Rule, rows: list[dict[str, float]], batch: int = 7) -> list[tuple[str, int]]:
    """``(to_state, step)`` of every transition, steps numbered from 1, ``batch`` steps per evaluation."""
    state = RunRuleState()
    steps = [StepInput(i + 1, None, m) for i, m in enumerate(rows)]
    out = []
    for i in range(0, len(steps), batch):
        out += [(t.to_state, t.step) for t in evaluate_batch([r], state, "r", steps[i : i + batch])]
    return out
