"""Webhook subscriptions: create, list, get, delete, and which ones an incident notification goes to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from sqlalchemy import CursorResult, Table, delete, select
from sqlalchemy.orm import Session

from ..rules.model import severity_rank
from ..storage.alert_models import Webhook
from ..storage.read_cache import ReadCache

__all__ = [
    "Target",
    "WebhookInfo",
    "create_webhook",
    "delete_webhook",
    "enabled_webhooks",
    "get_webhook",
    "list_webhooks",
    "matching_webhooks",
]


@dataclass(frozen=True)
class WebhookInfo:
    """A webhook as the API shows it: everything but the secret."""

    id: int
    url: str
    project: str | None
    run_id: str | None
    min_severity: str
    format: str
    description: str | None
    enabled: bool
    has_secret: bool
    created_at: float


def _info(row: Webhook) -> WebhookInfo:
    return WebhookInfo(
        id=row.id,
        url=row.url,
        project=row.project,
        run_id=row.run_id,
        min_severity=row.min_severity,
        format=row.format,
        description=row.description,
        enabled=row.enabled,
        has_secret=bool(row.secret),
        created_at=row.created_at,
    )


def create_webhook(
    session: Session,
    *,
    url: str,
    format: str,
    min_severity: str,
    secret: str | None,
    project: str | None = None,
    run_id: str | None = None,
    description: str | None = None,
) -> WebhookInfo:
    row = Webhook(
        url=url,
        format=format,
        min_severity=min_severity,
        secret=secret,
        project=project,
        run_id=run_id,
        description=description,
        enabled=True,
        created_at=time.time(),
    )
    session.add(row)
    session.flush()
    _TARGETS.invalidate_on_commit(session)
    return _info(row)


def list_webhooks(session: Session) -> list[WebhookInfo]:
    return [_info(r) for r in session.scalars(select(Webhook).order_by(Webhook.id))]


def get_webhook(session: Session, webhook_id: int) -> WebhookInfo | None:
    row = session.get(Webhook, webhook_id)
    return None if row is None else _info(row)


def delete_webhook(session: Session, *, webhook_id: int) -> bool:
    """Delete a webhook with its outbox rows and delivery records (cascade)."""
    result = cast(CursorResult, session.execute(delete(Webhook).where(Webhook.id == webhook_id)))
    deleted = bool(result.rowcount)
    _TARGETS.invalidate_on_commit(session)
    return deleted


@dataclass(frozen=True)
class Target:
    """An enabled webhook as the delivery worker's incident flush needs it."""

    id: int
    format: str
    project: str | None
    run_id: str | None
    min_rank: int

    def covers(self, project: str | None, run_id: str, severity: str) -> bool:
        if self.project is not None and self.project != project:
            return False
        if self.run_id is not None and self.run_id != run_id:
            return False
        return severity_rank(severity) >= self.min_rank


def enabled_webhooks(session: Session) -> list[Target]:
    """Enabled webhooks, at most ``_TARGETS.ttl_s`` old: the delivery worker looks them up for every
    flush that sends incident notifications."""
    return _TARGETS.get(session)


def _load_targets(session: Session) -> list[Target]:
    w = cast(Table, Webhook.__table__)
    rows = session.execute(
        select(w.c.id, w.c.format, w.c.project, w.c.run_id, w.c.min_severity).where(w.c.enabled.is_(True)).order_by(w.c.id)
    ).all()
    return [Target(r.id, r.format, r.project, r.run_id, severity_rank(r.min_severity)) for r in rows]


_TARGETS: ReadCache[list[Target]] = ReadCache(_load_targets)


def matching_webhooks(session: Session, *, project: str | None, run_id: str, severity: str) -> list[Webhook]:
    """Enabled webhooks whose scope covers the run and whose minimum severity the alert reaches."""
    rank = severity_rank(severity)
    out = []
    for row in session.scalars(select(Webhook).where(Webhook.enabled.is_(True)).order_by(Webhook.id)):
        if row.project is not None and row.project != project:
            continue
        if row.run_id is not None and row.run_id != run_id:
            continue
        if severity_rank(row.min_severity) > rank:
            continue
        out.append(row)
    return out
