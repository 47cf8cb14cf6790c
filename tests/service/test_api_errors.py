"""Auth matrix and every 4xx path: clear errors naming the field, never a 500, nothing stored."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest
from sapo_monitor.client.wire import MAX_STEPS_PER_BATCH
from sapo_monitor.service.settings import Settings

from .conftest import BOTH, live_service, make_token
from .util import batch, body, post_steps, series


@pytest.fixture
def authed(db_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A service with auth on, and tokens: p-ingest, p-read, p-admin, q-read, q-admin."""
    with live_service(db_url, auth="on") as base:
        tokens = {f"{p}-{r}": make_token(db_url, p, r) for p, r in
                  [("p", "ingest"), ("p", "read"), ("p", "admin"), ("q", "read"), ("q", "admin")]}
        yield base, tokens


def _c(base: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


@BOTH
def test_auth_matrix(authed: tuple[str, dict[str, str]]) -> None:
    base, t = authed
    run = {"project": "p", "algorithm": "grpo"}
    with _c(base) as anon, _c(base, "sapo_not-a-token") as bogus:
        for c in (anon, bogus):
            r = c.put("/api/v1/runs/a1", json=run)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert c.get("/api/v1/runs").status_code == 401
            assert c.get("/metrics").status_code == 401
        assert anon.get("/healthz").status_code == 200  # health needs no token
    with _c(base, t["p-read"]) as reader, _c(base, t["q-admin"]) as other, _c(base, t["p-ingest"]) as ingest:
        assert reader.put("/api/v1/runs/a1", json=run).status_code == 403  # wrong role
        assert other.put("/api/v1/runs/a1", json=run).status_code == 403  # wrong project
        assert ingest.put("/api/v1/runs/a1", json=run).status_code == 200  # right role and project
        assert post_steps(ingest, "a1", batch(range(10))).status_code == 200
        assert post_steps(reader, "a1", batch(range(10))).status_code == 403
        r = post_steps(other, "a1", batch(range(10, 20)))  # an admin of q cannot write into p's run
        assert r.status_code == 403 and "another project" in r.text
        assert ingest.get("/api/v1/runs/a1").status_code == 403  # ingest cannot read
        assert reader.get("/api/v1/runs/a1").json()["last_step"] == 9
        assert other.get("/api/v1/runs/a1").status_code == 404  # another project's run: as if missing
        assert other.get("/api/v1/runs/a1/series", params={"metric": "loss"}).status_code == 404
        assert other.get("/api/v1/compare", params={"run": "a1", "metric": "loss"}).status_code == 404
        assert other.get("/api/v1/runs").json()["total"] == 0  # q sees only q's runs
        assert reader.get("/api/v1/runs").json()["total"] == 1
        assert reader.get("/api/v1/runs", params={"project": "q"}).status_code == 403
        assert "sapo_run_last_step" in reader.get("/metrics").text
        assert 'run="a1"' not in _c(base, t["q-read"]).get("/metrics").text
        assert reader.delete("/api/v1/runs/a1").status_code == 403  # delete is admin only
        assert other.delete("/api/v1/runs/a1").status_code == 404
    with _c(base, t["p-admin"]) as admin:
        assert admin.delete("/api/v1/runs/a1").status_code == 204


def test_auth_off_is_refused_beyond_loopback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="loopback"):
        Settings(db=f"sqlite:///{tmp_path}/x.db", host="0.0.0.0", auth="off").check_safe()
    Settings(db=f"sqlite:///{tmp_path}/x.db", host="0.0.0.0").check_safe()  # auto: auth on
    assert Settings(host="0.0.0.0").auth_enabled and not Settings(host="127.0.0.1").auth_enabled


def _loc(r: httpx.Response) -> list:
    return r.json()["detail"][0]["loc"]


