"""``sapo-monitor runs``: list the runs a service stores, or show one with its latest metrics."""

from __future__ import annotations

import time

import typer

from sapo_monitor.cli._plain import plain, safe
from sapo_monitor.cli._service_http import SERVER, TOKEN, get_json

__all__ = ["register"]

app = typer.Typer(help="Runs stored by a sapo-monitor service.", no_args_is_help=True)


def _ago(ts: float) -> str:
    s = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


@app.command("list")
def list_(
    project: str = typer.Option(None, "--project", help="Only runs of this project."),
    algorithm: str = typer.Option(None, "--algorithm", help="Only runs of this algorithm (sapo, grpo, ...)."),
    status: str = typer.Option(None, "--status", help="running, finished or failed."),
    tag: list[str] = typer.Option([], "--tag", help="key or key:value; repeat to require several."),
    limit: int = typer.Option(50, "--limit", min=1, max=500, help="Most runs to show."),
    server: str = SERVER,
    token: str = TOKEN,
) -> None:
    """List runs, most recently seen first."""
    from rich.console import Console
    from rich.table import Table

    params = {k: v for k, v in {"project": project, "algorithm": algorithm, "status": status}.items() if v}
    page = get_json(server, token, "/api/v1/runs", params={**params, "tag": tag, "limit": limit})
    table = Table("run", "project", "algorithm", "status", "steps", "last seen", title=f"{page['total']} runs")
    for r in page["runs"]:
        steps = "" if r["first_step"] is None else f"{r['first_step']}..{r['last_step']}"
        table.add_row(plain(r["run_id"]), plain(r["project"]), plain(r["algorithm"] or ""), plain(r["status"]), steps,
                      _ago(r["last_seen_at"]))
    Console().print(table)


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="Run id."),
    server: str = SERVER,
    token: str = TOKEN,
) -> None:
    """Show a run: its metadata, step range and the latest value of every metric."""
    from rich.console import Console
    from rich.table import Table

    r = get_json(server, token, f"/api/v1/runs/{run_id}")
    console = Console()
    console.print(f"[bold]{safe(r['run_id'])}[/bold]  project={safe(r['project'])}  "
                  f"algorithm={safe(r['algorithm'] or '-')}  status={safe(r['status'])}  "
                  f"steps={r['first_step']}..{r['last_step']}  last seen {_ago(r['last_seen_at'])}")
    if r["tags"]:
        console.print(plain("tags: " + ", ".join(f"{k}={v}" for k, v in r["tags"].items())))
    table = Table("metric", "latest", "at step")
    for name, value in (r["latest"] or {}).items():
        table.add_row(plain(name), plain(value if isinstance(value, str) else f"{value:.6g}"),
                      str(r["latest_step"][name]))
    console.print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="runs")
