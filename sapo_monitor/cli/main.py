"""Entry point of the ``sapo-monitor`` command."""

from __future__ import annotations

import typer

from sapo_monitor import __version__

app = typer.Typer(
    name="sapo-monitor",
    help="Stability diagnostics for SAPO / GRPO / GSPO reinforcement-learning runs.\n\n"
    "Train with the bundled trainer, stream its statistics to the service, compare runs, "
    "and get alerted before a run collapses. Every option can also be set with an environment "
    "variable named SAPO_MONITOR_<OPTION>.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sapo-monitor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Stability diagnostics for SAPO / GRPO / GSPO reinforcement-learning runs."""


# Subcommand registration: each module owns its commands; this order is the order of `--help`.
from sapo_monitor.cli import (  # noqa: E402
    alerts,
    compare,
    db,
    demo,
    grafana,
    rules,
    runs,
    serve,
    token,
    train,
    upload,
    webhooks,
)

for _module in (train, demo, serve, db, token, runs, compare, alerts, rules, upload, webhooks, grafana):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
