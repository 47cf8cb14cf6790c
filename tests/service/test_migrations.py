"""Models and migrations agree, upgrade and downgrade run on both databases, and the service
creates the schema on an empty database but refuses one whose schema is behind."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sapo_monitor.service.storage import Base, load_all_models, migrate
from sapo_monitor.service.storage.db import make_engine
from sqlalchemy import inspect

from .conftest import BOTH

pytestmark = BOTH


def test_models_and_migrations_agree(db_url: str) -> None:
    migrate.upgrade(db_url)
    load_all_models()
    engine = make_engine(db_url, pooled=False)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_upgrade_downgrade_and_schema_states(db_url: str) -> None:
    engine = make_engine(db_url, pooled=False)
    try:
        assert migrate.schema_state(engine) == "empty"
        migrate.upgrade(db_url)
        assert migrate.schema_state(engine) == "current"
        tables = set(inspect(engine).get_table_names())
        assert {"runs", "steps", "step_rollups", "api_tokens", "projects"} <= tables
        migrate.downgrade(db_url, "0001_core")  # one step back: behind the code
        assert migrate.schema_state(engine) == "behind"
        with pytest.raises(migrate.SchemaError, match="sapo-monitor db upgrade"):
            migrate.ensure_schema(engine)
        migrate.downgrade(db_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(db_url)
        assert migrate.ensure_schema(engine) == "current"
    finally:
        engine.dispose()


def test_empty_database_gets_the_schema_on_start(db_url: str) -> None:
    engine = make_engine(db_url, pooled=False)
    try:
        assert migrate.ensure_schema(engine) == "current"
        assert migrate.current_revision(engine) == migrate.head_revision(db_url)
    finally:
        engine.dispose()


def test_readyz_answers_503_while_the_schema_is_behind(db_url: str) -> None:
    import httpx

    from .conftest import live_service

    with live_service(db_url) as base:  # an empty database: the service creates the schema
        assert httpx.get(f"{base}/readyz", timeout=10).json() == {"status": "ready"}
        migrate.downgrade(db_url, "0001_core")  # an older release's schema under the running service
        r = httpx.get(f"{base}/readyz", timeout=10)
        assert r.status_code == 503
        body = r.json()
        assert "behind" in str(body) and "sapo-monitor db upgrade" in str(body) and "database" in str(body)
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # alive, just not ready
        migrate.upgrade(db_url)
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
