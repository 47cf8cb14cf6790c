"""What the client costs: printed as ratios against a baseline measured side by side in this run.

1. ``compute_step_stats`` vs the SAPO loss on the same [256, 2048] float32 tensors (target <= 5):
   against the loss's forward pass, and against forward + backward (what a training step spends on it).
2. The reference trainer's step time at the default preset: bare, with ``client.attach`` to a live
   service (the real one, uvicorn in a subprocess on a temporary SQLite database), and attached while
   the service is down (steps go to the spool; delivery retries in the background). Target <= 1.05.
3. The TRL row (``bench/trl_row.py``, owned by the TRL adapter): GRPOTrainer step time attached / bare.

Runs alternate in a rotating order (bare, up, down; up, down, bare; ...) so drifting machine load and
process state hit every variant alike; each figure is the median over repeats. torch uses one thread, as the trainer does by default.

    .venv/bin/python bench/client_overhead.py [--steps 40] [--repeats 3] [--no-trl]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def bench_stats_vs_loss(repeats: int = 15) -> dict[str, float]:
    from sapo_monitor.client.stats import compute_step_stats
    from sapo_monitor.trainer.losses import sapo

    g = torch.Generator().manual_seed(0)
    B, T = 256, 2048
    logp_old = -torch.rand(B, T, generator=g) * 5
    logp_new = logp_old + 0.05 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    mask = (torch.rand(B, T, generator=g) < 0.8).float()

    def loss_fwd() -> None:
        sapo(logp_new, logp_old, adv, mask).loss.item()

    def loss_fwd_bwd() -> None:
        leaf = logp_new.clone().requires_grad_(True)
        sapo(leaf, logp_old, adv, mask).loss.backward()

    def stats() -> None:
        compute_step_stats(logp_new, logp_old, adv, mask)

    fns = {"loss_fwd": loss_fwd, "loss_fwd_bwd": loss_fwd_bwd, "stats": stats}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.thread_time() - start_cpu)
    # Medians; CPU time of the calling thread is the steadier figure on a shared machine.
    return {**{name: statistics.median(v) for name, v in wall.items()},
            **{f"{name}_cpu": statistics.median(v) for name, v in cpu.items()}}


def _train_once(steps: int, server: str | None, spool: Path | None) -> tuple[float, float]:
    """Wall and process-CPU seconds per optimizer step of one default-preset run (warm start off; setup
    excluded). CPU time includes the client's background thread; it is steadier than wall time on a
    shared machine."""
    from sapo_monitor.client.settings import ClientSettings
    from sapo_monitor.trainer.train import Trainer, make_config

    from sapo_monitor import client

    trainer = Trainer(make_config("default", steps=steps, warm_start_steps=0, seed=1))
    monitor = None
    if spool is not None:
        settings = ClientSettings(spool_dir=spool, close_timeout=0.5)
        monitor = client.attach(trainer, run=f"bench-{time.time_ns()}", project="bench", server=server,
                                settings=settings)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if monitor is not None:
        monitor.close()
    return elapsed / steps, cpu / steps


def bench_trainer(steps: int, repeats: int, service_url: str, dead_url: str,
                  workdir: Path) -> dict[str, tuple[float, float]]:
    _train_once(max(4, steps // 4), None, None)  # warm-up: imports, allocator
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "up": [], "down": []}
    variants = {"bare": (None, None), "up": (service_url, workdir / "spool-up"),
                "down": (dead_url, workdir / "spool-down")}
    names = list(variants)
    for i in range(repeats):
        # Rotate the order each repeat: a variant that always ran last measured the process's drift too.
        for name in names[i % 3:] + names[:i % 3]:
            runs[name].append(_train_once(steps, *variants[name]))
    return {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per trainer run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median reported)")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import logging

    logging.getLogger("sapo_monitor").setLevel(logging.ERROR)  # the down variant warns, by design

    print("== compute_step_stats vs SAPO loss, [256, 2048] float32, CPU, 1 thread")
    s = bench_stats_vs_loss()
    print(f"  {'':28} {'wall ms':>8} {'CPU ms':>8}")
    for name, label in (("loss_fwd", "SAPO loss forward"), ("loss_fwd_bwd", "SAPO loss forward+backward"),
                        ("stats", "compute_step_stats")):
        print(f"  {label:28} {s[name] * 1e3:8.1f} {s[name + '_cpu'] * 1e3:8.1f}")
    for base, label in (("loss_fwd", "loss forward"), ("loss_fwd_bwd", "loss forward+backward")):
        print(f"  ratio stats / {label:22} wall {s['stats'] / s[base]:5.2f}   CPU {s['stats_cpu'] / s[base + '_cpu']:5.2f}"
              + ("   (target <= 5)" if base == "loss_fwd" else ""))

    from tests.client.service import LiveService
    from tests.support.live import free_port

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        service = LiveService(workdir).start()
        dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        try:
            print(f"\n== reference trainer, default preset, {args.steps} steps x {args.repeats} runs per variant")
            t = bench_trainer(args.steps, args.repeats, service.url, dead_url, workdir)
            (bw, bc) = t["bare"]
            print(f"  {'':24} {'wall ms/step':>12} {'ratio':>6}   {'CPU ms/step':>11} {'ratio':>6}")
            for name, label in (("bare", "bare"), ("up", "attached, service up"), ("down", "attached, service down")):
                w, c = t[name]
                print(f"  {label:24} {w * 1e3:12.1f} {w / bw:6.3f}   {c * 1e3:11.1f} {c / bc:6.3f}")
            print("  (target: attached / bare <= 1.05)")

            # ---- TRL row (owned by the TRL adapter: bench/trl_row.py) ------------------------------
            if not args.no_trl:
                print("\n== TRL GRPOTrainer (SAPO, tiny model, CPU)")
                try:
                    from trl_row import trl_row

                    row = trl_row(server=service.url)
                    print(f"  bare {row['bare_s'] * 1e3:.1f} ms/step, attached {row['attached_s'] * 1e3:.1f} ms/step,"
                          f"   ratio {row['ratio']:.3f}   (target <= 1.05)")
                    print(f"  CPU time: ratio {row['cpu_ratio']:.3f}; inside monitor calls "
                          f"{row['monitor_ms_per_step']:.2f} ms/step ({row['monitor_share'] * 100:.1f}% of the step)")
                except Exception as exc:  # the row is optional: trl may be missing
                    print(f"  skipped: {type(exc).__name__}: {exc}")
        finally:
            service.kill()


if __name__ == "__main__":
    main()
