"""Ingest and queries over real HTTP, on SQLite and PostgreSQL: replays, concurrency, NaN/Inf,
downsampling that keeps spikes, compare summaries, histograms."""

from __future__ import annotations

import json
import math
import random
import threading

import httpx
import pytest
from sapo_monitor.service.storage.series import RAW_LIMIT

from .conftest import BOTH
from .util import batch, post_steps, series

pytestmark = BOTH


def test_replayed_and_overlapping_batches_never_double_a_step(service: httpx.Client) -> None:
    r = service.put("/api/v1/runs/rep", json={"project": "p", "algorithm": "sapo", "tags": {"seed": "1"}})
    assert r.status_code == 200, r.text
    assert service.put("/api/v1/runs/rep", json={"project": "p", "algorithm": "sapo"}).json()["tags"] == {"seed": "1"}
    first = batch(range(0, 300))
    assert post_steps(service, "rep", first).json()["accepted"] == 300
    assert post_steps(service, "rep", first, compress=True).status_code == 200  # the same batch again
    assert post_steps(service, "rep", batch(range(250, 400))).status_code == 200  # overlaps the first
    doc = series(service, "rep", "loss", "custom.x", max_points=100_000)
    assert doc["series"]["loss"]["step"] == list(range(400))
    assert doc["series"]["custom.x"]["value"] == [float(s) for s in range(400)]
    run = service.get("/api/v1/runs/rep").json()
    assert (run["first_step"], run["last_step"]) == (0, 399)
    assert run["latest"]["custom.x"] == 399.0 and run["latest_step"]["loss"] == 399
    page = service.get("/api/v1/runs", params={"project": "p", "tag": "seed:1"}).json()
    assert page["total"] == 1 and page["runs"][0]["run_id"] == "rep"
    # A replay with different values replaces the steps, and the downsampled view follows.
    post_steps(service, "rep", batch(range(100, 110), loss=50.0))
    down = series(service, "rep", "loss", max_points=10)["series"]["loss"]
    assert max(down["value"]) == 50.0 and 100 <= down["step"][down["value"].index(50.0)] < 110
    post_steps(service, "rep", batch(range(100, 110)))
    assert max(series(service, "rep", "loss", max_points=10)["series"]["loss"]["value"]) == 1.0


def test_concurrent_clients_into_one_run_lose_and_double_nothing(service: httpx.Client) -> None:
    base = str(service.base_url)
    errors: list[str] = []

    def client(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=base, timeout=60) as c:
            chunks = [list(range(s, s + 25)) for s in range(k * 200, k * 200 + 200, 25)]
            chunks += rng.sample(chunks, 3)  # replays, interleaved with the others' writes
            for chunk in chunks:
                r = post_steps(c, "conc", batch(chunk))
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    doc = series(service, "conc", "custom.x", max_points=100_000)["series"]["custom.x"]
    assert doc["step"] == list(range(800)) and doc["value"] == [float(s) for s in range(800)]
    # Rollups agree with the raw steps after interleaved writers (min/max of each 100-step bucket).
    down = series(service, "conc", "custom.x", max_points=16)["series"]["custom.x"]
    assert down["step"][0] == 0 and down["step"][-1] == 799 and 0.0 in down["value"] and 799.0 in down["value"]


