"""TRL's GRPOTrainer on 2 CPU processes: attached on both, rank 0's records cover both processes'
micro-batches, and the statistics mirrored into TRL's logs are the merged ones.

The processes are started by ``torch.distributed.run`` (torchrun), which is what ``accelerate launch
--multi_gpu`` runs too: ``accelerate launch --cpu`` starts several CPU processes only through ``mpirun``,
which this machine does not have. Accelerate's state sees torchrun's environment and joins a gloo group
(its MULTI_CPU mode), as it would under ``accelerate launch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sapo_monitor.client.adapters.trl import MIRROR_KEYS, MIRROR_PREFIX
from sapo_monitor.client.stats import StatsConfig, compute_step_stats

from tests.client.test_stats import assert_matches
from tests.distributed.ranks import free_port
from tests.distributed.test_ranks import records, stats_only
from tests.trl.capture import concat_step

pytest.importorskip("trl")

SCRIPT = Path(__file__).with_name("trl_rank.py")


def test_trl_two_processes_one_merged_record_per_step(tmp_path, receiver):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(SCRIPT), str(tmp_path), receiver.url]
    done = subprocess.run(cmd, env=env, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (tmp_path / "spool1").exists()  # the second process keeps no spool
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    cfg = StatsConfig(**rank0["stats_config"])
    observed = [torch.load(tmp_path / f"observed-r{r}.pt") for r in range(2)]
    got = records(receiver, "trl-dp")
    assert sorted(got) == [1, 2, 3]  # one record per optimizer step
    for step, rec in got.items():
        assert (rec["ranks_reporting"], rec["ranks_total"]) == (2, 2)
        batch = concat_step(observed[0][step] + observed[1][step])  # both processes' micro-batches
        whole = compute_step_stats(config=cfg, **batch)
        assert_matches({k: v for k, v in stats_only(rec).items() if k not in ("grad_norm", "lr")}, whole,
                       exact_quantiles=True)
        mirrored = rank0["mirrored"][str(step)]
        assert mirrored == {MIRROR_PREFIX + k: pytest.approx(rec[k]) for k in MIRROR_KEYS if k in rec}
