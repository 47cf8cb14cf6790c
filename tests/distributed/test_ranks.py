"""Data-parallel monitoring on real processes (gloo, 127.0.0.1): rank 0's one record per step covers every
rank's tokens; a stalled or killed rank leaves records marked partial and never holds training up."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from sapo_monitor.client import wire
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.client.stats import compute_step_stats

from sapo_monitor import client
from tests.client.test_stats import assert_matches, make_case
from tests.distributed.ranks import run_ranks

STEPS = 5
EXTRA = {"loss", "ranks_reporting", "ranks_total"}


def rank_case(step: int, rank: int, scenario: str) -> dict[str, torch.Tensor]:
    case = make_case(seed=1000 * step + rank, B=6, T=16)
    if scenario == "faults" and rank == 1:
        case["logp_new"][2, 0] = math.nan  # column 0 is always masked
    if scenario == "faults" and rank == 2:
        case["logp_new"][3, 0] = case["logp_old"][3, 0] + 9.0
    return case


def micro_batches(case: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [{k: v[:, rows] if k.startswith("experts") else v[rows] for k, v in case.items()}
            for rows in (slice(0, 4), slice(4, None))]


def monitor_worker(rank: int, world: int, out: Path, *, server: str, scenario: str, odd: int = -1) -> dict[str, Any]:
    settings = ClientSettings(spool_dir=out / f"spool{rank}", flush_interval=0.05, max_backoff=0.2, timeout=2.0,
                              close_timeout=10.0)
    mon = client.init(run=f"dp-{scenario}", server=server, settings=settings, rank_timeout=1.0, strict=True)
    # The live ranks keep in step as data-parallel training does (its gradient all-reduce): without it a
    # live rank could drift any distance behind rank 0 on a loaded machine and miss the timeout for real.
    lockstep = dist.new_group([r for r in range(world) if r != odd], backend="gloo")
    step_seconds = []
    for step in range(STEPS):
        if rank == odd and step == 2:
            if scenario == "killed":
                os._exit(3)
            time.sleep(2.5)  # stalled past rank_timeout
        if rank != odd:
            dist.barrier(group=lockstep)
        started = time.perf_counter()
        for batch in micro_batches(rank_case(step, rank, scenario)):
            mon.observe(**batch)
        mon.end_step(step, loss=float(step))
        step_seconds.append(time.perf_counter() - started)
    if rank == 0:  # keep the store (hosted here) up until the peers are done with it
        mon.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(list(out.glob("done*"))) < world - 1 - (scenario == "killed"):
            time.sleep(0.05)
    else:
        mon.close()
        (out / f"done{rank}").write_text("")
    return {"spool": (out / f"spool{rank}").exists(), "max_step_s": max(step_seconds), "rank": mon.rank}


def reference(step: int, ranks: list[int], scenario: str) -> dict:
    cases = [rank_case(step, r, scenario) for r in ranks]
    return compute_step_stats(**{k: torch.cat([c[k] for c in cases], 1 if k.startswith("experts") else 0)
                                 for k in cases[0]})


def records(receiver, run: str) -> dict[int, dict]:
    out = {}
    for step, doc in receiver.steps.get(run, {}).items():
        stats: dict[str, Any] = {k: wire.decode_float(v) for k, v in doc["metrics"].items()}
        stats["hist.log_ratio"] = doc["histograms"]["log_ratio"]
        out[step] = stats
    return out


def stats_only(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in EXTRA}


@pytest.mark.parametrize(("world", "scenario"), [(2, "plain"), (3, "faults")])
def test_rank0_record_covers_every_rank(world, scenario, receiver, tmp_path):
    results = run_ranks(monitor_worker, world, tmp_path, server=receiver.url, scenario=scenario)
    assert [r["rank"] for r in results] == list(range(world))
    assert [r["spool"] for r in results] == [True] + [False] * (world - 1)  # peers keep no spool
    got = records(receiver, f"dp-{scenario}")
    assert sorted(got) == list(range(STEPS))  # exactly one record per optimizer step
    for step, rec in got.items():
        assert (rec["ranks_reporting"], rec["ranks_total"]) == (world, world)
        assert rec["loss"] == step
        assert_matches(stats_only(rec), reference(step, list(range(world)), scenario), exact_quantiles=True)
    if scenario == "faults":  # a NaN on rank 1 only, an extreme ratio on rank 2 only
        assert all(rec["nonfinite.token_count"] == 1 for rec in got.values())
        assert all(rec["log_ratio.abs_max"] == pytest.approx(9.0, rel=1e-9) for rec in got.values())


@pytest.mark.parametrize("scenario", ["stalled", "killed"])
def test_a_missing_rank_leaves_partial_records_and_never_blocks(scenario, receiver, tmp_path):
    results = run_ranks(monitor_worker, 3, tmp_path, server=receiver.url, scenario=scenario, odd=2)
    assert results[0] is not None and results[1] is not None
    assert results[0]["max_step_s"] < 0.5 and results[1]["max_step_s"] < 0.5  # nobody waited for rank 2
    got = records(receiver, f"dp-{scenario}")
    assert sorted(got) == list(range(STEPS))
    for step, rec in got.items():
        # Rank 1 is live throughout: it is in every record, also after rank 2's wait on step 2 (which once
        # used up rank 1's time on the steps queued behind it, when the time counted from rank 0's summary).
        reporting = [0, 1, 2] if step < 2 else [0, 1]
        assert (rec["ranks_reporting"], rec["ranks_total"]) == (len(reporting), 3), step
        # Built from the ranks that arrived: nothing doubled, nothing from the missing rank.
        assert_matches(stats_only(rec), reference(step, reporting, scenario), exact_quantiles=True)
