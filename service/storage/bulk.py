"""Bulk upsert of many rows in one statement, the fast way for each database.

SQLite: ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` (sqlite3 runs it in C). PostgreSQL:
the rows travel as one JSON document expanded by ``json_populate_recordset`` — one round trip and no
per-value parameter adaptation in Python (measured ~10x faster than psycopg array parameters).
Infinities are sent as the strings PostgreSQL's float input reads; NaN never reaches here (stored
as NULL by the callers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from sapo_monitor.client.wire import encode_float
from sqlalchemy.orm import Session

__all__ = ["upsert_rows"]

_INF = math.inf


@cache
def _sql(dialect: str, table: str, columns: tuple[str, ...], key: tuple[str, ...],
         custom: tuple[tuple[str, str], ...] = ()) -> str:
    cols = ", ".join(columns)
    exprs = dict(custom)
    updates = ", ".join(f"{c} = {exprs.get(c, f'excluded.{c}')}" for c in columns if c not in key)
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    if dialect == "sqlite":
        marks = ", ".join("?" for _ in columns)
        return f"INSERT INTO {table} ({cols}) VALUES ({marks}) {conflict}"
    return (
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{table}, %s) "
        f"{conflict}"
    )


def _pg_value(v: Any) -> Any:
    # the wire's strings are also what PostgreSQL's float input reads for the infinities
    return encode_float(v) if v.__class__ is float and (v == _INF or v == -_INF) else v


def upsert_rows(
    session: Session,
    table: str,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    rows: Sequence[tuple],
    *,
    updates: dict[str, str] | None = None,
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table``, replacing rows with the same ``key``.

    ``updates``: SQL expressions for some columns on conflict (``excluded.<col>`` is the new value,
    ``<table>.<col>`` the stored one); other columns take the new value. ``rows`` must not repeat a
    key (PostgreSQL refuses to update one row twice in a statement).
    """
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect.name
    sql = _sql(dialect, table, columns, key, tuple(sorted((updates or {}).items())))
    if dialect == "sqlite":
        conn.exec_driver_sql(sql, list(rows))
        return
    if any(_INF in row or -_INF in row for row in rows):
        docs = [{c: _pg_value(v) for c, v in zip(columns, row, strict=True) if v is not None} for row in rows]
    else:  # the common case: no per-value work in Python
        # A key left out is NULL to json_populate_recordset: rows of custom metrics (59 empty catalogue
        # columns, 295 empty rollup cells) then send a fraction of the JSON for PostgreSQL to parse.
        sparse = len(columns) // 4
        docs = [dict(zip(columns, row, strict=True)) if row.count(None) < sparse
                else {c: v for c, v in zip(columns, row, strict=True) if v is not None} for row in rows]
    conn.exec_driver_sql(sql, (orjson.dumps(docs).decode(),))
