"""Engine, sessions and the little dialect-specific setup the two databases need.

SQLite: WAL journal, ``busy_timeout`` so concurrent writers wait instead of failing, foreign keys on,
and write transactions opened with ``BEGIN IMMEDIATE`` (a deferred transaction that reads then
writes can fail with "database is locked" instead of waiting). PostgreSQL: a pooled psycopg 3
engine; ingest serialises per run by locking the run row first (see :mod:`.steps`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

__all__ = ["Database", "make_engine"]

_WRITE = "sapo_write"


def make_engine(url: str, *, pool_size: int = 8, pooled: bool = True) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql://...``) with our connection setup.

    ``pooled=False`` gives one-shot connections (CLI commands, migrations).
    """
    parsed = make_url(url)
    pool_args: dict = (
        {"pool_size": pool_size, "max_overflow": pool_size} if pooled else {"poolclass": NullPool}
    )
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool_args)
        _setup_sqlite(engine)
        return engine
    if parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=pooled, **pool_args)


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # We emit BEGIN ourselves (below) so that pysqlite's implicit transactions stay out of the way.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@dataclass
class Database:
    """The engine plus read and write session factories; one per app (or CLI command)."""

    url: str
    pool_size: int = 8
    engine: Engine = field(init=False)
    project_ids: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url, pool_size=self.pool_size)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
