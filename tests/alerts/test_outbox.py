"""Webhook delivery from the outbox: signed, retried with backoff, in order per run, once.

The receiver is a real HTTP server on 127.0.0.1; the worker is the service's own delivery worker.
Webhooks hear of incidents (one run's alerts grouped), here with no group_wait / group_interval, so
every worker round tells what changed since the last one.
"""

from __future__ import annotations

import threading
import time

from sapo_monitor.service.outbox.store import delivery_counts, list_deliveries, pending_count
from sapo_monitor.service.outbox.webhooks import create_webhook
from sapo_monitor.service.outbox.worker import DeliveryWorker, backoff_s
from sapo_monitor.service.rules.builtin import BUILTIN_RULES
from sapo_monitor.service.settings import AlertingSettings
from sapo_monitor.service.storage.alert_models import AlertTransition
from sqlalchemy import func, select

from tests.alerts.conftest import BOTH, ingest
from tests.alerts.receiver import Receiver
from tests.alerts.traces import EXPECTED_FIRING, collapse_trace

FAST = AlertingSettings(
    webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.2, outbox_poll_s=0.02, webhook_timeout_s=2.0,
    webhook_lease_s=5.0, silent_check_s=3600.0, webhook_allow_hosts="127.0.0.1",
    incident_group_wait_s=0.0, incident_group_interval_s=0.0,
)
SEVERITY = {r.id: r.severity for r in BUILTIN_RULES}
FIRED_RULES = [rule for rule, _ in EXPECTED_FIRING]
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
    # the trace's first alert is a warning and a critical one follows: per run, the incident opens as a
    # warning and is escalated (rounds run between batches); later members join without a message
    assert SEVERITY[FIRED_RULES[0]] == "warning" and "critical" in {SEVERITY[r] for r in FIRED_RULES}
    worker = DeliveryWorker(db, FAST)
    try:
        for i in range(0, len(trace), 10):  # the receiver is down: every attempt fails and is recorded
            ingest(db, "run-a", trace[i : i + 10])
            ingest(db, "run-b", trace[i : i + 10])
            worker.deliver_due()
            time.sleep(0.06)
        with db.read() as s:
            assert delivery_counts(s).get("retry", 0) >= 2
            assert delivery_counts(s).get("delivered", 0) == 0
        receiver.start()
        expected = 2 * 2
        _drain([worker], lambda: len(receiver.events) >= expected)
        time.sleep(0.1)
        worker.deliver_due()
    finally:
        worker.stop()
        receiver.stop()
    assert receiver.bad_signatures == 0
    assert len(receiver.raw) == len(receiver.events) == expected  # each notification once on the wire
    for run in ("run-a", "run-b"):
        got = [e["body"] for e in receiver.events if e["body"]["incident"]["run_id"] == run]
        assert [(b["type"], b["incident"]["severity"]) for b in got] == [
            ("incident.opened", "warning"), ("incident.escalated", "critical")]  # in order per run
        assert got[0]["incident"]["id"] == got[1]["incident"]["id"]
        assert [a["rule"] for a in got[1]["incident"]["alerts"]][:1] == FIRED_RULES[:1]
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
        _drain([worker], lambda: len(receiver.events) >= 1)
        time.sleep(0.2)
        worker.deliver_due()
        worker.stop()
    finally:
        receiver.stop()
    # one critical incident for the whole collapse, to the alertmanager hook only (the slack hook
    # watches another run); its alerts are every member, warnings included, in firing order
    [am] = [e["body"] for e in receiver.events]
    assert [a["labels"]["alertname"] for a in am["alerts"]] == FIRED_RULES
    assert am["version"] == "4" and am["status"] == "firing" and am["groupLabels"] == {"run": "r"}
    assert {a["labels"]["severity"] for a in am["alerts"]} == {SEVERITY[r] for r in FIRED_RULES}
    assert am["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z" and am["alerts"][0]["startsAt"].endswith("Z")


@BOTH
def test_two_workers_deliver_each_transition_once(db) -> None:  # type: ignore[no-untyped-def]
    """Two workers (as two replicas would) share the incidents and the outbox: SKIP LOCKED + leases, no
    duplicates (everything is ingested first, so each run's incident is one message)."""
    receivers = [Receiver(SECRET, delay_s=0.005).start() for _ in range(2)]
    for r in receivers:  # the same notifications go to two webhooks under the same event ids
        _hook(db, r.url)
    runs = [f"run-{i}" for i in range(4)]
    for run in runs:
        ingest(db, run, collapse_trace())
    expected = len(runs)
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
    assert sorted(e["body"]["incident"]["run_id"] for e in receivers[0].events) == runs
