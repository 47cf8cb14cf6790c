"""Ratio to a running median: a spike relative to the run's own recent level."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import (
    Kind,
    QuietFn,
    StepFn,
    finite_values,
    isfinite,
)

__all__ = ["MEDIAN_SPIKE"]

# --- ratio to a running median ------------------------------------------------------------------


# The window is kept twice in the state: in arrival order (``name``, for eviction) and sorted
# (``name~``, so the median is one index, not a sort per step).


def _window(st: dict, name: str) -> tuple[list[float], list[float]]:
    w = st.get(name)
    if w is None:
        w = st[name] = []
    sw = st.get(name + "~")
    if sw is None or len(sw) != len(w):
        sw = st[name + "~"] = sorted(w)
    return w, sw


def _compile_median_spike(p: Mapping[str, Any]) -> StepFn:
    metrics, factor, window, warmup, floor = p["metrics"], p["factor"], p["window"], p["warmup"], p["min_value"]
    if len(metrics) == 1:
        return _median_spike_one(metrics[0], factor, window, warmup, floor)

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        result = None
        for name in metrics:
            x = m.get(name)
            if x is None or not isfinite(x):
                continue
            w, sw = _window(st, name)
            hit = False
            if x >= floor and len(w) >= warmup:
                med = sw[len(sw) // 2]
                if x > factor * med:
                    hit = True
                    st["ref"] = med
            if not hit:
                w.append(x)
                insort(sw, x)
                if len(w) > window:
                    del sw[bisect_left(sw, w.pop(0))]
            result = hit or bool(result)
        return result

    return step


def _median_spike_one(name: str, factor: float, window: int, warmup: int, floor: float) -> StepFn:
    """The single-metric case without the loop (the common one: grad_norm, log_ratio.std)."""
    sorted_key = name + "~"

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(name)
        if x is None or not isfinite(x):
            return None
        w = st.get(name)
        sw = st.get(sorted_key)
        if w is None or sw is None or len(sw) != len(w):
            w, sw = _window(st, name)
        if x >= floor and len(w) >= warmup:
            med = sw[len(sw) // 2]
            if x > factor * med:
                st["ref"] = med
                return True
        w.append(x)
        insort(sw, x)
        if len(w) > window:
            del sw[bisect_left(sw, w.pop(0))]
        return False

    return step


def _quiet_median_spike(metrics: tuple[str, ...], factor: float, window: int, floor: float) -> QuietFn:
    def quiet(st: dict, batch: list) -> bool:
        updates = []
        for name in metrics:
            vals = finite_values(batch, name)
            if not vals:
                continue
            w = st.get(name) or []
            # Every window the batch's steps would see is a subset of w + vals, so its median is at
            # least their minimum: no value above the floor and `factor` times that minimum, no spike.
            lo = factor * min(min(vals), min(w)) if w else factor * min(vals)
            if any(x >= floor and x > lo for x in vals):
                return False
            updates.append((name, vals))
        for name, vals in updates:
            w = st.setdefault(name, [])
            w.extend(vals)
            if len(w) > window:
                del w[:-window]
            st[name + "~"] = sorted(w)
        return True

    return quiet


MEDIAN_SPIKE = Kind(
    "median_spike",
    "Any of the metrics above `factor` times its running median over the last `window` steps.",
    (
        Param("metrics", "metrics", None, "Metric names to watch (any one triggers).", required=True),
        Param("factor", "float", 3.0, "Multiple of the running median that counts as a spike.", minimum=1.0),
        Param("window", "int", 20, "Steps in the running-median window.", minimum=3, maximum=200),
        Param("warmup", "int", 10, "Steps of history before the rule can fire.", minimum=1, maximum=200),
        Param("min_value", "float", 0.0, "Values below this never count as a spike.", minimum=0.0),
    ),
    _compile_median_spike,
    lambda p: tuple(p["metrics"]),
    quiet=lambda p: _quiet_median_spike(tuple(p["metrics"]), p["factor"], p["window"], p["min_value"]),
)
