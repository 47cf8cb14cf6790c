"""The demo in the terminal: progress bars while the runs train, the comparison table, the URLs."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sapo_monitor.cli._plain import plain, safe

from .outcome import RunOutcome
from .plot import plot_comparison
from .session import (
    DemoConfig,
    DemoSession,
    fetch_outcome,
    open_session,
    run_trainer,
    subscribe_webhook,
    wait_for_deliveries,
)

__all__ = ["outcome_table", "run_demo", "train_all", "wide_console"]


def fmt(value: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def train_all(session: DemoSession, console: Console) -> list[RunOutcome]:
    """Train every configured algorithm in turn, one progress bar each; return their outcomes."""
    cfg = session.config
    columns = (
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            a: progress.add_task(f"{a} ({cfg.preset})", total=cfg.steps, note="", start=False)
            for a in cfg.algorithms
        }
        for algorithm in cfg.algorithms:
            task = tasks[algorithm]
            progress.start_task(task)  # the clock of each bar runs from its own start

            def advance(_run: str, done: int, total: int, task: int = task) -> None:
                progress.update(task, completed=done, total=max(done, total))

            summary = run_trainer(session, algorithm, advance)
            progress.update(
                task,
                total=summary.steps,  # the trainer finishes its last rollout: may be a few more than asked
                completed=summary.steps,
                note=f"reward {summary.reward_first:.3f} -> {summary.reward_last:.3f}",
            )
    console.print(f"webhook deliveries received: {wait_for_deliveries(session)}")
    return [fetch_outcome(session, a) for a in cfg.algorithms]


def outcome_table(outcomes: Sequence[RunOutcome], *, elapsed: float) -> Table:
    prefix = outcomes[0].run_id.rsplit("-", 1)[0] if outcomes else ""
    table = Table(
        title=f"Run comparison ({elapsed:.0f} s of training)",
        title_justify="left",
        caption=f"run ids: {prefix}-<algorithm>; steps of the first warning and the first critical alert",
        caption_justify="left",
    )
    for column, justify in (
        ("run", "left"),
        ("steps", "right"),
        ("first warning", "left"),
        ("collapse (first critical)", "left"),
        ("final reward", "right"),
        ("mean gate saturation", "right"),
        ("max log-ratio std", "right"),
        ("alerts", "right"),
        ("webhooks", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for o in outcomes:
        warn = f"step {o.first_warning.step} ({o.first_warning.rule})" if o.first_warning else "-"
        crit = f"step {o.collapse.step} ({o.collapse.rule})" if o.collapse else "none"
        table.add_row(  # labels and rule names come from the service: plain text, styled as a whole
            plain(o.label),
            str(o.steps),
            plain(warn),
            Text(plain(crit).plain, style="red" if o.collapse else "green"),
            fmt(o.final_reward),
            fmt(o.mean_gate_saturation),
            fmt(o.max_log_ratio_std, 2),
            str(len(o.alerts)),
            str(o.webhooks),
        )
    return table


def print_urls(session: DemoSession, console: Console) -> None:
    for name, url in session.urls().items():
        console.print(f"  {name:<20} {url}", soft_wrap=True)  # URLs stay on one line, clickable


def wide_console() -> Console:
    """A console; piped or logged (no terminal, no COLUMNS) it is 132 columns wide rather than Rich's 80,
    room for the comparison table."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 132
    return console


def run_demo(config: DemoConfig, *, wait: bool, console: Console | None = None) -> int:
    """The whole demo; returns the process exit code."""
    console = console or wide_console()
    with open_session(config, log=console.print) as session:
        console.print(f"web UI (the runs appear live): {session.ui_url()}", soft_wrap=True)
        console.print(f"service up at [bold]{safe(session.service.url)}[/bold] (log: {safe(session.service.log_path)})")
        subscribe_webhook(session)
        console.print(f"local webhook receiver subscribed: {session.receiver.url}")
        started = time.monotonic()
        outcomes = train_all(session, console)
        console.print(outcome_table(outcomes, elapsed=time.monotonic() - started))
        png = plot_comparison(
            outcomes,
            config.out_dir / f"{session.run_prefix}.png",
            title=f"sapo-monitor demo: {config.preset} preset, {config.steps} steps per run",
        )
        console.print(f"comparison plot: [bold]{safe(png)}[/bold]")
        print_urls(session, console)
        if not wait:
            return 0
        console.print("the service keeps running; press [bold]Ctrl-C[/bold] to stop it")
        try:
            while session.service.running():
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping the service")
            return 0
        console.print(f"[red]the service stopped on its own:[/red]\n{safe(session.service.log_tail())}")
        return 1
