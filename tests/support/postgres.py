"""Uniquely named PostgreSQL databases, created through the ``test`` database on 127.0.0.1:5432 and
dropped (``WITH (FORCE)``, so open connections do not block it) afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def new_pg_database() -> tuple[str, str]:
    """Create an empty database ``sapo_t_<uuid hex>``; returns ``(name, url)``."""
    name = f"sapo_t_{uuid.uuid4().hex}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


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
