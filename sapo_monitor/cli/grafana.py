"""``sapo-monitor grafana push``: upload the shipped dashboards to an existing Grafana."""

from __future__ import annotations

import typer

from sapo_monitor.cli.extras import require

grafana_app = typer.Typer(
    name="grafana",
    help="Grafana: upload the sapo-monitor dashboards to a running Grafana.",
    no_args_is_help=True,
)

_COLOURS = {"created": typer.colors.GREEN, "updated": typer.colors.YELLOW, "unchanged": None}


@grafana_app.command("push")
def push_command(
    url: str = typer.Option(
        ...,
        "--url",
        envvar="SAPO_MONITOR_GRAFANA_URL",
        help="Grafana's base URL, e.g. http://localhost:3000 (a path prefix is kept).",
    ),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="SAPO_MONITOR_GRAFANA_TOKEN",
        help="A Grafana service-account token with Editor rights (sent as a Bearer token).",
    ),
    datasource: str | None = typer.Option(
        None,
        "--datasource",
        envvar="SAPO_MONITOR_GRAFANA_DATASOURCE",
        help="Also create or update a Prometheus datasource (uid sapo-prometheus) with this URL, as "
        "Grafana's server reaches it (e.g. http://prometheus:9090), and open the dashboards on it.",
    ),
    folder: str = typer.Option(
        "sapo-monitor",
        "--folder",
        envvar="SAPO_MONITOR_GRAFANA_FOLDER",
        help="Folder (uid and title) the dashboards go into; created when missing.",
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for each Grafana request."),
) -> None:
    """Upload the dashboards idempotently and report what changed.

    Each dashboard is matched by uid; one that already has the same content is left alone
    ([bold]unchanged[/bold]), one edited in Grafana is put back ([bold]updated[/bold]). Running it
    twice changes nothing the second time.
    """
    require("grafana_client", "grafana")
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from sapo_monitor.dashboards import load_dashboards
    from sapo_monitor.dashboards.grafana_push import push

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    try:
        changes = push(
            api, load_dashboards(), folder_uid=folder, folder_title=folder, datasource_url=datasource
        )
    except GrafanaException as exc:
        hint = " (check --token: it needs Editor rights)" if exc.status_code in (401, 403) else ""
        typer.secho(f"Grafana at {url} answered {exc.status_code}: {exc.message}{hint}", fg="red", err=True)
        raise typer.Exit(code=1) from exc
    except OSError as exc:  # connection refused, DNS, TLS: niquests raises OSError subclasses
        typer.secho(f"cannot reach Grafana at {url}: {exc}", fg="red", err=True)
        raise typer.Exit(code=1) from exc
    for change in changes:
        typer.secho(
            f"{change.action:<9} {change.kind:<10} {change.uid:<22} {change.title}",
            fg=_COLOURS[change.action],
        )
    counts = {a: sum(c.action == a for c in changes) for a in ("created", "updated", "unchanged")}
    typer.echo(", ".join(f"{n} {a}" for a, n in counts.items()))


def register(app: typer.Typer) -> None:
    """Add the ``grafana`` command group to the root app."""
    app.add_typer(grafana_app)
