"""Uniquely named PostgreSQL databases, created through the ``test`` database on 127.0.0.1:5432 and
dropped (``WITH (FORCE)``, so open connections do not block it) afterwards.

``SAPO_MONITOR_TEST_PG`` points the tests at another server: the URL of a database the tests may
connect to as a role allowed to create databases (default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_ADMIN = os.environ.get("SAPO_MONITOR_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"


def new_pg_database() -> tuple[str, str]:
    """Create an empty database ``sapo_t_<uuid hex>``; returns ``(name, url)``."""
    name = f"sapo_t_{uuid.uuid4().hex}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def pg_database() -> Iterator[str]:
    """A new empty database for the block; yields its URL and drops it afterwards."""
    name, url = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)
