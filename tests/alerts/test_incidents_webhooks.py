"""Incident notifications on a real database to a real HTTP receiver on 127.0.0.1: the service's own
delivery worker, on a fake clock (so group_wait and repeat_interval are stepped through, not slept).

Alert transitions are written through ``alerting.apply_transitions`` (:mod:`.incident_driver`), so
these tests do not depend on what the built-in rules fire on a trace.
"""

from __future__ import annotations

import time

from sapo_monitor.service.incidents import REOPEN_STEPS
from sapo_monitor.service.outbox.webhooks import create_webhook
from sapo_monitor.service.outbox.worker import DeliveryWorker
from sapo_monitor.service.settings import AlertingSettings
from sapo_monitor.service.storage.incidents import list_incidents
from sapo_monitor.service.ui.links import run_page_url

from tests.alerts.conftest import BOTH
from tests.alerts.incident_driver import Clock, RunDriver
from tests.alerts.receiver import Receiver

SECRET = "incident-secret"
TIMERS = AlertingSettings(
    webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.2, outbox_poll_s=0.02, webhook_timeout_s=2.0,
    webhook_lease_s=5.0, silent_check_s=1e9, webhook_allow_hosts="127.0.0.1",
    incident_group_wait_s=10.0, incident_group_interval_s=60.0, incident_repeat_interval_s=300.0,
)


def _deliver(worker: DeliveryWorker, receiver: Receiver, expected: int) -> None:
    """Rounds until the receiver has ``expected`` events, then one more (nothing further may come)."""
    deadline = time.monotonic() + 20
    while len(receiver.events) < expected:
        assert time.monotonic() < deadline, f"got {len(receiver.events)} of {expected} notifications"
        if not worker.deliver_due():
            time.sleep(0.02)
    worker.deliver_due()
    assert len(receiver.events) == expected, [e["body"]["type"] for e in receiver.events]


@BOTH
def test_group_wait_batches_and_repeat_interval_limits_repeats(db) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    receiver = Receiver(SECRET).start()
    worker = DeliveryWorker(db, TIMERS, clock=clock)
    try:
        with db.write() as s:
            create_webhook(s, url=receiver.url, format="json", min_severity="warning", secret=SECRET)
        run = RunDriver(db, clock, "collapse")
        run.fire("ratio_spread", "warning")
        clock.now += 4
        run.fire("gate_creep", "warning")
        worker.deliver_due()  # 4 s after the incident opened: group_wait (10 s) holds it
        clock.now += 4
        run.fire("reward_drop", "critical")
        _deliver(worker, receiver, 0)
        clock.now += 2.5  # group_wait has passed: one message with all three
        _deliver(worker, receiver, 1)
        first = receiver.events[0]["body"]
        assert first["type"] == "incident.opened" and first["version"] == 2
        inc = first["incident"]
        assert inc["severity"] == "critical" and inc["state"] == "firing" and inc["run_id"] == "collapse"
        assert [a["rule"] for a in inc["alerts"]] == ["ratio_spread", "gate_creep", "reward_drop"]
        assert inc["story"]["first_precursor"]["rule"] == "ratio_spread"
        assert inc["story"]["confirmation"]["rule"] == "reward_drop" and inc["story"]["resolution"] is None
        assert inc["run_url"] is None  # SAPO_MONITOR_PUBLIC_URL unset

        for _ in range(5):  # the run goes on collapsing: a new warning and steps, no new message
            clock.now += 50
            run.steps(10)
        run.fire("entropy_drop", "warning")
        _deliver(worker, receiver, 1)
        clock.now += 60  # 310 s after the first message: one repeat, listing the new member too
        run.steps()
        _deliver(worker, receiver, 2)
        repeat = receiver.events[1]["body"]
        assert repeat["type"] == "incident.repeated" and repeat["incident"]["id"] == inc["id"]
        assert len(repeat["incident"]["alerts"]) == 4
        clock.now += 1000  # the run sent no step since: no repeat, however long
        _deliver(worker, receiver, 2)

        for rule in ("ratio_spread", "gate_creep", "reward_drop", "entropy_drop"):
            run.resolve(rule)
        resolved_at_step = run.step
        run.steps(REOPEN_STEPS)
        _deliver(worker, receiver, 2)  # an alert firing now would reopen it: the resolution is held
        run.steps(1)
        clock.now += 60  # the next look (group_interval after the last one): it can no longer reopen
        _deliver(worker, receiver, 3)
        done = receiver.events[2]["body"]
        assert done["type"] == "incident.resolved" and done["incident"]["state"] == "resolved"
        assert done["incident"]["story"]["resolution"]["step"] == resolved_at_step
        assert {a["state"] for a in done["incident"]["alerts"]} == {"resolved"}
        with db.read() as s:
            [stored] = list_incidents(s, run_id="collapse")
        assert stored.incident.notifications == 3 and stored.alert_count == 4
    finally:
        worker.stop()
        receiver.stop()
    assert receiver.bad_signatures == 0 and len(receiver.raw) == 3


