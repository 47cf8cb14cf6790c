"""``sapo-monitor upload DIR --server URL``: send an offline (or undelivered) spool to the service."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("upload")(upload)


def upload(
    directory: Path = typer.Argument(
        ...,
        help="A spool folder: one run's (it holds run.json and batches/) or a root holding several runs, "
        "e.g. ~/.cache/sapo-monitor/spool.",
        exists=True,
        file_okay=False,
    ),
    server: str = typer.Option(..., "--server", envvar="SAPO_MONITOR_SERVER", help="Service URL, e.g. http://127.0.0.1:8321."),
    token: str | None = typer.Option(
        None, "--token", envvar="SAPO_MONITOR_TOKEN", help="Bearer token with the ingest role for the runs' project."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the batches in the spool after they were sent."),
    include_rejected: bool = typer.Option(
        True,
        "--include-rejected/--skip-rejected",
        help="Also send batches the service once refused (e.g. with a bad token), now that the cause is fixed.",
    ),
) -> None:
    """Send the step records stored in a spool to the service, with a progress bar.

    Safe to repeat: the service keeps one record per (run, step), and sent batches leave the spool.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sapo_monitor.client._spool import find_run_dirs
    from sapo_monitor.client.upload import count_steps, plan_upload, upload_spool

    console = Console(stderr=True)
    if not find_run_dirs(directory):
        console.print(f"[yellow]No run spool found in {escape(str(directory))}[/yellow]")
        raise typer.Exit(code=1)
    plan = plan_upload(directory, include_rejected=include_rejected)
    total = sum(count_steps(spool.read(i)) for spool, ids in plan for i in ids)
    with Progress(TextColumn("[bold]uploading[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("steps"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{len(plan)} run(s)", total=total)
        result = upload_spool(directory, server, token, keep=keep, include_rejected=include_rejected,
                              on_batch=lambda run, steps: progress.advance(task, steps))
    typer.echo(f"Sent {result.steps_sent} step(s) in {result.batches_sent} batch(es) for run(s): "
               f"{', '.join(result.runs)}")
    for error in result.errors:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    if not result.ok:
        raise typer.Exit(code=1)
