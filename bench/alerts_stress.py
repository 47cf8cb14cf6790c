"""Which built-in rules fire, and at which steps, for SAPO, GRPO, GSPO and PG under ``--preset stress``.

Runs the bundled trainer with the client attached to a real service (SQLite, in a thread) and prints,
per algorithm, every alert that fired (rule, severity, first step, resolve step) and the run's first
warning and first critical ("collapse") step, from the compare summary.

    .venv/bin/python bench/alerts_stress.py [--steps 300] [--algos sapo,grpo,gspo,pg] [--preset stress]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.trainer.train import Trainer, make_config

from sapo_monitor import client
from tests.alerts.server import live_service


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="Optimizer steps per run.")
    ap.add_argument("--algos", default="sapo,grpo,gspo,pg", help="Comma-separated algorithms.")
    ap.add_argument("--preset", default="stress", help="Trainer preset.")
    args = ap.parse_args()
    algos = [a for a in args.algos.split(",") if a]
    with tempfile.TemporaryDirectory() as tmp, live_service(f"sqlite:///{tmp}/bench.db") as base, \
            httpx.Client(base_url=base, timeout=60) as c:
        for algo in algos:
            t0 = time.time()
            trainer = Trainer(make_config(args.preset, algo=algo, steps=args.steps))
            settings = ClientSettings(spool_dir=Path(tmp) / algo, flush_interval=0.2, close_timeout=60.0)
            mon = client.attach(trainer, run=f"{algo}-{args.preset}", project="bench", server=base, settings=settings)
            summary = trainer.train()
            mon.close(timeout=60)
            print(f"# {algo}: {args.steps} steps in {time.time() - t0:.0f}s; reward {summary.reward_first:.3f} -> "
                  f"{summary.reward_last:.3f}, entropy {summary.entropy_first:.2f} -> {summary.entropy_last:.2f}",
                  flush=True)
        runs = [f"{a}-{args.preset}" for a in algos]
        cmp = c.get("/api/v1/compare", params={"run": runs, "metric": "reward.mean"}).json()
        print(f"\n## Alerts under --preset {args.preset}, {args.steps} steps\n")
        print("| run | first warning step | first critical step | fired (rule@step, * = critical) |")
        print("|---|---|---|---|")
        for run in cmp["runs"]:
            alerts = c.get(f"/api/v1/runs/{run['run_id']}/alerts").json()["transitions"]
            fired = [f"{t['rule']}@{t['step']}{'*' if t['severity'] == 'critical' else ''}"
                     for t in alerts if t["to_state"] == "firing"]
            print(f"| {run['run_id']} | {run['first_warning_step']} | {run['first_critical_step']} | {', '.join(fired)} |")


if __name__ == "__main__":
    main()
