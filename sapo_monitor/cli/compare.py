"""``sapo-monitor compare RUN RUN..``: a summary table per metric, and optionally a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sapo_monitor.cli._service_http import SERVER, TOKEN, get_json

__all__ = ["register"]

DEFAULT_METRICS = ["reward.mean", "log_ratio.std", "gate.saturated_frac", "entropy.mean"]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.4g}"


def _plot(doc: dict, metrics: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.6 * len(metrics)), sharex=True, squeeze=False)
    from sapo_monitor.client.wire import decode_value

    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        m = doc["metrics"][metric]
        for run_id, values in m["values"].items():
            pts = [(s, decode_value(v)) for s, v in zip(m["step"], values, strict=True) if v is not None]
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=run_id, linewidth=1.0)
            nan_steps = [s for s, v in zip(m["step"], values, strict=True) if v == "NaN"]
            if nan_steps:
                ax.scatter(nan_steps, [0] * len(nan_steps), marker="x", color="red")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    down = doc["downsampling"]
    if down["method"] != "none":
        fig.suptitle(f"min/max per {down['bucket_steps']} steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(
    runs: list[str] = typer.Argument(..., help="Run ids; the first is the reference for the deltas."),
    metric: list[str] = typer.Option(DEFAULT_METRICS, "--metric", "-m", help="Metric to compare (repeat)."),
    max_points: int = typer.Option(1000, "--max-points", min=3, help="Points per run and metric for the plot."),
    plot: Path = typer.Option(None, "--plot", help="Also write a PNG plot of the metrics to this file."),
    server: str = SERVER,
    token: str = TOKEN,
) -> None:
    """Compare runs: per metric, each run's step range, first/last/best/worst value, mean over the last
    10% of steps and the delta against the first run; alert steps when the service has them."""
    from rich.console import Console
    from rich.table import Table

    from sapo_monitor.cli._plain import plain, safe

    doc = get_json(server, token, "/api/v1/compare", params={"run": runs, "metric": metric, "max_points": max_points})
    console = Console()
    for name in metric:
        table = Table("run", "steps", "first", "last", "best", "worst", "mean last 10%", "delta last",
                      "delta mean", title=plain(name))
        for run in doc["runs"]:
            s = run["summary"][name]
            delta = s.get("delta") or {}
            steps = "-" if s["first_step"] is None else f"{s['first_step']}..{s['last_step']}"
            best = f"{_fmt(s['best'])} @{s['best_step']}" if s["best"] is not None else "-"
            worst = f"{_fmt(s['worst'])} @{s['worst_step']}" if s["worst"] is not None else "-"
            table.add_row(plain(run["run_id"]), steps, _fmt(s["first"]), _fmt(s["last"]), best, worst,
                          _fmt(s["mean_last_10pct"]), _fmt(delta.get("last")), _fmt(delta.get("mean_last_10pct")))
        console.print(table)
    alerts = [(r["run_id"], r.get("first_warning_step"), r.get("first_critical_step")) for r in doc["runs"]]
    if any(w is not None or c is not None for _, w, c in alerts):
        table = Table("run", "first warning step", "first critical (collapse) step", title="alerts")
        for run_id, w, c in alerts:
            table.add_row(plain(run_id), _fmt(w), _fmt(c))
        console.print(table)
    if plot is not None:
        _plot(doc, metric, plot)
        console.print(f"plot written to {safe(plot)}")


def register(root: typer.Typer) -> None:
    root.command("compare")(compare)
