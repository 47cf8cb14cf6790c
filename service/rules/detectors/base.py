"""What every detector shares: the Kind record, parameter validation and small helpers."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model import Param, RuleValidationError

__all__ = [
    "INF", "OPS", "OP_CHOICES", "BatchScan", "Kind", "QuietFn", "StepFn", "finite_values", "isfinite",
    "metric_param", "validate_params",
]

StepFn = Callable[[dict, Mapping[str, float]], "bool | None"]
BatchScan = Callable[[list], bool]
QuietFn = Callable[[dict, list], bool]

isfinite = math.isfinite
INF = math.inf
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
OP_CHOICES = tuple(OPS)


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


def metric_param(default: str | None = None, help: str = "Metric name to watch.") -> Param:
    return Param("metric", "str", default, help, required=default is None)


def finite_values(batch: list, name: str) -> list[float]:
    return [x for x in [m.get(name) for m in batch] if x is not None and -INF < x < INF]
