"""Rule kinds: the detectors a rule can run, their parameters, and their per-step update.

Each kind compiles a rule's parameters into a closure ``step(state, metrics) -> bool | None``:
``True`` when the condition holds at this step, ``False`` when it does not, ``None`` when the step
carries none of the metrics the rule reads (the alert lifecycle then stays where it is).

``state`` is a plain dict of JSON-serialisable numbers and short lists, owned by one (run, rule), so
it can be stored after every batch and survives restarts. Detectors that learn a baseline (running
medians, EWMAs) do not learn from the steps on which they fire: a spike must not become the new
normal while it lasts. Closures (not methods looking up parameters) because this runs for every
rule on every ingested step and must stay cheap.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import Param, RuleValidationError

__all__ = ["CUSTOM_KINDS", "KINDS", "Kind", "StepFn", "validate_params"]

StepFn = Callable[[dict, Mapping[str, float]], "bool | None"]
BatchScan = Callable[[list], bool]
QuietFn = Callable[[dict, list], bool]

_isfinite = math.isfinite
_INF = math.inf
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_OP_CHOICES = tuple(_OPS)


@dataclass(frozen=True)
class Kind:
    """A detector: its parameters, how to compile them, which metrics it reads."""

    name: str
    summary: str
    params: tuple[Param, ...]
    compile: Callable[[Mapping[str, Any]], StepFn]
    metrics: Callable[[Mapping[str, Any]], tuple[str, ...]]
    time_based: bool = False  # evaluated by the periodic check, not only by ingest
    # Stateless kinds only: ``scan(params)(batch) -> bool``, False when the condition holds on no step
    # of the batch. A rule with no open alert then skips the batch without a call per step. It may
    # say True falsely (the per-step evaluation then decides), never False falsely.
    scan: Callable[[Mapping[str, Any]], BatchScan] | None = None
    # Stateful kinds: ``quiet(params)(state, batch) -> bool``: True when it could process the whole
    # batch at once and the condition held on no step (``state`` then updated as the per-step pass
    # would have); False, with ``state`` untouched, when the per-step pass must decide.
    quiet: Callable[[Mapping[str, Any]], QuietFn] | None = None

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


def validate_params(kind: Kind, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and every value checked; unknown or bad parameters raise naming them."""
    params = dict(params or {})
    known = {p.name for p in kind.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise RuleValidationError(
            f"params.{unknown[0]}",
            f"unknown parameter for kind {kind.name!r} (known: {', '.join(sorted(known)) or 'none'})",
        )
    out: dict[str, Any] = {}
    for p in kind.params:
        if p.name in params and params[p.name] is not None:
            out[p.name] = p.coerce(params[p.name], f"params.{p.name}")
        elif p.required:
            raise RuleValidationError(f"params.{p.name}", f"required for kind {kind.name!r}")
        else:
            out[p.name] = tuple(p.default) if isinstance(p.default, list) else p.default
    return out


def _metric_param(default: str | None = None, help: str = "Metric name to watch.") -> Param:
    return Param("metric", "str", default, help, required=default is None)


# --- threshold ----------------------------------------------------------------------------------


def _compile_threshold(p: Mapping[str, Any]) -> StepFn:
    metric, op, bound = p["metric"], _OPS[p["op"]], p["value"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not _isfinite(x):
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
        _metric_param(),
        Param("op", "str", ">", "Comparison: >, >=, <, <=.", choices=_OP_CHOICES),
        Param("value", "float", None, "The bound.", required=True),
    ),
    _compile_threshold,
    lambda p: (p["metric"],),
    scan=lambda p: _scan_threshold(p["metric"], _OPS[p["op"]], p["value"]),
)

# --- rate of change -----------------------------------------------------------------------------


def _compile_rate(p: Mapping[str, Any]) -> StepFn:
    metric, window, op, bound, relative = p["metric"], p["window"], _OPS[p["op"]], p["value"], p["relative"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not _isfinite(x):
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
        _metric_param(),
        Param("window", "int", 1, "Compare with the value this many steps back.", minimum=1, maximum=1000),
        Param("op", "str", ">", "Comparison of the change with `value`.", choices=_OP_CHOICES),
        Param("value", "float", None, "Bound on the change.", required=True),
        Param("relative", "bool", False, "Divide the change by |old value|."),
    ),
    _compile_rate,
    lambda p: (p["metric"],),
)

