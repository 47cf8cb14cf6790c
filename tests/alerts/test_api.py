"""The alerts API over real HTTP: rules CRUD and validation, alerts, webhooks, /metrics, compare, auth."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sapo_monitor.client.wire import StepRecord, encode_batch
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.tokens import create_token
from typer.testing import CliRunner

from tests.alerts.conftest import BOTH
from tests.alerts.receiver import Receiver
from tests.alerts.server import live_service
from tests.alerts.traces import EXPECTED_FIRING, collapse_trace, stable_trace

SECRET = "api-test-secret"


def post_trace(c: httpx.Client, run_id: str, trace, batch: int = 25, project: str = "p") -> None:  # type: ignore[no-untyped-def]
    r = c.put(f"/api/v1/runs/{run_id}", json={"project": project, "algorithm": "sapo", "name": run_id})
    assert r.status_code in (200, 201), r.text
    for i in range(0, len(trace), batch):
        body = encode_batch([StepRecord(s, time.time(), m) for s, m in trace[i : i + batch]])
        r = c.post(f"/api/v1/runs/{run_id}/steps", content=body,
                   headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert r.status_code in (200, 201, 202), r.text


@BOTH
def test_alerts_end_to_end_over_http(db_url: str) -> None:
    receiver = Receiver(SECRET).start()
    try:
        with live_service(db_url) as base, httpx.Client(base_url=base, timeout=20) as c:
            r = c.post("/api/v1/webhooks", json={"url": receiver.url, "secret": SECRET, "format": "json"})
            assert r.status_code == 201, r.text
            hook = r.json()
            assert hook["has_secret"] is True and "secret" not in hook
            assert all("secret" not in h for h in c.get("/api/v1/webhooks").json())

            post_trace(c, "collapse", collapse_trace())
            post_trace(c, "stable", stable_trace(90))

            firing = c.get("/api/v1/alerts", params={"state": "firing", "run": "collapse"}).json()
            assert sorted((a["rule"], a["fired_step"]) for a in firing) == sorted(EXPECTED_FIRING)
            assert c.get("/api/v1/alerts", params={"run": "stable"}).json() == []
            assert c.get("/api/v1/alerts", params={"project": "nope"}).json() == []
            run_alerts = c.get("/api/v1/runs/collapse/alerts").json()
            fired = [(t["rule"], t["step"]) for t in run_alerts["transitions"] if t["to_state"] == "firing"]
            assert fired == EXPECTED_FIRING
            nan = next(t for t in run_alerts["transitions"] if t["rule"] == "nonfinite")
            assert nan["values"]["loss"] == "NaN"
            assert c.get("/api/v1/runs/nope/alerts").status_code == 404

            cmp = c.get("/api/v1/compare", params={"run": ["collapse", "stable"], "metric": "reward.mean"}).json()
            by_run = {r["run_id"]: r for r in cmp["runs"]}
            assert by_run["collapse"]["first_warning_step"] == EXPECTED_FIRING[0][1]
            assert by_run["collapse"]["first_critical_step"] == 62
            assert by_run["stable"]["first_critical_step"] is None

            # one incident for the collapsing run, none for the stable one
            [inc] = c.get("/api/v1/incidents", params={"run": "collapse"}).json()
            assert c.get("/api/v1/incidents", params={"run": "stable"}).json() == []
            assert inc["severity"] == "critical" and inc["alert_count"] == len(EXPECTED_FIRING)
            assert inc["story"]["first_precursor"]["rule"] == EXPECTED_FIRING[0][0]
            assert inc["story"]["confirmation"]["step"] == 62
            detail = c.get(f"/api/v1/incidents/{inc['id']}").json()
            assert [(a["rule"], a["fired_step"]) for a in detail["alerts"]] == EXPECTED_FIRING
            # its notifications: opened critical, or opened as a warning then escalated when a worker
            # round fell between two batches; never one per alert
            deadline = time.monotonic() + 20
            while not receiver.events or receiver.events[-1]["body"]["incident"]["severity"] != "critical":
                assert time.monotonic() < deadline, receiver.events
                time.sleep(0.02)
            time.sleep(0.2)
            told = [(e["body"]["type"], e["body"]["incident"]["severity"]) for e in receiver.events]
            assert told in ([("incident.opened", "critical")],
                            [("incident.opened", "warning"), ("incident.escalated", "critical")]), told
            assert {e["body"]["incident"]["id"] for e in receiver.events} == {inc["id"]}
            assert receiver.bad_signatures == 0
            sent = len(receiver.events)
            assert c.get(f"/api/v1/incidents/{inc['id']}").json()["notifications"] == sent

            # the CLI's test event goes through the same outbox, signed
            result = CliRunner().invoke(
                __import__("sapo_monitor.cli.webhooks", fromlist=["app"]).app,
                ["test", str(hook["id"]), "--server", base, "--wait", "10"],
            )
            assert result.exit_code == 0, result.output
            assert "delivered" in result.output
            assert receiver.events[-1]["body"]["type"] == "test"
            deliveries = c.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
            assert sum(d["outcome"] == "delivered" for d in deliveries) == sent + 1

            metrics = c.get("/metrics").text
            assert 'sapo_alert_firing{project="p",rule="nonfinite",run="collapse",severity="critical"} 1.0' in metrics
            assert f'sapo_webhook_deliveries_total{{outcome="delivered"}} {sent + 1}.0' in metrics
            assert "sapo_webhook_outbox_pending 0.0" in metrics
    finally:
        receiver.stop()


def test_rules_crud_and_validation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/r.db") as base, httpx.Client(base_url=base, timeout=20) as c:
        rules = c.get("/api/v1/rules").json()
        from sapo_monitor.service.rules import BUILTIN_RULES

        assert [r["id"] for r in rules] == [r.id for r in BUILTIN_RULES] and all(r["builtin"] for r in rules)
        kinds = {k["name"] for k in c.get("/api/v1/rules/kinds").json()}
        assert {"threshold", "rate_of_change", "ewma_anomaly"} <= kinds

        def err(r: httpx.Response, code: int, loc: list) -> None:  # type: ignore[type-arg]
            assert r.status_code == code, r.text
            assert r.json()["detail"][0]["loc"] == loc, r.text

        base_rule = {"id": "lr-high", "kind": "threshold", "severity": "critical",
                     "params": {"metric": "log_ratio.std", "value": 0.5}, "for_steps": 2, "project": "p"}
        err(c.post("/api/v1/rules", json={**base_rule, "kind": "magic"}), 422, ["body", "kind"])
        assert "magic" in c.post("/api/v1/rules", json={**base_rule, "kind": "magic"}).json()["detail"][0]["msg"]
        err(c.post("/api/v1/rules", json={**base_rule, "params": {"metric": "x", "value": 1, "windw": 3}}), 422,
            ["body", "params", "windw"])
        err(c.post("/api/v1/rules", json={**base_rule, "kind": "rate_of_change",
                                          "params": {"metric": "x", "value": 1, "window": 0}}), 422,
            ["body", "params", "window"])
        err(c.post("/api/v1/rules", json={**base_rule, "severity": "fatal"}), 422, ["body", "severity"])
        err(c.post("/api/v1/rules", json={**base_rule, "for_steps": 0}), 422, ["body", "for_steps"])
        assert c.post("/api/v1/rules", json={**base_rule, "colour": "red"}).status_code == 422
        assert c.post("/api/v1/rules", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422

        created = c.post("/api/v1/rules", json=base_rule)
        assert created.status_code == 201, created.text
        assert created.json()["params"] == {"metric": "log_ratio.std", "op": ">", "value": 0.5}
        err(c.post("/api/v1/rules", json=base_rule), 409, ["body", "id"])
        err(c.post("/api/v1/rules", json={**base_rule, "id": "gate_saturation"}), 409, ["body", "id"])

        tuned = c.put("/api/v1/rules/gate_saturation", json={"params": {"h": 6.0}, "for_steps": 5})
        assert tuned.status_code == 200, tuned.text
        assert tuned.json()["params"]["h"] == 6.0 and tuned.json()["for_steps"] == 5 and tuned.json()["version"] == 2
        err(c.put("/api/v1/rules/gate_saturation", json={"kind": "threshold", "project": "p"}), 422, ["body", "project"])
        err(c.delete("/api/v1/rules/gate_saturation"), 409, ["path", "rule_id"])
        assert c.put("/api/v1/rules/gate_saturation", json={"enabled": False}).json()["enabled"] is False

        replaced = c.put("/api/v1/rules/lr-high", json={**base_rule, "params": {"metric": "log_ratio.std", "value": 0.7}})
        assert replaced.json()["version"] == 2 and replaced.json()["params"]["value"] == 0.7
        assert c.put("/api/v1/rules/new-one", json={"kind": "ewma_anomaly", "params": {"metric": "grad_norm"}}).status_code == 201
        assert c.delete("/api/v1/rules/lr-high").status_code == 204
        assert c.delete("/api/v1/rules/lr-high").status_code == 404
        assert c.get("/api/v1/rules/lr-high").status_code == 404
        assert c.get("/api/v1/rules/BAD ID").status_code == 422

        err(c.post("/api/v1/webhooks", json={"url": "ftp://x"}), 422, ["body", "url"])
        assert c.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:1/x", "format": "xml"}).status_code == 422
        assert c.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:1/x", "secret": "short"}).status_code == 422
        assert c.get("/api/v1/webhooks/999/deliveries").status_code == 404
        assert c.delete("/api/v1/webhooks/999").status_code == 404


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_auth_matrix(db_url: str) -> None:
    db = Database(db_url)
    with db.write() as s:
        tokens = {role: create_token(s, project="p", role=role)[0] for role in ("ingest", "read", "admin")}
        tokens["other"] = create_token(s, project="q", role="admin")[0]
    db.dispose()
    with live_service(db_url, auth="on") as base, httpx.Client(base_url=base, timeout=20) as c:
        def h(who: str) -> dict:  # type: ignore[type-arg]
            return {"Authorization": f"Bearer {tokens[who]}"}

        rule = {"id": "p-rule", "kind": "threshold", "params": {"metric": "loss", "value": 10}}
        assert c.get("/api/v1/alerts").status_code == 401
        assert c.post("/api/v1/rules", json=rule, headers=h("read")).status_code == 403
        assert c.post("/api/v1/rules", json=rule, headers=h("ingest")).status_code == 403
        assert c.get("/api/v1/alerts", headers=h("ingest")).status_code == 403
        assert c.get("/api/v1/alerts", headers=h("read")).status_code == 200
        assert c.get("/api/v1/alerts", params={"project": "q"}, headers=h("read")).status_code == 403
        created = c.post("/api/v1/rules", json=rule, headers=h("admin"))
        assert created.status_code == 201 and created.json()["project"] == "p"
        assert c.post("/api/v1/rules", json={**rule, "id": "x", "project": "q"}, headers=h("admin")).status_code == 403
        assert c.put("/api/v1/rules/gate_saturation", json={"enabled": False}, headers=h("admin")).status_code == 403
        assert c.delete("/api/v1/rules/p-rule", headers=h("other")).status_code == 404  # invisible to q
        hook = c.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=h("admin"))
        assert hook.status_code == 201 and hook.json()["project"] == "p"
        assert c.get("/api/v1/webhooks", headers=h("other")).json() == []
        assert c.get(f"/api/v1/webhooks/{hook.json()['id']}/deliveries", headers=h("other")).status_code == 404
        assert c.get("/api/v1/webhooks", headers=h("read")).status_code == 403
        assert json.loads(c.get("/api/v1/rules", headers=h("other")).text)[-1]["id"] != "p-rule"


@BOTH
def test_silent_run_fires_and_resolves(db_url: str) -> None:
    with live_service(db_url) as base, httpx.Client(base_url=base, timeout=20) as c:
        assert c.put("/api/v1/rules/silent_run", json={"params": {"after_s": 1.0}}).status_code == 200
        post_trace(c, "quiet", stable_trace(5))
        post_trace(c, "done", stable_trace(5))
        assert c.put("/api/v1/runs/done", json={"project": "p", "status": "finished"}).status_code in (200, 201)

        def silent(run: str) -> list[dict]:  # type: ignore[type-arg]
            return [a for a in c.get(f"/api/v1/runs/{run}/alerts").json()["alerts"] if a["rule"] == "silent_run"]

        deadline = time.monotonic() + 10
        while not silent("quiet"):
            assert time.monotonic() < deadline, "silent_run never fired"
            time.sleep(0.1)
        alert = silent("quiet")[0]
        assert alert["state"] == "firing" and alert["fired_step"] == 5 and alert["values"]["silent_for_s"] > 1.0
        assert silent("done") == []  # finished runs are not silent
        post_trace(c, "quiet", [(6, stable_trace(6)[-1][1])])  # a step arrives: it resolves
        alert = silent("quiet")[0]
        assert alert["state"] == "resolved" and alert["resolved_step"] == 6
