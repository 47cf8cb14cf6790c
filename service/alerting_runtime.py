"""The rules area's hooks into the service, called by the storage layer and the app.

* :func:`on_steps_stored`: called by :func:`sapo_monitor.service.storage.steps.store_steps` inside the
  transaction that stored a batch, after the run row was locked.
* :func:`lifespan`: the app's background work: the webhook delivery worker and the silence check.
* :func:`metric_families`: ``sapo_alert_firing``, ``sapo_webhook_deliveries_total``,
  ``sapo_webhook_outbox_pending`` for ``/metrics``, from stored state.

``SAPO_MONITOR_RULES=off`` (or :func:`set_enabled`) skips evaluation on ingest; it exists so
``bench/ingest.py`` can measure what rules cost. Steps stored while it is off are never evaluated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..outbox.settings import AlertingSettings
from .apply import RunRef, evaluate_run_steps

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..decode import StepIn
    from ..storage.steps import IngestedRun

__all__ = ["lifespan", "metric_families", "on_steps_stored", "set_enabled"]

_enabled = AlertingSettings().rules


def set_enabled(enabled: bool) -> None:
    """Turn rule evaluation on ingest on or off for this process."""
    global _enabled
    _enabled = enabled


def on_steps_stored(session: Session, run: IngestedRun, records: Sequence[StepIn]) -> None:
    """Evaluate the run's rules over the stored records (in step order) and persist alerts + outbox."""
    if not _enabled or not records:
        return
    # StepIn has the fields the evaluator reads (step, time, metrics): no copies per record.
    evaluate_run_steps(session, RunRef(run.pk, run.run_id, run.project_id), records)  # type: ignore[arg-type]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the delivery worker (which also runs the silence check) for the app's database.

    Settings come from ``app.state.alerting_settings`` when a caller set it, else the environment.
    """
    from ..outbox.worker import DeliveryWorker

    settings: AlertingSettings = getattr(app.state, "alerting_settings", None) or AlertingSettings()
    set_enabled(settings.rules)
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
    from ..outbox.store import delivery_counts, pending_count
    from .queries import firing_alerts

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
