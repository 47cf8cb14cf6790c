"""The TRL row of ``bench/client_overhead.py``: GRPOTrainer step time with ``client.attach`` vs bare.

Both variants use the same seed, so they do identical training work (attaching never changes
training); the ratio isolates what the adapter and the client add per optimizer step. After a
warm-up, runs go in ABBA order (bare, attached, attached, bare, ...), so machine load that drifts
during the bench hits both sides alike. With
``num_iterations=2`` steps alternate between "generate + train" and "train on the same rollouts",
so the unit timed is a pair of optimizer steps (from ``on_step_begin`` of the first to
``on_step_end`` of the second). Two clocks: wall time, and the CPU time of this process (all its
threads, so the client's delivery thread is counted). On a shared machine other processes' load
lands on the wall clock at random; the CPU clock is what this process itself spent, so its ratio
is the steadier figure. Also reported: the wall time spent inside the monitor's calls
(``observe`` + ``end_step``) as a share of the attached step.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.trl.tinyrl

# Still a toy (the ~1M-parameter model of the tests), but with GRPO-like shapes: 8 completions per
# prompt of up to 32 tokens. At the tests' 4 x 8 tokens a step is so short that the monitor's fixed
# per-step cost (a few ms of small tensor ops) dominates; a real model's step is seconds.
PRESET: dict[str, Any] = {
    "num_iterations": 2,
    "per_device_train_batch_size": 8,
    "num_generations": 8,
    "max_completion_length": 32,
}


def _step_pair_times(
    *, steps: int, attach: bool, server: str | None, reduction: dict[str, float] | None = None
) -> tuple[list[float], list[float], float]:
    """Wall and CPU seconds per pair of optimizer steps of one run, and wall seconds inside monitor calls.

    ``reduction``: filled, on a data-parallel run, with the reducer's own figures (bench/distributed_row.py)."""
    from transformers import TrainerCallback

    from sapo_monitor import client
    from tests.trl import tinyrl  # the offline tiny-model harness shared with the TRL tests

    pairs: list[float] = []
    cpu_pairs: list[float] = []
    in_monitor = [0.0]

    class PairClock(TrainerCallback):
        start = cpu_start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step % 2 == 0:
                self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step % 2 == 0:
                pairs.append(time.perf_counter() - self.start)
                cpu_pairs.append(time.process_time() - self.cpu_start)

    def timed(fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                in_monitor[0] += time.perf_counter() - t0

        return call

    with tempfile.TemporaryDirectory() as tmp:
        trainer = tinyrl.make_trainer(tmp, max_steps=steps, logging_steps=steps, **PRESET)
        monitor = None
        if attach:
            monitor = client.attach(trainer, run=f"bench-trl-{time.time_ns()}", project="bench",
                                    server=server, spool_dir=str(Path(tmp) / "spool"))  # never ~/.cache
            monitor.observe, monitor.end_step = timed(monitor.observe), timed(monitor.end_step)
        trainer.add_callback(PairClock())  # after the adapter's callback: its end_step is inside the clock
        trainer.train()
        if monitor is not None:
            monitor.close()
            reducer = monitor._reducer
            if reduction is not None and reducer is not None:
                reduction.update(reduce_s=reducer.reduce_seconds / steps, bytes=reducer.bytes_received / steps,
                                 send_s=reducer.send_seconds / steps)
    return pairs, cpu_pairs, in_monitor[0]


def trl_row(*, steps: int = 20, repeats: int = 6, server: str | None = None) -> dict[str, Any]:
    """Per optimizer step: ``bare_s``, ``attached_s``, ``ratio`` (target <= 1.05), ``monitor_share``."""
    _step_pair_times(steps=4, attach=True, server=server)  # warm-up: imports, allocator, caches
    bare: list[float] = []
    attached: list[float] = []
    bare_cpu: list[float] = []
    attached_cpu: list[float] = []
    in_monitor = 0.0
    for i in range(repeats):
        for attach in (False, True) if i % 2 == 0 else (True, False):
            wall, cpu, spent = _step_pair_times(steps=steps, attach=attach, server=server)
            (attached if attach else bare).extend(wall)
            (attached_cpu if attach else bare_cpu).extend(cpu)
            in_monitor += spent
    b, a = statistics.median(bare) / 2, statistics.median(attached) / 2
    return {
        "bare_s": b,
        "attached_s": a,
        "ratio": a / b,
        "bare_cpu_s": statistics.median(bare_cpu) / 2,
        "attached_cpu_s": statistics.median(attached_cpu) / 2,
        "cpu_ratio": statistics.median(attached_cpu) / statistics.median(bare_cpu),
        "monitor_share": in_monitor / sum(attached),
        "monitor_ms_per_step": in_monitor / (repeats * steps) * 1e3,
        "steps": steps,
        "repeats": repeats,
    }


if __name__ == "__main__":
    import logging

    logging.getLogger("sapo_monitor").setLevel(logging.ERROR)
    row = trl_row()
    print(f"== TRL GRPOTrainer (SAPO, tiny model, CPU, offline spool), {PRESET}")
    print(f"  wall: bare {row['bare_s'] * 1e3:.1f} ms/step, attached {row['attached_s'] * 1e3:.1f} ms/step, "
          f"ratio {row['ratio']:.3f}   (target <= 1.05)")
    print(f"  CPU:  bare {row['bare_cpu_s'] * 1e3:.1f} ms/step, attached {row['attached_cpu_s'] * 1e3:.1f} ms/step, "
          f"ratio {row['cpu_ratio']:.3f}   (target <= 1.05)")
    print(f"  inside monitor calls {row['monitor_ms_per_step']:.2f} ms/step "
          f"= {row['monitor_share'] * 100:.1f}% of the attached step")
