"""``sapo-monitor webhooks``: manage alert webhooks on a running service and send test events."""

from __future__ import annotations

import time
from typing import Any

import typer

from sapo_monitor.cli._plain import plain

__all__ = ["register"]

app = typer.Typer(
    help="Manage the webhooks that receive incident notifications (opened, escalated, resolved, repeated; the member alerts listed) and send test events.",
    no_args_is_help=True,
)

_SERVER = typer.Option(
    "http://127.0.0.1:8321", "--server", envvar="SAPO_MONITOR_SERVER", help="Base URL of the sapo-monitor service."
)
_TOKEN = typer.Option(
    None, "--token", envvar="SAPO_MONITOR_TOKEN", help="Admin bearer token (not needed when auth is off)."
)


def _call(server: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.request(method, server.rstrip("/") + path, headers=headers, timeout=15.0, **kw)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach {server}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text
        typer.secho(plain(f"{method} {path}: HTTP {resp.status_code}: {detail}").plain, fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    return resp.json() if resp.content else None


@app.command("list")
def list_command(server: str = _SERVER, token: str | None = _TOKEN) -> None:
    """List webhooks (secrets are never shown)."""
    from rich.console import Console
    from rich.table import Table

    hooks = _call(server, token, "GET", "/api/v1/webhooks")
    table = Table("id", "url", "format", "min severity", "scope", "secret")
    for h in hooks:
        if h.get("run_id"):
            scope = f"run {h['run_id']}"
        else:
            scope = f"project {h['project']}" if h.get("project") else "all runs"
        table.add_row(*map(plain, (h["id"], h["url"], h["format"], h["min_severity"], scope,
                                   "yes" if h["has_secret"] else "no")))
    Console().print(table)


@app.command("add")
def add_command(
    url: str = typer.Argument(..., help="Where to POST incident notifications (http or https)."),
    format: str = typer.Option("json", "--format", help="Body format: json, alertmanager or slack."),
    secret: str | None = typer.Option(
        None, "--secret", envvar="SAPO_MONITOR_WEBHOOK_SECRET", help="HMAC-SHA256 signing secret (write-only)."
    ),
    project: str | None = typer.Option(None, "--project", help="Only incidents of runs in this project."),
    run: str | None = typer.Option(None, "--run", help="Only incidents of this run id."),
    min_severity: str = typer.Option("warning", "--min-severity", help="Lowest severity sent: warning or critical."),
    description: str | None = typer.Option(None, "--description", help="A note for humans."),
    server: str = _SERVER,
    token: str | None = _TOKEN,
) -> None:
    """Subscribe a URL to incident notifications (one per incident change, on the group_wait / group_interval / repeat_interval timers)."""
    doc = {"url": url, "format": format, "secret": secret, "project": project, "run_id": run,
           "min_severity": min_severity, "description": description}
    hook = _call(server, token, "POST", "/api/v1/webhooks", json={k: v for k, v in doc.items() if v is not None})
    typer.echo(plain(f"webhook {hook['id']} -> {hook['url']} ({hook['format']}, from {hook['min_severity']})").plain)


@app.command("delete")
def delete_command(
    webhook_id: int = typer.Argument(..., help="Webhook id."), server: str = _SERVER, token: str | None = _TOKEN
) -> None:
    """Delete a webhook with its pending deliveries and delivery records."""
    _call(server, token, "DELETE", f"/api/v1/webhooks/{webhook_id}")
    typer.echo(f"webhook {webhook_id} deleted")


@app.command("test")
def test_command(
    webhook_id: int = typer.Argument(..., help="Webhook id."),
    wait: float = typer.Option(15.0, "--wait", help="Seconds to wait for the delivery outcome (0: do not wait)."),
    server: str = _SERVER,
    token: str | None = _TOKEN,
) -> None:
    """Send a test event through the outbox (signed like a real alert) and report how delivery went."""
    sent = _call(server, token, "POST", f"/api/v1/webhooks/{webhook_id}/test")
    event_id = sent["event_id"]
    typer.echo(f"test event {event_id} queued for webhook {webhook_id}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        attempts = [d for d in _call(server, token, "GET", f"/api/v1/webhooks/{webhook_id}/deliveries?limit=1000")
                    if d["event_id"] == event_id]
        if attempts:
            last = attempts[-1]
            status = last["status_code"] if last["status_code"] is not None else "-"
            if last["outcome"] == "delivered":
                typer.secho(f"delivered (HTTP {status}, {last['duration_ms']:.0f} ms)", fg=typer.colors.GREEN)
                return
            typer.secho(plain(f"attempt {last['attempt']} failed: {last['error']} (retrying with backoff)").plain,
                        fg=typer.colors.YELLOW)
            if last["outcome"] == "failed":
                raise typer.Exit(code=1)
        time.sleep(0.5)
    if wait:
        typer.secho("no successful delivery yet; see `sapo-monitor webhooks deliveries`", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


@app.command("deliveries")
def deliveries_command(
    webhook_id: int = typer.Argument(..., help="Webhook id."),
    limit: int = typer.Option(50, "--limit", help="Most attempts to show."),
    server: str = _SERVER,
    token: str | None = _TOKEN,
) -> None:
    """Every delivery attempt of a webhook, oldest first."""
    from rich.console import Console
    from rich.table import Table

    rows = _call(server, token, "GET", f"/api/v1/webhooks/{webhook_id}/deliveries?limit={limit}")
    table = Table("at (UTC)", "event", "attempt", "outcome", "HTTP", "ms", "error")
    for d in rows:
        table.add_row(*map(plain, (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["at"])), d["event_id"][:12],
                                   d["attempt"], d["outcome"], d["status_code"] or "-", f"{d['duration_ms']:.0f}",
                                   (d["error"] or "")[:60])))
    Console().print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="webhooks")
