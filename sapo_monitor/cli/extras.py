"""Clear errors when a subcommand needs an optional extra that is not installed."""

from __future__ import annotations

import importlib

import typer


def require(module: str, extra: str) -> None:
    """Exit with a message naming the pip extra when ``module`` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        typer.secho(
            f"This command needs the [{extra}] extra ({exc.name or module} is missing): "
            f"pip install 'sapo-monitor[{extra}]'",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=2) from exc
