"""Rule definitions: what a rule is, its parameters, and validation.

A rule is a *kind* (the detector it runs, see :mod:`.detectors`, one module per family) plus tuned parameters, a severity,
``for_steps`` (how many consecutive steps the condition must hold before the alert fires),
``clear_steps`` (how many consecutive clear steps before a firing alert resolves) and a
scope (all runs, one project, or one run). Built-in rules and custom rules share this model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sapo_monitor.client import wire

__all__ = [
    "RULE_ID_RE",
    "SEVERITIES",
    "Param",
    "Rule",
    "RuleValidationError",
    "severity_rank",
]

SEVERITIES = ("warning", "critical")
_MAX_INT = 10**15  # far beyond any meaningful window or bound, and exactly representable as a float
RULE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")


def severity_rank(severity: str) -> int:
    """0 for warning, 1 for critical: lets "minimum severity" filters compare."""
    return SEVERITIES.index(severity)


class RuleValidationError(ValueError):
    """A rule definition is invalid; ``field`` names the offending field (``params.window``...)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a rule kind: its type, default and allowed range."""

    name: str
    type: str  # "float" | "int" | "str" | "metrics" (a list of metric names) | "bool"
    default: Any = None  # None with required=True means the caller must give it
    help: str = ""
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def coerce(self, value: Any, where: str) -> Any:
        """The value checked and converted, or :class:`RuleValidationError` naming ``where``."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise RuleValidationError(where, "must be true or false")
            return value
        if self.type in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RuleValidationError(where, f"must be a number, got {value!r}")
            # NaN, Infinity and integers beyond float range are refused here: float() or int() of them
            # raises (OverflowError, ValueError) and a comparison with NaN is always false.
            if isinstance(value, float) and not math.isfinite(value):
                raise RuleValidationError(where, "must be a finite number")
            if isinstance(value, int) and abs(value) > _MAX_INT:
                raise RuleValidationError(where, f"must be at most {_MAX_INT:.0e} in magnitude")
            if self.type == "int":
                if float(value) != int(value):
                    raise RuleValidationError(where, f"must be an integer, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            if self.minimum is not None and value < self.minimum:
                raise RuleValidationError(where, f"must be >= {self.minimum}, got {value}")
            if self.maximum is not None and value > self.maximum:
                raise RuleValidationError(where, f"must be <= {self.maximum}, got {value}")
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise RuleValidationError(where, f"must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise RuleValidationError(where, f"must be one of {', '.join(self.choices)}; got {value!r}")
            if self.choices is None:
                _check_metric(value, where)
            return value
        if self.type == "metrics":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not value:
                raise RuleValidationError(where, "must be a non-empty list of metric names")
            for i, name in enumerate(value):
                _check_metric(name, f"{where}[{i}]")
            return tuple(value)
        raise AssertionError(f"unknown param type {self.type}")  # a programming error, never input


def _check_metric(name: Any, where: str) -> None:
    # The wire's one metric-name rule (a rule on a name no step can carry would never fire).
    if not wire.is_metric_name(name):
        raise RuleValidationError(
            where, f"must be a metric name matching [a-z0-9_.]+ (at most {wire.METRIC_NAME_MAX_LEN} characters), "
            f"got {name!r}")


@dataclass(frozen=True)
class Rule:
    """A validated rule, ready to evaluate.

    ``version`` changes whenever the definition changes, so stored detector state from an older
    definition is discarded rather than misread.
    """

    id: str
    kind: str
    severity: str
    params: Mapping[str, Any]
    for_steps: int = 1
    clear_steps: int = 1  # consecutive clear steps before a firing alert resolves
    description: str = ""
    project: str | None = None
    run_id: str | None = None
    enabled: bool = True
    builtin: bool = False
    version: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def applies_to(self, project: str | None, run_id: str) -> bool:
        """Whether this rule watches the given run (scope check)."""
        if not self.enabled:
            return False
        if self.run_id is not None and self.run_id != run_id:
            return False
        return self.project is None or self.project == project
