"""``/api/v1/incidents`` over real HTTP on both databases: filters, one incident with its alerts and
story, the alerts endpoints' auth rules (read tokens read, other projects are hidden), bad query
parameters answered 422 naming the field."""

from __future__ import annotations

import httpx
from sapo_monitor.service.storage.tokens import create_token

from tests.alerts.conftest import BOTH
from tests.alerts.incident_driver import Clock, RunDriver
from tests.alerts.server import live_service


def _populate(db) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    a = RunDriver(db, clock, "run-a")  # project p: resolved critical incident, then a new warning one
    a.fire("ratio_spread", "warning")
    clock.now += 1
    a.steps(3)
    a.fire("reward_drop", "critical")
    a.steps(5)
    a.resolve("ratio_spread")
    a.resolve("reward_drop")
    a.steps(100)  # past the reopen window: the next alert opens a new incident
    clock.now += 1
    a.fire("gate_creep", "warning")
    clock.now += 1
    b = RunDriver(db, clock, "run-b", project="q")
    b.fire("nan_loss", "critical")


@BOTH
def test_list_filter_and_one_incident_with_its_story(db) -> None:  # type: ignore[no-untyped-def]
    _populate(db)
    with live_service(db.url) as base, httpx.Client(base_url=base, timeout=20) as c:
        every = c.get("/api/v1/incidents").json()
        assert [(i["run_id"], i["state"], i["severity"]) for i in every] == [
            ("run-b", "firing", "critical"), ("run-a", "firing", "warning"), ("run-a", "resolved", "critical")]
        q = {"project": "p"}
        assert [i["run_id"] for i in c.get("/api/v1/incidents", params=q).json()] == ["run-a", "run-a"]
        assert len(c.get("/api/v1/incidents", params={"run": "run-a", "state": "resolved"}).json()) == 1
        assert [i["run_id"] for i in c.get("/api/v1/incidents", params={"severity": "critical"}).json()] == [
            "run-b", "run-a"]
        assert c.get("/api/v1/incidents", params={"run": "nope"}).json() == []
        assert len(c.get("/api/v1/incidents", params={"limit": 1, "offset": 1}).json()) == 1

        done = every[2]
        assert done["alert_count"] == 2 and done["resolved_step"] is not None and done["reopened"] == 0
        story = done["story"]
        assert story["first_precursor"]["rule"] == "ratio_spread"
        assert story["confirmation"]["rule"] == "reward_drop"
        assert story["confirmation"]["step"] - story["first_precursor"]["step"] == 4
        assert story["resolution"]["step"] == done["resolved_step"]
        assert "precursor ratio_spread" in story["summary"] and "resolved at step" in story["summary"]
        detail = c.get(f"/api/v1/incidents/{done['id']}").json()
        assert [(a["rule"], a["state"]) for a in detail["alerts"]] == [("ratio_spread", "resolved"),
                                                                       ("reward_drop", "resolved")]
        assert detail["story"] == story and detail["alert_count"] == 2
        missing = c.get("/api/v1/incidents/" + "0" * 32)
        assert missing.status_code == 404 and missing.json()["detail"][0]["loc"] == ["path", "incident_id"]

        paths = c.get("/openapi.json").json()["paths"]
        assert "/api/v1/incidents" in paths and "/api/v1/incidents/{incident_id}" in paths


BAD = [({"state": "pending"}, "state"), ({"severity": "fatal"}, "severity"), ({"limit": 0}, "limit"),
       ({"limit": "many"}, "limit"), ({"offset": -1}, "offset"), ({"run": "a b/c"}, "run"), ({"project": "?"}, "project")]


def test_bad_parameters_are_422_naming_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/i.db") as base, httpx.Client(base_url=base, timeout=20) as c:
        for params, field in BAD:
            r = c.get("/api/v1/incidents", params=params)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", field], (params, r.text)
        r = c.get("/api/v1/incidents/not-an-id")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "incident_id"]


@BOTH
def test_read_tokens_read_their_own_project_only(db) -> None:  # type: ignore[no-untyped-def]
    _populate(db)
    with db.write() as s:
        tokens = {who: create_token(s, project="p", role=who)[0] for who in ("read", "ingest")}
        tokens["other"] = create_token(s, project="q", role="read")[0]
    with live_service(db.url, auth="on") as base, httpx.Client(base_url=base, timeout=20) as c:
        def get(path: str, who: str | None, **params: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            return c.get(path, params=params, headers=headers)

        assert get("/api/v1/incidents", None).status_code == 401
        assert get("/api/v1/incidents", "ingest").status_code == 403
        mine = get("/api/v1/incidents", "read").json()
        assert {i["project"] for i in mine} == {"p"} and len(mine) == 2
        assert get("/api/v1/incidents", "read", project="q").status_code == 403
        theirs = get("/api/v1/incidents", "other").json()
        assert [i["run_id"] for i in theirs] == ["run-b"]
        assert get(f"/api/v1/incidents/{mine[0]['id']}", "read").status_code == 200
        hidden = get(f"/api/v1/incidents/{theirs[0]['id']}", "read")
        assert hidden.status_code == 404  # the same answer as an id that does not exist
