"""Webhook delivery from the outbox: signed, retried with backoff, in order per run, once.

The receiver is a real HTTP server on 127.0.0.1; the worker is the service's own delivery worker.
"""

from __future__ import annotations

import threading
import time

from sapo_monitor.service.outbox.settings import AlertingSettings
from sapo_monitor.service.outbox.store import delivery_counts, list_deliveries, pending_count
from sapo_monitor.service.outbox.webhooks import create_webhook
from sapo_monitor.service.outbox.worker import DeliveryWorker, backoff_s
from sapo_monitor.service.storage.alert_models import AlertTransition
from sqlalchemy import func, select

from tests.alerts.conftest import BOTH, ingest
from tests.alerts.receiver import Receiver
from tests.alerts.traces import EXPECTED_FIRING, collapse_trace

FAST = AlertingSettings(
    webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.2, outbox_poll_s=0.02, webhook_timeout_s=2.0,
    webhook_lease_s=5.0, silent_check_s=3600.0, webhook_allow_hosts="127.0.0.1",
)
SECRET = "s3cret-for-tests"


def _hook(db, url: str, fmt: str = "json", **kw) -> int:  # type: ignore[no-untyped-def]
    with db.write() as s:
        return create_webhook(s, url=url, format=fmt, min_severity=kw.pop("min_severity", "warning"), secret=SECRET, **kw).id


def _drain(workers, until, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "delivery did not finish in time"
        busy = sum(w.deliver_due() for w in workers)
        if not busy:
            time.sleep(0.02)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_s(k, 1.0, 30.0) for k in range(1, 9)]
    assert 1.0 <= delays[0] <= 1.1 and 2.0 <= delays[1] <= 2.2 and 30.0 <= delays[-1] <= 33.0


@BOTH
def test_receiver_down_for_the_whole_run_then_up(db) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(SECRET)  # port chosen, nothing listening yet: connection refused
    hook_id = _hook(db, receiver.url)
    trace = collapse_trace()
    for i in range(0, len(trace), 10):
        ingest(db, "run-a", trace[i : i + 10])
        ingest(db, "run-b", trace[i : i + 10])
    worker = DeliveryWorker(db, FAST)
    try:
        for _ in range(5):  # the receiver is down: every attempt fails and is recorded
            worker.deliver_due()
            time.sleep(0.06)
        with db.read() as s:
            assert delivery_counts(s).get("retry", 0) >= 2
            assert delivery_counts(s).get("delivered", 0) == 0
        receiver.start()
        expected = 2 * len(EXPECTED_FIRING)
        _drain([worker], lambda: len(receiver.events) >= expected)
        time.sleep(0.1)
    finally:
        worker.stop()
        receiver.stop()
    assert receiver.bad_signatures == 0
    assert len(receiver.raw) == len(receiver.events) == expected  # each transition once on the wire
    for run in ("run-a", "run-b"):
        got = [(e["body"]["alert"]["rule"], e["body"]["alert"]["step"]) for e in receiver.events
               if e["body"]["alert"]["run_id"] == run]
        assert got == EXPECTED_FIRING  # in order per run
    with db.read() as s:
        assert pending_count(s) == 0
        attempts = list_deliveries(s, webhook_id=hook_id, limit=1000)
        assert {a.outcome for a in attempts} == {"retry", "delivered"}
        assert sum(a.outcome == "delivered" for a in attempts) == expected
        assert all(a.error for a in attempts if a.outcome == "retry")


@BOTH
def test_scope_severity_and_formats(db) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(SECRET).start()
    try:
        _hook(db, receiver.url + "/am", "alertmanager", min_severity="critical")
        _hook(db, receiver.url + "/slack", "slack", run_id="other-run")
        ingest(db, "r", collapse_trace())
        worker = DeliveryWorker(db, FAST)
        _drain([worker], lambda: len(receiver.events) >= 3)
        time.sleep(0.2)
        worker.deliver_due()
        worker.stop()
    finally:
        receiver.stop()
    bodies = [e["body"] for e in receiver.events]
    # only the critical ones, only the alertmanager hook (the slack hook watches another run)
    assert [b["alerts"][0]["labels"]["alertname"] for b in bodies] == ["entropy_collapse", "reward_collapse", "nonfinite"]
    am = bodies[0]
    assert am["version"] == "4" and am["status"] == "firing" and am["alerts"][0]["labels"]["severity"] == "critical"
    assert am["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z" and am["alerts"][0]["startsAt"].endswith("Z")


@BOTH
def test_two_workers_deliver_each_transition_once(db) -> None:  # type: ignore[no-untyped-def]
    """Two workers (as two replicas would) share the outbox: SKIP LOCKED + leases, no duplicates."""
    receivers = [Receiver(SECRET, delay_s=0.005).start() for _ in range(2)]
    for r in receivers:  # the same transitions go to two webhooks under the same event ids
        _hook(db, r.url)
    runs = [f"run-{i}" for i in range(4)]
    for run in runs:
        ingest(db, run, collapse_trace())
    expected = len(runs) * len(EXPECTED_FIRING)
    workers = [DeliveryWorker(db, FAST, worker_id=f"w{i}") for i in range(2)]
    stop = threading.Event()

    def loop(w):  # type: ignore[no-untyped-def]
        while not stop.is_set():
            if not w.deliver_due(limit=5):
                time.sleep(0.01)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    try:
        for r in receivers:
            r.wait_for(expected, timeout=30)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for w in workers:
            w.stop()
        for r in receivers:
            r.stop()
    for r in receivers:
        assert len(r.raw) == expected  # not one duplicate on the wire
        assert r.bad_signatures == 0
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(AlertTransition)) >= len(runs) * len(EXPECTED_FIRING)
        assert pending_count(s) == 0
