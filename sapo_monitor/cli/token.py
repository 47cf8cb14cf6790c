"""``sapo-monitor token``: create, list and revoke API tokens (stored as hashes only)."""

from __future__ import annotations

import typer

from sapo_monitor.cli.extras import require

__all__ = ["register"]

app = typer.Typer(help="API tokens: bearer tokens scoped to a project with a role.", no_args_is_help=True)
_DB = typer.Option("sqlite:///~/.local/share/sapo-monitor/sapo.db", "--db", envvar="SAPO_MONITOR_DB",
                   help="Database URL of the service.")


def _database(db: str):  # type: ignore[no-untyped-def]
    require("sqlalchemy", "service")
    from sapo_monitor.service.settings import resolve_db_url
    from sapo_monitor.service.storage.db import Database, make_engine
    from sapo_monitor.service.storage.migrate import SchemaError, ensure_schema

    url = resolve_db_url(db)
    engine = make_engine(url, pooled=False)
    try:
        ensure_schema(engine)
    except SchemaError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    finally:
        engine.dispose()
    return Database(url, pool_size=1)


@app.command("create")
def create(
    project: str = typer.Option(..., "--project", help="Project the token is scoped to."),
    role: str = typer.Option(..., "--role", help="ingest (send steps), read (query), or admin (everything)."),
    description: str = typer.Option(None, "--description", help="A note to recognise the token later."),
    db: str = _DB,
) -> None:
    """Create a token and print it once: only its hash is stored, it cannot be shown again."""
    database = _database(db)
    from sapo_monitor.service.storage.tokens import ROLES, create_token

    if role not in ROLES:
        typer.secho(f"--role must be one of {', '.join(ROLES)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    try:
        with database.write() as session:
            secret, info = create_token(session, project=project, role=role, description=description)
    finally:
        database.dispose()
    typer.echo(secret)
    typer.secho(f"token {info.id} ({info.prefix}...) for project {project!r}, role {role}: store it now, "
                "it is not shown again", err=True)


@app.command("list")
def list_(
    project: str = typer.Option(None, "--project", help="Only this project's tokens."),
    db: str = _DB,
) -> None:
    """List tokens (id, prefix, project, role, revoked or not); secrets are never shown."""
    from rich.console import Console
    from rich.table import Table

    from sapo_monitor.cli._plain import plain

    database = _database(db)
    from sapo_monitor.service.storage.tokens import list_tokens

    try:
        with database.read() as session:
            tokens = list_tokens(session, project=project)
    finally:
        database.dispose()
    table = Table("id", "prefix", "project", "role", "description", "revoked")
    for t in tokens:
        table.add_row(*map(plain, (t.id, t.prefix + "...", t.project, t.role, t.description or "",
                                   "yes" if t.revoked_at else "")))
    Console().print(table)


@app.command("revoke")
def revoke(token_id: int = typer.Argument(..., help="Token id from `sapo-monitor token list`."), db: str = _DB) -> None:
    """Revoke a token: requests with it get 401 within a few seconds."""
    database = _database(db)
    from sapo_monitor.service.storage.tokens import revoke_token

    try:
        with database.write() as session:
            ok = revoke_token(session, token_id=token_id)
    finally:
        database.dispose()
    if not ok:
        typer.secho(f"no live token with id {token_id}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo(f"token {token_id} revoked")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="token")
