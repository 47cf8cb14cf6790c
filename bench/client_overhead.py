"""What the client costs: printed as ratios against a baseline measured side by side in this run.

1. ``compute_step_stats`` vs the SAPO loss on the same [256, 2048] float32 tensors (target <= 5):
   against the loss's forward pass, and against forward + backward (what a training step spends on it).
2. The reference trainer's step time at the default preset: bare, with ``client.attach`` to a live
   service (the real one, uvicorn in a subprocess on a temporary SQLite database), and attached while
   the service is down (steps go to the spool; delivery retries in the background). Target <= 1.05.
3. The 2-process bundled trainer and the 2-process TRL GRPOTrainer (``bench/distributed_row.py``):
   data-parallel step time with every rank attached vs bare, and the reduction's own time and bytes per step.
4. The TRL row (``bench/trl_row.py``, owned by the TRL adapter): GRPOTrainer step time attached / bare.

Runs go in rounds, one run per variant, in a rotating order (bare, up, down; up, down, bare; ...) so
drifting machine load and process state hit every variant alike. A ratio is the median over rounds of
(variant / the same round's bare run): on a shared VM whole runs of identical work differ by 10-20%, so
the quartiles are printed too. "In hook" is the time spent inside the trainer's observer hook (the
trainer's copies for observers, observe, end_step, batched statistics): the client's direct cost,
steady where wall-clock ratios are not. The paired section removes most of that drift: a bare and an
attached trainer (identical work) take turns step by step in one process, and each times its own steps.
torch uses one thread, as the trainer does by default.

    .venv/bin/python bench/client_overhead.py [--steps 60] [--repeats 9] [--paired-steps 150]
                                              [--paired-repeats 6] [--no-trl] [--no-distributed]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


def _train_once(steps: int, server: str | None, spool: Path | None) -> tuple[float, float, float]:
    """Wall and process-CPU seconds per optimizer step of one default-preset run (warm start off; setup
    excluded), and the seconds per step spent inside the trainer's observer hook (the client's direct
    cost: the trainer's copies for observers, observe, end_step). CPU time includes the client's
    background thread."""
    from sapo_monitor.client.settings import ClientSettings
    from sapo_monitor.trainer.train import Trainer, make_config

    from sapo_monitor import client

    trainer = Trainer(make_config("default", steps=steps, warm_start_steps=0, seed=1))
    monitor = None
    hook = [0.0]
    if spool is not None:
        settings = ClientSettings(spool_dir=spool, close_timeout=0.5)
        monitor = client.attach(trainer, run=f"bench-{time.time_ns()}", project="bench", server=server,
                                settings=settings)
        notify = trainer._notify

        def timed_notify(make_batch):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            notify(make_batch)
            hook[0] += time.perf_counter() - start

        trainer._notify = timed_notify  # type: ignore[method-assign]
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    if monitor is not None:
        hook_start = time.perf_counter()
        monitor.flush(0)  # computes the steps still waiting for their batch (part of the cost); no waiting
        hook[0] += time.perf_counter() - hook_start
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if monitor is not None:
        monitor.close()
    return elapsed / steps, cpu / steps, hook[0] / steps


def bench_trainer(steps: int, repeats: int, service_url: str, dead_url: str,
                  workdir: Path) -> dict[str, dict[str, float]]:
    """Per variant: median wall and CPU per step, the median of the per-round ratios to the bare run of
    the same round (machine drift cancels within a round), their spread, and the in-hook cost."""
    _train_once(max(4, steps // 4), None, None)  # warm-up: imports, allocator
    runs: dict[str, list[tuple[float, float, float]]] = {"bare": [], "up": [], "down": []}
    variants = {"bare": (None, None), "up": (service_url, workdir / "spool-up"),
                "down": (dead_url, workdir / "spool-down")}
    names = list(variants)
    for i in range(repeats):
        # Rotate the order each round: a variant that always ran last measured the process's drift too.
        for name in names[i % 3:] + names[:i % 3]:
            runs[name].append(_train_once(steps, *variants[name]))
    out: dict[str, dict[str, float]] = {}
    for name, v in runs.items():
        ratios = sorted(w / b[0] for (w, _, _), b in zip(v, runs["bare"], strict=True))
        cpu_ratios = sorted(c / b[1] for (_, c, _), b in zip(v, runs["bare"], strict=True))
        out[name] = {
            "wall": statistics.median(w for w, _, _ in v), "cpu": statistics.median(c for _, c, _ in v),
            "ratio": statistics.median(ratios), "cpu_ratio": statistics.median(cpu_ratios),
            "ratio_lo": ratios[len(ratios) // 4], "ratio_hi": ratios[(3 * len(ratios)) // 4],
            "hook": statistics.median(h for _, _, h in v),
        }
    return out


class _Turns:
    """Trainers in threads that take strict turns, one optimizer step each, each timing its own steps."""

    def __init__(self, n: int) -> None:
        self.turn, self.done = 0, [False] * n
        self.times: list[list[float]] = [[] for _ in range(n)]
        self.cv = threading.Condition()

    def wait(self, i: int) -> float:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == i)
        return time.perf_counter()

    def pass_on(self, i: int, started: float | None) -> None:
        if started is not None:
            self.times[i].append(time.perf_counter() - started)
        with self.cv:
            nxt = (i + 1) % len(self.done)
            while self.done[nxt] and nxt != i:
                nxt = (nxt + 1) % len(self.done)
            self.turn = nxt
            self.cv.notify_all()


def _paired_once(steps: int, server: str | None, spool: Path, attached_first: bool) -> float:
    """One bare and one attached trainer (same config and seed: identical work) alternate optimizer steps;
    returns attached / bare time summed over the steps after a short warm-up."""
    from sapo_monitor.client.settings import ClientSettings
    from sapo_monitor.trainer.train import Trainer, make_config

    from sapo_monitor import client

    bare, attached = (Trainer(make_config("default", steps=steps, warm_start_steps=0, seed=1)) for _ in range(2))
    monitor = client.attach(attached, run=f"paired-{time.time_ns()}", project="bench", server=server,
                            settings=ClientSettings(spool_dir=spool, close_timeout=0.5))
    order = [attached, bare] if attached_first else [bare, attached]
    turns = _Turns(2)

    def body(i: int, trainer: Any) -> None:
        started = [turns.wait(i)]

        def step_done(_: Any) -> None:
            turns.pass_on(i, started[0])
            started[0] = turns.wait(i)

        try:
            trainer.train(progress=step_done)
            if trainer is attached:
                monitor.flush(0)  # the steps still waiting for their batch are part of the cost
                turns.times[i][-1] += time.perf_counter() - started[0]
        finally:
            with turns.cv:
                turns.done[i] = True
            turns.pass_on(i, None)

    threads = [threading.Thread(target=body, args=(i, t)) for i, t in enumerate(order)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    monitor.close()
    warm = min(10, steps // 4)
    t_att, t_bare = (sum(turns.times[order.index(t)][warm:]) for t in (attached, bare))
    return t_att / t_bare


def bench_paired(steps: int, repeats: int, service_url: str, dead_url: str, workdir: Path) -> dict[str, list[float]]:
    """attached / bare from trainers taking turns step by step (drift cancels within a step pair), roles'
    order swapped every repeat."""
    out: dict[str, list[float]] = {"up": [], "down": []}
    for i in range(repeats):
        for name, url in (("up", service_url), ("down", dead_url)):
            out[name].append(_paired_once(steps, url, workdir / f"paired-{name}-{i}", attached_first=i % 2 == 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per trainer run")
    parser.add_argument("--repeats", type=int, default=9, help="rounds (one run per variant each; medians reported)")
    parser.add_argument("--paired-steps", type=int, default=150, help="optimizer steps per paired run")
    parser.add_argument("--paired-repeats", type=int, default=6, help="paired runs per variant (median reported)")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL row")
    parser.add_argument("--no-distributed", action="store_true", help="skip the 2-process data-parallel row")
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
            bare_wall = t["bare"]["wall"]
            print(f"  {'':24} {'wall ms/step':>12} {'ratio':>6} {'(quartiles)':>13}   {'CPU ratio':>9}"
                  f"   {'in hook ms/step':>15} {'share':>6}")
            for name, label in (("bare", "bare"), ("up", "attached, service up"), ("down", "attached, service down")):
                r = t[name]
                print(f"  {label:24} {r['wall'] * 1e3:12.1f} {r['ratio']:6.3f} ({r['ratio_lo']:.3f}-{r['ratio_hi']:.3f})"
                      f"   {r['cpu_ratio']:9.3f}   {r['hook'] * 1e3:15.3f} {r['hook'] / bare_wall * 100:5.1f}%")
            print("  (target: attached / bare <= 1.05; ratios are medians of per-round ratios to the same round's"
                  " bare run)")

            print(f"\n== the same, paired: a bare and an attached trainer take turns step by step, "
                  f"{args.paired_steps} steps x {args.paired_repeats} pairs")
            paired = bench_paired(args.paired_steps, args.paired_repeats, service.url, dead_url, workdir)
            for name, label in (("up", "attached, service up"), ("down", "attached, service down")):
                r = sorted(paired[name])
                print(f"  {label:24} attached / bare {statistics.median(r):6.3f}   (pairs: "
                      + " ".join(f"{x:.3f}" for x in r) + ")")

            # ---- 2-process bundled trainer (data parallel, bench/distributed_row.py) ------------------
            if not args.no_distributed:
                print("\n== reference trainer, 2 data-parallel ranks (gloo), default preset, every rank attached")
                from distributed_row import distributed_row

                d = distributed_row(service.url, workdir, steps=args.steps // 2 or 1, repeats=max(2, args.repeats // 3))
                print(f"  bare {d['bare_s'] * 1e3:.1f} ms/step, attached {d['attached_s'] * 1e3:.1f} ms/step,"
                      f"   ratio {d['ratio']:.3f} ({d['ratio_lo']:.3f}-{d['ratio_hi']:.3f})   (target <= 1.05)")
                print(f"  CPU time attached / bare: rank 0 {d['cpu_ratio0']:.3f}, rank 1 {d['cpu_ratio1']:.3f};"
                      f" inside monitor calls: rank 0 {d['monitor_ms']:.2f} ms/step, rank 1 {d['peer_monitor_ms']:.2f}")
                print(f"  reduction: rank 0 merges in {d['reduce_ms']:.2f} ms/step off the training thread, receives "
                      f"{d['bytes'] / 1024:.1f} KiB/step; rank 1 encodes and sends in {d['send_ms']:.2f} ms/step")

                print("\n== TRL GRPOTrainer, 2 processes (torchrun, gloo), tiny model, every process attached")
                try:
                    from distributed_row import trl_distributed_row

                    d = trl_distributed_row(service.url, workdir, repeats=max(2, args.repeats // 2))
                    print(f"  bare {d['bare_s'] * 1e3:.1f} ms/step, attached {d['attached_s'] * 1e3:.1f} ms/step,"
                          f"   ratio {d['ratio']:.3f} ({d['ratio_lo']:.3f}-{d['ratio_hi']:.3f})   (target <= 1.05)")
                    print(f"  CPU time attached / bare: rank 0 {d['cpu_ratio0']:.3f}, rank 1 {d['cpu_ratio1']:.3f};"
                          f" inside monitor calls: rank 0 {d['monitor_ms']:.1f} ms/step (its end_step waits for the"
                          f" merged record, for TRL's logs), rank 1 {d['peer_monitor_ms']:.1f} ms/step")
                    print(f"  reduction: rank 0 merges in {d['reduce_ms']:.2f} ms/step off the training thread, "
                          f"receives {d['bytes'] / 1024:.1f} KiB/step; rank 1 encodes and sends in "
                          f"{d['send_ms']:.2f} ms/step")
                except Exception as exc:  # the row is optional: trl may be missing
                    print(f"  skipped: {type(exc).__name__}: {exc}")

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
