"""Outcome detectors: a fall below the early-run baseline, a drop from the running best."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import (
    Kind,
    QuietFn,
    StepFn,
    finite_values,
    isfinite,
    metric_param,
)

__all__ = ["BELOW_BASELINE", "DROP_FROM_BEST"]

_STALL_ALPHA = 0.3  # EWMA weight of the stall metric: its last few steps

# --- fall below an early-run baseline -----------------------------------------------------------


def _compile_below_baseline(p: Mapping[str, Any]) -> StepFn:
    metric, steps, fraction = p["metric"], p["baseline_steps"], p["fraction"]
    guard, gain, alpha = p["guard_metric"], p["guard_gain"], 0.1
    window = p["guard_window"]
    stall, stall_value = p["stall_metric"], p["stall_value"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if stall is not None:  # the stall metric's EWMA
            z = m.get(stall)
            if z is not None and isfinite(z):
                st["zs"] = z if "zs" not in st else st["zs"] + _STALL_ALPHA * (z - st["zs"])
        if guard is not None:  # track the guard metric: its early mean and its EWMA since
            g = m.get(guard)
            if g is not None and isfinite(g):
                gn = st.get("gn", 0)
                st["gn"] = gn + 1
                if gn < steps:
                    st["gsum"] = st.get("gsum", 0.0) + g
                    st["ge"] = st["gsum"] / (gn + 1)
                else:
                    st["ge"] += alpha * (g - st["ge"])
                if gn + 1 == steps:
                    st["gref"] = st["gsum"] / steps
                if window:  # the guard's EWMA over the last `window` steps
                    gw = st.setdefault("gw", [])
                    gw.append(st["ge"])
                    if len(gw) > window + 1:
                        del gw[0]
        if x is None or not isfinite(x):
            return None
        n = st.get("n", 0)
        if n < steps:
            st["n"] = n + 1
            st["sum"] = st.get("sum", 0.0) + x
            if n + 1 == steps:
                st["ref"] = st["sum"] / steps
            return False
        if x >= fraction * st["ref"]:
            return False
        # Falling entropy while the reward climbs is convergence, not collapse. With a window, "climbs"
        # means over the same recent window (a reward that rose early and then stalled does not excuse it).
        if guard is None or "gref" not in st:
            return True
        # A reward that rose excuses nothing once most groups stopped carrying a learning signal: a group
        # whose rewards are all equal gives no gradient, so the policy is not converging.
        if stall is not None and st.get("zs", 0.0) >= stall_value:
            return True
        gw = st.get("gw")
        if window and gw is not None and len(gw) > window:
            return st["ge"] - gw[0] < gain
        return st["ge"] - st["gref"] < gain

    return step


def _quiet_below_baseline(metric: str, steps: int, fraction: float, guard: str | None, window: int,
                          stall: str | None) -> QuietFn:
    alpha = 0.1  # as in the step function

    def quiet(st: dict, batch: list) -> bool:
        if st.get("n", 0) < steps or (guard is not None and st.get("gn", 0) < steps):
            return False  # baselines still forming: the per-step pass does it
        bound = fraction * st["ref"]
        if any(x < bound for x in finite_values(batch, metric)):
            return False
        if stall is not None:
            z = st.get("zs")
            for v in finite_values(batch, stall):
                z = v if z is None else z + _STALL_ALPHA * (v - z)
            if z is not None:
                st["zs"] = z
        if guard is not None:
            gs = finite_values(batch, guard)
            e = st["ge"]
            gw = st.setdefault("gw", []) if window else None
            for g in gs:
                e += alpha * (g - e)
                if gw is not None:
                    gw.append(e)
            if gw is not None and len(gw) > window + 1:
                del gw[: len(gw) - window - 1]
            st["ge"] = e
            st["gn"] += len(gs)
        return True

    return quiet


BELOW_BASELINE = Kind(
    "below_baseline",
    "The metric below `fraction` of its mean over the run's first `baseline_steps` steps (optionally unless a "
    "guard metric rose meanwhile).",
    (
        metric_param(),
        Param("baseline_steps", "int", 10, "Early steps averaged into the baseline.", minimum=1, maximum=10000),
        Param("fraction", "float", 0.3, "Fire below this fraction of the baseline.", minimum=0.0, maximum=1.0),
        Param("guard_metric", "str", None, "Optional: do not fire while this metric's EWMA is `guard_gain` above "
              "its own early mean (e.g. reward.mean: low entropy with a rising reward is convergence)."),
        Param("guard_gain", "float", 0.2, "Rise of the guard metric that suppresses the alert.", minimum=0.0),
        Param("guard_window", "int", 0, "Measure the guard's rise over this many recent steps (0: since the "
              "early mean).", minimum=0, maximum=10000),
        Param("stall_metric", "str", None, "Optional: the guard excuses nothing while this metric's EWMA (weight "
              "0.3) is at least `stall_value` (e.g. groups.zero_signal_frac: no group carries a learning signal)."),
        Param("stall_value", "float", 0.9, "Level of the stall metric at which the guard stops excusing.",
              minimum=0.0),
    ),
    _compile_below_baseline,
    lambda p: (p["metric"],),
    quiet=lambda p: _quiet_below_baseline(p["metric"], p["baseline_steps"], p["fraction"], p["guard_metric"],
                                           p["guard_window"], p["stall_metric"]),
)

# --- drop from the running best -----------------------------------------------------------------


def _compile_drop_from_best(p: Mapping[str, Any]) -> StepFn:
    metric, alpha, warmup = p["metric"], p["alpha"], p["warmup"]
    drop, min_scale = p["drop"], p["min_scale"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not isfinite(x):
            return None
        n = st.get("n", 0)
        e = x if n == 0 else st["e"] + alpha * (x - st["e"])
        st["e"] = e
        st["n"] = n + 1
        if n + 1 < warmup:
            return False
        best = st.get("ref")
        if best is None or e > best:
            st["ref"] = best = e
        scale = abs(best)
        if scale < min_scale:
            scale = min_scale
        return best - e > drop * scale

    return step


def _quiet_drop_from_best(metric: str, alpha: float, warmup: int, drop: float, min_scale: float) -> QuietFn:
    def quiet(st: dict, batch: list) -> bool:
        n, e, best = st.get("n", 0), st.get("e"), st.get("ref")
        for x in finite_values(batch, metric):  # the step function's recursion, on locals
            e = x if n == 0 or e is None else e + alpha * (x - e)
            n += 1
            if n < warmup:
                continue
            if best is None or e > best:
                best = e
            if best - e > drop * (abs(best) if abs(best) > min_scale else min_scale):
                return False  # a step fires: state untouched, the per-step pass takes over
        if n:
            st["n"], st["e"] = n, e
        if best is not None:
            st["ref"] = best
        return True

    return quiet


DROP_FROM_BEST = Kind(
    "drop_from_best",
    "The metric's EWMA a fraction `drop` below its running best (after `warmup` steps).",
    (
        metric_param(),
        Param("alpha", "float", 0.2, "EWMA weight of the newest step (smoothing).", minimum=1e-4, maximum=1.0),
        Param("drop", "float", 0.5, "Fire when the smoothed value is this fraction below the best.", minimum=0.0),
        Param("warmup", "int", 10, "Steps before the best is tracked.", minimum=1, maximum=100000),
        Param("min_scale", "float", 0.05, "Floor of |best| used as the scale (rewards near zero).", minimum=1e-9),
    ),
    _compile_drop_from_best,
    lambda p: (p["metric"],),
    quiet=lambda p: _quiet_drop_from_best(p["metric"], p["alpha"], p["warmup"], p["drop"], p["min_scale"]),
)
