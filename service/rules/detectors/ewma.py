"""EWMA anomaly: a z-score against the metric's exponentially weighted mean and variance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import (
    Kind,
    StepFn,
    isfinite,
    metric_param,
)

__all__ = ["EWMA_ANOMALY"]

# --- EWMA anomaly -------------------------------------------------------------------------------


def _compile_ewma(p: Mapping[str, Any]) -> StepFn:
    metric, alpha, zmax, warmup, min_std = p["metric"], p["alpha"], p["z"], p["warmup"], p["min_std"]
    up = p["direction"] in ("up", "both")
    down = p["direction"] in ("down", "both")

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not isfinite(x):
            return None
        n = st.get("n", 0)
        if n == 0:
            st["n"], st["mu"], st["var"] = 1, x, 0.0
            return False
        mu, var = st["mu"], st["var"]
        hit = False
        if n >= warmup:
            sd = math.sqrt(var)
            if sd < min_std:
                sd = min_std
            z = (x - mu) / sd
            hit = (up and z > zmax) or (down and z < -zmax)
            st["ref"] = mu
            st["z"] = z
        if not hit:  # anomalies do not move the baseline
            d = x - mu
            st["mu"] = mu + alpha * d
            st["var"] = (1.0 - alpha) * (var + alpha * d * d)
            st["n"] = n + 1
        return hit

    return step


EWMA_ANOMALY = Kind(
    "ewma_anomaly",
    "z-score of the metric against its exponentially weighted mean and variance.",
    (
        metric_param(),
        Param("alpha", "float", 0.1, "EWMA weight of the newest step.", minimum=1e-4, maximum=1.0),
        Param("z", "float", 4.0, "Fire when |z| exceeds this.", minimum=0.1),
        Param("direction", "str", "up", "Which side is anomalous: up, down, both.", choices=("up", "down", "both")),
        Param("warmup", "int", 10, "Steps of history before the rule can fire.", minimum=1, maximum=100000),
        Param("min_std", "float", 1e-6, "Floor of the EWMA std (a flat history is not infinitely sure).", minimum=0.0),
    ),
    _compile_ewma,
    lambda p: (p["metric"],),
)
