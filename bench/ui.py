"""How fast the web UI shows long runs, measured in Debian's chromium through Playwright.

Starts ``sapo-monitor serve`` (one worker, SQLite by default) on a fresh database, ingests 4 runs of
``--steps`` steps (100,000 by default; the run page's ~45 metrics plus the log-ratio histogram, one
one-step spike per run), then measures, ``--repeat`` times each (median and max printed):

* run page: navigation to every chart drawn (``#view[data-ready]``) for one run, split into the time
  the API calls took (first request sent to last answer, from the browser's resource timings) and the
  rest (browser: parsing, scripts, drawing); also the same API calls timed alone from Python (server);
* compare: 4 runs on one page, the same split;
* zoom: a drag selecting 1,000 steps on the run page until every chart is redrawn at full resolution;
* size: the page's JavaScript and CSS, gzipped (what the browser downloads).

The medians are of repeated views of the same runs, which do not change during the bench: the service
keeps a run's series pieces while the run is unchanged, so those views are warm; the first view of
each page, right after the service started (cold caches, server and browser), is reported apart.

Targets (issue 14): run page <= 1.0 s, compare <= 1.0 s, zoom <= 200 ms, JS+CSS <= 300 KB gzipped.

    .venv/bin/python bench/ui.py [--steps 100000] [--repeat 5] [--db URL]

With ``--db`` naming a database that already holds the 4 runs at ``--steps`` steps (from an earlier
run with the same ``--db``), the ingest is skipped, so repeated measurements take seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "service" / "ui" / "static"
CHROMIUM = os.environ.get("SAPO_MONITOR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
console = Console(width=130)
RUNS = [f"ui-bench-{i}" for i in range(4)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def family_metrics() -> list[str]:
    """The metrics the run page charts (read from the page's own list, families.js), in order."""
    names: list[str] = []
    for group in re.findall(r"metrics: \[([^\]]*)\]", (STATIC / "families.js").read_text()):
        names += [m for m in re.findall(r'"([a-z0-9_.]+)"', group) if m not in names]
    return names


def records(seed: int, start: int, stop: int, metrics: list[str], spike: int) -> bytes:
    rng = random.Random(seed * 7_919 + start)
    out = []
    for s in range(start, stop):
        m = {k: 0.5 + 0.1 * rng.random() for k in metrics}
        if s == spike:
            m["grad_norm"] = 1_000.0
        hist = [rng.randrange(50) for _ in range(42)]
        out.append({"step": s, "time": 1.764e9 + s, "metrics": m, "histograms": {"log_ratio": hist}})
    return gzip.compress(json.dumps({"schema": 1, "steps": out}, separators=(",", ":")).encode(), 5)


def ingested(base: str, steps: int) -> bool:
    """Whether the 4 runs are there already with ``steps`` steps each (a reused ``--db``)."""
    for run in RUNS:
        r = httpx.get(f"{base}/api/v1/runs/{run}", timeout=30)
        if r.status_code != 200 or r.json()["last_step"] != steps - 1:
            return False
    return True


def ingest(base: str, steps: int) -> float:
    metrics = family_metrics()
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, timeout=300) as c, Progress(console=console) as bar:
        task = bar.add_task("ingesting 4 runs", total=4 * steps)
        for i, run in enumerate(RUNS):
            c.put(f"/api/v1/runs/{run}", json={"project": "bench", "name": run, "algorithm": "sapo"}).raise_for_status()
            for lo in range(0, steps, 2000):
                hi = min(steps, lo + 2000)
                c.post(f"/api/v1/runs/{run}/steps", content=records(i, lo, hi, metrics, steps // 2 + 17 * i),
                       headers=headers).raise_for_status()
                bar.advance(task, hi - lo)
    return time.perf_counter() - t0


API_SPAN = """() => { const r = performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/'));
  if (!r.length) return [0, 0]; const a = Math.min(...r.map(e => e.requestStart || e.startTime));
  const b = Math.max(...r.map(e => e.responseEnd)); return [b - a, Math.max(...r.map(e => e.responseStart - e.requestStart))]; }"""


def page_load(ctx, url: str) -> tuple[float, float, float, int]:  # type: ignore[no-untyped-def]
    """(total ms from navigation to charts drawn, API span ms, longest single API wait ms, the points
    per series the page asked for)."""
    page = ctx.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("#view[data-ready='1']", timeout=60_000)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        total = (time.perf_counter() - t0) * 1000
        span, wait = page.evaluate(API_SPAN)
        return total, span, wait, int(page.get_attribute("#view", "data-max-points") or 1500)
    finally:
        page.close()


ZOOM = """async (steps) => {
  const c = window.sapoCharts.get('grad_norm'); const u = c.u; const view = document.getElementById('view');
  const mid = (u.scales.x.min + u.scales.x.max) / 2; const loaded = Number(view.dataset.loaded);
  const left = u.valToPos(mid, 'x'), width = u.valToPos(mid + steps, 'x') - left;
  const t0 = performance.now();
  u.setSelect({left, top: 0, width: Math.max(width, 3), height: u.bbox.height / devicePixelRatio}, true);
  while (Number(view.dataset.loaded) === loaded) await new Promise(r => setTimeout(r, 2));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const p = new URLSearchParams(location.hash.split('?')[1]);
  return [performance.now() - t0, Number(p.get('to')) - Number(p.get('from')) + 1, Number(c.box.dataset.points)];
}"""


def zoom(ctx, base: str, steps: int) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    page = ctx.new_page()
    try:
        page.goto(f"{base}/#/run/{RUNS[0]}")
        page.wait_for_selector("#view[data-ready='1']", timeout=60_000)
        return tuple(page.evaluate(ZOOM, steps))  # type: ignore[return-value]
    finally:
        page.close()


def server_only(base: str, run_points: int, compare_points: int) -> tuple[float, float]:
    """The run page's and the compare page's API calls from Python, one after another (ms), with the
    points per series the pages asked for."""
    metrics = family_metrics()
    with httpx.Client(base_url=base + "/api/v1", timeout=120) as c:
        t0 = time.perf_counter()
        c.get(f"/runs/{RUNS[0]}").raise_for_status()
        c.get(f"/runs/{RUNS[0]}/metrics").raise_for_status()
        c.get(f"/runs/{RUNS[0]}/series", params={"metric": metrics, "max_points": run_points}).raise_for_status()
        c.get(f"/runs/{RUNS[0]}/alert-bands").raise_for_status()
        c.get(f"/runs/{RUNS[0]}/histogram/steps", params={"max_buckets": 600}).raise_for_status()
        t1 = time.perf_counter()
        cm = ["reward.mean", "entropy.mean", "log_ratio.std", "gate.saturated_frac", "kl.k3", "clip.token_frac"]
        c.get("/compare", params={"run": RUNS, "metric": cm, "max_points": compare_points}).raise_for_status()
        t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def asset_size() -> tuple[int, int]:
    files = [p for p in STATIC.rglob("*") if p.suffix in (".js", ".css") and p.name != "docs.js"]
    raw = sum(p.stat().st_size for p in files)
    gz = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    return raw, gz


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100_000, help="Steps per run (4 runs).")
    ap.add_argument("--repeat", type=int, default=5, help="Measurements of each kind.")
    ap.add_argument("--db", default=None, help="Database URL (default: a fresh SQLite file).")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was

    with tempfile.TemporaryDirectory(prefix="sapo-ui-bench-") as tmp:
        db = args.db or f"sqlite:///{tmp}/bench.db"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SAPO_MONITOR_RULES": "off"}  # measure the UI, not alert churn on random data
        cli = str(Path(sys.executable).with_name("sapo-monitor"))
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([cli, "serve", "--db", db, "--port", str(port), "--workers", "1", "--log-level",
                                 "warning"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("service did not start: " + (Path(tmp) / "serve.log").read_text())
                time.sleep(0.2)
            if args.db and ingested(base, args.steps):
                console.print(f"reusing the 4 x {args.steps:,} steps already in {args.db}")
            else:
                took = ingest(base, args.steps)
                console.print(f"ingested 4 x {args.steps:,} steps in {took:.1f} s ({4 * args.steps / took:,.0f} steps/s)")
            rows: dict[str, list[tuple[float, ...]]] = {"run": [], "compare": [], "zoom": [], "server": []}
            with sync_playwright() as p:
                ctx = p.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=CHROMIUM,
                                                           headless=True, args=ARGS,
                                                           viewport={"width": 1400, "height": 900})
                # The first views warm the server's caches (a run's series pieces are kept while it does
                # not change) and the browser's: reported apart, as what a first look costs. A blank tab
                # first, so that the browser process's own start is not counted (a user's is running).
                ctx.new_page().goto("about:blank")
                rows["first"] = [page_load(ctx, f"{base}/#/run/{RUNS[0]}"),
                                 page_load(ctx, f"{base}/#/compare?" + "&".join(f"run={r}" for r in RUNS))]
                for _ in range(args.repeat):
                    rows["run"].append(page_load(ctx, f"{base}/#/run/{RUNS[0]}"))
                    rows["compare"].append(page_load(ctx, f"{base}/#/compare?" + "&".join(f"run={r}" for r in RUNS)))
                    rows["zoom"].append(zoom(ctx, base, 1000))
                    rows["server"].append(server_only(base, int(rows["run"][-1][3]), int(rows["compare"][-1][3])))
                ctx.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
            log.close()
    raw, gz = asset_size()
    load = f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    med = lambda xs: statistics.median(xs)  # noqa: E731
    t = Table("measure", "median", "max", "target", title=f"web UI, 4 runs x {args.steps:,} steps, {args.repeat} rounds ({load})")
    run, cmp_, zm, srv = rows["run"], rows["compare"], rows["zoom"], rows["server"]
    t.add_row("run page: navigation to all charts drawn", f"{med([r[0] for r in run]):.0f} ms",
              f"{max(r[0] for r in run):.0f} ms", "<= 1000 ms")
    t.add_row("  of which API calls (browser's view)", f"{med([r[1] for r in run]):.0f} ms", f"{max(r[1] for r in run):.0f} ms", "")
    t.add_row("  browser (parse, scripts, draw) = rest", f"{med([r[0] - r[1] for r in run]):.0f} ms", "", "")
    t.add_row("  server alone (same calls from Python, in turn)", f"{med([s[0] for s in srv]):.0f} ms", f"{max(s[0] for s in srv):.0f} ms", "")
    if rows.get("first"):
        t.add_row("  first view after the service started (cold caches)", f"{rows['first'][0][0]:.0f} ms", "", "")
        t.add_row("    of which API calls (browser's view)", f"{rows['first'][0][1]:.0f} ms", "", "")
    t.add_row("compare 4 runs: navigation to all charts drawn", f"{med([r[0] for r in cmp_]):.0f} ms",
              f"{max(r[0] for r in cmp_):.0f} ms", "<= 1000 ms")
    t.add_row("  of which API calls (browser's view)", f"{med([r[1] for r in cmp_]):.0f} ms", f"{max(r[1] for r in cmp_):.0f} ms", "")
    t.add_row("  server alone (/compare from Python)", f"{med([s[1] for s in srv]):.0f} ms", f"{max(s[1] for s in srv):.0f} ms", "")
    if rows.get("first"):
        t.add_row("  first view after the service started (cold caches)", f"{rows['first'][1][0]:.0f} ms", "", "")
        t.add_row("    of which API calls (browser's view)", f"{rows['first'][1][1]:.0f} ms", "", "")
    t.add_row(f"zoom to {int(zm[0][1]):,} steps: drag to every chart redrawn", f"{med([z[0] for z in zm]):.0f} ms",
              f"{max(z[0] for z in zm):.0f} ms", "<= 200 ms")
    t.add_row("  grad_norm points after the zoom (full resolution)", str(int(zm[0][2])), "", "")
    t.add_row("page JS + CSS (gzip -9)", f"{gz / 1024:.1f} KB", f"{raw / 1024:.0f} KB raw", "<= 300 KB")
    console.print(t)


if __name__ == "__main__":
    main()
