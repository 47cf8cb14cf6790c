"""Real service processes (uvicorn subprocesses): SIGKILL mid-delivery then restart delivers every
incident notification once (receiver-side dedupe by event id, as documented); two replicas on one
PostgreSQL database deliver each notification once on the wire.

Webhooks hear of incidents; with the test timings (no group_wait, no group_interval) a run's incident
is told as ``opened`` (critical), or ``opened`` (warning) then ``escalated`` when a worker round fell
between two batches: how many is up to the timing, so the counts come from the service's own record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.alerts.conftest import BOTH
from tests.alerts.receiver import Receiver
from tests.alerts.server import service_process
from tests.alerts.test_api import post_trace
from tests.alerts.traces import EXPECTED_FIRING, collapse_trace
from tests.support.live import ServiceProcess
from tests.support.postgres import pg_database

SECRET = "restart-secret"


@contextmanager
def services(db_url: str, n: int = 1) -> Iterator[list[ServiceProcess]]:
    """``n`` service processes on one database, started side by side."""
    procs = [service_process(db_url).start() for _ in range(n)]
    try:
        for proc in procs:
            proc.wait_ready(30)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


ONE_OR_TWO = ([("incident.opened", "critical")], [("incident.opened", "warning"), ("incident.escalated", "critical")])


def _told(events, run: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(e["body"]["type"], e["body"]["incident"]["severity"]) for e in events
            if e["body"]["incident"]["run_id"] == run]


def _all_told(receiver: Receiver, c: httpx.Client, runs: list[str]) -> int:
    """Wait until every run's incident has been told as critical (nothing is left to tell: the trace
    never resolves); the number of notifications the service made, which must be what arrived."""
    deadline = time.monotonic() + 30
    while not all(any(sev == "critical" for _, sev in _told(receiver.events, run)) for run in runs):
        assert time.monotonic() < deadline, [e["body"]["type"] for e in receiver.events]
        time.sleep(0.05)
    time.sleep(0.5)  # nothing more may come
    made = sum(i["notifications"] for i in c.get("/api/v1/incidents").json())
    assert made == len(receiver.events)
    return made


@BOTH
def test_sigkill_mid_delivery_then_restart_delivers_once(db_url: str) -> None:
    receiver = Receiver(SECRET, delay_s=0.5).start()  # slow: each delivery is in flight for a while
    runs = ["r0", "r1", "r2"]
    try:
        with services(db_url) as [service]:
            with httpx.Client(base_url=service.url, timeout=20) as c:
                assert c.post("/api/v1/webhooks", json={"url": receiver.url, "secret": SECRET}).status_code == 201
                for run in runs:
                    post_trace(c, run, collapse_trace())
            deadline = time.monotonic() + 20
            while len(receiver.raw) < 2:  # the second delivery has reached the receiver and waits
                assert time.monotonic() < deadline
                time.sleep(0.01)
            service.kill()
        arrived = len(receiver.raw)  # 2, or 3 when deliveries of different runs overlapped
        receiver.delay_s = 0.0
        with services(db_url) as [again], httpx.Client(base_url=again.url, timeout=20) as c:
            expected = _all_told(receiver, c, runs)
    finally:
        receiver.stop()
    assert receiver.bad_signatures == 0
    assert len(receiver.events) == expected  # every notification once, in order per run
    assert all(_told(receiver.events, run) in ONE_OR_TWO for run in runs)
    ids = [r["event_id"] for r in receiver.raw]
    duplicates = len(ids) - len(set(ids))
    # Only deliveries that had reached the receiver before the kill may be repeated (their answers may
    # not have been recorded), each at most once; the receiver dedupes them by event id.
    assert arrived >= 2 and duplicates <= arrived
    assert {i for i in ids if ids.count(i) > 1} <= set(ids[:arrived])


@pytest.mark.postgres
def test_two_replicas_on_one_postgres_deliver_once() -> None:
    receiver = Receiver(SECRET).start()
    runs = ["r0", "r1", "r2"]
    try:
        with pg_database() as url, services(url, 2) as [a, b], httpx.Client(base_url=a.url, timeout=20) as ca, \
                httpx.Client(base_url=b.url, timeout=20) as cb:
            assert ca.post("/api/v1/webhooks", json={"url": receiver.url, "secret": SECRET}).status_code == 201
            trace = collapse_trace()
            for i in range(0, len(trace), 15):  # both replicas ingest, alternately, into every run
                for k, run in enumerate(runs):
                    post_trace(ca if (i // 15 + k) % 2 else cb, run, trace[i : i + 15])
            expected = _all_told(receiver, cb, runs)
            assert ca.get("/metrics").text.count("sapo_alert_firing{") == len(runs) * len(EXPECTED_FIRING)
    finally:
        receiver.stop()
    ids = [r["event_id"] for r in receiver.raw]
    assert len(ids) == len(set(ids)) == expected  # once on the wire
    assert all(_told(receiver.events, run) in ONE_OR_TWO for run in runs)
