"""dashboards/prometheus-rules.yml is valid and its promtool unit tests pass (Debian's promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"


def _promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail("promtool is missing: run `make prometheus` (apt-get install prometheus)")
    return path


def test_check_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", "prometheus-rules.yml"], cwd=DASHBOARDS, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rule_unit_tests() -> None:
    out = subprocess.run(
        [_promtool(), "test", "rules", "prometheus-rules.test.yml"], cwd=DASHBOARDS, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_mirror_builtin_pack() -> None:
    """Every built-in step rule except the service-only ones has a Prometheus counterpart."""
    import yaml
    from sapo_monitor.service.rules import BUILTIN_RULES

    doc = yaml.safe_load((DASHBOARDS / "prometheus-rules.yml").read_text())
    names = {r["alert"] for g in doc["groups"] for r in g["rules"]}
    for rule in BUILTIN_RULES:
        camel = "Sapo" + "".join(p.capitalize() for p in rule.id.split("_"))
        camel = camel.replace("Kl", "KL").replace("Moe", "MoE").replace("Nonfinite", "NonFinite")
        assert camel in names, f"{rule.id} has no Prometheus rule {camel}"
