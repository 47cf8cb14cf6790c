"""Test events: ``POST /api/v1/webhooks/{id}/test`` and ``sapo-monitor webhooks test ID``."""

from __future__ import annotations

import time
import uuid

from sqlalchemy.orm import Session

from ..storage.alert_models import Webhook
from .payloads import AlertEvent, render
from .store import enqueue

__all__ = ["TEST_ORDER_KEY", "enqueue_test_event"]

TEST_ORDER_KEY = "__test__"


def enqueue_test_event(session: Session, *, webhook: Webhook) -> str:
    """Queue a signed test event for one webhook, delivered like any alert; returns its event id."""
    now = time.time()
    event = AlertEvent(
        event_id=uuid.uuid4().hex,
        type="test",
        alert_id=uuid.uuid4().hex,
        rule="sapo_monitor_test",
        severity="warning",
        state="firing",
        previous_state=None,
        run_id=webhook.run_id or "test-run",
        project=webhook.project or "test",
        step=0,
        at=now,
        started_at=now,
        values={},
        description="A test event from sapo-monitor: if you can read this, the webhook works.",
    )
    enqueue(session, webhook_id=webhook.id, event_id=event.event_id, order_key=TEST_ORDER_KEY,
            body=render(webhook.format, event), now=now)
    return event.event_id
