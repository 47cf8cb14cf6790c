"""Ingest rate and query latency of the sapo-monitor service, side by side with an MLflow server.

For each database kind (SQLite, PostgreSQL) it starts ``sapo-monitor serve`` (uvicorn, one worker)
and an MLflow 3.17 tracking server (one worker, same database kind, installed into its own venv at
``.venv-mlflow`` on first use), then measures:

* ingest: the same catalogue-sized step records (every catalogue metric; sapo-monitor also gets the
  42-bin histogram) from one client; sapo-monitor in batches of 100 steps (gzip, as the client sends
  them), MLflow with ``log_batch`` (16 steps x 59 metrics per call: MLflow caps a call at 1,000 metrics);
* ingest of 70 metrics outside the catalogue (a user's own names), side by side with the catalogue row;
* queries: 4 runs x 100,000 steps, one metric downsampled to 1,000 points: sapo-monitor ``/series`` per
  run and ``/compare`` of the 4 runs; MLflow's sampled endpoint (``get-history-bulk-interval``, what its
  UI uses) and the full ``get_metric_history`` read once.

Prints a table and the ratios against the targets (>= 5,000 steps/s, >= 20x MLflow, compare p50 <= 250 ms).

    .venv/bin/python bench/ingest.py [--db sqlite,postgresql] [--steps 10000] [--query-steps 100000]
                                     [--rules/--no-rules] [--no-mlflow] [--mlflow-steps 1500] [--ingest-only]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sapo_monitor.client.wire import CATALOGUE, LOG_RATIO_HIST_BINS  # noqa: E402

from tests.alerts.traces import healthy_metrics  # noqa: E402
from tests.support.live import free_port  # noqa: E402
from tests.support.postgres import pg_database  # noqa: E402

MLFLOW_VENV = ROOT / ".venv-mlflow"
MLFLOW_SPEC = ["mlflow==3.17.2", "psycopg2-binary"]
QUERY_METRIC = "log_ratio.std"
console = Console(width=150)


# ---------------------------------------------------------------------------------------------- data
def records(run_seed: int, start: int, stop: int) -> list[dict]:
    """Catalogue-sized step records (wire form): every catalogue metric and the histogram.

    Values are those of a healthy run with noise (uniform random values would make every rule fire
    and clear every few steps, which measures alert churn rather than a run being watched)."""
    rng = random.Random(run_seed * 1_000_003 + start)
    out = []
    for s in range(start, stop):
        metrics = {k: 0.01 * rng.random() for k in CATALOGUE}
        metrics.update(healthy_metrics(s, rng))
        metrics[QUERY_METRIC] = 0.1 + 0.02 * rng.random() + (5.0 if s % 9973 == 0 else 0.0)
        out.append({"step": s, "time": 1.764e9 + s, "metrics": metrics,
                    "histograms": {"log_ratio": [rng.randrange(1000) for _ in range(LOG_RATIO_HIST_BINS)]}})
    return out


CUSTOM_METRICS = [f"user.metric_{k:02d}" for k in range(70)]  # a user's own names (TRL's are outside too)


def custom_records(start: int, stop: int) -> list[dict]:
    """Steps of 70 metrics outside the catalogue (no histogram): the custom-metrics ingest row."""
    rng = random.Random(start)
    return [{"step": s, "time": 1.764e9 + s, "metrics": {k: rng.random() for k in CUSTOM_METRICS}}
            for s in range(start, stop)]


def body(recs: list[dict]) -> bytes:
    return gzip.compress(json.dumps({"schema": 1, "steps": recs}, separators=(",", ":")).encode(), 5)


# ------------------------------------------------------------------------------------------ databases
@contextmanager
def database(kind: str, tmp: Path, label: str) -> Iterator[tuple[str, str]]:
    """``(sapo_url, mlflow_url)`` of a fresh database of ``kind``."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/{label}.db", f"sqlite:///{tmp}/{label}-mlflow.db"
        return
    with pg_database() as sapo_url, pg_database() as mlflow_url:
        yield sapo_url, mlflow_url.replace("postgresql://", "postgresql+psycopg2://", 1)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextmanager
