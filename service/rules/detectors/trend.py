"""A steady rise: the metric climbing over a window, consistently rather than in one noisy spike.

For the training-inference mismatch: verl's FAQ reads ``rollout_probs_diff_mean`` above 0.01 as an
inference-precision problem, and a steady rise of the mismatch before a crash is the documented
pattern. Over the last ``window`` steps of ``log(x + floor)`` the rule asks two things: the
least-squares rise across the window is at least ``rise`` (log units: 0.69 = doubled), and the rise is
monotone in the Mann-Kendall sense (share of concordant minus discordant step pairs at least
``min_tau``), so one spike in a flat series does not count. A level at or above ``level`` (when given)
counts on its own, the verl-style absolute bound. Both only once the value is at least ``min_value``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import Kind, StepFn, isfinite, metric_param

__all__ = ["TREND", "kendall_tau", "rise_of", "trend_stats"]


def trend_stats(ys: list[float]) -> tuple[float, float]:
    """(least-squares rise across the series, Mann-Kendall tau) of ``ys`` (at least 2 values)."""
    return rise_of(ys), kendall_tau(ys)


def rise_of(ys: list[float]) -> float:
    """The least-squares rise of ``ys`` from its first to its last index (at least 2 values)."""
    n = len(ys)
    xm = (n - 1) / 2.0
    ym = sum(ys) / n
    sxx = n * (n * n - 1) / 12.0  # sum of (i - xm)**2 over 0..n-1
    return sum((i - xm) * (y - ym) for i, y in enumerate(ys)) / sxx * (n - 1)


def kendall_tau(ys: list[float]) -> float:
    """Mann-Kendall tau of ``ys`` against its index: concordant minus discordant pairs, over all pairs."""
    n = len(ys)
    s = 0
    for i in range(n - 1):
        yi = ys[i]
        for yj in ys[i + 1 :]:
            s += (yj > yi) - (yj < yi)
    return s / (n * (n - 1) / 2.0)


def _compile_trend(p: Mapping[str, Any]) -> StepFn:
    metric, window, rise, min_tau = p["metric"], p["window"], p["rise"], p["min_tau"]
    floor, level, min_value = p["floor"], p["level"], p["min_value"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not isfinite(x) or x + floor <= 0.0:
            return None
        w = st.setdefault("w", [])
        w.append(math.log(x + floor))
        if len(w) > window:
            del w[0]
        if x < min_value:
            return False
        if level is not None and x >= level:
            st["ref"] = level
            return True
        if len(w) < window:
            return False
        st["ref"] = math.exp(w[0]) - floor
        # The O(window^2) Mann-Kendall only when the O(window) rise already holds: on most steps of most
        # runs it does not, and this rule ran on every step the mismatch is logged.
        if rise_of(w) < rise:
            st.pop("z", None)
            return False
        tau = kendall_tau(w)
        st["z"] = tau
        return tau >= min_tau

    return step


TREND = Kind(
    "trend",
    "A steady rise of the metric over the last `window` steps (least-squares rise of log(x + floor) at least "
    "`rise`, Mann-Kendall tau at least `min_tau`), or its level at or above `level`.",
    (
        metric_param(),
        Param("window", "int", 20, "Steps the trend is measured over.", minimum=4, maximum=200),
        Param("rise", "float", 0.69, "Least-squares rise across the window on the log scale (0.69: doubled).",
              minimum=0.0),
        Param("min_tau", "float", 0.5, "Mann-Kendall tau the rise must reach (1: every step higher).",
              minimum=0.0, maximum=1.0),
        Param("floor", "float", 1e-6, "Added before the log (zeros are a level too).", minimum=0.0),
        Param("min_value", "float", 0.0, "Below this value the condition never holds.", minimum=0.0),
        Param("level", "float", None, "Optional absolute bound: at or above it the condition holds whatever "
              "the trend (verl: rollout_probs_diff_mean > 0.01)."),
    ),
    _compile_trend,
    lambda p: (p["metric"],),
)
