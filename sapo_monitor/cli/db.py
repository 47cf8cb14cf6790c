"""``sapo-monitor db``: apply, roll back and show the database migrations."""

from __future__ import annotations

import typer

from sapo_monitor.cli.extras import require

__all__ = ["register"]

app = typer.Typer(help="Database schema migrations (Alembic, shipped with the package).", no_args_is_help=True)
_DB = typer.Option("sqlite:///~/.local/share/sapo-monitor/sapo.db", "--db", envvar="SAPO_MONITOR_DB",
                   help="Database URL: sqlite:///PATH or postgresql://USER@HOST/DB.")


def _url(db: str) -> str:
    require("sqlalchemy", "service")
    from sapo_monitor.service.settings import resolve_db_url

    return resolve_db_url(db)


@app.command("upgrade")
def upgrade(
    db: str = _DB,
    revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
) -> None:
    """Bring the database schema up to REVISION (default: the newest this version ships)."""
    from sapo_monitor.service.storage.migrate import upgrade as do_upgrade

    do_upgrade(_url(db), revision)
    typer.echo(f"database at revision {_current(db)}")


@app.command("downgrade")
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, e.g. -1 for one step back or base for nothing."),
    db: str = _DB,
) -> None:
    """Roll the schema back to REVISION (data in dropped tables is lost)."""
    from sapo_monitor.service.storage.migrate import downgrade as do_downgrade

    do_downgrade(_url(db), revision)
    typer.echo(f"database at revision {_current(db)}")


def _current(db: str) -> str:
    from sapo_monitor.service.storage.db import make_engine
    from sapo_monitor.service.storage.migrate import current_revision

    engine = make_engine(_url(db), pooled=False)
    try:
        return current_revision(engine) or "none (empty)"
    finally:
        engine.dispose()


@app.command("current")
def current(db: str = _DB) -> None:
    """Show the database's revision, the newest one this version ships, and whether to upgrade."""
    from sapo_monitor.service.storage.db import make_engine
    from sapo_monitor.service.storage.migrate import head_revision, schema_state

    url = _url(db)
    engine = make_engine(url, pooled=False)
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    typer.echo(f"current: {_current(db)}\nhead:    {head_revision(url)}\nstate:   {state}")
    if state == "behind":
        typer.echo("run `sapo-monitor db upgrade` to bring the schema up to date")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