def _deliver_all(worker: DeliveryWorker, receivers: dict[str, Receiver], expected: dict[str, int]) -> None:
    deadline = time.monotonic() + 20
    while any(len(receivers[k].events) < n for k, n in expected.items()):
        assert time.monotonic() < deadline, {k: len(r.events) for k, r in receivers.items()}
        if not worker.deliver_due():
            time.sleep(0.02)
    worker.deliver_due()
    assert {k: len(r.events) for k, r in receivers.items()} == expected


@BOTH
def test_escalation_waits_for_group_interval_and_scopes_and_formats(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Three receivers: json (every run), alertmanager (critical only), slack (run "other" only); the
    public URL is set, so every body links the run page around the confirmation (else the opening)."""
    monkeypatch.setenv("SAPO_MONITOR_PUBLIC_URL", "https://monitor.example.org")
    clock = Clock()
    receivers = {fmt: Receiver(SECRET).start() for fmt in ("json", "alertmanager", "slack")}
    worker = DeliveryWorker(db, TIMERS, clock=clock)
    try:
        with db.write() as s:
            create_webhook(s, url=receivers["json"].url, format="json", min_severity="warning", secret=SECRET)
            create_webhook(s, url=receivers["alertmanager"].url, format="alertmanager", min_severity="critical",
                           secret=SECRET)
            create_webhook(s, url=receivers["slack"].url, format="slack", min_severity="warning", secret=SECRET,
                           run_id="other")
        a, other = RunDriver(db, clock, "a"), RunDriver(db, clock, "other", project="q")
        a.fire("ratio_spread", "warning")
        clock.now += 11
        _deliver_all(worker, receivers, {"json": 1, "alertmanager": 0, "slack": 0})  # a warning incident
        clock.now += 20
        a.fire("nan_loss", "critical")
        _deliver_all(worker, receivers, {"json": 1, "alertmanager": 0, "slack": 0})  # group_interval holds it
        clock.now += 41
        _deliver_all(worker, receivers, {"json": 2, "alertmanager": 1, "slack": 0})  # escalated
        other.fire("gate_creep", "warning")
        clock.now += 11
        _deliver_all(worker, receivers, {"json": 3, "alertmanager": 1, "slack": 1})
    finally:
        worker.stop()
        for r in receivers.values():
            r.stop()
    told = [(b["incident"]["run_id"], b["type"], b["incident"]["severity"])
            for b in (e["body"] for e in receivers["json"].events)]
    assert told == [("a", "incident.opened", "warning"), ("a", "incident.escalated", "critical"),
                    ("other", "incident.opened", "warning")]
    json_bodies = [e["body"]["incident"] for e in receivers["json"].events]
    assert json_bodies[0]["run_url"] == run_page_url("a", step=json_bodies[0]["opened_step"])
    assert json_bodies[1]["run_url"] == run_page_url("a", step=json_bodies[1]["story"]["confirmation"]["step"])
    assert json_bodies[1]["run_url"].startswith("https://monitor.example.org/#/run/a?from=")
    am = receivers["alertmanager"].events[0]["body"]
    assert am["version"] == "4" and am["status"] == "firing" and am["groupLabels"] == {"run": "a"}
    assert [x["labels"]["alertname"] for x in am["alerts"]] == ["ratio_spread", "nan_loss"]
    assert all(x["endsAt"] == "0001-01-01T00:00:00Z" for x in am["alerts"])
    assert "confirmed by nan_loss (critical)" in am["commonAnnotations"]["summary"]
    assert am["alerts"][0]["generatorURL"] == json_bodies[1]["run_url"]
    text = receivers["slack"].events[0]["body"]["text"]
    assert "[OPENED] warning incident on run other (project q)" in text and "gate_creep" in text
    assert run_page_url("other", step=1) in text
    assert all(r.bad_signatures == 0 for r in receivers.values())
