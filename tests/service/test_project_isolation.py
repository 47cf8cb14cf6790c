"""A project-scoped token learns nothing about other projects (issue 15 item 22): another project's
run or rule answers the same 404 as one that does not exist, no 403 names another project, and
``/metrics`` shows the token its own project's webhook counts only."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import BOTH, live_service, make_token
from .util import batch, post_steps


@pytest.fixture
def two_projects(db_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    with live_service(db_url, auth="on") as base:
        yield base, {f"{p}-{r}": make_token(db_url, p, r) for p in ("secretproj", "q") for r in ("read", "admin")}


def _c(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _samples(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@BOTH
def test_other_projects_are_invisible(two_projects: tuple[str, dict[str, str]]) -> None:
    base, t = two_projects
    with _c(base, t["secretproj-admin"]) as owner, _c(base, t["q-admin"]) as other, _c(base, t["q-read"]) as reader:
        assert owner.put("/api/v1/runs/hidden", json={"project": "secretproj"}).status_code == 200
        assert post_steps(owner, "hidden", batch(range(5))).status_code == 200
        rule = {"id": "hidden-rule", "kind": "threshold", "params": {"metric": "loss", "op": ">", "value": 1.0}}
        r = owner.post("/api/v1/rules", json=rule)
        assert r.status_code == 201, r.text
        for run in ("hidden", "absent"):  # an existing run of another project answers like a missing one
            for path, params in (("", {}), ("/series", {"metric": "loss"}), ("/histogram", {}), ("/alerts", {})):
                r = reader.get(f"/api/v1/runs/{run}{path}", params=params)
                assert r.status_code == 404, (run, path, r.status_code, r.text)
                assert "secretproj" not in r.text
            assert other.delete(f"/api/v1/runs/{run}").status_code == 404
            r = reader.get("/api/v1/compare", params={"run": run, "metric": "loss"})
            assert r.status_code == 404 and r.json()["detail"][0]["msg"] == f"unknown runs: {run}"
        for rule_id in ("hidden-rule", "absent-rule"):
            for r in (reader.get(f"/api/v1/rules/{rule_id}"), other.delete(f"/api/v1/rules/{rule_id}")):
                assert r.status_code == 404 and r.json()["detail"][0]["msg"] == f"rule {rule_id!r} not found"
        for r in (reader.get("/api/v1/runs", params={"project": "secretproj"}),
                  reader.get("/api/v1/alerts", params={"project": "secretproj"})):
            assert r.status_code == 403 and "secretproj" not in r.text  # names the token's own project only
        assert owner.get("/api/v1/runs/hidden").status_code == 200  # the owner still sees it all
        assert owner.get("/api/v1/rules/hidden-rule").status_code == 200


@BOTH
def test_metrics_show_a_project_token_its_own_webhook_counts(two_projects: tuple[str, dict[str, str]]) -> None:
    base, t = two_projects
    with _c(base, t["secretproj-admin"]) as owner, _c(base, t["q-read"]) as reader:
        r = owner.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/x"})
        assert r.status_code == 201, r.text
        assert owner.post(f"/api/v1/webhooks/{r.json()['id']}/test").status_code in (200, 201, 202)
        mine = owner.get("/metrics").text
        theirs = reader.get("/metrics").text
    assert _samples(mine, "sapo_webhook_outbox_pending") + _samples(mine, "sapo_webhook_deliveries_total") >= 1
    assert "sapo_webhook_outbox_pending" in theirs and "sapo_webhook_deliveries_total" in theirs
    assert _samples(theirs, "sapo_webhook_outbox_pending") == 0
    assert _samples(theirs, "sapo_webhook_deliveries_total") == 0
    assert 'project="secretproj"' not in theirs
