"""``sapo-monitor serve``: run the service (FastAPI under uvicorn)."""

from __future__ import annotations

import os

import typer

from sapo_monitor.cli.extras import require

__all__ = ["register"]


def serve(
    host: str = typer.Option("127.0.0.1", "--host", envvar="SAPO_MONITOR_HOST",
                             help="Address to bind. Auth may be off only on a loopback address."),
    port: int = typer.Option(8321, "--port", envvar="SAPO_MONITOR_PORT", help="Port to bind."),
    db: str = typer.Option("sqlite:///~/.local/share/sapo-monitor/sapo.db", "--db", envvar="SAPO_MONITOR_DB",
                           help="Database URL: sqlite:///PATH or postgresql://USER@HOST/DB."),
    workers: int = typer.Option(1, "--workers", min=1, envvar="SAPO_MONITOR_WORKERS",
                                help="uvicorn worker processes (use PostgreSQL for more than one)."),
    auth: str = typer.Option("auto", "--auth", envvar="SAPO_MONITOR_AUTH",
                             help="Bearer-token auth: auto (off on loopback, on elsewhere), on, or off."),
    log_level: str = typer.Option("info", "--log-level", envvar="SAPO_MONITOR_LOG_LEVEL",
                                  help="uvicorn log level (debug, info, warning, error)."),
) -> None:
    """Run the service: ingest at /api/v1, OpenAPI at /docs, Prometheus at /metrics.

    On an empty database the schema is created through the migrations; on a database whose schema
    is behind this version it refuses to start and names `sapo-monitor db upgrade`.
    """
    require("fastapi", "service")
    import uvicorn

    from sapo_monitor.service.settings import Settings
    from sapo_monitor.service.storage.db import make_engine
    from sapo_monitor.service.storage.migrate import SchemaError, ensure_schema

    try:
        settings = Settings(db=db, host=host, port=port, workers=workers, auth=auth)  # type: ignore[arg-type]
        settings.check_safe()
    except ValueError as exc:
        typer.secho(f"refusing to start: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    engine = make_engine(settings.db, pooled=False)
    try:
        ensure_schema(engine)
        if settings.auth_enabled:
            from sapo_monitor.service.storage.db import Database
            from sapo_monitor.service.storage.tokens import count_tokens

            database = Database(settings.db)
            with database.read() as session:
                has_tokens = count_tokens(session) > 0
            database.dispose()
            if not has_tokens:
                typer.secho(
                    "refusing to start: auth is on but no API token exists; create one with "
                    "`sapo-monitor token create --project P --role admin --db URL`",
                    fg=typer.colors.RED, err=True,
                )
                raise typer.Exit(code=2)
    except SchemaError as exc:
        typer.secho(f"refusing to start: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    finally:
        engine.dispose()
    # Workers build their app from the environment (uvicorn's factory mode), so pass settings there.
    os.environ.update({"SAPO_MONITOR_DB": settings.db, "SAPO_MONITOR_HOST": host, "SAPO_MONITOR_PORT": str(port),
                       "SAPO_MONITOR_AUTH": auth})
    typer.echo(f"sapo-monitor service on http://{host}:{port} (docs at /docs), database {_safe_url(settings.db)}")
    uvicorn.run("sapo_monitor.service.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=False)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
