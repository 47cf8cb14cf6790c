"""Building a validated :class:`Rule` from what a user sent (API body) or what is stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sapo_monitor.client import wire

from .builtin import builtin_rule
from .detectors import KINDS, validate_params
from .model import RULE_ID_RE, SEVERITIES, Rule, RuleValidationError

__all__ = ["FIELDS", "apply_override", "build_rule", "stored_override"]

FIELDS = (
    "id", "kind", "severity", "params", "for_steps", "clear_steps", "description", "project", "run_id", "enabled",
)
MAX_FOR_STEPS = 100_000


def _scope(value: Any, name: str) -> str | None:
    # The wire's rules for project names and run ids: a rule scoped to a name no run can have never fires.
    if value is None:
        return None
    if name == "run_id":
        if not wire.is_run_id(value):
            raise RuleValidationError(name, f"must be a run id ({wire.RUN_ID_RULE}), or null; got {value!r}")
    elif not isinstance(value, str) or not wire.PROJECT_RE.fullmatch(value):
        raise RuleValidationError(name, f"must be a project name matching {wire.PROJECT_PATTERN}, or null; "
                                        f"got {value!r}")
    return value


def _common(doc: Mapping[str, Any], base: Rule | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    severity = doc.get("severity", base.severity if base else "warning")
    if severity not in SEVERITIES:
        raise RuleValidationError("severity", f"must be one of {', '.join(SEVERITIES)}; got {severity!r}")
    out["severity"] = severity
    for_steps = doc.get("for_steps", base.for_steps if base else 1)
    if isinstance(for_steps, bool) or not isinstance(for_steps, int) or not 1 <= for_steps <= MAX_FOR_STEPS:
        raise RuleValidationError("for_steps", f"must be an integer from 1 to {MAX_FOR_STEPS}; got {for_steps!r}")
    out["for_steps"] = for_steps
    clear_steps = doc.get("clear_steps", base.clear_steps if base else 1)
    if isinstance(clear_steps, bool) or not isinstance(clear_steps, int) or not 1 <= clear_steps <= MAX_FOR_STEPS:
        raise RuleValidationError("clear_steps", f"must be an integer from 1 to {MAX_FOR_STEPS}; got {clear_steps!r}")
    out["clear_steps"] = clear_steps
    enabled = doc.get("enabled", base.enabled if base else True)
    if not isinstance(enabled, bool):
        raise RuleValidationError("enabled", "must be true or false")
    out["enabled"] = enabled
    description = doc.get("description", base.description if base else "")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > 4000:
        raise RuleValidationError("description", "must be a string of at most 4000 characters")
    out["description"] = description
    return out


def build_rule(doc: Mapping[str, Any], *, version: int = 1) -> Rule:
    """A custom rule from its full definition; raises :class:`RuleValidationError` naming the field."""
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise RuleValidationError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    rule_id = doc.get("id")
    if not isinstance(rule_id, str) or not RULE_ID_RE.fullmatch(rule_id):  # match() took a trailing newline
        raise RuleValidationError("id", "must match [a-z0-9][a-z0-9_.-]{0,62}")
    kind_name = doc.get("kind")
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise RuleValidationError("kind", f"unknown kind {kind_name!r} (known: {', '.join(KINDS)})")
    params = doc.get("params") or {}
    if not isinstance(params, Mapping):
        raise RuleValidationError("params", "must be an object")
    return Rule(
        id=rule_id,
        kind=kind.name,
        params=validate_params(kind, params),
        project=_scope(doc.get("project"), "project"),
        run_id=_scope(doc.get("run_id"), "run_id"),
        version=version,
        **_common(doc, None),
    )


def apply_override(rule_id: str, doc: Mapping[str, Any], *, version: int = 1) -> Rule:
    """A built-in rule with a user's changes: severity, for_steps, enabled, description and params.

    Parameters not given keep the built-in defaults; the kind and scope of a built-in are fixed.
    """
    base = builtin_rule(rule_id)
    assert base is not None
    allowed = ("id", "severity", "params", "for_steps", "clear_steps", "description", "enabled", "kind")
    for name in doc:
        if name not in allowed:
            raise RuleValidationError(name, f"cannot be set on the built-in rule {rule_id!r} (allowed: {', '.join(allowed[1:7])})")
    if doc.get("kind", base.kind) != base.kind:
        raise RuleValidationError("kind", f"the built-in rule {rule_id!r} is of kind {base.kind!r} and cannot change")
    if doc.get("id", rule_id) != rule_id:
        raise RuleValidationError("id", "does not match the rule in the path")
    params = doc.get("params") or {}
    if not isinstance(params, Mapping):
        raise RuleValidationError("params", "must be an object")
    merged = {**base.params, **params}
    return Rule(
        id=rule_id,
        kind=base.kind,
        params=validate_params(KINDS[base.kind], merged),
        builtin=True,
        version=version,
        **_common(doc, base),
    )


def stored_override(stored: Rule) -> tuple[Rule | None, str | None]:
    """A stored override of a built-in, under this release's pack: (the rule or None, a note or None).

    An override is stored whole, so one written by an earlier release holds that release's built-in.
    The user's knobs (severity, for_steps, clear_steps, enabled) always carry over. Parameters carry over
    while the kind is the same (new parameters get their defaults, retired ones are dropped); when the
    built-in's kind changed, its parameters and description are this release's. A built-in that no
    longer exists is retired with its override (None). The note says what was not carried over.
    """
    base = builtin_rule(stored.id)
    if base is None:
        return None, (f"stored override of {stored.id!r} ignored: no such built-in rule in this release "
                      f"(PUT it as a custom rule to keep it)")
    knobs: dict[str, Any] = {"severity": stored.severity, "for_steps": stored.for_steps,
                             "clear_steps": stored.clear_steps, "enabled": stored.enabled, "version": stored.version}
    if stored.kind != base.kind:
        return replace(base, **knobs), (
            f"stored override of {stored.id!r} was for kind {stored.kind!r}; the built-in is now "
            f"{base.kind!r}: severity, for_steps, clear_steps and enabled kept, parameters reset to defaults")
    kind = KINDS[base.kind]
    known = {p.name for p in kind.params}
    dropped = sorted(set(stored.params) - known)
    try:
        params = validate_params(kind, {**base.params, **{k: v for k, v in stored.params.items() if k in known}})
    except RuleValidationError as exc:
        return replace(base, **knobs), (f"stored override of {stored.id!r}: {exc.field} {exc.message} in this "
                                        f"release; parameters reset to defaults")
    note = f"stored override of {stored.id!r}: parameters {', '.join(dropped)} no longer exist" if dropped else None
    return replace(stored, params=params), note
