"""``/metrics``: names, labels, HELP, the log-ratio histogram, and idle runs dropping out."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sapo_monitor.client.wire import CATALOGUE, LOG_RATIO_HIST_BINS
from sapo_monitor.service.metrics import prometheus_name

from .conftest import live_service
from .util import post_steps


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_from_stored_state(db_url: str) -> None:
    with live_service(db_url, active_window=3600) as base, httpx.Client(base_url=base) as c:
        c.put("/api/v1/runs/m1", json={"project": "p", "algorithm": "sapo"})
        hist = list(range(LOG_RATIO_HIST_BINS))
        metrics = {name: 0.5 for name in CATALOGUE} | {"tokens.count": 640.0, "nonfinite.token_count": 2.0,
                                                        "loss": "NaN", "custom.y": 1.0}
        post_steps(c, "m1", [{"step": 4, "metrics": {"ratio.mean": 9.0}},
                             {"step": 5, "metrics": metrics, "histograms": {"log_ratio": hist}}])
        text = c.get("/metrics").text
    fams = _families(text)
    labels = {"project": "p", "run": "m1", "algorithm": "sapo"}
    for name in CATALOGUE:
        fam = fams[prometheus_name(name)]
        assert fam.type == "gauge" and fam.documentation == CATALOGUE[name]
    assert prometheus_name("tokens.count") == "sapo_tokens"
    assert prometheus_name("nonfinite.token_count") == "sapo_nonfinite_tokens"
    assert prometheus_name("sign.pos.ratio_mean") == "sapo_sign_pos_ratio_mean"
    (tokens,) = fams["sapo_tokens"].samples
    assert tokens.labels == labels and tokens.value == 640.0
    assert fams["sapo_ratio_mean"].samples[0].value == 0.5  # the latest step's value
    assert fams["sapo_loss"].samples[0].value != fams["sapo_loss"].samples[0].value  # NaN
    assert "sapo_custom_y" not in fams  # only catalogue metrics: bounded cardinality
    buckets = [s for s in fams["sapo_log_ratio"].samples if s.name == "sapo_log_ratio_bucket"]
    les = [s.labels["le"] for s in buckets]
    assert les[:3] == ["-2.0", "-1.9", "-1.8"] and les[-2:] == ["2.0", "+Inf"] and len(les) == 42
    assert [s.value for s in buckets] == [sum(hist[: i + 1]) for i in range(42)]
    assert fams["sapo_run_last_step"].samples[0].value == 5
    assert fams["sapo_runs_active"].samples[0].value == 1
    assert fams["sapo_run_last_seen_timestamp_seconds"].samples[0].value > time.time() - 60
    codes = {s.labels["code"]: s.value for s in fams["sapo_ingest_requests"].samples if s.name.endswith("_total")}
    assert codes == {"200": 1.0}
    assert fams["sapo_ingest_records"].samples[0].value == 2
    routes = {s.labels["route"] for s in fams["sapo_http_requests"].samples}
    assert "/api/v1/runs/{run_id}/steps" in routes
    assert "sapo_http_request_duration_seconds" in fams and "sapo_db_errors" in fams


def test_idle_runs_drop_out(db_url: str) -> None:
    with live_service(db_url, active_window=1) as base, httpx.Client(base_url=base) as c:
        post_steps(c, "idle", [{"step": 1, "metrics": {"loss": 1.0}}])
        assert 'run="idle"' in c.get("/metrics").text
        time.sleep(1.2)
        text = c.get("/metrics").text
        assert 'run="idle"' not in text
        assert _families(text)["sapo_runs_active"].samples[0].value == 0


def test_gzip_ingest_is_counted_under_its_route(db_url: str) -> None:
    # The client sends gzip: the body-limit middleware inflates it and must leave the matched route
    # visible to the request counters (a copied ASGI scope counted these as "unmatched").
    import gzip
    import json

    with live_service(db_url) as base, httpx.Client(base_url=base) as c:
        c.put("/api/v1/runs/gz1", json={"project": "p", "algorithm": "sapo"})
        body = gzip.compress(json.dumps({"schema": 1, "steps": [{"step": 1, "metrics": {"ratio.mean": 1.0}}]}).encode())
        r = c.post("/api/v1/runs/gz1/steps", content=body,
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 200, r.text
        fams = _families(c.get("/metrics").text)
    codes = {s.labels["code"]: s.value for s in fams["sapo_ingest_requests"].samples if s.name.endswith("_total")}
    assert codes == {"200": 1.0}
    routes = {s.labels["route"] for s in fams["sapo_http_requests"].samples if s.labels["method"] == "POST"}
    assert routes == {"/api/v1/runs/{run_id}/steps"}
