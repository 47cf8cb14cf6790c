"""``sapo-monitor alerts``: a service's alerts across runs as a table (the UI's alerts page, in a terminal).

Run names, rules and values are user data: they go into the table as plain text (``rich.text.Text``),
so a ``[bold]`` or ``[link=...]`` in them is shown, never interpreted as Rich markup.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from sapo_monitor.cli._service_http import SERVER, TOKEN, get_json

__all__ = ["alerts_table", "register"]


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" if not isinstance(v, str)
                     else f"{k}={v}" for k, v in values.items())


def alerts_table(alerts: list[dict[str, Any]], *, title: str) -> Any:
    """A Rich table of alert documents (``GET /api/v1/alerts``), every cell plain text."""
    from rich.table import Table

    from sapo_monitor.cli._plain import plain

    table = Table("state", "severity", "rule", "run", "project", "from step", "fired", "resolved", "values",
                  title=title)
    style = {"critical": "bold red", "warning": "yellow"}
    for a in alerts:
        cells = [a["state"], a["severity"], a["rule"], a["run_id"], a["project"], a["started_step"],
                 a["fired_step"], a["resolved_step"], _values(a.get("values") or {})]
        row = [plain(c) for c in cells]
        row[1].stylize(style.get(a["severity"], ""))
        table.add_row(*row)
    return table


def alerts(
    project: str = typer.Option(None, "--project", help="Only alerts of this project."),
    run: str = typer.Option(None, "--run", help="Only alerts of this run id."),
    state: str = typer.Option(None, "--state", help="firing, pending or resolved (default: all)."),
    limit: int = typer.Option(200, "--limit", min=1, max=1000, help="Most alerts to show, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON instead of a table."),
    server: str = SERVER,
    token: str = TOKEN,
) -> None:
    """List alerts across runs, newest first: state, severity, rule, run, the steps where the alert
    went pending, fired and resolved, and the metric values at its latest transition."""
    if state is not None and state not in ("firing", "pending", "resolved"):
        raise typer.BadParameter("must be firing, pending or resolved", param_hint="--state")
    params = {k: v for k, v in {"project": project, "run": run, "state": state}.items() if v}
    docs = get_json(server, token, "/api/v1/alerts", params={**params, "limit": limit})
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    from rich.console import Console

    what = " ".join(f"{k}={v}" for k, v in params.items())
    Console(highlight=False).print(alerts_table(docs, title=f"{len(docs)} alerts" + (f" ({what})" if what else "")))


def register(root: typer.Typer) -> None:
    root.command("alerts")(alerts)
