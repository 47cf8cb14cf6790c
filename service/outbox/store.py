"""The webhook outbox: rows written in the ingest transaction, claimed by delivery workers.

Claiming (one short transaction): due rows whose lease is free and that are the oldest pending row
of their (webhook, run), so a run's notifications go out in order, are locked with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (replicas never claim the same row) and leased to the
worker for ``lease_s`` seconds. The HTTP request runs outside any transaction; the outcome is then
recorded only if the lease is still the worker's. A worker that dies mid-delivery leaves a lease
that expires, so the row is sent again under the same event id: delivery is at least once on the
wire and exactly once for a receiver that dedupes by ``X-Sapo-Event-Id``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import CursorResult, Table, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ..storage.alert_models import Webhook, WebhookDelivery, WebhookOutbox
from ..storage.db import for_update

__all__ = [
    "Claimed",
    "DeliveryRecord",
    "claim_due",
    "delivery_counts",
    "enqueue",
    "enqueue_rows",
    "list_deliveries",
    "outbox_row",
    "pending_count",
    "record_attempt",
    "release",
    "renew_lease",
]

_O = cast(Table, WebhookOutbox.__table__)
_D = cast(Table, WebhookDelivery.__table__)


@dataclass(frozen=True)
class Claimed:
    """A leased outbox row with what sending it needs."""

    id: int
    webhook_id: int
    event_id: str
    order_key: str
    body: bytes
    url: str
    secret: str | None
    attempts: int
    created_at: float


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    outbox_id: int
    event_id: str
    attempt: int
    at: float
    duration_ms: float
    status_code: int | None
    outcome: str
    error: str | None


def outbox_row(*, webhook_id: int, event_id: str, order_key: str, body: bytes, now: float) -> dict:
    """One outbox row (due at once) for :func:`enqueue_rows`."""
    return {
        "webhook_id": webhook_id,
        "event_id": event_id,
        "order_key": order_key,
        "body": body.decode(),
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }


def enqueue_rows(session: Session, rows: list[dict]) -> None:
    """Insert outbox rows in one statement, in list order (ids follow it: that is the delivery order)."""
    session.connection().execute(insert(_O), rows)


def enqueue(session: Session, *, webhook_id: int, event_id: str, order_key: str, body: bytes, now: float) -> None:
    """Add one event for one webhook, due at once (inside the caller's transaction)."""
    enqueue_rows(session, [outbox_row(webhook_id=webhook_id, event_id=event_id, order_key=order_key, body=body,
                                      now=now)])


def claim_due(session: Session, *, worker_id: str, now: float, lease_s: float, limit: int = 20,
              exclude_webhooks: Collection[int] = ()) -> list[Claimed]:
    """Lease up to ``limit`` due rows, each the head of its (webhook, run) queue: rows never tried
    first, then by fewest attempts, oldest first within each.

    Fewest attempts first: otherwise receivers that keep failing (hanging, say), as many as the
    worker's senders, held every sender at each of their retries, and a healthy receiver's newer row
    waited behind them until their backoff outgrew the attempts (minutes).

    ``exclude_webhooks``: receivers this worker is still sending to (each receiver is served in order,
    by one sender at a time)."""
    prev = _O.alias("prev")
    earlier_pending = (
        select(prev.c.id)
        .where(
            prev.c.webhook_id == _O.c.webhook_id,
            prev.c.order_key == _O.c.order_key,
            prev.c.status == "pending",
            prev.c.id < _O.c.id,
        )
        .exists()
    )
    query = (
        select(_O.c.id)
        .where(
            _O.c.status == "pending",
            _O.c.next_attempt_at <= now,
            or_(_O.c.claimed_until.is_(None), _O.c.claimed_until < now),
            ~earlier_pending,
            *([_O.c.webhook_id.notin_(list(exclude_webhooks))] if exclude_webhooks else []),
        )
        .order_by(_O.c.attempts, _O.c.id)
        .limit(limit)
    )
    ids = list(session.scalars(for_update(session, query, skip_locked=True, of=_O)))
    if not ids:
        return []
    session.execute(
        update(_O).where(_O.c.id.in_(ids)).values(claimed_by=worker_id, claimed_until=now + lease_s)
    )
    w = cast(Table, Webhook.__table__)
    rows = session.execute(
        select(_O.c.id, _O.c.webhook_id, _O.c.event_id, _O.c.order_key, _O.c.body, w.c.url, w.c.secret,
               _O.c.attempts, _O.c.created_at)
        .join(w, w.c.id == _O.c.webhook_id)
        .where(_O.c.id.in_(ids))
        .order_by(_O.c.attempts, _O.c.id)  # the claim's order: the worker starts senders in it
    ).all()
    return [
        Claimed(r.id, r.webhook_id, r.event_id, r.order_key, r.body.encode(), r.url, r.secret, r.attempts, r.created_at)
        for r in rows
    ]


def renew_lease(session: Session, *, outbox_id: int, worker_id: str, now: float, lease_s: float) -> bool:
    """Extend this worker's lease on one row right before sending it; False when the row is no longer
    ours to send (the lease expired and another worker claimed it, or it was delivered meanwhile).

    A claim leases several rows under one expiry and they are sent one after the other: without this
    check, a row whose lease ran out while earlier ones were sent would go out twice."""
    result = session.execute(
        update(_O)
        .where(_O.c.id == outbox_id, _O.c.claimed_by == worker_id, _O.c.status == "pending")
        .values(claimed_until=now + lease_s)
    )
    return bool(cast(CursorResult, result).rowcount)


def record_attempt(
    session: Session,
    *,
    claimed: Claimed,
    worker_id: str,
    now: float,
    duration_ms: float,
    status_code: int | None,
    error: str | None,
    outcome: str,
    next_attempt_at: float | None = None,
) -> bool:
    """Record one attempt and move the row on (delivered, retry later, or failed for good).

    Returns False when the lease was lost (another worker took the row over): the attempt is still
    recorded, the row is left to its new owner.
    """
    assert outcome in ("delivered", "retry", "failed")
    values: dict = {"attempts": _O.c.attempts + 1, "claimed_by": None, "claimed_until": None, "last_error": error}
    if outcome == "delivered":
        values.update(status="delivered", delivered_at=now)
    elif outcome == "failed":
        values.update(status="failed")
    else:
        values.update(next_attempt_at=next_attempt_at if next_attempt_at is not None else now)
    result = session.execute(
        update(_O)
        .where(_O.c.id == claimed.id, _O.c.claimed_by == worker_id, _O.c.status == "pending")
        .values(**values)
    )
    session.execute(
        insert(_D).values(
            outbox_id=claimed.id,
            webhook_id=claimed.webhook_id,
            event_id=claimed.event_id,
            attempt=claimed.attempts + 1,
            at=now,
            duration_ms=duration_ms,
            status_code=status_code,
            outcome=outcome,
            error=error,
        )
    )
    return bool(cast(CursorResult, result).rowcount)


def release(session: Session, *, ids: Sequence[int], worker_id: str) -> None:
    """Give leases back without an attempt (rows queued behind a failed one in the same run)."""
    if ids:
        session.execute(
            update(_O)
            .where(and_(_O.c.id.in_(list(ids)), _O.c.claimed_by == worker_id))
            .values(claimed_by=None, claimed_until=None)
        )


def list_deliveries(session: Session, *, webhook_id: int, limit: int = 100, offset: int = 0) -> list[DeliveryRecord]:
    d = _D
    rows = session.execute(
        select(d).where(d.c.webhook_id == webhook_id).order_by(d.c.id).limit(limit).offset(offset)
    ).all()
    return [
        DeliveryRecord(r.id, r.outbox_id, r.event_id, r.attempt, r.at, r.duration_ms, r.status_code, r.outcome,
                       _status_line(r.error))
        for r in rows
    ]


def _status_line(error: str | None) -> str | None:
    """Attempts recorded by earlier versions kept the start of the receiver's answer after the status
    (``HTTP 500: <body>``): show the status line only."""
    if error is not None and error.startswith("HTTP ") and ":" in error:
        return error.split(":", 1)[0]
    return error


def pending_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(_O).where(_O.c.status == "pending")) or 0)


def delivery_counts(session: Session) -> dict[str, int]:
    """Attempts per outcome (delivered, retry, failed), from the stored records."""
    d = _D
    rows = session.execute(select(d.c.outcome, func.count()).group_by(d.c.outcome)).all()
    return {outcome: int(n) for outcome, n in rows}
