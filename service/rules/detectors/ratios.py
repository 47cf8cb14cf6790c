"""Shape of the importance ratios: log-ratio tails, the advantage-sign spread, and its change from baseline."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..model import Param
from .base import (
    BatchScan,
    Kind,
    QuietFn,
    StepFn,
    isfinite,
)
from .level import _scan_threshold
from .shift import cusum_quiet, shift_core, shift_params

__all__ = ["SIGN_SHIFT", "SIGN_SPREAD", "TAILS"]

# --- log-ratio tails ----------------------------------------------------------------------------


def _compile_tails(p: Mapping[str, Any]) -> StepFn:
    abs_bound, tail = p["abs_max"], p["tail"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        seen = False
        x = m.get("log_ratio.abs_max")
        if x is not None and isfinite(x):
            if x > abs_bound:
                return True
            seen = True
        hi = m.get("log_ratio.p99")
        if hi is not None and isfinite(hi):
            if hi > tail:
                return True
            seen = True
        lo = m.get("log_ratio.p01")
        if lo is not None and isfinite(lo):
            if lo < -tail:
                return True
            seen = True
        return False if seen else None

    return step


def _scan_tails(abs_bound: float, tail: float) -> BatchScan:
    t_abs = _scan_threshold("log_ratio.abs_max", operator.gt, abs_bound)
    t_hi = _scan_threshold("log_ratio.p99", operator.gt, tail)
    t_lo = _scan_threshold("log_ratio.p01", operator.lt, -tail)
    return lambda batch: t_abs(batch) or t_hi(batch) or t_lo(batch)


TAILS = Kind(
    "tails",
    "log_ratio.abs_max above `abs_max`, or the 1st/99th percentiles of the log-ratio beyond +/-`tail`.",
    (
        Param("abs_max", "float", 4.0, "Bound on the largest |log-ratio| (4 = a ratio of 55x).", minimum=0.0),
        Param("tail", "float", 1.0, "Bound on |p01| and |p99| of the log-ratio.", minimum=0.0),
    ),
    _compile_tails,
    lambda p: ("log_ratio.abs_max", "log_ratio.p01", "log_ratio.p99"),
    scan=lambda p: _scan_tails(p["abs_max"], p["tail"]),
)

# --- advantage-sign spread ----------------------------------------------------------------------


def _compile_sign_spread(p: Mapping[str, Any]) -> StepFn:
    factor, floor = p["factor"], p["min_std"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        neg = m.get("sign.neg.ratio_std")
        pos = m.get("sign.pos.ratio_std")
        if neg is None or pos is None or not isfinite(neg) or not isfinite(pos):
            return None
        return neg >= floor and neg > factor * pos

    return step


def _scan_sign_spread(factor: float, floor: float) -> BatchScan:
    def scan(batch: list) -> bool:
        for m in batch:
            neg = m.get("sign.neg.ratio_std")
            if neg is not None and neg >= floor:
                pos = m.get("sign.pos.ratio_std")
                if pos is not None and neg > factor * pos:
                    return True
        return False

    return scan


SIGN_SPREAD = Kind(
    "sign_spread",
    "Ratio spread of negative-advantage tokens above `factor` times the positive ones'.",
    (
        Param("factor", "float", 2.0, "How many times the positive side's ratio std.", minimum=1.0),
        Param("min_std", "float", 0.05, "The negative side's ratio std must also exceed this.", minimum=0.0),
    ),
    _compile_sign_spread,
    lambda p: ("sign.neg.ratio_std", "sign.pos.ratio_std"),
    scan=lambda p: _scan_sign_spread(p["factor"], p["min_std"]),
)

# --- negative side outgrowing the positive side, relative to the run's baseline -----------------


def _spread_ratio(floor: float) -> Callable[[Mapping[str, float]], float | None]:
    """log(neg std / pos std): how many times wider the negative side spreads (None: the step has no
    spread to compare, e.g. a rollout's first, on-policy step with both at 0)."""
    log = math.log

    def extract(m: Mapping[str, float]) -> float | None:
        neg = m.get("sign.neg.ratio_std")
        pos = m.get("sign.pos.ratio_std")
        if neg is None or pos is None or not isfinite(neg) or not isfinite(pos) or neg + floor <= 0 or pos + floor <= 0:
            return None
        if neg == 0.0 and pos == 0.0:
            return None
        return log(neg + floor) - log(pos + floor)

    return extract


def _compile_sign_shift(p: Mapping[str, Any]) -> StepFn:
    min_std, extract = p["min_std"], _spread_ratio(p["floor"])
    core = shift_core(up=True, skip=p["skip"], warmup=p["warmup"], k=p["k"], h=p["h"], min_scale=p["min_scale"],
                      alpha=p["alpha"])

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        y = extract(m)
        if y is None:
            return None
        hit = core(st, y)  # on the run's own scale
        if "mu" in st:
            st["ref"] = math.exp(st["mu"])
        return hit and m["sign.neg.ratio_std"] >= min_std

    return step


def _quiet_sign_shift(p: Mapping[str, Any]) -> QuietFn:
    min_std = p["min_std"]
    return cusum_quiet(_spread_ratio(p["floor"]), lambda m: m["sign.neg.ratio_std"] >= min_std, math.exp, up=True,
                       skip=p["skip"], warmup=p["warmup"], k=p["k"], h=p["h"], alpha=p["alpha"])


SIGN_SHIFT = Kind(
    "sign_shift",
    "The negative-advantage tokens' ratio spread growing relative to the positive side's, against the run's own "
    "baseline of log(neg std / pos std) (CUSUM, as `shift`).",
    (
        Param("min_std", "float", 0.02, "The negative side's ratio std must also reach this.", minimum=0.0),
        *shift_params(floor=1e-4),
    ),
    _compile_sign_shift,
    lambda p: ("sign.neg.ratio_std", "sign.pos.ratio_std"),
    quiet=_quiet_sign_shift,
)
