"""What alert-rule evaluation costs on ingest, end to end over HTTP.

Starts the service (uvicorn, one worker) twice on the same kind of database, once with
``SAPO_MONITOR_RULES=on`` (the built-in pack) and once with ``off``, and posts the same batches of
100 catalogue-sized step records (every catalogue metric plus the 42-bin histogram, gzip) to each,
alternating, several rounds; prints steps/s and the added ingest time (wall clock), and the service
process's CPU time per step (steadier than wall time when other work shares the machine).

``--packs`` also times the pure evaluation (``evaluate_batch``, no HTTP, no database) of the pack before
issue 12 (``baseline``, loaded from git as ``bench/detection.py`` does) and of this checkout's pack
(``current``) side by side on the same records, alternating rounds, CPU time of this process.

    .venv/bin/python bench/rules_overhead.py [--db sqlite|postgresql|both|none] [--steps 5000] [--rounds 3] [--packs]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sapo_monitor.client.wire import CATALOGUE, StepRecord, encode_batch

from tests.alerts.server import service_process
from tests.alerts.traces import healthy_metrics
from tests.support.postgres import drop_pg_database, new_pg_database


def step_metrics(n_steps: int) -> list[dict[str, float]]:
    """Healthy catalogue-sized steps: ``healthy_metrics`` for the metrics it knows; every other catalogue
    metric at a steady level of its own with 5 % noise (a fresh uniform draw per step would be a metric
    jumping by orders of magnitude, which the baseline-relative rules rightly flag, so the bench would
    time alert writes instead of evaluation)."""
    rng = random.Random(0)
    levels = {k: 0.01 * (0.1 + rng.random()) for k in CATALOGUE}
    out = []
    for s in range(1, n_steps + 1):
        m = {k: v * (1.0 + 0.05 * (2.0 * rng.random() - 1.0)) for k, v in levels.items()}
        m.update(healthy_metrics(s, rng))
        out.append(m)
    return out


def batches(n_steps: int, size: int = 100) -> list[bytes]:
    rng = random.Random(1)
    steps = step_metrics(n_steps)
    return [encode_batch([StepRecord(s, time.time(), steps[s - 1], {"log_ratio": [rng.randrange(500) for _ in range(42)]})
                          for s in range(start, min(start + size, n_steps + 1))])
            for start in range(1, n_steps + 1, size)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): steadier than wall time on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def ingest(base: str, bodies: list[bytes], pid: int | None = None) -> tuple[float, float]:
    """(wall seconds, service CPU seconds) to ingest ``bodies`` into a new run."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=base, timeout=60) as c:
        c.put(f"/api/v1/runs/{run}", json={"project": "bench", "algorithm": "sapo"}).raise_for_status()
        cpu0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        for body in bodies:
            c.post(f"/api/v1/runs/{run}/steps", content=body,
                   headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}).raise_for_status()
        return time.perf_counter() - t0, (cpu_seconds(pid) - cpu0 if pid else 0.0)


def measure(kind: str, n_steps: int, rounds: int) -> None:
    bodies = batches(n_steps)
    urls, drops = {}, []
    for mode in ("off", "on"):
        if kind == "sqlite":
            urls[mode] = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
        else:
            name, urls[mode] = new_pg_database()
            drops.append(name)
    procs = {mode: service_process(urls[mode], SAPO_MONITOR_RULES=mode, SAPO_MONITOR_DELIVERY_WORKER="false").start()
             for mode in ("off", "on")}
    try:
        for proc in procs.values():
            proc.wait_ready(30)
            ingest(proc.url, bodies[:5])  # warm up
        times: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(rounds):
            for mode in ("off", "on"):
                wall, used = ingest(procs[mode].url, bodies, procs[mode].pid)
                times[mode].append(wall)
                cpu[mode].append(used)
    finally:
        for proc in procs.values():
            proc.stop()
        for name in drops:
            drop_pg_database(name)
    # Best of the rounds: on a shared machine the minimum is the least disturbed measurement.
    off, on = min(times["off"]), min(times["on"])
    coff, con = min(cpu["off"]), min(cpu["on"])
    print(f"{kind:10s}  wall: no rules {n_steps / off:7,.0f} steps/s, rules {n_steps / on:7,.0f} steps/s "
          f"({100 * (on / off - 1):+5.1f}%)   service CPU per step: {1e6 * coff / n_steps:5.0f} us vs "
          f"{1e6 * con / n_steps:5.0f} us ({100 * (con / coff - 1):+5.1f}%)   "
          f"[best of {rounds} alternating rounds x {n_steps} steps, batches of 100]")


def step_inputs(pack: object, n_steps: int) -> list[list[object]]:
    """The steps of ``step_metrics`` as ``pack``'s ``StepInput`` lists, one per batch of 100."""
    steps = step_metrics(n_steps)
    return [[pack.step_input(step=s, time=float(s), metrics=steps[s - 1])  # type: ignore[attr-defined]
             for s in range(start, min(start + 100, n_steps + 1))] for start in range(1, n_steps + 1, 100)]


def measure_packs(n_steps: int, rounds: int) -> None:
    """Pure evaluation cost per step, pack before issue 12 vs this checkout's, best of alternating rounds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from detection_replay import load_baseline, load_current

    packs = [load_baseline(), load_current()]
    inputs = {p.name: step_inputs(p, n_steps) for p in packs}
    best = {p.name: float("inf") for p in packs}
    fired = {p.name: 0 for p in packs}
    for _ in range(rounds):
        for p in packs:
            state = p.new_state()
            t0 = time.process_time()
            for batch in inputs[p.name]:
                fired[p.name] += len(p.evaluate_batch(p.rules, state, "bench", batch))
            best[p.name] = min(best[p.name], time.process_time() - t0)
    b, c = (1e6 * best[p.name] / n_steps for p in packs)
    print(f"pure loop   evaluate_batch CPU per step: baseline ({len(packs[0].rules)} rules) {b:5.1f} us, "
          f"current ({len(packs[1].rules)} rules) {c:5.1f} us ({c / b:.2f}x); alert transitions per round "
          f"{fired['baseline'] // rounds} vs {fired['current'] // rounds}   "
          f"[best of {rounds} alternating rounds x {n_steps} healthy catalogue steps, batches of 100]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="both", choices=["sqlite", "postgresql", "both", "none"],
                    help="Database kind of the HTTP measurement (none: skip it).")
    ap.add_argument("--steps", type=int, default=5000, help="Steps per round.")
    ap.add_argument("--rounds", type=int, default=3, help="Alternating rounds per mode.")
    ap.add_argument("--packs", action="store_true", help="Also time the pure evaluation, old pack vs new.")
    args = ap.parse_args()
    if args.packs:
        measure_packs(args.steps, max(args.rounds, 5))
    for kind in {"both": ["sqlite", "postgresql"], "none": []}.get(args.db, [args.db]):
        measure(kind, args.steps, args.rounds)


if __name__ == "__main__":
    main()
