"""``sapo-monitor train`` as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "sapo-monitor"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "TERM": "dumb"}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300, env=env)


def test_train_help_explains_every_option() -> None:
    out = _run("train", "--help")
    assert out.returncode == 0, out.stderr
    for option in (
        "--algo",
        "--preset",
        "--steps",
        "--seed",
        "--moe",
        "--dense",
        "--lr",
        "--epochs",
        "--threads",
        "--server",
        "--project",
        "--run",
        "--token",
        "--spool",
        "sapo",
        "grpo",
        "gspo",
        "pg",
        "stress",
        "SAPO_MONITOR_SERVER",
        "SAPO_MONITOR_SPOOL_DIR",
    ):
        assert option in out.stdout, option


def test_short_training_run_prints_its_summary() -> None:
    out = _run("train", "--steps", "20", "--seed", "1")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "run sapo-default-s1" in out.stdout
    assert "20 / 5" in out.stdout  # 20 optimizer steps over 5 rollouts of 4 mini-batches
    assert "reward gain" in out.stdout and "non-finite steps" in out.stdout


def test_bad_option_is_refused_with_a_reason() -> None:
    out = _run("train", "--algo", "ppo", "--steps", "1")
    assert out.returncode == 2
    assert "ppo" in out.stderr and "sapo" in out.stderr
