"""Bad input on the write and query endpoints is a 422 naming the field, the same on SQLite and PostgreSQL
(issue 15 items 6, 8, 10), and ``PUT /runs/{id}`` without ``project`` keeps the run's project (item 24)."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import BOTH, live_service, make_token
from .util import post_steps


def _locs(r: httpx.Response) -> list[list]:
    assert r.status_code == 422, (r.status_code, r.text)
    return [d["loc"] for d in r.json()["detail"]]


def _put(c: httpx.Client, run_id: str, raw: str | dict) -> httpx.Response:
    content = raw if isinstance(raw, str) else json.dumps(raw)
    return c.put(f"/api/v1/runs/{run_id}", content=content, headers={"content-type": "application/json"})


@BOTH
def test_integer_metric_beyond_float_range_is_a_422_naming_it(service: httpx.Client) -> None:
    raw = '{"schema": 1, "steps": [{"step": 0, "metrics": {"ratio.mean": 1.0, "loss": 1' + "0" * 400 + "}}]}"
    r = service.post("/api/v1/runs/big/steps", content=raw, headers={"content-type": "application/json"})
    assert _locs(r) == [["body", "steps", 0, "metrics", "loss"]]
    assert "too large for a float" in r.json()["detail"][0]["msg"]
    assert post_steps(service, "big", [{"step": 0, "metrics": {"loss": 10**300}}]).status_code == 200


@BOTH
def test_config_out_of_int64_or_too_deep_is_a_422(service: httpx.Client) -> None:
    r = _put(service, "cfg", {"config": {"seed": 2**64}})
    assert _locs(r)[0][:2] == ["body", "config"] and "64-bit" in r.text
    deep: dict = {}
    for _ in range(300):
        deep = {"a": deep}
    r = _put(service, "cfg", {"config": deep})
    assert _locs(r)[0][:2] == ["body", "config"] and "deeper" in r.text
    # nothing was half-stored, and the project still takes runs (no cached id of a rolled-back project)
    assert service.get("/api/v1/runs/cfg").status_code == 404
    assert _put(service, "cfg", {"config": {"seed": 2**63 - 1}}).status_code == 200


@BOTH
def test_nonfinite_config_values_are_stored_and_returned_faithfully(service: httpx.Client) -> None:
    r = _put(service, "nf", '{"config": {"a": NaN, "b": Infinity, "c": [-Infinity, 1.5], "d": {"e": NaN}}}')
    assert r.status_code == 200, r.text
    want = {"a": "NaN", "b": "Infinity", "c": ["-Infinity", 1.5], "d": {"e": "NaN"}}
    assert r.json()["config"] == want
    assert service.get("/api/v1/runs/nf").json()["config"] == want


@BOTH
@pytest.mark.parametrize(
    ("doc", "loc"),
    [
        ({"name": "a\x00b"}, ["body", "name"]),
        ({"algorithm": "sa\x00po"}, ["body", "algorithm"]),
        ({"tags": {"k\x00": "v"}}, ["body", "tags"]),
        ({"tags": {"k": "v\x00"}}, ["body", "tags"]),
        ({"tags": {"k": "v" * 501}}, ["body", "tags"]),
        ({"tags": {"k" * 201: "v"}}, ["body", "tags"]),
        ({"config": {"note": "x\x00y"}}, ["body", "config"]),
        ({"config": {"k\x00": 1}}, ["body", "config"]),
        ({"name": "\ud800"}, ["body", "name"]),
    ],
)
def test_text_the_databases_cannot_store_is_a_422_naming_the_field(service: httpx.Client, doc: dict,
                                                                   loc: list) -> None:
    assert _locs(_put(service, "t1", doc))[0][: len(loc)] == loc
    assert service.get("/api/v1/runs/t1").status_code == 404


@BOTH
def test_nul_in_query_parameters_is_a_422(service: httpx.Client) -> None:
    assert _put(service, "q1", {"algorithm": "sapo", "tags": {"k": "v"}}).status_code == 200
    for params, loc in (({"algorithm": "sa\x00po"}, ["query", "algorithm"]), ({"tag": "k:v\x00"}, ["query", "tag"]),
                        ({"tag": "k\x00"}, ["query", "tag"])):
        assert _locs(service.get("/api/v1/runs", params=params))[0][:2] == loc
    assert service.get("/api/v1/runs", params={"tag": "k:v", "algorithm": "sapo"}).json()["total"] == 1


@BOTH
def test_put_without_project_keeps_the_runs_project(service: httpx.Client) -> None:
    assert _put(service, "p24", {"project": "other", "name": "n"}).json()["project"] == "other"
    r = _put(service, "p24", {"status": "finished"})
    assert r.status_code == 200, r.text
    assert r.json()["project"] == "other" and r.json()["status"] == "finished" and r.json()["name"] == "n"
    assert _put(service, "new24", {"name": "fresh"}).json()["project"] == "default"


@BOTH
def test_put_without_project_with_a_project_token(db_url: str) -> None:
    with live_service(db_url, auth="on") as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["authorization"] = f"Bearer {make_token(db_url, 'team', 'ingest')}"
        assert _put(c, "tok24", {"project": "team"}).status_code == 200
        r = _put(c, "tok24", {"status": "finished"})  # used to default to 'default' and answer 403
        assert r.status_code == 200, r.text
        assert r.json()["project"] == "team"
        assert _put(c, "tok24b", {"name": "x"}).json()["project"] == "team"  # a new run: the token's project


_RULE = {"id": "nul-check", "kind": "threshold", "severity": "warning",
         "params": {"metric": "log_ratio.std", "op": ">", "value": 0.5}}


@BOTH
@pytest.mark.parametrize(
    ("path", "doc", "loc"),
    [
        ("/api/v1/rules", {**_RULE, "description": "a\x00b"}, ["body", "description"]),
        ("/api/v1/rules", {**_RULE, "id": "nul\x00"}, ["body", "id"]),
        ("/api/v1/rules", {**_RULE, "params": {**_RULE["params"], "metric": "lo\x00ss"}}, ["body", "params"]),
        ("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "description": "a\x00b"}, ["body", "description"]),
        ("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "secret": "0123456789\x00"}, ["body", "secret"]),
    ],
)
def test_nul_in_rule_and_webhook_fields_is_a_422(service: httpx.Client, path: str, doc: dict, loc: list) -> None:
    assert _locs(service.post(path, json=doc))[0][: len(loc)] == loc


@BOTH
def test_nul_in_compare_run_ids_is_a_422(service: httpx.Client) -> None:
    r = service.get("/api/v1/compare", params={"run": ["a\x00b"], "metric": "loss"})
    assert _locs(r)[0][:2] == ["query", "run"]
