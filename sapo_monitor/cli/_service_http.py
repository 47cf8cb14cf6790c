"""Shared HTTP plumbing for the CLI commands that query a running service (runs, compare)."""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["SERVER", "TOKEN", "get_json"]

SERVER = typer.Option(
    "http://127.0.0.1:8321", "--server", envvar="SAPO_MONITOR_SERVER", help="Base URL of the sapo-monitor service."
)
TOKEN = typer.Option(
    None, "--token", envvar="SAPO_MONITOR_TOKEN", help="Bearer token with the read role (not needed when auth is off)."
)


def get_json(server: str, token: str | None, path: str, params: Any = None) -> Any:
    """GET ``path`` and return the JSON body; exits with the service's error message on failure."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.get(server.rstrip("/") + path, params=params, headers=headers, timeout=60.0)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach {server}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    if resp.status_code >= 400:
        try:
            detail = "; ".join(d.get("msg", "") for d in resp.json().get("detail", []))
        except (ValueError, AttributeError):
            detail = resp.text
        typer.secho(f"GET {path}: HTTP {resp.status_code}: {detail}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    return resp.json()