@BOTH
def test_every_4xx_path_names_the_field(service: httpx.Client) -> None:
    c = service
    post = lambda doc, **kw: c.post("/api/v1/runs/e1/steps", json=doc, **kw)  # noqa: E731
    ok = batch(range(3))
    assert post_steps(c, "e1", ok).status_code == 200
    cases = [
        ({"steps": ok}, ["body", "schema"]),
        ({"schema": 2, "steps": ok}, ["body", "schema"]),
        ({"schema": 1}, ["body", "steps"]),
        ({"schema": 1, "steps": [1]}, ["body", "steps", 0]),
        ({"schema": 1, "steps": [{"metrics": {}}]}, ["body", "steps", 0, "step"]),
        ({"schema": 1, "steps": [{"step": -1}]}, ["body", "steps", 0, "step"]),
        ({"schema": 1, "steps": [{"step": 1.5}]}, ["body", "steps", 0, "step"]),
        ({"schema": 1, "steps": [{"step": True}]}, ["body", "steps", 0, "step"]),
        ({"schema": 1, "steps": [{"step": 1, "time": "now"}]}, ["body", "steps", 0, "time"]),
        ({"schema": 1, "steps": [{"step": 1, "metrics": []}]}, ["body", "steps", 0, "metrics"]),
        ({"schema": 1, "steps": [{"step": 1, "metrics": {"Loss": 1.0}}]}, ["body", "steps", 0, "metrics", "Loss"]),
        ({"schema": 1, "steps": [{"step": 1, "metrics": {"loss": "nan"}}]}, ["body", "steps", 0, "metrics", "loss"]),
        ({"schema": 1, "steps": [{"step": 1, "metrics": {"loss": None}}]}, ["body", "steps", 0, "metrics", "loss"]),
        ({"schema": 1, "steps": [{"step": 1, "metrics": {"loss": True}}]}, ["body", "steps", 0, "metrics", "loss"]),
        ({"schema": 1, "steps": [{"step": 1, "histograms": {"log_ratio": [1, 2]}}]},
         ["body", "steps", 0, "histograms", "log_ratio"]),
        ({"schema": 1, "steps": [{"step": 1, "histograms": {"log_ratio": [-1] * 42}}]},
         ["body", "steps", 0, "histograms", "log_ratio", 0]),
        ({"schema": 1, "steps": [*ok, {"step": 9, "metrics": {"x": "Inf"}}]}, ["body", "steps", 3, "metrics", "x"]),
    ]
    for doc, loc in cases:
        r = post(doc)
        assert r.status_code == 422, (doc, r.text)
        assert _loc(r) == loc, (doc, r.text)
    # Nothing of a rejected batch is stored (step 9 above came after three valid records).
    assert series(c, "e1", "loss")["series"]["loss"]["step"] == [0, 1, 2]
    # Bodies that are not JSON, not gzip, or in an unknown encoding.
    r = c.post("/api/v1/runs/e1/steps", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and _loc(r) == ["body"]
    r = c.post("/api/v1/runs/e1/steps", content=b"\x1f\x8bnope", headers={"content-encoding": "gzip"})
    assert r.status_code == 422 and "gzip" in r.text
    r = c.post("/api/v1/runs/e1/steps", content=body(ok), headers={"content-encoding": "br"})
    assert r.status_code == 422 and _loc(r) == ["header", "content-encoding"]
    r = c.post("/api/v1/runs/e1/steps", content=gzip.compress(body(ok))[:-9], headers={"content-encoding": "gzip"})
    assert r.status_code == 422
    # Too many steps, and bodies above the size limits: 413 with the limit in the message.
    big = [{"step": s} for s in range(MAX_STEPS_PER_BATCH + 1)]
    r = post_steps(c, "e1", big)
    assert r.status_code == 413 and str(MAX_STEPS_PER_BATCH) in r.json()["detail"][0]["msg"]
    # Run ids, query parameters and PUT bodies.
    assert c.post("/api/v1/runs/bad id!/steps", json={"schema": 1, "steps": []}).status_code == 422
    assert c.put("/api/v1/runs/e1", json={"status": "exploded"}).status_code == 422
    assert c.put("/api/v1/runs/e1", json={"project": "p", "tags": {"a": 1}}).status_code == 422
    assert c.put("/api/v1/runs/e1", json={"project": "other"}).status_code == 403  # e1 lives in "default"
    for params in ({}, {"metric": "Bad-Name"}, {"metric": "loss", "max_points": 2},
                   {"metric": "loss", "from_step": 5, "to_step": 1}, {"metric": "loss", "from_step": -1}):
        r = c.get("/api/v1/runs/e1/series", params=params)
        assert r.status_code == 422, (params, r.text)
    for path in ("/api/v1/runs/nope", "/api/v1/runs/nope/series?metric=loss", "/api/v1/runs/nope/histogram"):
        r = c.get(path)
        assert r.status_code == 404 and "nope" in r.text
    assert c.delete("/api/v1/runs/nope").status_code == 404
    assert c.get("/api/v1/compare", params={"metric": "loss"}).status_code == 422
    assert c.get("/api/v1/runs", params={"limit": 0}).status_code == 422
    assert c.get("/api/v1/runs", params={"tag": ":x"}).status_code == 422


def test_body_size_limits_give_413(db_url: str) -> None:
    with live_service(db_url, max_body_bytes=4096, max_decoded_bytes=8192) as base, _c(base) as c:
        r = post_steps(c, "big", batch(range(100)))
        assert r.status_code == 413 and "4096" in r.text
        bomb = gzip.compress(body([{"step": 0, "metrics": {"loss": 1.0}}]) + b" " * 100_000)
        r = c.post("/api/v1/runs/big/steps", content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413 and "8192" in r.text
        r = c.put("/api/v1/runs/big", json={"config": {"x": "y" * 10_000}})
        assert r.status_code == 413
        assert c.get("/api/v1/runs/big").status_code == 404


def test_undecodable_json_body_is_422_naming_the_body(service: httpx.Client) -> None:
    # Bytes that are not UTF-8 made FastAPI answer a bare, undocumented 400.
    junk = b"6\xa7M\xd5\xe9\x1dEQP\xf0\x0f\xff"
    for method, path in (("PUT", "/api/v1/runs/r1"), ("POST", "/api/v1/rules"), ("PUT", "/api/v1/rules/x")):
        r = service.request(method, path, content=junk, headers={"content-type": "application/json"})
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"][0] == "body"