def test_nan_and_infinities_round_trip(service: httpx.Client) -> None:
    steps = batch(range(5))
    steps[1]["metrics"].update({"loss": "NaN", "grad_norm": "Infinity", "custom.x": "-Infinity"})
    steps[2]["metrics"].update({"loss": "-Infinity", "custom.x": "NaN"})
    assert post_steps(service, "nf", steps).status_code == 200
    # Python's json writes bare NaN / Infinity tokens: accepted too.
    raw = json.dumps({"schema": 1, "steps": [{"step": 7, "metrics": {"loss": math.inf, "kl.k3": math.nan}}]})
    r = service.post("/api/v1/runs/nf/steps", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    doc = series(service, "nf", "loss", "grad_norm", "custom.x", "kl.k3")["series"]
    assert doc["loss"] == {"step": [0, 1, 2, 3, 4, 7], "value": [1.0, "NaN", "-Infinity", 0.25, 0.2, "Infinity"]}
    assert doc["grad_norm"] == {"step": [1], "value": ["Infinity"]}
    assert doc["custom.x"]["value"][:3] == [0.0, "-Infinity", "NaN"]
    assert doc["kl.k3"] == {"step": [7], "value": ["NaN"]}
    latest = service.get("/api/v1/runs/nf").json()["latest"]
    assert latest["loss"] == "Infinity" and latest["kl.k3"] == "NaN"
    # Downsampled, the non-finite points stay visible.
    down = series(service, "nf", "loss", max_points=3)["series"]["loss"]["value"]
    assert "NaN" in down and "-Infinity" in down and "Infinity" in down


def test_downsampling_keeps_one_step_spikes_at_any_max_points(service: httpx.Client) -> None:
    # 20,000 steps: above RAW_LIMIT, so buckets come from the per-block rollups.
    n, spike, dip, nan_at = 20_000, 13_457, 19_001, 2_345
    assert n > RAW_LIMIT
    for start in range(0, n, 5000):
        steps = [{"step": s, "metrics": {"log_ratio.std": 0.1 + 0.001 * math.sin(s)}} for s in range(start, start + 5000)]
        for rec in steps:
            if rec["step"] == spike:
                rec["metrics"]["log_ratio.std"] = 9.0
            elif rec["step"] == dip:
                rec["metrics"]["log_ratio.std"] = -5.0
            elif rec["step"] == nan_at:
                rec["metrics"]["log_ratio.std"] = "NaN"
        assert post_steps(service, "spiky", steps, compress=True).status_code == 200
    for max_points in (3, 4, 17, 100, 1000, 5000):
        doc = series(service, "spiky", "log_ratio.std", max_points=max_points)
        pts = doc["series"]["log_ratio.std"]
        assert len(pts["step"]) <= max_points
        assert pts["step"] == sorted(pts["step"])
        got = dict(zip(pts["step"], pts["value"], strict=True))
        assert got.get(spike) == 9.0 and got.get(dip) == -5.0 and got.get(nan_at) == "NaN", max_points
        assert doc["downsampling"]["method"] == "minmax" and doc["downsampling"]["bucket_steps"] >= n // max_points
    # A window inside the run: partial blocks at both ends, read from the raw steps.
    for max_points in (3, 4, 10):
        doc = series(service, "spiky", "log_ratio.std", from_step=13_400, to_step=13_500, max_points=max_points)
        pts = doc["series"]["log_ratio.std"]
        assert 9.0 in pts["value"] and min(pts["step"]) >= 13_400 and max(pts["step"]) <= 13_500
        assert len(pts["step"]) <= max_points


def test_compare_aligns_runs_and_summarises_with_deltas(service: httpx.Client) -> None:
    a = [{"step": s, "metrics": {"reward.mean": s / 100, "loss": 2.0 - s / 100}} for s in range(100)]
    b = [{"step": s, "metrics": {"reward.mean": s / 200, "loss": 1.0}} for s in range(0, 150)]
    b[70]["metrics"]["loss"] = "NaN"
    post_steps(service, "cmp-a", a)
    post_steps(service, "cmp-b", b)
    r = service.get("/api/v1/compare", params={"run": ["cmp-a", "cmp-b"], "metric": ["reward.mean", "loss"]})
    assert r.status_code == 200, r.text
    doc = r.json()
    sa, sb = (run["summary"] for run in doc["runs"])
    assert sa["reward.mean"]["best_is"] == "max" and sa["loss"]["best_is"] == "min"
    assert sa["reward.mean"] | {"delta": None} == {
        "first_step": 0, "last_step": 99, "first": 0.0, "last": 0.99, "best": 0.99, "best_step": 99,
        "worst": 0.0, "worst_step": 0, "mean_last_10pct": pytest.approx(sum(range(90, 100)) / 1000),
        "best_is": "max", "delta": None,
    }
    assert sb["reward.mean"]["last_step"] == 149 and sb["reward.mean"]["last"] == 149 / 200
    assert sb["reward.mean"]["delta"]["last"] == pytest.approx(149 / 200 - 0.99)
    assert sb["reward.mean"]["delta"]["mean_last_10pct"] == pytest.approx(
        sum(range(135, 150)) / 200 / 15 - sum(range(90, 100)) / 1000)
    assert sb["loss"]["best"] == 1.0 and sb["loss"]["mean_last_10pct"] == 1.0
    aligned = doc["metrics"]["loss"]
    assert aligned["step"] == list(range(150))
    assert aligned["values"]["cmp-a"][120] is None and aligned["values"]["cmp-b"][70] == "NaN"
    r = service.get("/api/v1/compare", params={"run": ["cmp-a", "nope-1", "nope-2"], "metric": "loss"})
    assert r.status_code == 404 and "nope-1" in r.text and "nope-2" in r.text


def test_histogram_sums_a_step_window(service: httpx.Client) -> None:
    post_steps(service, "hist", batch(range(0, 200)))
    doc = service.get("/api/v1/runs/hist/histogram", params={"from_step": 10, "to_step": 150}).json()
    assert doc["steps"] == 141 and len(doc["counts"]) == 42 and len(doc["edges"]) == 43
    assert doc["edges"][0] == "-Infinity" and doc["edges"][-1] == "Infinity"
    assert doc["counts"] == [sum(s % 3 for s in range(10, 151))] * 42
    whole = service.get("/api/v1/runs/hist/histogram").json()
    assert whole["counts"][0] == sum(s % 3 for s in range(200)) and whole["steps"] == 200


def test_delete_run_removes_everything(service: httpx.Client) -> None:
    post_steps(service, "gone", batch(range(70)))
    assert service.delete("/api/v1/runs/gone").status_code == 204
    assert service.get("/api/v1/runs/gone").status_code == 404
    post_steps(service, "gone", batch(range(3)))  # a fresh run under the same id starts empty
    assert series(service, "gone", "loss")["series"]["loss"]["step"] == [0, 1, 2]
