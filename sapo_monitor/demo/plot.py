"""The demo's comparison figure: one line per run on the panels that tell a collapse apart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .outcome import PLOTTED_METRICS, RunOutcome

__all__ = ["plot_comparison"]

_TITLES = {
    "reward.mean": "reward (mean)",
    "entropy.mean": "entropy (mean)",
    "log_ratio.std": "token log-ratio std",
    "gate.saturated_frac": "SAPO gate saturated fraction",
    "clip.token_frac": "GRPO would-be clipped tokens",
    "sign.neg.ratio_std": "ratio std of negative-advantage tokens",
}


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over finite values (NaN where the window holds none): readable lines, spikes kept in the raw."""
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        finite = [x for x in acc if math.isfinite(x)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def _spans_decades(outcomes: Sequence[RunOutcome], metric: str) -> bool:
    values = [abs(v) for o in outcomes for v in o.series.get(metric, ([], []))[1] if math.isfinite(v) and v]
    return bool(values) and max(values) / max(min(values), 1e-3) > 1000


def plot_comparison(outcomes: Sequence[RunOutcome], path: Path, *, title: str) -> Path:
    """Write a PNG with one panel per metric in :data:`PLOTTED_METRICS`; collapse steps as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(PLOTTED_METRICS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, PLOTTED_METRICS, strict=False):
        for i, run in enumerate(outcomes):
            steps, values = run.series.get(metric, ([], []))
            if not steps:
                continue
            colour = colours[i % len(colours)]
            window = max(1, len(steps) // 60)
            ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.6)
            ax.plot(steps, _smooth(values, window), color=colour, linewidth=1.4, label=run.label)
            if run.collapse is not None:
                ax.axvline(run.collapse.step, color=colour, linestyle="--", linewidth=1.0)
        if _spans_decades(outcomes, metric):
            ax.set_yscale("symlog", linthresh=0.1)  # ratio spikes of 1000x would flatten everything else
            ax.set_ylim(bottom=0)  # spreads and fractions are never negative
        ax.set_title(_TITLES.get(metric, metric), fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    for ax in list(axes.flat)[len(PLOTTED_METRICS) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(f"{title}  (dashed line: the run's first critical alert)", y=0.995, fontsize=11)
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=len(labels) or 1, frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
