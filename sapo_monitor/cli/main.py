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


# Subcommand registration: one line per module (each module owns its commands).
from sapo_monitor.cli import train as _train  # noqa: E402

_train.register(app)
from sapo_monitor.cli import grafana as _grafana  # noqa: E402

_grafana.register(app)
from sapo_monitor.cli import demo as _demo  # noqa: E402

_demo.register(app)
from sapo_monitor.cli import webhooks as _webhooks  # noqa: E402

_webhooks.register(app)
from sapo_monitor.cli import upload as _upload  # noqa: E402

_upload.register(app)
from sapo_monitor.cli import serve as _serve  # noqa: E402

_serve.register(app)
from sapo_monitor.cli import db as _db  # noqa: E402

_db.register(app)
from sapo_monitor.cli import token as _token  # noqa: E402

_token.register(app)
from sapo_monitor.cli import runs as _runs  # noqa: E402

_runs.register(app)
from sapo_monitor.cli import compare as _compare  # noqa: E402

_compare.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
