"""Alerting's place in the running service: background work and ``/metrics`` families.

* :func:`lifespan`: the webhook delivery worker (which also runs the silence check), and whether
  ingest evaluates rules (``app.state.rules_enabled``; ``SAPO_MONITOR_RULES=off`` exists so
  ``bench/ingest.py`` can measure what rules cost: steps stored while it is off are never evaluated).
* :func:`metric_families`: ``sapo_alert_firing``, ``sapo_webhook_deliveries_total``,
  ``sapo_webhook_outbox_pending`` for ``/metrics``, from stored state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from .outbox.store import delivery_counts, pending_count
from .outbox.worker import DeliveryWorker
from .settings import AlertingSettings
from .storage.alert_queries import firing_alerts

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["alerting_settings", "lifespan", "metric_families"]


def alerting_settings(app: FastAPI) -> AlertingSettings:
    """The app's alerting settings: part of its ``Settings`` (``app.state.settings``), unless a caller
    (a test) put its own in ``app.state.alerting_settings``."""
    override: AlertingSettings | None = getattr(app.state, "alerting_settings", None)
    return override if override is not None else app.state.settings.alerting


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the delivery worker (which also runs the silence check) for the app's database.

    Settings: :func:`alerting_settings`.
    """
    settings = alerting_settings(app)
    app.state.rules_enabled = settings.rules
    worker = DeliveryWorker(app.state.db, settings) if settings.delivery_worker else None
    if worker is not None:
        worker.start()
    app.state.delivery_worker = worker
    try:
        yield
    finally:
        if worker is not None:
            await run_in_threadpool(worker.stop)


def metric_families(session: Session, *, now: float, window: float, project: str | None) -> Iterable[Metric]:
    """Alert and webhook families for ``/metrics`` (the same on every replica: read from the database).

    Like the run gauges, ``sapo_alert_firing`` covers runs seen within the active ``window`` (seconds) only.
    """
    firing = GaugeMetricFamily(
        "sapo_alert_firing", "1 while a sapo-monitor alert rule fires on the run.",
        labels=["project", "run", "rule", "severity"],
    )
    for a in firing_alerts(session, seen_since=now - window):
        if project is None or a.project == project:
            firing.add_metric([a.project, a.run_id, a.rule, a.severity], 1.0)
    deliveries = CounterMetricFamily(
        "sapo_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, retry, failed).", labels=["outcome"]
    )
    counts = delivery_counts(session)
    for outcome in ("delivered", "retry", "failed"):
        deliveries.add_metric([outcome], float(counts.get(outcome, 0)))
    pending = GaugeMetricFamily("sapo_webhook_outbox_pending", "Webhook deliveries waiting in the outbox.")
    pending.add_metric([], float(pending_count(session)))
    return [firing, deliveries, pending]
