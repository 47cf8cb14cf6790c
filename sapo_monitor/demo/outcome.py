"""What the demo reports per run, computed from the service's series and alerts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sapo_monitor.client.wire import decode_float

__all__ = ["PLOTTED_METRICS", "SERIES_METRICS", "AlertEvent", "RunOutcome", "build_outcome", "parse_series"]

PLOTTED_METRICS = (
    "reward.mean",
    "entropy.mean",
    "log_ratio.std",
    "gate.saturated_frac",
    "clip.token_frac",
    "sign.neg.ratio_std",
)
SERIES_METRICS = (*PLOTTED_METRICS, "clip.seq_frac")

Series = tuple[list[int], list[float]]


@dataclass(frozen=True)
class AlertEvent:
    """An alert of a run that reached ``firing``, at the step it fired."""

    rule: str
    severity: str
    step: int


@dataclass
class RunOutcome:
    run_id: str
    algorithm: str
    label: str
    steps: int
    first_warning: AlertEvent | None
    collapse: AlertEvent | None  # first critical alert
    final_reward: float  # mean reward over the last 10% of steps
    mean_gate_saturation: float
    max_log_ratio_std: float
    alerts: list[AlertEvent] = field(default_factory=list)
    webhooks: int = 0
    series: dict[str, Series] = field(default_factory=dict, repr=False)


def parse_series(doc: Mapping[str, object]) -> dict[str, Series]:
    """``{"series": {metric: {"step": [..], "value": [..]}}}`` as floats (wire strings decoded)."""
    out: dict[str, Series] = {}
    for metric, points in dict(doc.get("series") or {}).items():  # type: ignore[call-overload]
        out[metric] = ([int(s) for s in points["step"]], [decode_float(v) for v in points["value"]])
    return out


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _tail_mean(values: Sequence[float], share: float = 0.1) -> float:
    tail = _finite(values[-max(1, math.ceil(len(values) * share)) :])
    return sum(tail) / len(tail) if tail else math.nan


def _mean(values: Sequence[float]) -> float:
    finite = _finite(values)
    return sum(finite) / len(finite) if finite else math.nan


def build_outcome(
    run_id: str,
    algorithm: str,
    series: dict[str, Series],
    alerts: Sequence[AlertEvent],
    *,
    webhooks: int = 0,
) -> RunOutcome:
    """Summarise one run: first warning, collapse (first critical), final reward, gate saturation."""
    ordered = sorted(alerts, key=lambda a: (a.step, a.severity != "critical", a.rule))
    warnings = [a for a in ordered if a.severity == "warning"]
    criticals = [a for a in ordered if a.severity == "critical"]
    steps = series.get("reward.mean", ([], []))[0]
    return RunOutcome(
        run_id=run_id,
        algorithm=algorithm,
        label=algorithm.upper() if algorithm != "pg" else "PG (no clip)",
        steps=(max(steps) - min(steps) + 1) if steps else 0,
        first_warning=warnings[0] if warnings else None,
        collapse=criticals[0] if criticals else None,
        final_reward=_tail_mean(series.get("reward.mean", ([], []))[1]),
        mean_gate_saturation=_mean(series.get("gate.saturated_frac", ([], []))[1]),
        max_log_ratio_std=max(_finite(series.get("log_ratio.std", ([], []))[1]), default=math.nan),
        alerts=list(ordered),
        webhooks=webhooks,
        series=series,
    )
