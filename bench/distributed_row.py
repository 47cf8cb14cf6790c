"""The 2-process bundled-trainer row of ``bench/client_overhead.py``: step time with every rank attached vs
bare (both in the same two processes, alternating, one gloo group), and the reduction's own cost: rank 0's
merge time per step, the bytes it receives per step, and a peer's time to encode and send its summary."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any


def _worker(rank: int, world: int, out: Path, *, steps: int, repeats: int, server: str) -> dict[str, Any]:
    import logging

    import torch.distributed as dist
    from sapo_monitor.client.settings import ClientSettings
    from sapo_monitor.trainer import make_config
    from sapo_monitor.trainer.distributed import DistributedTrainer

    from sapo_monitor import client

    logging.getLogger("sapo_monitor").setLevel(logging.ERROR)
    times: dict[str, list[float]] = {"bare": [], "attached": []}
    reduce_s, recv_bytes, send_s = [], [], []
    DistributedTrainer(make_config("default", steps=4, warm_start_steps=0, seed=1)).train()  # warm-up
    for i in range(repeats):
        for variant in ("bare", "attached") if i % 2 == 0 else ("attached", "bare"):
            trainer = DistributedTrainer(make_config("default", steps=steps, warm_start_steps=0, seed=1))
            mon = None
            if variant == "attached":
                mon = client.attach(trainer, run=f"dp-bench-{time.time_ns()}-{i}" if rank == 0 else "dp-bench",
                                    project="bench", server=server,
                                    settings=ClientSettings(spool_dir=out / f"spool{rank}", close_timeout=2.0))
            dist.barrier()
            started = time.perf_counter()
            trainer.train()
            times[variant].append((time.perf_counter() - started) / steps)
            if mon is not None:
                mon.close()
                reducer = mon._reducer
                assert reducer is not None
                reduce_s.append(reducer.reduce_seconds / steps)
                recv_bytes.append(reducer.bytes_received / steps)
                send_s.append(reducer.send_seconds / steps)
            dist.barrier()
    return {"times": times, "reduce_s": reduce_s, "bytes": recv_bytes, "send_s": send_s}


def distributed_row(server: str, workdir: Path, steps: int = 40, repeats: int = 4) -> dict[str, float]:
    """Medians over rounds: per-step wall of each variant (rank 0), attached / bare per round, reduction cost."""
    from tests.distributed.ranks import run_ranks

    r0, r1 = run_ranks(_worker, 2, workdir / "dp-bench", timeout=1200, steps=steps, repeats=repeats, server=server)
    bare, att = r0["times"]["bare"], r0["times"]["attached"]
    ratios = sorted(a / b for a, b in zip(att, bare, strict=True))
    return {
        "bare_s": statistics.median(bare), "attached_s": statistics.median(att),
        "ratio": statistics.median(ratios), "ratio_lo": ratios[0], "ratio_hi": ratios[-1],
        "reduce_ms": statistics.median(r0["reduce_s"]) * 1e3, "bytes": statistics.median(r0["bytes"]),
        "send_ms": statistics.median(r1["send_s"]) * 1e3,
    }
