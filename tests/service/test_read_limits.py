"""A read asks for at most MAX_POINTS_PER_REQUEST points over all its metrics and runs; above, a 422
names max_points and the cap (issue 15 item 14: 59 metrics x 100k points built a 152 MB answer)."""

from __future__ import annotations

import httpx
from sapo_monitor.client.wire import CATALOGUE
from sapo_monitor.service.api.read_limits import MAX_POINTS_PER_REQUEST

from .util import batch, post_steps


def test_points_per_request_are_capped(service: httpx.Client) -> None:
    c = service
    assert post_steps(c, "r1", batch(range(20))).status_code == 200
    metrics = sorted(CATALOGUE)
    r = c.get("/api/v1/runs/r1/series", params={"metric": metrics, "max_points": 100_000})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["query", "max_points"] and f"{MAX_POINTS_PER_REQUEST:,}" in detail["msg"]
    ok = MAX_POINTS_PER_REQUEST // len(metrics)
    assert c.get("/api/v1/runs/r1/series", params={"metric": metrics, "max_points": ok}).status_code == 200
    runs = [f"r{i}" for i in range(16)]  # the cap is checked before the runs are looked up
    r = c.get("/api/v1/compare", params={"run": runs, "metric": metrics[:10], "max_points": 10_000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "max_points"]
    r = c.get("/api/v1/compare", params={"run": ["r1"] * 3, "metric": metrics, "max_points": 1000})
    assert r.status_code == 200, r.text  # repeated names count once
