"""Fixtures for the service tests: a database per test (SQLite file, or a uniquely named PostgreSQL
database created through ``test`` and dropped afterwards) and the real service on 127.0.0.1."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
import uvicorn
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.tokens import create_token

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BOTH = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def new_pg_database() -> tuple[str, str]:
    name = f"sapo_t_{uuid.uuid4().hex}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database URL (no schema): ``sqlite`` (default) or ``postgresql`` from the parameter."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/service.db"
        return
    name, url = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


@contextmanager
def live_service(db_url: str, *, auth: str = "off", **settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The service (``create_app``) under uvicorn in a thread on 127.0.0.1; yields its base URL."""
    app = create_app(Settings(db=db_url, host="127.0.0.1", port=0, auth=auth, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def service(db_url: str) -> Iterator[httpx.Client]:
    """An HTTP client bound to a live service (auth off) on the test's database."""
    with live_service(db_url) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client


def make_token(db_url: str, project: str, role: str) -> str:
    db = Database(db_url, pool_size=1)
    try:
        with db.write() as session:
            secret, _ = create_token(session, project=project, role=role)
        return secret
    finally:
        db.dispose()
