"""Webhooks may not reach inside (SSRF): refused at registration (422 naming ``url``) and at send time
(the name is resolved and the vetted address connected to), unless the allow-list says otherwise.
Failed deliveries keep a status line, never the receiver's answer."""

from __future__ import annotations

import httpx
import pytest
from sapo_monitor.service.outbox.destinations import DestinationPolicy, RefusedDestination
from sapo_monitor.service.outbox.settings import AlertingSettings
from sapo_monitor.service.outbox.store import list_deliveries
from sapo_monitor.service.outbox.testing import enqueue_test_event
from sapo_monitor.service.outbox.webhooks import create_webhook
from sapo_monitor.service.outbox.worker import DeliveryWorker
from sapo_monitor.service.storage.alert_models import Webhook

from tests.alerts.conftest import BOTH
from tests.alerts.server import FAST, live_service
from tests.support.bad_receivers import BODY_MARKER, BadReceiver

INTERNAL = [
    "http://127.0.0.1:5432/",
    "http://2130706433:5432/",  # 127.0.0.1 as one decimal number
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.100.100.200/",  # shared address space (a cloud's metadata service lives there)
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://localhost:8080/",
    "http://[::1%25eth0]/",  # with a zone id (does not resolve: judged as written)
    "http://[fe80::1%25lo]:80/",
]
NO_ALLOW = AlertingSettings(webhook_backoff_base_s=0.05, outbox_poll_s=0.02, webhook_timeout_s=2.0,
                            webhook_lease_s=5.0, silent_check_s=3600.0)


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_destinations_are_refused(url: str) -> None:
    with pytest.raises(RefusedDestination):
        DestinationPolicy("").vet(url)


def test_public_addresses_pass_and_the_allow_list_opens_named_ranges() -> None:
    assert [d.address for d in DestinationPolicy("").vet("https://93.184.216.34/x")] == ["93.184.216.34"]
    policy = DestinationPolicy("127.0.0.0/8, ::1, metadata.google.internal")
    assert policy.vet("http://2130706433:9/")[0].address == "127.0.0.1"
    assert policy.vet("http://[::1]:9/")[0].address == "::1"
    policy.check_registration("http://metadata.google.internal/")  # named: allowed whatever it resolves to
    with pytest.raises(RefusedDestination):
        policy.vet("http://10.0.0.1/")  # not in the list


def test_registration_refuses_internal_urls_with_422_naming_url(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sapo_monitor.service.storage import migrate

    url = f"sqlite:///{tmp_path}/ssrf.db"
    migrate.upgrade(url)
    with live_service(url, alerting=NO_ALLOW) as base, httpx.Client(base_url=base, timeout=10) as c:
        for target in INTERNAL:
            r = c.post("/api/v1/webhooks", json={"url": target})
            assert r.status_code == 422, (target, r.text)
            detail = r.json()["detail"][0]
            assert detail["loc"] == ["body", "url"] and "refused" in detail["msg"], (target, detail)
        assert c.get("/api/v1/webhooks").json() == []
        assert c.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook"}).status_code == 201
    with live_service(url, alerting=FAST) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert c.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}).status_code == 201  # allowed


@BOTH
def test_send_time_check_refuses_a_destination_that_became_internal(db) -> None:  # type: ignore[no-untyped-def]
    """A row whose host now resolves inside (what DNS rebinding does after a clean registration) is
    refused when it is sent: the internal server never sees a request."""
    internal = BadReceiver("ok").start()
    try:
        with db.write() as s:
            hook_id = create_webhook(s, url=internal.url, format="json", min_severity="warning", secret=None).id
            enqueue_test_event(s, webhook=s.get(Webhook, hook_id))
        worker = DeliveryWorker(db, NO_ALLOW)
        assert worker.deliver_due() == 1
    finally:
        internal.stop()
    assert internal.arrivals == []
    with db.read() as s:
        (attempt,) = list_deliveries(s, webhook_id=hook_id)
    assert attempt.outcome == "retry" and attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("refused destination: 127.0.0.1 is a loopback address")


@BOTH
def test_failed_delivery_keeps_the_status_line_not_the_answer(db) -> None:  # type: ignore[no-untyped-def]
    receiver = BadReceiver("fail").start()
    try:
        with db.write() as s:
            hook_id = create_webhook(s, url=receiver.url, format="json", min_severity="warning", secret=None).id
            enqueue_test_event(s, webhook=s.get(Webhook, hook_id))
        DeliveryWorker(db, FAST).deliver_due()
    finally:
        receiver.stop()
    with db.read() as s:
        (attempt,) = list_deliveries(s, webhook_id=hook_id)
    assert attempt.status_code == 500 and attempt.error == "HTTP 500"
    assert BODY_MARKER.decode() not in (attempt.error or "")


@BOTH
def test_attempts_stored_by_earlier_versions_show_their_status_line_only(db) -> None:  # type: ignore[no-untyped-def]
    from sapo_monitor.service.outbox.store import claim_due, record_attempt

    with db.write() as s:
        hook_id = create_webhook(s, url="https://93.184.216.34/x", format="json", min_severity="warning",
                                 secret=None).id
        enqueue_test_event(s, webhook=s.get(Webhook, hook_id))
    with db.write() as s:
        (claimed,) = claim_due(s, worker_id="old", now=9e9, lease_s=5.0)
        record_attempt(s, claimed=claimed, worker_id="old", now=9e9, duration_ms=1.0, status_code=500,
                       error="HTTP 500: " + BODY_MARKER.decode(), outcome="retry")
    with db.read() as s:
        (attempt,) = list_deliveries(s, webhook_id=hook_id)
    assert attempt.error == "HTTP 500"
