"""A run's rule state in ``alert_rule_state``: read once and written once per ingested batch.

The document is JSON with non-finite floats in the wire encoding (``"NaN"``, ``"Infinity"``,
``"-Infinity"``, :mod:`sapo_monitor.client.wire`). Detector state can hold them: a running sum of
values near 1e308 overflows to infinity. orjson wrote them as ``null``, and the next batch did
arithmetic on ``None`` (a 500 on every later batch of the run).
"""

from __future__ import annotations

from typing import Any

import orjson
from sapo_monitor.client.wire import NONFINITE_STRINGS, decode_float, encode_float
from sqlalchemy.orm import Session

from ..rules.evaluate import RunRuleState
from .alert_models import RuleState

__all__ = ["decode_state", "encode_state", "load_state", "save_state"]

_NONFINITE = frozenset(NONFINITE_STRINGS)

# Plain SQL on the driver: this runs on every ingested batch, and SQLAlchemy's statement building
# costs more than the queries themselves. ``?`` is SQLite's placeholder, ``%s`` psycopg's.
_SQL = {
    "load": "SELECT state FROM alert_rule_state WHERE run_pk = ?",
    "update": "UPDATE alert_rule_state SET state = ?, last_step = ?, updated_at = ? WHERE run_pk = ?",
    "insert": "INSERT INTO alert_rule_state (state, last_step, updated_at, run_pk) VALUES (?, ?, ?, ?)",
}
_SQL_PG = {k: v.replace("?", "%s") for k, v in _SQL.items()}
assert RuleState.__tablename__ == "alert_rule_state"


def _encode(value: Any) -> Any:
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        return decode_float(value) if value in _NONFINITE else value
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_state(state: RunRuleState) -> str:
    """The stored document: every float kept, non-finite ones as wire strings."""
    return orjson.dumps(_encode(state.to_json())).decode()


def decode_state(doc: str | bytes) -> RunRuleState:
    """The state back, floats as they were. Only detector state (``d``) is decoded: an alert's
    recorded values (``o``) are kept in the wire encoding, as transitions store them."""
    raw = orjson.loads(doc)
    for lc in (raw.get("rules") or {}).values():
        if isinstance(lc, dict) and "d" in lc:
            lc["d"] = _decode(lc["d"])
    return RunRuleState.from_json(raw)


def _sql(session: Session, name: str) -> tuple:  # type: ignore[type-arg]
    conn = session.connection()
    return conn, (_SQL if conn.dialect.name == "sqlite" else _SQL_PG)[name]


def load_state(session: Session, run_pk: int) -> tuple[RunRuleState, bool]:
    """The run's rule state and whether a row exists."""
    conn, sql = _sql(session, "load")
    row = conn.exec_driver_sql(sql, (run_pk,)).first()
    if row is None:
        return RunRuleState(), False
    return decode_state(row[0]), True


def save_state(session: Session, run_pk: int, state: RunRuleState, exists: bool, now: float) -> None:
    conn, sql = _sql(session, "update" if exists else "insert")
    conn.exec_driver_sql(sql, (encode_state(state), state.last_step, now, run_pk))
