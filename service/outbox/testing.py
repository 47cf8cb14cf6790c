"""Test events: ``POST /api/v1/webhooks/{id}/test`` and ``sapo-monitor webhooks test ID``."""

from __future__ import annotations

import time
import uuid

from sqlalchemy.orm import Session

from ..storage.alert_models import Webhook
from .payloads import IncidentEvent, MemberAlert, render
from .store import enqueue

__all__ = ["TEST_ORDER_KEY", "enqueue_test_event"]

TEST_ORDER_KEY = "__test__"


def enqueue_test_event(session: Session, *, webhook: Webhook) -> str:
    """Queue a signed test event for one webhook, shaped like an incident notification with one member
    alert, delivered like any other; returns its event id."""
    now = time.time()
    description = "A test event from sapo-monitor: if you can read this, the webhook works."
    alert = MemberAlert(id=uuid.uuid4().hex, rule="sapo_monitor_test", severity="warning", state="firing",
                        started_step=0, fired_step=0, fired_at=now, description=description)
    event = IncidentEvent(
        event_id=uuid.uuid4().hex,
        type="test",
        at=now,
        incident_id=uuid.uuid4().hex,
        state="firing",
        severity="warning",
        run_id=webhook.run_id or "test-run",
        project=webhook.project or "test",
        opened_step=0,
        opened_at=now,
        story={"first_precursor": None, "confirmation": None, "resolution": None, "summary": description},
        alerts=[alert],
    )
    enqueue(session, webhook_id=webhook.id, event_id=event.event_id, order_key=TEST_ORDER_KEY,
            body=render(webhook.format, event), now=now)
    return event.event_id
