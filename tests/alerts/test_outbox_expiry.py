"""Delivery expiry (issue 15 item 18): a receiver that never answers is retried with backoff until
``webhook_retry_period_s`` after the transition, then its deliveries are marked failed and never sent
again; a healthy receiver beside it gets each of its deliveries once, unaffected."""

from __future__ import annotations

import time

from sapo_monitor.service.outbox.store import list_deliveries
from sapo_monitor.service.outbox.worker import DeliveryWorker
from sapo_monitor.service.storage.alert_models import WebhookOutbox
from sqlalchemy import select

from tests.alerts.conftest import BOTH
from tests.alerts.test_outbox_slow import BOUNDED, _hook_with_events, _wait
from tests.support.bad_receivers import BadReceiver

# Attempts end after 0.5 s and are retried 0.1-0.3 s later; after 2 s the deliveries expire.
EXPIRING = BOUNDED.model_copy(update={"webhook_timeout_s": 0.5, "webhook_retry_period_s": 2.0})


def _statuses(db, hook_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    with db.read() as s:
        return list(s.scalars(select(WebhookOutbox.status).where(WebhookOutbox.webhook_id == hook_id)))


@BOTH
def test_a_hanging_receivers_deliveries_are_retried_then_expire(db) -> None:  # type: ignore[no-untyped-def]
    hang, good = BadReceiver("hang").start(), BadReceiver("ok").start()
    hang_hook = _hook_with_events(db, hang.url, 2)
    good_hook = _hook_with_events(db, good.url, 3)
    worker = DeliveryWorker(db, EXPIRING)
    worker.start()
    try:
        _wait(lambda: len(good.counts()) == 3, 10, "the healthy receiver")
        _wait(lambda: _statuses(db, hang_hook) == ["failed", "failed"], 20, "the hanging receiver's expiry")
        seen = len(hang.arrivals)
        time.sleep(1.0)  # expired: never sent again
        assert len(hang.arrivals) == seen
    finally:
        worker.stop()
        hang.stop()
        good.stop()
    assert good.counts().most_common(1)[0][1] == 1 and _statuses(db, good_hook) == ["delivered"] * 3
    with db.read() as s:
        attempts = list_deliveries(s, webhook_id=hang_hook, limit=1000)
    by_event: dict[str, list[str]] = {}
    for a in sorted(attempts, key=lambda a: a.attempt):
        by_event.setdefault(a.event_id, []).append(a.outcome)
    assert len(by_event) == 2
    for outcomes in by_event.values():  # retried (with backoff) before giving up, then nothing more
        assert len(outcomes) >= 2 and outcomes[-1] == "failed" and set(outcomes[:-1]) == {"retry"}, outcomes
