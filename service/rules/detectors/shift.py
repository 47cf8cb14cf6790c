"""Change from the run's own baseline: a one-sided CUSUM on a robust, log-aware scale.

Each run learns its metric's level and spread in a warm-up window (after ``skip`` early steps): the
median and the MAD of ``log(x + floor)``. After that every step is a z-score against that level and a
one-sided CUSUM ``S = max(0, S + z - k)`` accumulates sustained deviations; the condition holds while
``S > h``. So one rule serves runs whose levels differ by orders of magnitude (GSPO clips ~100x more
tokens than GRPO): only the change counts, in units of the run's own noise.

The level follows slow drift (an EWMA of deviations clipped to +-k sds, frozen while the rule fires),
so a creeping rise cannot become the new normal while it lasts. ``S`` is capped at ``3 h``
so a shift that ended clears within a bounded number of steps (hysteresis: ``S`` has to fall back
below ``h`` by ``k`` per quiet step, then the rule's ``clear_steps``).

``shift_core`` is shared with detectors of derived quantities (the negative / positive ratio spread).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..model import Param
from .base import Kind, QuietFn, StepFn, isfinite, metric_param

__all__ = ["SHIFT", "ShiftCore", "cusum_quiet", "shift_core", "shift_params"]

_MAD_TO_SD = 1.4826  # MAD of a normal sample times this is its standard deviation

# (state, transformed value) -> whether the sum is past h; the state keys it owns: n, w, mu, sd, S, z.
ShiftCore = Callable[[dict, float], bool]


def shift_core(
    *, up: bool, skip: int, warmup: int, k: float, h: float, min_scale: float, alpha: float
) -> ShiftCore:
    """The CUSUM over an already transformed series (see the module docstring)."""
    cap = 3.0 * h

    def core(st: dict, y: float) -> bool:
        n = st.get("n", 0)
        if n < skip + warmup:
            st["n"] = n + 1
            if n >= skip:
                w = st.setdefault("w", [])
                w.append(y)
                if len(w) == warmup:
                    srt = sorted(w)
                    mid = len(srt) // 2
                    med = srt[mid] if len(srt) % 2 else 0.5 * (srt[mid - 1] + srt[mid])
                    dev = sorted(abs(v - med) for v in srt)
                    mad = dev[mid] if len(dev) % 2 else 0.5 * (dev[mid - 1] + dev[mid])
                    st["mu"], st["sd"], st["S"] = med, max(min_scale, _MAD_TO_SD * mad), 0.0
                    del st["w"]
            return False
        mu, sd = st["mu"], st["sd"]
        d = y - mu
        z = d / sd if up else -d / sd
        s = st["S"] + z - k
        s = 0.0 if s < 0.0 else cap if s > cap else s
        st["S"], st["z"] = s, z
        hit = s > h
        if not hit and alpha > 0.0:
            # The level follows drift by a step clipped to +-k sd (symmetric, so noise does not bias it; an
            # anomaly moves it by at most alpha * k sd a step) and not at all while the rule fires.
            lim = k * sd
            st["mu"] = mu + alpha * (lim if d > lim else -lim if d < -lim else d)
        return hit

    return core


def shift_params(*, warmup: int = 20, skip: int = 2, k: float = 1.0, h: float = 8.0, min_scale: float = 0.1,
                 alpha: float = 0.02, floor: float = 1e-6) -> tuple[Param, ...]:
    """The parameters every baseline-relative detector shares (defaults differ per rule)."""
    return (
        Param("skip", "int", skip, "Early steps ignored before the warm-up (the first updates are atypical).",
              minimum=0, maximum=10000),
        Param("warmup", "int", warmup, "Steps whose median and MAD are the run's baseline.", minimum=3,
              maximum=10000),
        Param("k", "float", k, "CUSUM allowance: deviations below k robust sds are noise.", minimum=0.0),
        Param("h", "float", h, "CUSUM decision interval: fire once the summed excess passes h.", minimum=0.1),
        Param("min_scale", "float", min_scale, "Floor of the robust sd on the log scale (0.1: 10%).",
              minimum=1e-6),
        Param("alpha", "float", alpha, "How fast the level follows drift away from the alarm side (0: frozen).",
              minimum=0.0, maximum=1.0),
        Param("floor", "float", floor, "Added before the log, so zeros are a level too (log(x + floor)).",
              minimum=0.0),
    )


def _extractor(p: Mapping[str, Any]) -> Callable[[Mapping[str, float]], float | None]:
    """The step's value as the CUSUM sees it (``log(x + floor)`` or ``x``), None when the step carries
    none: for the per-step function and the batch fast path alike."""
    metric, floor, use_log, skip_zero = p["metric"], p["floor"], p["log"], p["skip_zero"]
    log = math.log

    def extract(m: Mapping[str, float]) -> float | None:
        x = m.get(metric)
        if x is None or not isfinite(x) or (skip_zero and x == 0.0):
            return None
        if not use_log:
            return x
        v = x + floor
        return log(v) if v > 0.0 else None

    return extract


def _holds(p: Mapping[str, Any]) -> Callable[[Mapping[str, float]], bool]:
    """The optional ``min_value`` condition on a step whose sum passed ``h``."""
    metric, min_value, up = p["metric"], p["min_value"], p["direction"] == "up"

    def holds(m: Mapping[str, float]) -> bool:
        return min_value is None or (m[metric] >= min_value if up else m[metric] <= min_value)

    return holds


def _compile_shift(p: Mapping[str, Any]) -> StepFn:
    floor, use_log = p["floor"], p["log"]
    extract, holds = _extractor(p), _holds(p)
    core = shift_core(up=p["direction"] == "up", skip=p["skip"], warmup=p["warmup"], k=p["k"], h=p["h"],
                      min_scale=p["min_scale"], alpha=p["alpha"])

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        y = extract(m)
        if y is None:
            return None
        hit = core(st, y)
        if "mu" in st:
            st["ref"] = (math.exp(st["mu"]) - floor) if use_log else st["mu"]
        return hit and holds(m)

    return step


def cusum_quiet(
    extract: Callable[[Mapping[str, float]], float | None],
    holds: Callable[[Mapping[str, float]], bool],
    ref: Callable[[float], float],
    *, up: bool, skip: int, warmup: int, k: float, h: float, alpha: float,
) -> QuietFn:
    """``shift_core``'s recursion over a whole batch on locals (see ``Kind.quiet``): True, with the state
    advanced, when no step of the batch holds; False, state untouched, when one might (or in warm-up).
    ``extract(m)``: the step's transformed value or None (the step changes nothing); ``holds(m)``: the
    rule's extra condition on a step whose sum passed ``h``; ``ref(mu)``: the baseline to report."""
    done, cap = skip + warmup, 3.0 * h

    def quiet(st: dict, batch: list) -> bool:
        if st.get("n", 0) < done:
            return False
        mu, sd, s, z = st["mu"], st["sd"], st["S"], st.get("z")
        lim = k * sd
        for m in batch:
            y = extract(m)
            if y is None:
                continue
            d = y - mu
            z = d / sd if up else -d / sd
            s = s + z - k
            s = 0.0 if s < 0.0 else cap if s > cap else s
            if s > h:
                if holds(m):
                    return False  # this step holds: the per-step pass takes over, from the stored state
                continue  # the sum passed h but the extra condition fails: a clear step, level frozen
            if alpha > 0.0:
                mu += alpha * (lim if d > lim else -lim if d < -lim else d)
        st["mu"], st["S"], st["ref"] = mu, s, ref(mu)
        if z is not None:
            st["z"] = z
        return True

    return quiet


