"""Small steps computed a batch at a time (``stats_batch``): the same records, in order, nothing lost."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
import torch
from sapo_monitor.client import init
from sapo_monitor.client._spool import Spool
from sapo_monitor.client.settings import ClientSettings

from tests.client.test_stats import make_case


def _case(step: int, T: int = 7) -> dict:
    case = make_case(seed=100 + step, B=5, T=T, spread=0.05 * (1 + step % 4))
    if step % 5 == 3:
        case["logp_new"][0, 1] = float("nan")  # a non-finite token now and then
    return case


def _run(run_id, receiver, settings, stats_batch, cases):
    mon = init(run_id, server=receiver.url, settings=settings, stats_batch=stats_batch)
    returned = []
    for step, case in enumerate(cases):
        mon.observe(**case)
        returned.append(mon.end_step(step, loss=float(step), lr=1e-3))
    assert mon.flush(10)
    mon.close()
    return returned, receiver.steps[run_id]


def test_batched_steps_equal_steps_computed_one_by_one(receiver, fast_settings):
    # Shapes change now and then (T 7 -> 9 -> 7): a batch ends there and the order is kept.
    cases = [_case(s, T=9 if 8 <= s < 13 else 7) for s in range(30)]
    one_by_one, want = _run("imm", receiver, fast_settings, 1, cases)
    batched, got = _run("batched", receiver, fast_settings, 6, cases)
    assert all(r is not None for r in one_by_one)
    assert sum(r is None for r in batched) >= 20  # most steps waited for their batch
    assert sorted(got) == list(range(30))
    for step in range(30):
        have, expect = got[step], want[step]
        assert have["histograms"] == expect["histograms"]
        assert set(have["metrics"]) == set(expect["metrics"]), step
        for name, value in expect["metrics"].items():
            assert have["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (step, name)


def test_batched_steps_keep_copies_not_the_callers_tensors(receiver, fast_settings):
    mon = init("copies", server=receiver.url, settings=fast_settings, stats_batch=8)
    case = _case(0)
    mon.observe(**case)
    assert mon.end_step(0) is None
    before = case["logp_new"].clone()
    case["logp_new"].add_(5.0)  # the caller reuses its buffer after the step
    mon.close()
    ref = init("ref", server=receiver.url, settings=fast_settings)
    ref.observe(**{**case, "logp_new": before})
    want = ref.end_step(0)
    ref.close()
    assert receiver.steps["copies"][0]["metrics"]["ratio.mean"] == pytest.approx(want.metrics["ratio.mean"], rel=1e-12)


def test_several_micro_batches_a_step_are_computed_at_once_and_in_order(receiver, fast_settings):
    mon = init("micro", server=receiver.url, settings=fast_settings, stats_batch=4)
    for step in range(6):
        case = _case(step)
        if step == 2:  # two micro-batches: computed at end_step, after the steps that wait
            halves = [{k: v[:2] if v.dim() < 4 else v[:, :2] for k, v in case.items()},
                      {k: v[2:] if v.dim() < 4 else v[:, 2:] for k, v in case.items()}]
            for half in halves:
                mon.observe(**half)
            assert mon.end_step(step) is not None
        else:
            mon.observe(**case)
            mon.end_step(step)
    mon.close()
    got = receiver.steps["micro"]
    assert sorted(got) == list(range(6))
    assert got[2]["metrics"]["tokens.count"] == float(_case(2)["mask"].sum())


def test_a_bad_step_in_a_batch_is_refused_at_observe_and_the_others_survive(receiver, fast_settings, caplog):
    caplog.set_level(logging.WARNING)
    mon = init("bad", server=receiver.url, settings=fast_settings, stats_batch=4)
    for step in range(5):
        case = _case(step)
        if step == 1:
            case["mask"] = case["mask"][:, :-1]  # wrong shape: refused with the reason, step kept without stats
        mon.observe(**case)
        mon.end_step(step, loss=1.0)
    mon.close()
    got = receiver.steps["bad"]
    assert sorted(got) == list(range(5))
    assert "ratio.mean" not in got[1]["metrics"] and got[1]["metrics"]["loss"] == 1.0
    assert all("ratio.mean" in got[s]["metrics"] for s in (0, 2, 3, 4))
    assert any("mask" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_stats_batch_must_be_positive(fast_settings):
    from sapo_monitor.client import ConfigError

    with pytest.raises(ConfigError, match="stats_batch"):
        init("x", settings=fast_settings, stats_batch=0)


def test_large_steps_are_not_deferred(receiver, fast_settings):
    mon = init("large", server=receiver.url, settings=fast_settings, stats_batch=8)
    case = make_case(seed=3, B=16, T=2048, moe=False)
    mon.observe(**case)
    assert mon.end_step(0) is not None  # too large to gain from batching: computed at once
    mon.close()
    assert torch.isclose(torch.tensor(receiver.steps["large"][0]["metrics"]["tokens.count"]), case["mask"].sum())


def test_attach_to_the_bundled_trainer_batches_its_small_steps(fast_settings, monkeypatch):
    from sapo_monitor.client import attach
    from sapo_monitor.client.adapters.trainer import TRAINER_STATS_BATCH
    from sapo_monitor.trainer.train import Trainer, make_config

    monkeypatch.delenv("SAPO_MONITOR_STATS_BATCH", raising=False)
    trainer = Trainer(make_config("default", steps=5, warm_start_steps=0))
    mon = attach(trainer, run="batched", settings=fast_settings)
    assert mon.stats_batch == TRAINER_STATS_BATCH > 1
    returned = []
    end_step = mon.end_step
    mon.end_step = lambda *a, **k: returned.append(end_step(*a, **k))  # type: ignore[method-assign]
    trainer.train()
    mon.close()
    assert returned == [None] * 5  # every step waited for its batch ...
    spool = Spool(mon.spool_dir)
    steps = sorted(s["step"] for b in spool.pending() for s in json.loads(gzip.decompress(spool.read(b)))["steps"])
    assert steps == [1, 2, 3, 4, 5]  # ... and close() computed and kept them all
    explicit = attach(Trainer(make_config("default", steps=1, warm_start_steps=0)), run="one", settings=fast_settings,
                      stats_batch=1)
    assert explicit.stats_batch == 1
    explicit.close()
    monkeypatch.setenv("SAPO_MONITOR_STATS_BATCH", "4")  # the environment wins over the adapter's default
    from_env = attach(Trainer(make_config("default", steps=1, warm_start_steps=0)), run="env",
                      settings=ClientSettings(spool_dir=fast_settings.spool_dir))
    assert from_env.stats_batch == 4
    from_env.close()
