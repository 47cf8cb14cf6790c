"""``sapo-monitor demo``: everything on one machine, nothing else running, a few minutes on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import typer

from sapo_monitor.cli.extras import require


def demo_command(
    steps: int = typer.Option(
        300,
        "--steps",
        min=8,
        envvar="SAPO_MONITOR_DEMO_STEPS",
        help="Optimizer steps per run (fewer: faster).",
    ),
    port: int = typer.Option(
        8321, "--port", envvar="SAPO_MONITOR_DEMO_PORT", help="Port for the service (0: any free port)."
    ),
    out: Path = typer.Option(
        Path("sapo-demo"), "--out", help="Folder for the comparison PNG (created when missing)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="Database URL for the service (default: a fresh SQLite file, removed at exit)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of every run."),
    algorithms: str = typer.Option(
        "sapo,grpo,gspo,pg", "--algorithms", help="Comma-separated algorithms to run, in this order."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Keep the service running until Ctrl-C (--no-wait: stop and exit)."
    ),
) -> None:
    """Run SAPO, GRPO, GSPO and unclipped PG under the stress preset with the monitor attached.

    Starts the service on SQLite in the background, subscribes a local webhook receiver to the
    alerts, trains the four runs of the bundled trainer, then prints the comparison table (first
    warning and collapse step per run, final reward, gate saturation), writes a PNG plot and
    leaves the service running with the URLs to open.
    """
    require("torch", "trainer")
    require("fastapi", "service")
    require("matplotlib", "service")
    from sapo_monitor.demo.console import run_demo
    from sapo_monitor.demo.session import DemoConfig

    config = DemoConfig(
        algorithms=tuple(a.strip() for a in algorithms.split(",") if a.strip()),
        steps=steps,
        seed=seed,
        port=port,
        db=db,
        out_dir=out,
    )
    raise typer.Exit(code=run_demo(config, wait=wait))


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the root app."""
    app.command("demo")(demo_command)
