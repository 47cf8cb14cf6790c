"""The TRL row of ``bench/client_overhead.py``: GRPOTrainer step time with ``client.attach`` vs bare.

Both runs use the same seed, so they do identical work (attaching never changes training); the
ratio isolates what the adapter and the client add per optimizer step. Runs alternate
(bare, attached, bare, ...) after a warm-up so that drifting machine load hits both sides alike;
the figure is the median over repeats of each run's mean step time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "trl"))


def _run_once(*, steps: int, attach: bool, server: str | None) -> float:
    """Mean seconds per optimizer step of one training run (setup excluded)."""
    import tinyrl  # the offline tiny-model harness shared with the TRL tests

    from sapo_monitor import client

    with tempfile.TemporaryDirectory() as tmp:
        trainer = tinyrl.make_trainer(tmp, num_iterations=2, max_steps=steps, logging_steps=steps)
        monitor = None
        if attach:
            spool = None if server else str(Path(tmp) / "spool")
            monitor = client.attach(trainer, run=f"bench-trl-{time.time_ns()}", project="bench",
                                    server=server, spool_dir=spool)
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
        if monitor is not None:
            monitor.close()
    return elapsed / steps


def trl_row(*, steps: int = 40, repeats: int = 3, server: str | None = None) -> dict[str, Any]:
    """``{"bare_s": .., "attached_s": .., "ratio": ..}`` per optimizer step (target ratio <= 1.05)."""
    _run_once(steps=max(steps // 4, 2), attach=True, server=server)  # warm-up: imports, allocator, caches
    bare, attached = [], []
    for _ in range(repeats):
        bare.append(_run_once(steps=steps, attach=False, server=server))
        attached.append(_run_once(steps=steps, attach=True, server=server))
    b, a = statistics.median(bare), statistics.median(attached)
    return {"bare_s": b, "attached_s": a, "ratio": a / b, "steps": steps, "repeats": repeats}


if __name__ == "__main__":
    row = trl_row()
    print(f"TRL GRPOTrainer (SAPO, tiny model, CPU): bare {row['bare_s'] * 1e3:.1f} ms/step, "
          f"attached {row['attached_s'] * 1e3:.1f} ms/step, ratio {row['ratio']:.3f} (target <= 1.05)")