def process_group(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A server in its own process group (MLflow starts helpers: stop them all)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------- sapo-monitor
def bench_sapo(url: str, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "SAPO_MONITOR_RULES": "on" if args.rules else "off"}
    cli = str(Path(sys.executable).with_name("sapo-monitor"))
    cmd = [cli, "serve", "--db", url, "--port", str(port), "--workers", "1", "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    res: dict[str, float] = {}
    with process_group(cmd, env, tmp / f"sapo-{port}.log") as proc:
        wait_http(base + "/readyz", proc)
        bodies = [body(records(0, s, s + 100)) for s in range(0, args.steps, 100)]
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
            c.post("/api/v1/runs/warmup/steps", content=bodies[0]).raise_for_status()
            t0 = time.perf_counter()
            for b in bodies:
                c.post("/api/v1/runs/ingest/steps", content=b).raise_for_status()
            res["ingest_steps_s"] = args.steps / (time.perf_counter() - t0)
            custom = [body(custom_records(s, s + 100)) for s in range(0, args.steps, 100)]
            c.post("/api/v1/runs/warmup-custom/steps", content=custom[0]).raise_for_status()
            t0 = time.perf_counter()
            for b in custom:
                c.post("/api/v1/runs/ingest-custom/steps", content=b).raise_for_status()
            res["ingest_custom_steps_s"] = args.steps / (time.perf_counter() - t0)
            if args.ingest_only:
                return res
            runs = [f"q{k}" for k in range(4)]
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"loading 4 x {args.query_steps} steps", total=4 * args.query_steps)
                for k, run in enumerate(runs):
                    for s in range(0, args.query_steps, 2500):
                        c.post(f"/api/v1/runs/{run}/steps",
                               content=body(records(k + 1, s, min(s + 2500, args.query_steps)))).raise_for_status()
                        progress.advance(task, 2500)
            series, compare = [], []
            for _ in range(args.repeat):
                for run in runs:
                    t0 = time.perf_counter()
                    r = c.get(f"/api/v1/runs/{run}/series", params={"metric": QUERY_METRIC, "max_points": 1000})
                    series.append(time.perf_counter() - t0)
                    r.raise_for_status()
                t0 = time.perf_counter()
                r = c.get("/api/v1/compare", params={"run": runs, "metric": QUERY_METRIC, "max_points": 1000})
                compare.append(time.perf_counter() - t0)
                r.raise_for_status()
            pts = r.json()["metrics"][QUERY_METRIC]
            spikes = sum(1 for v in r.json()["metrics"][QUERY_METRIC]["values"]["q0"] if v is not None and v > 4)
            res["series_p50_ms"] = 1000 * statistics.median(series)
            res["compare_p50_ms"] = 1000 * statistics.median(compare)
            res["compare_points"] = len(pts["step"])
            res["spikes_kept"] = spikes
            res["spikes_total"] = len(range(0, args.query_steps, 9973))
    return res


# ------------------------------------------------------------------------------------------- MLflow
def ensure_mlflow() -> Path:
    py = MLFLOW_VENV / "bin" / "python"
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        console.print(f"installing {' '.join(MLFLOW_SPEC)} into {MLFLOW_VENV} (once)")
        subprocess.run(["python3", "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *MLFLOW_SPEC], check=True)
    return py


# Runs inside the MLflow venv: logs the records with log_batch, and reads metric history back.
MLFLOW_CLIENT = r'''
import json, statistics, sys, time
import requests
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
uri, steps, query_steps, repeat, metric_key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
recs = json.load(open(sys.argv[6]))
c = MlflowClient(uri)
exp = c.create_experiment("bench")
run = c.create_run(exp).info.run_id
per_call = 1000 // len(recs[0]["metrics"])
out = {}
t0 = time.perf_counter()
for i in range(0, steps, per_call):
    batch = []
    for r in recs[i:i + per_call]:
        ts = int(r["time"] * 1000)
        batch += [Metric(k, v, ts, r["step"]) for k, v in r["metrics"].items()]
    c.log_batch(run, metrics=batch)
out["ingest_steps_s"] = steps / (time.perf_counter() - t0)
runs = []
for k in range(4):
    rid = c.create_run(exp).info.run_id
    runs.append(rid)
    for s in range(0, query_steps, 1000):
        c.log_batch(rid, metrics=[Metric(metric_key, 0.1 + (5.0 if x % 9973 == 0 else 0.0), 0, x)
                                  for x in range(s, min(s + 1000, query_steps))])
lat = []
for _ in range(repeat):
    t0 = time.perf_counter()
    r = requests.get(uri + "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                     params={"run_ids": runs, "metric_key": metric_key, "max_results": 1000}, timeout=600)
    r.raise_for_status()
    lat.append(time.perf_counter() - t0)
out["bulk_interval_p50_ms"] = 1000 * statistics.median(lat)
t0 = time.perf_counter()
n = sum(len(c.get_metric_history(rid, metric_key)) for rid in runs)
out["full_history_s"] = time.perf_counter() - t0
out["full_history_points"] = n
print("RESULT " + json.dumps(out))
'''


def bench_mlflow(url: str, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    py = ensure_mlflow()
    port = free_port()
    cmd = [str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--backend-store-uri", url, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp / "mlartifacts")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAPO_MONITOR_")}
    with process_group(cmd, env, tmp / f"mlflow-{port}.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=300)
        recs_file = tmp / "mlflow-records.json"
        recs = [{"step": r["step"], "time": r["time"], "metrics": r["metrics"]} for r in records(0, 0, args.mlflow_steps)]
        recs_file.write_text(json.dumps(recs))
        console.print(f"MLflow ({url.split(':')[0]}): logging {args.mlflow_steps} steps and 4 x {args.query_steps} "
                      "points (slow: that is the point)")
        done = subprocess.run(
            [str(py), "-c", MLFLOW_CLIENT, f"http://127.0.0.1:{port}", str(args.mlflow_steps), str(args.query_steps),
             str(args.repeat), QUERY_METRIC, str(recs_file)],
            env=env, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"MLflow client failed:\n{done.stderr[-3000:]}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite,postgresql", help="Comma-separated database kinds.")
    p.add_argument("--steps", type=int, default=10_000, help="Steps for the ingest rate (batches of 100).")
    p.add_argument("--query-steps", type=int, default=100_000, help="Steps per run for the query latency.")
    p.add_argument("--repeat", type=int, default=7, help="Repetitions of each query (p50 reported).")
    p.add_argument("--rules", action=argparse.BooleanOptionalAction, default=True,
                   help="Evaluate the alert rules on ingest (SAPO_MONITOR_RULES).")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True, help="Run the MLflow baseline.")
    p.add_argument("--mlflow-steps", type=int, default=1500, help="Steps MLflow ingests for its rate.")
    p.add_argument("--ingest-only", action="store_true",
                   help="Only the ingest rows (catalogue and custom metrics), no query latency.")
    args = p.parse_args()

    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="sapo-bench-") as d:
        tmp = Path(d)
        for kind in args.db.split(","):
            with database(kind, tmp, kind) as (sapo_url, mlflow_url):
                console.print(f"[bold]{kind}[/bold]: sapo-monitor (rules {'on' if args.rules else 'off'})")
                results.setdefault(kind, {})["sapo"] = bench_sapo(sapo_url, tmp, args)
                console.print(results[kind]["sapo"])
                if args.mlflow:
                    results[kind]["mlflow"] = bench_mlflow(mlflow_url, tmp, args)
                    console.print(results[kind]["mlflow"])

    table = Table(title=f"sapo-monitor vs MLflow 3.17.2 (one worker each; rules {'on' if args.rules else 'off'})")
    for col in ("database", "measure", "sapo-monitor", "MLflow", "ratio", "target"):
        table.add_column(col)
    for kind, r in results.items():
        s, m = r["sapo"], r.get("mlflow")
        ing = f"{m['ingest_steps_s']:.0f}" if m else "-"
        ratio = f"{s['ingest_steps_s'] / m['ingest_steps_s']:.0f}x" if m else "-"
        ok = "ok" if s["ingest_steps_s"] >= 5000 and (not m or s["ingest_steps_s"] >= 20 * m["ingest_steps_s"]) else "MISS"
        table.add_row(kind, "ingest steps/s", f"{s['ingest_steps_s']:.0f}", ing, ratio, f">= 5,000 and >= 20x: {ok}")
        cr = s["ingest_custom_steps_s"] / s["ingest_steps_s"]
        table.add_row(kind, "ingest steps/s, 70 custom metrics", f"{s['ingest_custom_steps_s']:.0f}", "",
                      f"{cr:.2f}x the catalogue row", "same fast path: ~1x")
        if "compare_p50_ms" not in s:
            continue
        mq = f"{m['bulk_interval_p50_ms']:.0f} ms" if m else "-"
        ratio = f"{m['bulk_interval_p50_ms'] / s['compare_p50_ms']:.1f}x faster" if m else "-"
        table.add_row(kind, "compare 4 runs, 1,000 pts (p50)", f"{s['compare_p50_ms']:.0f} ms", mq, ratio,
                      "<= 250 ms: " + ("ok" if s["compare_p50_ms"] <= 250 else "MISS"))
        table.add_row(kind, "series 1 run, 1,000 pts (p50)", f"{s['series_p50_ms']:.0f} ms",
                      f"full history 4 runs: {m['full_history_s']:.1f} s" if m else "-", "", "")
        table.add_row(kind, "spikes kept at 1,000 pts", f"{s['spikes_kept']:.0f}/{s['spikes_total']:.0f}", "", "", "")
    console.print(table)


if __name__ == "__main__":
    main()
