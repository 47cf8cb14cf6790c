"""Fixtures for the alert tests: a migrated database on SQLite and on PostgreSQL (its own database
per test), helpers to ingest step records through the service's storage layer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sapo_monitor.client.wire import StepRecord
from sapo_monitor.service.ingestion import ingest_steps
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.runs import ensure_project

from tests.support.databases import migrated_database


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A migrated, empty database URL: ``sqlite`` or ``postgresql`` (from the test's parameter)."""
    with migrated_database(getattr(request, "param", "sqlite"), tmp_path, "alerts.db") as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url, pool_size=4)
    yield database
    database.dispose()


BOTH = pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


def ingest(db: Database, run_id: str, trace, *, project: str = "p") -> None:  # type: ignore[no-untyped-def]
    """Store ``[(step, metrics), ...]`` in one transaction, as the ingest route does."""
    now = time.time()
    records = [StepRecord(step=s, time=now, metrics=m) for s, m in sorted(trace, key=lambda x: x[0])]
    with db.write() as session:
        pid = ensure_project(session, project)
        ingest_steps(session, run_id=run_id, project_id=pid, records=records, now=now)
