"""Webhook delivery under faults: how many times each alert transition reaches each receiver.

Real service processes (uvicorn subprocesses), real receivers on 127.0.0.1, real PostgreSQL (and
SQLite). For every scenario and receiver it prints the transitions queued for that receiver and how
many of them arrived 0, 1 or more than 1 times (requests received, by ``X-Sapo-Event-Id``):

* ``sigkill``: the service is SIGKILLed while a slow receiver has a delivery in flight, then restarted
  (SQLite and PostgreSQL); at most the one cut delivery may arrive twice (same event id).
* ``replicas``: two replicas on one PostgreSQL fan alerts out to 10 slow receivers.
* ``slow``: a hanging and a dripping receiver next to a healthy one: the healthy one's figures and
  delay while the others misbehave, then everyone's after the bad two recover (retries with backoff).
* ``dbstall``: PostgreSQL blackholed for 5 s through a TCP proxy (the pooled connections die silently),
  then back: delivery must resume by itself; also how long ingest and /readyz took to recover.

    .venv/bin/python bench/faults_delivery.py [--scenarios sigkill,replicas,slow,dbstall]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sapo_monitor.client.wire import StepRecord, encode_batch
from sapo_monitor.service.storage.alert_models import Webhook, WebhookOutbox
from sapo_monitor.service.storage.db import make_engine
from sqlalchemy import func, select

from tests.alerts.receiver import Receiver
from tests.alerts.server import FAST_ENV
from tests.alerts.traces import collapse_trace
from tests.support.bad_receivers import BadReceiver
from tests.support.databases import migrated_database
from tests.support.live import ServiceProcess
from tests.support.tcp_proxy import TcpProxy

RESULTS: list[tuple[str, str, int, int, int, int, str]] = []


def arrivals(receiver: Receiver | BadReceiver) -> Counter[str]:
    if isinstance(receiver, BadReceiver):
        return receiver.counts()
    return Counter(r["event_id"] for r in list(receiver.raw))


def queued(db_url: str) -> dict[str, set[str]]:
    """Event ids queued per webhook URL (one outbox row = one transition for one receiver)."""
    engine = make_engine(db_url, pooled=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Webhook.url, WebhookOutbox.event_id).join(
                Webhook, Webhook.id == WebhookOutbox.webhook_id)).all()
    finally:
        engine.dispose()
    out: dict[str, set[str]] = {}
    for url, event_id in rows:
        out.setdefault(url, set()).add(event_id)
    return out


def pending(db_url: str) -> int:
    engine = make_engine(db_url, pooled=False)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(WebhookOutbox)
                                   .where(WebhookOutbox.status == "pending")) or 0)
    finally:
        engine.dispose()


def report(scenario: str, db_url: str, receivers: dict[str, Receiver | BadReceiver], note: str = "") -> None:
    want = queued(db_url)
    for k, (name, receiver) in enumerate(receivers.items()):
        got = arrivals(receiver)
        ids = want.get(receiver.url, set())
        n0 = sum(1 for e in ids if got[e] == 0)
        n1 = sum(1 for e in ids if got[e] == 1)
        n2 = sum(1 for e in ids if got[e] > 1)
        RESULTS.append((scenario, name, len(ids), n0, n1, n2, note))
        print(f"  {scenario:<22} {name:<14} queued {len(ids):>4}  0x {n0:>4}  1x {n1:>4}  >1x {n2:>3}"
              + (f"  {note}" if note and k == 0 else ""), flush=True)


def wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def ingest(c: httpx.Client, run: str, trace: list, batch: int = 25, deadline_s: float = 60.0) -> None:  # type: ignore[type-arg]
    """Send a trace, retrying 503s as the client does (a batch is sent until it is stored)."""
    c.put(f"/api/v1/runs/{run}", json={"project": "p", "algorithm": "sapo", "name": run})
    for i in range(0, len(trace), batch):
        body = encode_batch([StepRecord(s, time.time(), m) for s, m in trace[i:i + batch]])
        end = time.monotonic() + deadline_s
        while True:
            try:
                r = c.post(f"/api/v1/runs/{run}/steps", content=body,
                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
                if r.status_code < 300:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"ingest into {run} did not succeed in {deadline_s:g} s")
            time.sleep(0.2)


@contextmanager
def service(db_url: str, workdir: Path, **env: str) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(db_url, env={**FAST_ENV, **env}, log_path=workdir / "service.log").start()
    try:
        proc.wait_ready(60)
        yield proc
    finally:
        proc.stop()


def database(kind: str, workdir: Path) -> AbstractContextManager[str]:
    return migrated_database(kind, workdir, "faults.db")


def hook(c: httpx.Client, url: str) -> None:
    r = c.post("/api/v1/webhooks", json={"url": url})
    r.raise_for_status()


def scenario_sigkill(workdir: Path) -> None:
    for kind in ("sqlite", "postgresql"):
        receiver = Receiver(None, delay_s=0.4).start()
        try:
            with database(kind, _mk(workdir / kind)) as url:
                with service(url, workdir) as svc:
                    with httpx.Client(base_url=svc.url, timeout=30) as c:
                        hook(c, receiver.url)
                        for run in ("r0", "r1", "r2"):
                            ingest(c, run, collapse_trace())
                    wait(lambda r=receiver: len(r.raw) >= 3, 30)  # type: ignore[misc]
                    svc.kill()  # mid-delivery: the receiver holds a request for 0.4 s
                receiver.delay_s = 0.0
                with service(url, workdir):
                    wait(lambda: pending(url) == 0, 60)
                    time.sleep(0.5)
                report(f"sigkill ({kind})", url, {"receiver": receiver})
        finally:
            receiver.stop()


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def scenario_replicas(workdir: Path) -> None:
    receivers = {f"receiver-{i}": Receiver(None, delay_s=0.5).start() for i in range(10)}
    env = {"SAPO_MONITOR_WEBHOOK_LEASE_S": "3", "SAPO_MONITOR_WEBHOOK_TIMEOUT_S": "2"}
    try:
        with database("postgresql", workdir) as url, service(url, workdir, **env) as a, \
                service(url, workdir, **env) as b:
            with httpx.Client(base_url=a.url, timeout=30) as ca, httpx.Client(base_url=b.url, timeout=30) as cb:
                for r in receivers.values():
                    hook(ca, r.url)
                trace = collapse_trace()
                for i in range(0, len(trace), 20):  # both replicas ingest, alternately
                    for k, run in enumerate(("r0", "r1")):
                        ingest(ca if (i // 20 + k) % 2 else cb, run, trace[i:i + 20])
            wait(lambda: pending(url) == 0, 90)
            time.sleep(1.0)
            report("two replicas (pg)", url, dict(receivers))  # type: ignore[arg-type]
    finally:
        for r in receivers.values():
            r.stop()


def scenario_slow(workdir: Path) -> None:
    bad = {"hanging": BadReceiver("hang").start(), "dripping": BadReceiver("drip", drip_s=0.5).start()}
    good = BadReceiver("ok").start()
    env = {"SAPO_MONITOR_WEBHOOK_TIMEOUT_S": "2", "SAPO_MONITOR_WEBHOOK_LEASE_S": "4",
           "SAPO_MONITOR_WEBHOOK_BACKOFF_MAX_S": "1"}
    try:
        with database("sqlite", _mk(workdir / "slow")) as url, service(url, workdir, **env) as svc:
            with httpx.Client(base_url=svc.url, timeout=30) as c:
                for r in (*bad.values(), good):
                    hook(c, r.url)
                t0 = time.monotonic()
                for run in ("r0", "r1", "r2", "r3"):
                    ingest(c, run, collapse_trace())
            n_good = len(queued(url).get(good.url, set()))
            wait(lambda: len(good.counts()) >= n_good, 60)
            took = time.monotonic() - t0
            report("slow: while bad", url, {"healthy": good, **bad},  # type: ignore[dict-item]
                   note=f"healthy got all {took:.1f} s after the first ingest")
            for r in bad.values():
                r.mode = "ok"
            wait(lambda: pending(url) == 0, 90)
            time.sleep(0.5)
            report("slow: after recovery", url, {"healthy": good, **bad})  # type: ignore[dict-item]
    finally:
        for r in (*bad.values(), good):
            r.stop()


def scenario_dbstall(workdir: Path) -> None:
    receiver = BadReceiver("ok").start()
    env = {"SAPO_MONITOR_DB_STATEMENT_TIMEOUT_S": "3", "SAPO_MONITOR_DB_CONNECT_TIMEOUT_S": "2",
           "SAPO_MONITOR_DB_POOL_TIMEOUT_S": "2", "SAPO_MONITOR_OUTBOX_STALL_S": "3"}
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    try:
        with database("postgresql", workdir) as url, service(proxy.url_for(url), workdir, **env) as svc:
            with httpx.Client(base_url=svc.url, timeout=60) as c:
                hook(c, receiver.url)
                ingest(c, "before", collapse_trace())
                wait(lambda: pending(url) == 0, 30)
                during = threading.Thread(target=ingest, args=(httpx.Client(base_url=svc.url, timeout=60), "during",
                                                               collapse_trace()))
                proxy.set_mode("blackhole")
                during.start()
                time.sleep(5.0)
                ready_during = c.get("/readyz").status_code
                proxy.set_mode("forward")  # connections that saw the stall stay dead: their bytes are lost
                t_back = time.monotonic()
                wait(lambda: c.get("/readyz").status_code == 200, 60)
                ready_after = time.monotonic() - t_back
                during.join(90)
                ingest(c, "after", collapse_trace())
                ingest_after = time.monotonic() - t_back
                delivered = wait(lambda: pending(url) == 0, 60)
                time.sleep(0.5)
            report("db stall (pg, proxy)", url, {"receiver": receiver},
                   note=f"/readyz {ready_during} during; 200 {ready_after:.1f} s after the database was back; "
                        f"ingest through {ingest_after:.1f} s; outbox drained: {delivered}")
    finally:
        proxy.stop()
        receiver.stop()


SCENARIOS = {"sigkill": scenario_sigkill, "replicas": scenario_replicas, "slow": scenario_slow,
             "dbstall": scenario_dbstall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    args = ap.parse_args()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)}")
    env_note = "receivers on 127.0.0.1 (allowed by SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS)"
    print(f"webhook delivery under faults; {env_note}; counts are requests per transition and receiver", flush=True)
    with tempfile.TemporaryDirectory(prefix="sapo-faults-") as tmp:
        for name in names:
            t0 = time.monotonic()
            print(f"[{name}]", flush=True)
            SCENARIOS[name](_mk(Path(tmp) / name))
            print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