# --- EWMA anomaly -------------------------------------------------------------------------------


def _compile_ewma(p: Mapping[str, Any]) -> StepFn:
    metric, alpha, zmax, warmup, min_std = p["metric"], p["alpha"], p["z"], p["warmup"], p["min_std"]
    up = p["direction"] in ("up", "both")
    down = p["direction"] in ("down", "both")

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not _isfinite(x):
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
        _metric_param(),
        Param("alpha", "float", 0.1, "EWMA weight of the newest step.", minimum=1e-4, maximum=1.0),
        Param("z", "float", 4.0, "Fire when |z| exceeds this.", minimum=0.1),
        Param("direction", "str", "up", "Which side is anomalous: up, down, both.", choices=("up", "down", "both")),
        Param("warmup", "int", 10, "Steps of history before the rule can fire.", minimum=1, maximum=100000),
        Param("min_std", "float", 1e-6, "Floor of the EWMA std (a flat history is not infinitely sure).", minimum=0.0),
    ),
    _compile_ewma,
    lambda p: (p["metric"],),
)

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
            if x is None or not _isfinite(x):
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
        if x is None or not _isfinite(x):
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


def _finite_values(batch: list, name: str) -> list[float]:
    return [x for x in [m.get(name) for m in batch] if x is not None and -_INF < x < _INF]


def _quiet_median_spike(metrics: tuple[str, ...], factor: float, window: int, floor: float) -> QuietFn:
    def quiet(st: dict, batch: list) -> bool:
        updates = []
        for name in metrics:
            vals = _finite_values(batch, name)
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

# --- non-finite values --------------------------------------------------------------------------


