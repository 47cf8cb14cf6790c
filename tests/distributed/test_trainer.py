"""The bundled trainer's data-parallel mode (2 gloo ranks): the same seed gives the same run with and
without the monitor, and rank 0's records equal one computation of both ranks' mini-batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.client.stats import compute_step_stats
from sapo_monitor.trainer import make_config
from sapo_monitor.trainer.distributed import DistributedTrainer, launch

from tests.client.test_stats import assert_matches
from tests.distributed.ranks import run_ranks
from tests.distributed.test_ranks import records, stats_only

CONFIG = dict(steps=6, seed=3, prompts_per_rollout=4, group_size=4, minibatch_size=8, warm_start_steps=2,
              n_layer=1, n_embd=32, moe=True)
TENSORS = ("logp_new", "logp_old", "advantages", "mask", "entropy", "rewards", "logp_rollout",
           "experts_old", "experts_new")


def train_worker(rank: int, world: int, out: Path, *, server: str | None) -> dict[str, Any]:
    trainer = DistributedTrainer(make_config("default", **CONFIG))
    mon = None
    if server is not None:
        from sapo_monitor.client import attach

        settings = ClientSettings(spool_dir=out / f"spool{rank}", flush_interval=0.05, timeout=2.0)
        mon = attach(trainer, run="dp-trainer", server=server, settings=settings)

        @trainer.add_observer
        def keep(batch: Any) -> None:  # this rank's tensors, for the reference computation
            torch.save({k: getattr(batch, k) for k in TENSORS}, out / f"r{rank}-s{batch.step}.pt")

    summary = trainer.train()
    if mon is not None:
        mon.close()
    return {"loss": [e.loss for e in summary.history], "grad_norm": [e.grad_norm for e in summary.history]}


def test_same_seed_same_run_with_and_without_the_monitor(receiver, tmp_path):
    bare = launch(make_config("default", **CONFIG), 2)  # what `sapo-monitor train --nproc 2` runs
    attached = run_ranks(train_worker, 2, tmp_path / "attached", server=receiver.url)
    # Training unchanged by the monitor, and every rank takes the same (averaged-gradient) step.
    assert [e.loss for e in bare.history] == attached[0]["loss"]
    assert [e.grad_norm for e in bare.history] == attached[0]["grad_norm"] == attached[1]["grad_norm"]

    got = records(receiver, "dp-trainer")
    assert sorted(got) == list(range(1, CONFIG["steps"] + 1))  # one record per optimizer step
    for step, rec in got.items():
        parts = [torch.load(tmp_path / "attached" / f"r{r}-s{step}.pt") for r in range(2)]
        whole = compute_step_stats(**{k: torch.cat([p[k] for p in parts], 1 if k.startswith("experts") else 0)
                                      for k in TENSORS})
        assert (rec["ranks_reporting"], rec["ranks_total"]) == (2, 2)
        assert_matches({k: v for k, v in stats_only(rec).items() if k not in ("grad_norm", "lr")}, whole,
                       exact_quantiles=True)
