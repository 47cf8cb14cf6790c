"""A migrated, empty database of either kind, for tests and bench scripts: an SQLite file in a given
folder, or a new PostgreSQL database of its own (dropped afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sapo_monitor.service.storage import migrate

from tests.support.postgres import pg_database

__all__ = ["migrated_database"]


@contextmanager
def migrated_database(kind: str, folder: Path, filename: str = "sapo.db") -> Iterator[str]:
    """Yields the URL of a database at the newest migration; ``kind`` is ``sqlite`` or ``postgresql`` (or ``postgres``)."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / filename}"
        migrate.upgrade(url)
        yield url
        return
    if kind not in ("postgresql", "postgres"):
        raise ValueError(f"database kind must be 'sqlite' or 'postgresql', not {kind!r}")
    with pg_database() as url:
        migrate.upgrade(url)
        yield url
