"""Engine, sessions and the little dialect-specific setup the two databases need.

SQLite: WAL journal, ``busy_timeout`` so concurrent writers wait instead of failing, foreign keys on,
and write transactions opened with ``BEGIN IMMEDIATE`` (a deferred transaction that reads then
writes can fail with "database is locked" instead of waiting). PostgreSQL: a pooled psycopg 3
engine; ingest serialises per run by locking the run row first (see :mod:`.steps`); connect,
statement and pool timeouts, TCP keepalive and a client-side deadline (:mod:`.deadline`) bound every
wait for it (:class:`DbTimeouts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .deadline import install_deadlines

__all__ = ["Database", "DbTimeouts", "db_timeouts", "for_update", "make_engine"]

_WRITE = "sapo_write"


@dataclass(frozen=True)
class DbTimeouts:
    """Bounds on every wait for PostgreSQL, so an unreachable or stalled database costs a 503 in
    about a second or two instead of a hung request (SQLite is a local file: only ``busy_timeout``)."""

    connect_s: float = 3.0  # TCP connect plus the startup handshake (libpq rounds up, minimum 2 s)
    statement_s: float = 15.0  # server statement_timeout; the client cuts a connection silent longer
    pool_s: float = 2.0  # waiting for a free pooled connection
    keepalive_idle_s: int = 5  # TCP keepalive: probe an idle connection after this long...
    keepalive_interval_s: int = 2  # ...then every this long, and give up after 3 unanswered probes


def db_timeouts(settings: Any) -> DbTimeouts:
    """The timeouts of the service's ``Settings`` (``SAPO_MONITOR_DB_*_TIMEOUT_S``)."""
    return DbTimeouts(connect_s=settings.db_connect_timeout_s, statement_s=settings.db_statement_timeout_s,
                      pool_s=settings.db_pool_timeout_s)


def make_engine(url: str, *, pool_size: int = 8, pooled: bool = True, timeouts: DbTimeouts | None = None) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql://...``) with our connection setup.

    ``pooled=False`` gives one-shot connections (CLI commands, migrations).
    """
    parsed = make_url(url)
    t = timeouts or DbTimeouts()
    pool_args: dict = (
        {"pool_size": pool_size, "max_overflow": pool_size, "pool_timeout": t.pool_s} if pooled
        else {"poolclass": NullPool}
    )
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool_args)
        _setup_sqlite(engine)
        return engine
    if parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    connect_args: dict[str, object] = {
        "connect_timeout": max(2, math.ceil(t.connect_s)),
        "keepalives": 1,
        "keepalives_idle": t.keepalive_idle_s,
        "keepalives_interval": t.keepalive_interval_s,
        "keepalives_count": 3,
    }
    if pooled:  # the service's requests; one-shot CLI connections (migrations) may run long statements
        connect_args["tcp_user_timeout"] = int(t.statement_s * 1000)  # unacknowledged writes: peer gone
        connect_args["options"] = f"-c statement_timeout={int(t.statement_s * 1000)}"
    engine = create_engine(url, connect_args=connect_args, **pool_args)
    if pooled:  # checkout ping and per-statement deadline (see .deadline); replaces pool_pre_ping
        install_deadlines(engine, statement_s=t.statement_s + 1.0, ping_s=min(t.connect_s, 2.0))
    return engine


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
    timeouts: DbTimeouts = field(default_factory=DbTimeouts)
    engine: Engine = field(init=False)
    project_ids: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url, pool_size=self.pool_size, timeouts=self.timeouts)
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


def for_update(session: Session, query: Any, *, skip_locked: bool = False, of: Any = None) -> Any:
    """``query`` locking the rows it reads on PostgreSQL (``FOR UPDATE [SKIP LOCKED]``); unchanged on
    SQLite, where a write transaction already holds the whole database."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=skip_locked, of=of)
    return query
