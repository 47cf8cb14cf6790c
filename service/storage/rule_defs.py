"""Rule definitions in the database: built-ins with their stored overrides, and custom rules.

Keyword-only functions over a session; the caller owns the transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..rules.builtin import BUILTIN_IDS, BUILTIN_RULES
from ..rules.model import Rule, RuleValidationError
from ..rules.spec import apply_override, build_rule, stored_override
from .alert_models import AlertRule
from .read_cache import ReadCache

__all__ = [
    "RuleConflict",
    "cached_rules",
    "create_rule",
    "delete_rule",
    "get_rule",
    "list_rules",
    "replace_rule",
]


log = logging.getLogger("sapo_monitor.rules")
_told: set[str] = set()  # stored-override notes already logged by this process


class RuleConflict(Exception):
    """The rule id is taken (create) or the rule cannot be deleted (a built-in)."""


def _to_rule(row: AlertRule) -> Rule:
    params = json.loads(row.params)
    return Rule(
        id=row.id,
        kind=row.kind,
        severity=row.severity,
        params={k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
        for_steps=row.for_steps,
        clear_steps=row.clear_steps,
        description=row.description or "",
        project=row.project,
        run_id=row.run_id,
        enabled=row.enabled,
        builtin=row.builtin,
        version=row.version,
    )


def _from_row(row: AlertRule) -> Rule | None:
    """The rule a row stands for in this release: a built-in's override is carried onto the current
    built-in (:func:`stored_override`); None for the override of a built-in this release retired."""
    rule = _to_rule(row)
    if not row.builtin:
        return rule
    current, note = stored_override(rule)
    if note is not None and note not in _told:
        _told.add(note)
        log.warning("%s", note)
    return current


def _write(session: Session, rule: Rule, row: AlertRule | None) -> None:
    now = time.time()
    fields: dict[str, Any] = {
        "kind": rule.kind,
        "severity": rule.severity,
        "params": json.dumps(dict(rule.params), default=list),
        "for_steps": rule.for_steps,
        "clear_steps": rule.clear_steps,
        "description": rule.description,
        "project": rule.project,
        "run_id": rule.run_id,
        "enabled": rule.enabled,
        "builtin": rule.builtin,
        "version": rule.version,
        "updated_at": now,
    }
    if row is None:
        session.add(AlertRule(id=rule.id, created_at=now, **fields))
    else:
        for key, value in fields.items():
            setattr(row, key, value)
    session.flush()
    _RULES.invalidate_on_commit(session)


def cached_rules(session: Session) -> list[Rule]:
    """:func:`list_rules`, at most ``_RULES.ttl_s`` old: ingest reads the rules once per batch."""
    return _RULES.get(session)


def list_rules(session: Session) -> list[Rule]:
    """Every rule: built-ins (with their overrides) first in pack order, then custom rules by id."""
    stored = {row.id: row for row in session.scalars(select(AlertRule))}
    out = [_from_row(stored[r.id]) or r if r.id in stored else r for r in BUILTIN_RULES]
    out += [rule for rid, row in sorted(stored.items()) if rid not in BUILTIN_IDS and (rule := _from_row(row))]
    return out


_RULES: ReadCache[list[Rule]] = ReadCache(list_rules)


def get_rule(session: Session, rule_id: str) -> Rule | None:
    row = session.get(AlertRule, rule_id)
    if row is not None:
        return _from_row(row)
    return next((r for r in BUILTIN_RULES if r.id == rule_id), None)


def create_rule(session: Session, *, doc: Mapping[str, Any]) -> Rule:
    """Validate and store a new custom rule; :class:`RuleConflict` when the id exists."""
    rule = build_rule(doc)
    if rule.id in BUILTIN_IDS or session.get(AlertRule, rule.id) is not None:
        raise RuleConflict(f"rule {rule.id!r} already exists (use PUT /api/v1/rules/{rule.id} to change it)")
    _write(session, rule, None)
    return rule


def replace_rule(session: Session, *, rule_id: str, doc: Mapping[str, Any]) -> tuple[Rule, bool]:
    """Create or replace a rule (a built-in gets an override); returns (rule, created)."""
    row = session.get(AlertRule, rule_id, with_for_update=True)
    version = row.version + 1 if row is not None else (2 if rule_id in BUILTIN_IDS else 1)
    if rule_id in BUILTIN_IDS:
        rule = apply_override(rule_id, doc, version=version)
    else:
        if doc.get("id", rule_id) != rule_id:
            raise RuleValidationError("id", "does not match the rule in the path")
        rule = build_rule({**doc, "id": rule_id}, version=version)
    _write(session, rule, row)
    return rule, row is None and rule_id not in BUILTIN_IDS


def delete_rule(session: Session, *, rule_id: str) -> bool:
    """Delete a custom rule; False when unknown. Built-ins raise :class:`RuleConflict`."""
    if rule_id in BUILTIN_IDS:
        raise RuleConflict(
            f"{rule_id!r} is a built-in rule and cannot be deleted; PUT {{\"enabled\": false}} to turn it off"
        )
    result = session.execute(delete(AlertRule).where(AlertRule.id == rule_id))
    _RULES.invalidate_on_commit(session)
    return bool(getattr(result, "rowcount", 0))  # a CursorResult for a DELETE
