"""Values at the edges of their types never turn a request into a 5xx: histogram counts whose block
sums pass int64 (issue 15 item 7), and metric values whose squares overflow a double in /compare
(item 11). Same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import httpx
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS

from .conftest import BOTH
from .util import decode, post_steps

BIG = 2**63 - 1


def _hist_steps(steps: range, count: int) -> list[dict]:
    return [{"step": s, "metrics": {"loss": 1.0}, "histograms": {"log_ratio": [count] * LOG_RATIO_HIST_BINS}}
            for s in steps]


@BOTH
def test_histogram_counts_whose_block_sums_pass_int64(service: httpx.Client) -> None:
    c = service
    r = post_steps(c, "h1", _hist_steps(range(0, 64), BIG))  # one whole block, in one batch
    assert r.status_code == 200, r.text
    r = post_steps(c, "h1", _hist_steps(range(64, 96), BIG))  # half a block, merged twice
    assert r.status_code == 200, r.text
    r = post_steps(c, "h1", _hist_steps(range(96, 128), BIG))
    assert r.status_code == 200, r.text
    r = post_steps(c, "h1", _hist_steps(range(100, 110), BIG))  # a replay: the block is recomputed
    assert r.status_code == 200, r.text
    for _ in range(2):  # 128 more blocks of large but unsaturated sums: their total passes int64
        assert post_steps(c, "h2", _hist_steps(range(_ * 4096, (_ + 1) * 4096), 2**55)).status_code == 200
    h = c.get("/api/v1/runs/h1/histogram")
    assert h.status_code == 200, h.text
    assert h.json()["counts"] == [128 * BIG] * LOG_RATIO_HIST_BINS and h.json()["steps"] == 128
    h = c.get("/api/v1/runs/h1/histogram", params={"from_step": 10, "to_step": 70})
    assert h.json()["counts"] == [61 * BIG] * LOG_RATIO_HIST_BINS
    h = c.get("/api/v1/runs/h2/histogram")
    assert h.status_code == 200, h.text
    assert h.json()["counts"] == [8192 * 2**55] * LOG_RATIO_HIST_BINS and h.json()["steps"] == 8192
    assert c.get("/metrics").status_code == 200


@BOTH
def test_compare_summarises_values_whose_squares_overflow(service: httpx.Client) -> None:
    c = service
    big = [1e155, 3e200, 1.7e308, 1.7e308, 1.7e308, -1e308, 1e308, 1.5e308, 1.6e308, 1.7e308]
    steps = [{"step": s, "metrics": {"loss": v, "grad_norm": 1e-300 * (s + 1)}} for s, v in enumerate(big)]
    assert post_steps(c, "x1", steps).status_code == 200
    inf = [{"step": s, "metrics": {"loss": v}} for s, v in enumerate([1.0, 1e308, "Infinity"])]
    assert post_steps(c, "x2", inf).status_code == 200
    r = c.get("/api/v1/compare", params={"run": ["x1", "x2"], "metric": ["loss", "grad_norm"]})
    assert r.status_code == 200, r.text
    s1 = r.json()["runs"][0]["summary"]
    assert decode(s1["loss"]["mean_last_10pct"]) == 1.7e308  # the last step alone (10% of 10)
    assert decode(s1["loss"]["best"]) == -1e308 and decode(s1["loss"]["worst"]) == 1.7e308
    assert decode(r.json()["runs"][1]["summary"]["loss"]["mean_last_10pct"]) == math.inf
    many = [{"step": s, "metrics": {"loss": 1.7e308 if s % 2 else 1.5e308, "grad_norm": 1e-300}}
            for s in range(200)]
    assert post_steps(c, "x3", many).status_code == 200
    r = c.get("/api/v1/compare", params={"run": ["x3"], "metric": ["loss", "grad_norm"]})
    assert r.status_code == 200, r.text
    summary = r.json()["runs"][0]["summary"]
    assert math.isclose(decode(summary["loss"]["mean_last_10pct"]), 1.6e308, rel_tol=1e-12)
    assert math.isclose(decode(summary["grad_norm"]["mean_last_10pct"]), 1e-300, rel_tol=1e-12)
