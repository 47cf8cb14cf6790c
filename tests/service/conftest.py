"""Fixtures for the service tests: a database per test (SQLite file, or a uniquely named PostgreSQL
database created through ``test`` and dropped afterwards) and the real service on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.tokens import create_token

from tests.support.live import serve_in_thread
from tests.support.postgres import pg_database

BOTH = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database URL (no schema): ``sqlite`` (default) or ``postgresql`` from the parameter."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/service.db"
        return
    with pg_database() as url:
        yield url


@contextmanager
def live_service(db_url: str, *, auth: str = "off", **settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The service (``create_app``) under uvicorn in a thread on 127.0.0.1; yields its base URL."""
    app = create_app(Settings(db=db_url, host="127.0.0.1", port=0, auth=auth, **settings))
    with serve_in_thread(app, timeout=30) as base:
        yield base


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