def _quiet_shift(p: Mapping[str, Any]) -> QuietFn:
    floor, use_log = p["floor"], p["log"]
    return cusum_quiet(_extractor(p), _holds(p), (lambda mu: math.exp(mu) - floor) if use_log else (lambda mu: mu),
                       up=p["direction"] == "up", skip=p["skip"], warmup=p["warmup"], k=p["k"], h=p["h"],
                       alpha=p["alpha"])


SHIFT = Kind(
    "shift",
    "A sustained change of the metric from the run's own baseline (median and MAD of log(x + floor) over a "
    "warm-up window; one-sided CUSUM of the robust z-scores above `h`).",
    (
        metric_param(),
        Param("direction", "str", "up", "Which change counts: up or down.", choices=("up", "down")),
        Param("log", "bool", True, "Work on log(x + floor) (ratios of levels), not on x."),
        Param("skip_zero", "bool", False, "Steps where the metric is exactly 0 carry no information (e.g. "
              "kl.k3 on a rollout's first, on-policy step): they change nothing."),
        Param("min_value", "float", None, "Optional: the value must also be at least this (at most, for down) "
              "for the condition to hold: a tenfold rise of something negligible is not worth a look."),
        *shift_params(),
    ),
    _compile_shift,
    lambda p: (p["metric"],),
    quiet=_quiet_shift,
)
