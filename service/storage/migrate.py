"""Alembic, driven from code: the migrations ship as the package ``sapo_monitor.migrations``.

``sapo-monitor db upgrade`` and ``serve`` use these functions, so they work from an install
without an ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

__all__ = [
    "SchemaError",
    "SchemaState",
    "alembic_config",
    "current_revision",
    "downgrade",
    "ensure_schema",
    "head_revision",
    "schema_state",
    "upgrade",
]

SchemaState = Literal["empty", "current", "behind", "unknown"]


def alembic_config(url: str) -> Config:
    import sapo_monitor.migrations as migrations_pkg

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations_pkg.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "-1") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision(url: str = "sqlite://") -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_state(engine: Engine) -> SchemaState:
    """Where the database stands against the migrations shipped with this code.

    ``empty``: no tables at all (``serve`` may create the schema). ``current``: at head. ``behind``:
    an older revision (``sapo-monitor db upgrade`` needed). ``unknown``: tables without our version
    stamp, or a revision this code does not know (a newer release wrote it).
    """
    tables = set(inspect(engine).get_table_names())
    if not tables:
        return "empty"
    rev = current_revision(engine)
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    head = script.get_current_head()
    if rev == head:
        return "current"
    if rev is None:
        return "unknown"
    known = {r.revision for r in script.walk_revisions()}
    return "behind" if rev in known else "unknown"


class SchemaError(RuntimeError):
    """The database's schema does not match this code; the message says what to run."""


_PG_MIGRATION_LOCK = 8321_0001  # advisory lock id: replicas starting together migrate once


def _upgrade_on(connection, url: str) -> None:  # type: ignore[no-untyped-def]
    cfg = alembic_config(url)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def ensure_schema(engine: Engine, *, create_if_empty: bool = True) -> SchemaState:
    """Create the schema through the migrations on an empty database; refuse one that is behind.

    Raises :class:`SchemaError` naming ``sapo-monitor db upgrade`` when the schema is older than the
    code, or when the database holds tables this code does not know.
    """
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_MIGRATION_LOCK})")
            conn.commit()
            try:
                state = schema_state(engine)
                if state == "empty" and create_if_empty:
                    _upgrade_on(conn, url)
                    conn.commit()
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_MIGRATION_LOCK})")
                conn.commit()
    else:
        state = schema_state(engine)
        if state == "empty" and create_if_empty:
            upgrade(url)
    if state == "empty" and create_if_empty:
        return "current"
    if state == "behind":
        raise SchemaError(
            f"the database schema is at revision {current_revision(engine)} but this version of sapo-monitor "
            f"needs {head_revision(url)}: run `sapo-monitor db upgrade --db URL` first"
        )
    if state == "unknown":
        raise SchemaError(
            "the database holds tables this version of sapo-monitor does not know (no or an unknown "
            "migration revision): use an empty database, or a newer sapo-monitor, or run "
            "`sapo-monitor db upgrade` if it was created by an older one"
        )
    return state
