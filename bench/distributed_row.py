"""The 2-process rows of ``bench/client_overhead.py``: step time with every rank attached vs bare (both
variants in the same two processes, alternating, one gloo group), and the reduction's own cost: rank 0's
merge time per step, the bytes it receives per step, and a peer's time to encode and send its summary.

- ``distributed_row``: the bundled trainer's data-parallel mode (spawned processes).
- ``trl_distributed_row``: TRL's GRPOTrainer on 2 CPU processes started by torchrun (accelerate's MULTI_CPU
  mode, as in tests/distributed/test_trl.py), ``bench/trl_row.py``'s preset and clock (pairs of optimizer
  steps), ABBA rounds. This file is also each torchrun process's script (``trl-rank`` argument).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _timed(fn: Any, spent: list[float]) -> Any:
    def call(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    return call


def _worker(rank: int, world: int, out: Path, *, steps: int, repeats: int, server: str) -> dict[str, Any]:
    import logging

    import torch.distributed as dist
    from sapo_monitor.client.settings import ClientSettings
    from sapo_monitor.trainer import make_config
    from sapo_monitor.trainer.distributed import DistributedTrainer

    from sapo_monitor import client

    logging.getLogger("sapo_monitor").setLevel(logging.ERROR)
    times: dict[str, list[float]] = {"bare": [], "attached": []}
    cpu: dict[str, list[float]] = {"bare": [], "attached": []}  # this process's CPU time, all its threads
    reduce_s, recv_bytes, send_s, in_monitor = [], [], [], []
    DistributedTrainer(make_config("default", steps=4, warm_start_steps=0, seed=1)).train()  # warm-up
    for i in range(repeats):
        for variant in ("bare", "attached") if i % 2 == 0 else ("attached", "bare"):
            trainer = DistributedTrainer(make_config("default", steps=steps, warm_start_steps=0, seed=1))
            mon = None
            if variant == "attached":
                mon = client.attach(trainer, run=f"dp-bench-{time.time_ns()}-{i}" if rank == 0 else "dp-bench",
                                    project="bench", server=server,
                                    settings=ClientSettings(spool_dir=out / f"spool{rank}", close_timeout=2.0))
                spent = [0.0]
                mon.observe, mon.end_step = _timed(mon.observe, spent), _timed(mon.end_step, spent)
            dist.barrier()
            started, cpu_started = time.perf_counter(), time.process_time()
            trainer.train()
            times[variant].append((time.perf_counter() - started) / steps)
            if mon is not None:
                mon.flush(10.0)  # the reduction and delivery of these steps belong to them
            cpu[variant].append((time.process_time() - cpu_started) / steps)
            if mon is not None:
                mon.close()
                reducer = mon._reducer
                assert reducer is not None
                reduce_s.append(reducer.reduce_seconds / steps)
                recv_bytes.append(reducer.bytes_received / steps)
                send_s.append(reducer.send_seconds / steps)
                in_monitor.append(spent[0] / steps)
            dist.barrier()
    return {"times": times, "cpu": cpu, "monitor_s": in_monitor, "reduce_s": reduce_s, "bytes": recv_bytes, "send_s": send_s}


def _cpu_ratios(*per_rank: dict[str, list[float]]) -> dict[str, float]:
    """Median per-round attached / bare CPU-time ratio of each rank (steadier than wall time on a shared
    machine: other jobs' load does not land on this process's CPU clock)."""
    return {f"cpu_ratio{rank}": statistics.median(a / b for a, b in zip(c["attached"], c["bare"], strict=True))
            for rank, c in enumerate(per_rank)}


def distributed_row(server: str, workdir: Path, steps: int = 40, repeats: int = 4) -> dict[str, float]:
    """Medians over rounds: per-step wall of each variant (rank 0), attached / bare per round, reduction cost."""
    from tests.distributed.ranks import run_ranks

    r0, r1 = run_ranks(_worker, 2, workdir / "dp-bench", timeout=1200, steps=steps, repeats=repeats, server=server)
    bare, att = r0["times"]["bare"], r0["times"]["attached"]
    ratios = sorted(a / b for a, b in zip(att, bare, strict=True))
    return {
        "bare_s": statistics.median(bare), "attached_s": statistics.median(att),
        "ratio": statistics.median(ratios), "ratio_lo": ratios[0], "ratio_hi": ratios[-1],
        **_cpu_ratios(r0["cpu"], r1["cpu"]),
        "reduce_ms": statistics.median(r0["reduce_s"]) * 1e3, "bytes": statistics.median(r0["bytes"]),
        "send_ms": statistics.median(r1["send_s"]) * 1e3,
        # Wall time inside observe + end_step per step (the hook's direct cost; batched statistics included).
        "monitor_ms": statistics.median(r0["monitor_s"]) * 1e3, "peer_monitor_ms": statistics.median(r1["monitor_s"]) * 1e3,
    }


def _trl_rank(out: Path, server: str, steps: int, repeats: int) -> None:
    """One torchrun process: ABBA rounds of bare and attached GRPOTrainer runs; rank 0 writes the figures."""
    import logging

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trl_row import _step_pair_times

    logging.getLogger("sapo_monitor").setLevel(logging.ERROR)
    _step_pair_times(steps=2, attach=True, server=server)  # warm-up: imports, allocator, caches
    times: dict[str, list[float]] = {"bare": [], "attached": []}
    cpu: dict[str, list[float]] = {"bare": [], "attached": []}
    reductions: list[dict[str, float]] = []
    for i in range(repeats):
        for attach in (False, True) if i % 2 == 0 else (True, False):
            reduction: dict[str, float] = {}
            wall, cpu_pairs, spent = _step_pair_times(steps=steps, attach=attach, server=server, reduction=reduction)
            times["attached" if attach else "bare"].append(statistics.median(wall) / 2)
            cpu["attached" if attach else "bare"].append(statistics.median(cpu_pairs) / 2)
            if reduction:
                reductions.append({**reduction, "monitor_s": spent / steps})
    rank = int(os.environ.get("RANK", "0"))
    (out / f"trl-rank{rank}.json").write_text(json.dumps({"times": times, "cpu": cpu, "reductions": reductions}))


def trl_distributed_row(server: str, workdir: Path, steps: int = 10, repeats: int = 4) -> dict[str, float]:
    """Medians over rounds, per optimizer step: each variant's wall (rank 0), attached / bare, reduction cost."""
    from tests.distributed.ranks import free_port

    out = workdir / "trl-dp-bench"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HOME": str(out / "hf"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), __file__, "trl-rank", str(out), server, str(steps), str(repeats)]
    done = subprocess.run(cmd, env=env, timeout=3600, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}): {done.stderr[-2000:]}")
    r0, r1 = (json.loads((out / f"trl-rank{r}.json").read_text()) for r in range(2))
    bare, att = r0["times"]["bare"], r0["times"]["attached"]
    ratios = sorted(a / b for a, b in zip(att, bare, strict=True))
    return {
        "bare_s": statistics.median(bare), "attached_s": statistics.median(att),
        "ratio": statistics.median(ratios), "ratio_lo": ratios[0], "ratio_hi": ratios[-1],
        **_cpu_ratios(r0["cpu"], r1["cpu"]),
        "reduce_ms": statistics.median(r["reduce_s"] for r in r0["reductions"]) * 1e3,
        "bytes": statistics.median(r["bytes"] for r in r0["reductions"]),
        "send_ms": statistics.median(r["send_s"] for r in r1["reductions"]) * 1e3,
        # Wall time inside observe + end_step per step (rank 0's end_step waits for the merged record).
        "monitor_ms": statistics.median(r["monitor_s"] for r in r0["reductions"]) * 1e3,
        "peer_monitor_ms": statistics.median(r["monitor_s"] for r in r1["reductions"]) * 1e3,
    }


if __name__ == "__main__" and sys.argv[1:2] == ["trl-rank"]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: sapo_monitor, tests
    _trl_rank(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
