"""Collapse detection rules: definitions, the built-in pack, and pure evaluation.

Storage-free on purpose: ``service/ingestion.py`` runs an ingest (store steps, evaluate rules, enqueue
notifications) and ``service/storage`` (rule_defs, rule_state, alert_queries) holds their SQL.
"""

from .builtin import BUILTIN_IDS, BUILTIN_RULES, builtin_rule
from .detectors import CUSTOM_KINDS, KINDS, Kind, validate_params
from .evaluate import Condition, RunRuleState, StepInput, Transition, advance, evaluate, evaluate_batch
from .model import SEVERITIES, Param, Rule, RuleValidationError, severity_rank

__all__ = [
    "BUILTIN_IDS",
    "BUILTIN_RULES",
    "CUSTOM_KINDS",
    "KINDS",
    "SEVERITIES",
    "Condition",
    "Kind",
    "Param",
    "Rule",
    "RuleValidationError",
    "RunRuleState",
    "StepInput",
    "Transition",
    "advance",
    "builtin_rule",
    "evaluate",
    "evaluate_batch",
    "severity_rank",
    "validate_params",
]
