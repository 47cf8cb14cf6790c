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


def _number(x: float) -> str:
    return f"{x:g}"


def _expected_fragments(rule) -> list[str]:  # type: ignore[no-untyped-def]
    """What the PromQL of a built-in must contain: its bound, factor or fraction, as the service uses it."""
    p = rule.params

    def gauge(metric: str) -> str:
        return "sapo_" + metric.replace(".", "_")

    if rule.kind == "threshold":
        return [f"{gauge(p['metric'])} {p['op']} {_number(p['value'])}"]
    if rule.kind == "median_spike":
        return [f"{gauge(m)} > {_number(p['factor'])} * quantile_over_time(0.5, {gauge(m)}" for m in p["metrics"][:1]]
    if rule.kind == "tails":
        return [f"sapo_log_ratio_abs_max > {_number(p['abs_max'])}", f"sapo_log_ratio_p99 > {_number(p['tail'])}",
                f"sapo_log_ratio_p01 < -{_number(p['tail'])}"]
    if rule.kind == "sign_spread":
        return [f"> {_number(p['factor'])} * sapo_sign_pos_ratio_std", f"> {_number(p['min_std'])}"]
    if rule.kind == "below_baseline":
        out = [f"{gauge(p['metric'])} < {_number(p['fraction'])} *"]
        if p.get("guard_metric"):
            out.append(f"{gauge(p['guard_metric'])}[5m]")
            out.append(f">= {_number(p['guard_gain'])}")
        if p.get("stall_metric"):
            out.append(f"avg_over_time({gauge(p['stall_metric'])}[3m]) >= {_number(p['stall_value'])}")
        return out
    if rule.kind == "drop_from_best":
        return [f"> {_number(p['drop'])} * clamp_min", f", {_number(p['min_scale'])})"]
    if rule.kind == "silence":
        return [f"> {_number(p['after_s'])}"]
    if rule.kind == "nonfinite":
        return ["sapo_nonfinite_tokens > 0", "sapo_loss != sapo_loss"]
    if rule.kind == "shift":
        # the CUSUM's decision interval at the noise floor (h x min_scale) on log(x + floor); zeros left out
        g = f"({gauge(p['metric'])} > 0)" if p["skip_zero"] else gauge(p["metric"])
        out = [f"ln({g} + {_number(p['floor'])})", f"> {_number(p['h'] * p['min_scale'])}"]
        if p["min_value"] is not None:
            out.append(f"and {gauge(p['metric'])} >= {_number(p['min_value'])}")
        if p["direction"] == "down":
            out[0] = f"- {out[0]}"
        return out
    if rule.kind == "sign_shift":
        return [f"ln(sapo_sign_neg_ratio_std + {_number(p['floor'])})", f"> {_number(p['h'] * p['min_scale'])}",
                f"sapo_sign_neg_ratio_std > {_number(p['min_std'])}"]
    if rule.kind == "trend":
        return [f"ln({gauge(p['metric'])} + {_number(p['floor'])})", f"[{p['window']}m:1m]",
                f"* 60 * {p['window'] - 1} > {_number(p['rise'])}"]
    if rule.kind == "reward_hack":
        return [f"< {_number(p['length_fraction'])} * max_over_time(avg_over_time({gauge(p['length_metric'])}",
                f"+ {_number(p['reward_gain'])}",
                f"< {_number(p['entropy_fraction'])} * max_over_time(avg_over_time({gauge(p['entropy_metric'])}"]
    raise AssertionError(f"no Prometheus check for kind {rule.kind!r}: add one here")  # new kinds cannot drift


def test_rules_agree_with_builtin_pack_on_severity_duration_and_bounds() -> None:
    """Checked, not hand-synced: each counterpart has the built-in's severity, ``for`` = ``for_steps``
    minutes (none for 1) and the built-in's bound, factor or fraction in its expression."""
    import yaml
    from sapo_monitor.service.rules import BUILTIN_RULES

    doc = yaml.safe_load((DASHBOARDS / "prometheus-rules.yml").read_text())
    by_name = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    for rule in BUILTIN_RULES:
        camel = "Sapo" + "".join(p.capitalize() for p in rule.id.split("_"))
        camel = camel.replace("Kl", "KL").replace("Moe", "MoE").replace("Nonfinite", "NonFinite")
        prom = by_name[camel]
        assert prom["labels"]["severity"] == rule.severity, rule.id
        expected_for = None if rule.for_steps == 1 else f"{rule.for_steps}m"
        assert prom.get("for") == expected_for, (rule.id, prom.get("for"), expected_for)
        expr = " ".join(prom["expr"].split())
        for fragment in _expected_fragments(rule):
            assert fragment in expr, f"{rule.id}: {fragment!r} not in {expr!r}"
