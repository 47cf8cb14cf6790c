"""Level detectors: a metric against a fixed bound, or its change over a window."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..model import Param
from .base import (
    OP_CHOICES,
    OPS,
    BatchScan,
    Kind,
    StepFn,
    isfinite,
    metric_param,
)

__all__ = ["RATE_OF_CHANGE", "THRESHOLD"]

# --- threshold ----------------------------------------------------------------------------------


def _compile_threshold(p: Mapping[str, Any]) -> StepFn:
    metric, op, bound = p["metric"], OPS[p["op"]], p["value"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not isfinite(x):
            return None
        return op(x, bound)

    return step


def _scan_threshold(metric: str, op: Callable[[float, float], bool], bound: float) -> BatchScan:
    def scan(batch: list) -> bool:
        # NaN compares false; an infinity may compare true, which only costs the per-step pass.
        return any(x is not None and op(x, bound) for x in [m.get(metric) for m in batch])

    return scan


THRESHOLD = Kind(
    "threshold",
    "The metric compared with a fixed bound.",
    (
        metric_param(),
        Param("op", "str", ">", "Comparison: >, >=, <, <=.", choices=OP_CHOICES),
        Param("value", "float", None, "The bound.", required=True),
    ),
    _compile_threshold,
    lambda p: (p["metric"],),
    scan=lambda p: _scan_threshold(p["metric"], OPS[p["op"]], p["value"]),
)

# --- rate of change -----------------------------------------------------------------------------


def _compile_rate(p: Mapping[str, Any]) -> StepFn:
    metric, window, op, bound, relative = p["metric"], p["window"], OPS[p["op"]], p["value"], p["relative"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not isfinite(x):
            return None
        w = st.get("w")
        if w is None:
            w = st["w"] = []
        result = None
        if len(w) >= window:
            old = w[-window]
            change = x - old
            if relative:
                change = change / abs(old) if old != 0 else None
            if change is not None:
                st["ref"] = old
                result = op(change, bound)
        w.append(x)
        if len(w) > window:
            del w[0]
        return result

    return step


RATE_OF_CHANGE = Kind(
    "rate_of_change",
    "Change of the metric over the last `window` steps (absolute, or relative to the old value).",
    (
        metric_param(),
        Param("window", "int", 1, "Compare with the value this many steps back.", minimum=1, maximum=1000),
        Param("op", "str", ">", "Comparison of the change with `value`.", choices=OP_CHOICES),
        Param("value", "float", None, "Bound on the change.", required=True),
        Param("relative", "bool", False, "Divide the change by |old value|."),
    ),
    _compile_rate,
    lambda p: (p["metric"],),
)
