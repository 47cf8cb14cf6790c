"""Rank 0's collector against a peer that is live but late once (one process holds both ends of a real c10d
HashStore): that step is recorded without it, and the peer is waited for again from the next step on."""

from __future__ import annotations

import time

import torch.distributed as dist
from sapo_monitor.client._distributed import RankReducer, StoreExchange
from sapo_monitor.client.stats import StepAccumulator

from tests.client.test_stats import make_case


def exchange(store: dist.Store, rank: int) -> StoreExchange:
    ex = StoreExchange.__new__(StoreExchange)  # the group-free part: rank, size and the store
    ex.rank, ex.size, ex._store = rank, 2, dist.PrefixStore("sapo_monitor/test/", store)
    return ex


def summary(seed: int):
    acc = StepAccumulator()
    acc.add(**make_case(seed, B=4, T=8))
    return acc.summaries()[0]


def test_a_late_peer_is_left_out_once_then_waited_for_again():
    store = dist.HashStore()
    records, warnings = [], []
    reducer = RankReducer(exchange(store, 0), emit=records.append, warn=lambda k, m: warnings.append(k), timeout=0.5)
    peer = exchange(store, 1)
    steps = 6
    # As in data-parallel training (the gradient all-reduce keeps ranks within a step): rank 0's summary of
    # each step first, the peer's 50 ms later, except step 0, which the peer finishes 0.8 s late, once
    # (rank 0's next step waits for it in the all-reduce).
    for step in range(steps):
        reducer.submit(step, 0.0, summary(step), {})
        time.sleep(0.8 if step == 0 else 0.05)
        peer.send(step, summary(100 + step).encode())
    assert reducer.flush(30.0)
    reducer.close()
    reporting = [r.metrics["ranks_reporting"] for r in records]
    # Step 0 without the late peer; from step 1 on, with it (it had written the step it missed). Before,
    # a missed peer was only checked, never waited for, and being 50 ms behind it missed every step.
    assert reporting == [1.0] + [2.0] * (steps - 1)
    assert warnings == ["rank-1"]
    assert not store.check(["sapo_monitor/test/0/1"])  # the late summary of the missed step was discarded
