"""``sapo-monitor demo``: the per-run summary, the plot, and a short real run end to end."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

from sapo_monitor.demo.outcome import PLOTTED_METRICS, AlertEvent, build_outcome
from sapo_monitor.demo.plot import plot_comparison

ROOT = Path(__file__).resolve().parents[2]


def _series(n: int, f) -> tuple[list[int], list[float]]:
    return list(range(n)), [f(i) for i in range(n)]


def test_outcome_first_warning_collapse_and_final_reward() -> None:
    series = {
        "reward.mean": _series(100, lambda i: 1.0 if i < 90 else 0.0),
        "gate.saturated_frac": _series(100, lambda i: 0.5 if i % 2 else math.nan),
        "log_ratio.std": _series(100, lambda i: math.inf if i == 50 else i / 100),
    }
    alerts = [
        AlertEvent("nonfinite", "critical", 50),
        AlertEvent("gate_saturation", "warning", 40),
        AlertEvent("reward_collapse", "critical", 95),
        AlertEvent("clip_burst", "warning", 12),
    ]
    out = build_outcome("r1", "grpo", series, alerts, webhooks=3)
    assert out.first_warning == AlertEvent("clip_burst", "warning", 12)
    assert out.collapse == AlertEvent("nonfinite", "critical", 50)
    assert out.final_reward == 0.0  # the last 10% of steps
    assert out.mean_gate_saturation == 0.5  # NaN steps ignored
    assert out.max_log_ratio_std == 0.99  # the infinite step is not a maximum to report
    assert out.steps == 100 and out.webhooks == 3
    assert [a.step for a in out.alerts] == [12, 40, 50, 95]
    calm = build_outcome("r2", "sapo", series, [])
    assert calm.first_warning is None and calm.collapse is None


def test_plot_draws_one_line_per_run(tmp_path: Path) -> None:
    import matplotlib.image

    runs = [
        build_outcome(
            f"run-{k}",
            algo,
            {m: _series(80, lambda i, k=k: math.sin(i / 10 + k) + k) for m in PLOTTED_METRICS},
            [AlertEvent("x", "critical", 30 + 10 * k)] if k else [],
        )
        for k, algo in enumerate(("sapo", "grpo", "gspo", "pg"))
    ]
    path = plot_comparison(runs, tmp_path / "cmp.png", title="test")
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 800
    # Not a blank canvas: many distinct colours (four run colours, axes, text).
    colours = {tuple(px) for px in image[::7, ::7, :3].reshape(-1, 3).round(2).tolist()}
    assert len(colours) > 20


def test_demo_runs_end_to_end_without_waiting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    cmd = [
        sys.executable,
        "-m",
        "sapo_monitor",
        "demo",
        "--steps",
        "16",
        "--port",
        "0",
        "--no-wait",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "Run comparison" in text and "collapse" in text
    for label in ("SAPO", "GRPO", "GSPO", "PG (no clip)"):
        assert label in text, label
    # The table rows: one per run, with its step count.
    # One table row per run; the trainer finishes its last rollout, so at least the 8 steps asked for.
    rows = re.findall(r"^│ (?:SAPO|GRPO|GSPO|PG \(no clip\)) +│ +(\d+) │", text, re.M)
    assert len(rows) == 4 and all(int(n) >= 8 for n in rows), text[-3000:]
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 20_000
    for url_part in ("/docs", "/metrics", "/api/v1/compare?run="):
        assert url_part in text


def test_demo_output_is_wide_enough_for_its_table_when_piped(monkeypatch) -> None:
    from sapo_monitor.demo.console import wide_console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = wide_console()  # pytest captures stdout: not a terminal, like a pipe or a CI log
    assert not console.is_terminal and console.width == 132
    monkeypatch.setenv("COLUMNS", "100")
    assert wide_console().width == 100  # an explicit width wins
