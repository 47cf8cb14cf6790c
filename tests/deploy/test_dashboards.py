"""Static checks of the shipped Grafana dashboards and Grafana provisioning files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sapo_monitor.client.wire import CATALOGUE
from sapo_monitor.dashboards import DASHBOARD_FILES, load_dashboards

from tests.deploy.dashboard_queries import (
    EXPORTED,
    PROMETHEUS_OWN,
    exported_gauge,
    iter_panels,
    metric_names,
    queries,
    variable_queries,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = load_dashboards()
NAMES = sorted(DASHBOARD_FILES)


def test_every_json_file_in_the_folder_is_shipped() -> None:
    on_disk = {p.name for p in (ROOT / "dashboards").glob("*.json")}
    assert on_disk == set(DASHBOARD_FILES)
    for name in on_disk:
        json.loads((ROOT / "dashboards" / name).read_text())  # valid JSON


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_shape(name: str) -> None:
    dash = DASHBOARDS[name]
    assert dash["uid"].startswith("sapo-") and len(dash["uid"]) <= 40
    assert 39 <= dash["schemaVersion"] <= 41
    assert dash["title"].startswith("sapo-monitor / ")
    ids = [p["id"] for p in iter_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    assert all(isinstance(i, int) for i in ids)


@pytest.mark.parametrize("name", NAMES)
def test_panels_do_not_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARDS[name]["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{name}: panel {panel['title']!r} overlaps another"
        taken |= cells


@pytest.mark.parametrize("name", NAMES)
def test_datasource_comes_from_a_variable(name: str) -> None:
    dash = DASHBOARDS[name]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    via_variable = {"type": "prometheus", "uid": "${datasource}"}
    for panel in iter_panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == via_variable, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == via_variable, panel["title"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == via_variable
    for ann in dash["annotations"]["list"]:
        if "expr" in ann:
            assert ann["datasource"] == via_variable


@pytest.mark.parametrize("name", ["run-stability.json", "run-comparison.json"])
def test_run_dashboards_have_project_and_run_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert variables["project"]["query"]["query"].startswith("label_values(")
    assert "$project" in variables["run"]["query"]["query"]
    # The comparison overlays several runs; the stability dashboard shows one.
    assert variables["run"]["multi"] is (name == "run-comparison.json")
    for q in queries(name, DASHBOARDS[name]):
        if "sapo_alert_firing" in q.expr or any(m in q.expr for m in ("sapo_run", "sapo_log", "sapo_gate")):
            assert 'run=~"$run"' in q.expr and 'project=~"$project"' in q.expr, q


@pytest.mark.parametrize("name", NAMES)
def test_every_query_uses_only_exported_metrics(name: str) -> None:
    qs = queries(name, DASHBOARDS[name]) + variable_queries(name, DASHBOARDS[name])
    assert qs
    for q in qs:
        names = metric_names(q.expr)
        assert names, f"{q.where}: no metric in {q.expr}"
        unknown = names - EXPORTED - PROMETHEUS_OWN
        assert not unknown, f"{name} / {q.where}: {sorted(unknown)} is not exported by the service"


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(sapo_http_request_duration_seconds_bucket{code=~"5.."}[$__rate_interval])))'
    assert metric_names(expr) == {"sapo_http_request_duration_seconds_bucket"}
    assert metric_names('count(sapo_alert_firing{run=~"$run"} == 1) or vector(0)') == {"sapo_alert_firing"}
    assert metric_names("time() - sapo_run_last_seen_timestamp_seconds") == {
        "sapo_run_last_seen_timestamp_seconds"
    }


def test_export_names_follow_the_contract() -> None:
    assert exported_gauge("tokens.count") == "sapo_tokens"
    assert exported_gauge("sequences.count") == "sapo_sequences"
    assert exported_gauge("nonfinite.token_count") == "sapo_nonfinite_tokens"
    assert exported_gauge("sign.neg.ratio_std") == "sapo_sign_neg_ratio_std"


def test_stability_dashboard_shows_every_catalogue_metric() -> None:
    used = set().union(*(metric_names(q.expr) for q in queries("s", DASHBOARDS["run-stability.json"])))
    missing = sorted(n for n in CATALOGUE if exported_gauge(n) not in used)
    assert not missing, f"run stability dashboard has no panel for {missing}"
    assert "sapo_log_ratio_bucket" in used
    heatmaps = [p for p in iter_panels(DASHBOARDS["run-stability.json"]["panels"]) if p["type"] == "heatmap"]
    assert heatmaps and heatmaps[0]["targets"][0]["format"] == "heatmap"


@pytest.mark.parametrize("name", ["run-stability.json", "run-comparison.json"])
def test_firing_alerts_are_annotations(name: str) -> None:
    anns = [a for a in DASHBOARDS[name]["annotations"]["list"] if "expr" in a]
    assert anns and all("sapo_alert_firing" in a["expr"] and a["enable"] for a in anns)
    assert {"critical", "warning"} <= {s for a in anns for s in ("critical", "warning") if s in a["expr"]}


def test_service_health_covers_ingest_latency_errors_webhooks() -> None:
    used = set().union(*(metric_names(q.expr) for q in queries("h", DASHBOARDS["service-health.json"])))
    for needed in (
        "sapo_ingest_requests_total",
        "sapo_ingest_records_total",
        "sapo_http_request_duration_seconds_bucket",
        "sapo_http_requests_total",
        "sapo_db_errors_total",
        "sapo_webhook_deliveries_total",
        "sapo_webhook_outbox_pending",
    ):
        assert needed in used


def test_grafana_provisioning_files() -> None:
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/sapo-monitor.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/etc/grafana/dashboards")
