"""Non-finite values: NaN or infinity in the update's metrics, or non-finite tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import (
    BatchScan,
    Kind,
    StepFn,
    isfinite,
)

__all__ = ["NONFINITE"]

# --- non-finite values --------------------------------------------------------------------------


def _compile_nonfinite(p: Mapping[str, Any]) -> StepFn:
    metrics, count_metric = p["metrics"], p["count_metric"]

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        seen = False
        for name in metrics:
            x = m.get(name)
            if x is not None:
                if not isfinite(x):
                    return True
                seen = True
        c = m.get(count_metric)
        if c is not None:
            if not isfinite(c) or c > 0:
                return True
            seen = True
        return False if seen else None

    return step


def _scan_nonfinite(metrics: tuple[str, ...], count_metric: str) -> BatchScan:
    def scan(batch: list) -> bool:
        # C-speed: a sum is finite only if every term is (a finite overflow only costs the per-step
        # pass); any() is true for a non-zero or NaN count.
        if not isfinite(sum([m.get(name, 0.0) for m in batch for name in metrics])):
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