def _compile_nonfinite(p: Mapping[str, Any]) -> StepFn:
    metrics, count_metric = p["metrics"], p["count_metric"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        seen = False
        for name in metrics:
            x = m.get(name)
            if x is not None:
                if not _isfinite(x):
                    return True
                seen = True
        c = m.get(count_metric)
        if c is not None:
            if not _isfinite(c) or c > 0:
                return True
            seen = True
        return False if seen else None

    return step


def _scan_nonfinite(metrics: tuple[str, ...], count_metric: str) -> BatchScan:
    def scan(batch: list) -> bool:
        # C-speed: a sum is finite only if every term is (a finite overflow only costs the per-step
        # pass); any() is true for a non-zero or NaN count.
        if not _isfinite(sum([m.get(name, 0.0) for m in batch for name in metrics])):
            return True
        return any([m.get(count_metric, 0.0) for m in batch])

    return scan


NONFINITE = Kind(
    "nonfinite",
    "Any of the metrics NaN or infinite, or the non-finite token counter above zero.",
    (
        Param(
            "metrics",
            "metrics",
            ["loss", "grad_norm", "log_ratio.mean", "log_ratio.std", "ratio.mean", "kl.k3"],
            "Metrics that must stay finite.",
        ),
        Param("count_metric", "str", "nonfinite.token_count", "Counter of non-finite token ratios."),
    ),
    _compile_nonfinite,
    lambda p: (*p["metrics"], p["count_metric"]),
    scan=lambda p: _scan_nonfinite(tuple(p["metrics"]), p["count_metric"]),
)

# --- log-ratio tails ----------------------------------------------------------------------------


def _compile_tails(p: Mapping[str, Any]) -> StepFn:
    abs_bound, tail = p["abs_max"], p["tail"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        seen = False
        x = m.get("log_ratio.abs_max")
        if x is not None and _isfinite(x):
            if x > abs_bound:
                return True
            seen = True
        hi = m.get("log_ratio.p99")
        if hi is not None and _isfinite(hi):
            if hi > tail:
                return True
            seen = True
        lo = m.get("log_ratio.p01")
        if lo is not None and _isfinite(lo):
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
        if neg is None or pos is None or not _isfinite(neg) or not _isfinite(pos):
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

# --- fall below an early-run baseline -----------------------------------------------------------


def _compile_below_baseline(p: Mapping[str, Any]) -> StepFn:
    metric, steps, fraction = p["metric"], p["baseline_steps"], p["fraction"]
    guard, gain, alpha = p["guard_metric"], p["guard_gain"], 0.1

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if guard is not None:  # track the guard metric: its early mean and its EWMA since
            g = m.get(guard)
            if g is not None and _isfinite(g):
                gn = st.get("gn", 0)
                st["gn"] = gn + 1
                if gn < steps:
                    st["gsum"] = st.get("gsum", 0.0) + g
                    st["ge"] = st["gsum"] / (gn + 1)
                else:
                    st["ge"] += alpha * (g - st["ge"])
                if gn + 1 == steps:
                    st["gref"] = st["gsum"] / steps
        if x is None or not _isfinite(x):
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
        # Falling entropy while the reward climbs is convergence, not collapse.
        return not (guard is not None and "gref" in st and st["ge"] - st["gref"] >= gain)

    return step


def _quiet_below_baseline(metric: str, steps: int, fraction: float, guard: str | None) -> QuietFn:
    alpha = 0.1  # as in the step function

    def quiet(st: dict, batch: list) -> bool:
        if st.get("n", 0) < steps or (guard is not None and st.get("gn", 0) < steps):
            return False  # baselines still forming: the per-step pass does it
        bound = fraction * st["ref"]
        if any(x < bound for x in _finite_values(batch, metric)):
            return False
        if guard is not None:
            gs = _finite_values(batch, guard)
            e = st["ge"]
            for g in gs:
                e += alpha * (g - e)
            st["ge"] = e
            st["gn"] += len(gs)
        return True

    return quiet


BELOW_BASELINE = Kind(
    "below_baseline",
    "The metric below `fraction` of its mean over the run's first `baseline_steps` steps (optionally unless a "
    "guard metric rose meanwhile).",
    (
        _metric_param(),
        Param("baseline_steps", "int", 10, "Early steps averaged into the baseline.", minimum=1, maximum=10000),
        Param("fraction", "float", 0.3, "Fire below this fraction of the baseline.", minimum=0.0, maximum=1.0),
        Param("guard_metric", "str", None, "Optional: do not fire while this metric's EWMA is `guard_gain` above "
              "its own early mean (e.g. reward.mean: low entropy with a rising reward is convergence)."),
        Param("guard_gain", "float", 0.2, "Rise of the guard metric that suppresses the alert.", minimum=0.0),
    ),
    _compile_below_baseline,
    lambda p: (p["metric"],),
    quiet=lambda p: _quiet_below_baseline(p["metric"], p["baseline_steps"], p["fraction"], p["guard_metric"]),
)

# --- drop from the running best -----------------------------------------------------------------


def _compile_drop_from_best(p: Mapping[str, Any]) -> StepFn:
    metric, alpha, warmup = p["metric"], p["alpha"], p["warmup"]
    drop, min_scale = p["drop"], p["min_scale"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        x = m.get(metric)
        if x is None or not _isfinite(x):
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
        for x in _finite_values(batch, metric):  # the step function's recursion, on locals
            e = x if n == 0 else e + alpha * (x - e)
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
        _metric_param(),
        Param("alpha", "float", 0.2, "EWMA weight of the newest step (smoothing).", minimum=1e-4, maximum=1.0),
        Param("drop", "float", 0.5, "Fire when the smoothed value is this fraction below the best.", minimum=0.0),
        Param("warmup", "int", 10, "Steps before the best is tracked.", minimum=1, maximum=100000),
        Param("min_scale", "float", 0.05, "Floor of |best| used as the scale (rewards near zero).", minimum=1e-9),
    ),
    _compile_drop_from_best,
    lambda p: (p["metric"],),
    quiet=lambda p: _quiet_drop_from_best(p["metric"], p["alpha"], p["warmup"], p["drop"], p["min_scale"]),
)

# --- silence ------------------------------------------------------------------------------------


def _compile_silence(p: Mapping[str, Any]) -> StepFn:
    # On ingest a step has arrived, so a silent-run alert resolves; firing is the periodic check's job.
    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        return False

    return step


SILENCE = Kind(
    "silence",
    "No step received for `after_s` seconds while the run is marked running (checked periodically).",
    (Param("after_s", "float", 600.0, "Seconds without a step before the alert fires.", minimum=1.0),),
    _compile_silence,
    lambda p: (),
    time_based=True,
    scan=lambda p: lambda batch: False,
)

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        THRESHOLD,
        RATE_OF_CHANGE,
        EWMA_ANOMALY,
        MEDIAN_SPIKE,
        NONFINITE,
        TAILS,
        SIGN_SPREAD,
        BELOW_BASELINE,
        DROP_FROM_BEST,
        SILENCE,
    )
}
CUSTOM_KINDS = ("threshold", "rate_of_change", "ewma_anomaly")
