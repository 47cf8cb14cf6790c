"""The public endpoints behind the run page, on SQLite and PostgreSQL: metric names, alert bands,
the log-ratio histogram over steps (whole rollup blocks and raw edges give the same counts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings

from tests.alerts.conftest import BOTH, db_url  # noqa: F401 (fixture)
from tests.service.util import batch, post_steps
from tests.ui.data import post_trace


@pytest.fixture
def http(db_url: str) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(Settings(db=db_url, auth="off"))) as c:
        yield c


@BOTH
def test_metric_names_list_catalogue_then_custom_metrics(http: TestClient) -> None:
    assert post_steps(http, "m", batch(range(0, 200))).status_code in (200, 202)
    doc = http.get("/api/v1/runs/m/metrics").json()
    assert [(m["name"], m["catalogue"]) for m in doc["metrics"]] == [("ratio.mean", True), ("loss", True),
                                                                     ("custom.x", False)]
    assert doc["metrics"][0]["description"].startswith("Mean token importance ratio")
    assert http.get("/api/v1/runs/nope/metrics").status_code == 404


@BOTH
def test_histogram_over_steps_sums_every_count_into_aligned_buckets(http: TestClient) -> None:
    for lo in range(0, 3000, 1000):
        assert post_steps(http, "h", batch(range(lo, lo + 1000))).status_code in (200, 202)
    whole = http.get("/api/v1/runs/h/histogram", params={"from_step": 5, "to_step": 2990}).json()
    doc = http.get("/api/v1/runs/h/histogram/steps", params={"from_step": 5, "to_step": 2990, "max_buckets": 10}).json()
    assert doc["bucket_steps"] % 64 == 0 and len(doc["start"]) <= 10
    assert doc["start"][0] == 5 and doc["end"][-1] == 2990
    assert sum(doc["steps"]) == whole["steps"] == 2986
    assert [sum(c[i] for c in doc["counts"]) for i in range(42)] == whole["counts"]
    fine = http.get("/api/v1/runs/h/histogram/steps", params={"from_step": 10, "to_step": 19}).json()
    assert fine["bucket_steps"] == 1 and fine["start"] == list(range(10, 20))
    assert fine["counts"][0] == [10 % 3] * 42
    bad = http.get("/api/v1/runs/h/histogram/steps", params={"from_step": 9, "to_step": 2})
    assert bad.status_code in (400, 422) and "from_step" in bad.text


@BOTH
def test_alert_bands_span_pending_to_resolved_with_the_rules_description(http: TestClient) -> None:
    post_trace(http, "c", name="collapse")  # type: ignore[arg-type]
    doc = http.get("/api/v1/runs/c/alert-bands").json()
    assert doc["last_step"] == 90
    by_rule = {b["rule"]: b for b in doc["bands"]}
    spike = by_rule["ratio_variance_spike"]
    assert spike["from_step"] == 41 and spike["fired_step"] == 42 and spike["to_step"] is None
    assert spike["severity"] == "warning" and spike["state"] == "firing" and "log_ratio.std" in spike["description"]
    assert [b["from_step"] for b in doc["bands"]] == sorted(b["from_step"] for b in doc["bands"])
    alerts = http.get("/api/v1/runs/c/alerts").json()["alerts"]
    assert {a["id"] for a in alerts} == {b["alert_id"] for b in doc["bands"]}


def test_webhook_payloads_carry_the_run_page_url_when_the_public_url_is_set(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from sapo_monitor.service.outbox.payloads import IncidentEvent, MemberAlert, render
    from sapo_monitor.service.ui.links import run_page_url

    assert run_page_url("r1", step=7, public_url="") is None
    monkeypatch.delenv("SAPO_MONITOR_PUBLIC_URL", raising=False)
    assert run_page_url("r1") is None
    monkeypatch.setenv("SAPO_MONITOR_PUBLIC_URL", "https://monitor.example.org/")
    url = run_page_url("run a/b", step=70)
    assert url == "https://monitor.example.org/#/run/run%20a%2Fb?from=20&to=120"
    alert = MemberAlert(id="a", rule="nonfinite", severity="critical", state="firing", started_step=70,
                        fired_step=70, fired_at=1.0)
    ev = IncidentEvent(event_id="e", type="incident.opened", at=1.0, incident_id="i", state="firing",
                       severity="critical", run_id="run a/b", project="p", opened_step=70, opened_at=1.0,
                       story={"summary": "confirmed by nonfinite (critical) at step 70"}, alerts=[alert], run_url=url)
    assert json.loads(render("json", ev))["incident"]["run_url"] == url
    assert json.loads(render("alertmanager", ev))["alerts"][0]["generatorURL"] == url
    assert url in json.loads(render("slack", ev))["text"]


@BOTH
def test_fetch_many_reads_the_same_pieces_as_one_fetch_per_metric(http: TestClient, db_url: str) -> None:  # noqa: F811
    from sapo_monitor.service.storage.db import Database
    from sapo_monitor.service.storage.run_views import fetch_many
    from sapo_monitor.service.storage.runs import get_run
    from sapo_monitor.service.storage.series import fetch

    steps = batch(range(0, 700))
    for s in steps[::97]:
        s["metrics"]["loss"] = "NaN"
    assert post_steps(http, "f", steps).status_code in (200, 202)
    db = Database(db_url, pool_size=2)
    try:
        with db.read() as session:
            pk = get_run(session, run_id="f").pk  # type: ignore[union-attr]
            metrics = ["loss", "custom.x", "ratio.mean", "kl.k3"]
            for lo, hi, blocks in ((0, 699, True), (5, 650, True), (3, 40, False), (100, 600, False)):
                many = fetch_many(session, run_pk=pk, metrics=metrics, lo=lo, hi=hi, blocks=blocks)
                for m in metrics:
                    one = fetch(session, run_pk=pk, metric=m, lo=lo, hi=hi, blocks=blocks)
                    assert sorted(many[m].blocks) == sorted(one.blocks), (m, lo, hi)
                    assert repr(many[m].raw) == repr(one.raw), (m, lo, hi)  # repr: NaN == NaN
    finally:
        db.dispose()


@BOTH
def test_histogram_over_steps_stays_exact_where_a_blocks_sum_saturated(http: TestClient) -> None:
    # Bin 5 of steps 70 and 71 sums past 2**63-1 in block 1's rollup: that block is summed from its steps.
    steps = batch(range(0, 2048))
    for s in (70, 71):
        steps[s]["histograms"]["log_ratio"][5] = 2**62 + s
    for lo in range(0, 2048, 1024):
        assert post_steps(http, "sat", steps[lo:lo + 1024]).status_code in (200, 202)
    whole = http.get("/api/v1/runs/sat/histogram").json()
    assert whole["counts"][5] == 2**63 + 141 + sum(s % 3 for s in range(2048) if s not in (70, 71))
    doc = http.get("/api/v1/runs/sat/histogram/steps", params={"max_buckets": 4}).json()
    assert doc["bucket_steps"] == 512 and sum(doc["steps"]) == 2048
    assert [sum(c[i] for c in doc["counts"]) for i in range(42)] == whole["counts"]
    assert doc["counts"][0][5] == 2**63 + 141 + sum(s % 3 for s in range(512) if s not in (70, 71))


@BOTH
def test_a_kept_series_read_is_never_shown_after_the_run_changed(http: TestClient) -> None:
    # The same read twice is answered from the kept pieces; a replay (same step range, new values)
    # or new steps change the run's version, so the next read sees them.
    assert post_steps(http, "v", batch(range(0, 300))).status_code in (200, 202)
    params = {"metric": ["loss", "custom.x"], "max_points": 40}
    first = http.get("/api/v1/runs/v/series", params=params).json()
    assert http.get("/api/v1/runs/v/series", params=params).json() == first
    heat = http.get("/api/v1/runs/v/histogram/steps", params={"max_buckets": 10}).json()
    assert http.get("/api/v1/runs/v/histogram/steps", params={"max_buckets": 10}).json() == heat
    replay = batch(range(100, 110), loss=50.0)
    for st in replay:
        st["histograms"]["log_ratio"] = [1000] * 42
    assert post_steps(http, "v", replay).status_code in (200, 202)
    replayed = http.get("/api/v1/runs/v/series", params=params).json()
    assert max(replayed["series"]["loss"]["value"]) == 50.0 and max(first["series"]["loss"]["value"]) < 2
    heat2 = http.get("/api/v1/runs/v/histogram/steps", params={"max_buckets": 10}).json()
    assert sum(map(sum, heat2["counts"])) == sum(map(sum, heat["counts"])) + 10 * 42 * 1000 - 42 * sum(
        s % 3 for s in range(100, 110))
    assert post_steps(http, "v", batch(range(300, 320))).status_code in (200, 202)
    grown = http.get("/api/v1/runs/v/series", params=params).json()
    assert grown["downsampling"]["to_step"] == 319 and max(grown["series"]["custom.x"]["value"]) == 319.0


@BOTH
def test_kept_compare_summaries_follow_a_replay(http: TestClient) -> None:
    for run in ("ca", "cb"):
        assert post_steps(http, run, batch(range(0, 200))).status_code in (200, 202)
    params = {"run": ["ca", "cb"], "metric": ["loss", "custom.x"], "max_points": 50}
    first = http.get("/api/v1/compare", params=params).json()
    assert http.get("/api/v1/compare", params=params).json() == first
    # A replay of cb's last steps (same range, new values) changes its summary, not ca's.
    assert post_steps(http, "cb", batch(range(190, 200), loss=7.0)).status_code in (200, 202)
    again = http.get("/api/v1/compare", params=params).json()
    by_run = {r["run_id"]: r["summary"]["loss"] for r in again["runs"]}
    assert by_run["cb"]["last"] == 7.0 and by_run["cb"]["mean_last_10pct"] > 0.3
    assert by_run["ca"] == next(r["summary"]["loss"] for r in first["runs"] if r["run_id"] == "ca")
    assert by_run["cb"]["delta"]["last"] != next(r for r in first["runs"] if r["run_id"] == "cb")["summary"]["loss"]["delta"]["last"]
