"""Whether this process's delivery worker is delivering, for ``/metrics``.

``sapo_outbox_delivering`` is 1 while the worker runs and has read the outbox within
``outbox_stall_s`` (``/readyz`` answers 503 otherwise); ``sapo_outbox_worker_last_success_timestamp_seconds``
is when it last did. Alert on ``sapo_outbox_delivering == 0`` or on the timestamp growing old.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from .worker import DeliveryWorker

__all__ = ["worker_families", "worker_source"]


def worker_families(worker: DeliveryWorker | None) -> list[Metric]:
    """Nothing when this process runs no worker (``SAPO_MONITOR_DELIVERY_WORKER=false``)."""
    if worker is None:
        return []
    delivering = GaugeMetricFamily(
        "sapo_outbox_delivering", "1 while this process's webhook delivery worker runs and reads the outbox."
    )
    delivering.add_metric([], 1.0 if worker.delivering else 0.0)
    last = GaugeMetricFamily(
        "sapo_outbox_worker_last_success_timestamp_seconds",
        "Unix time of the delivery worker's last successful outbox read.",
    )
    last.add_metric([], worker.last_success)
    return [delivering, last]


def worker_source(get_worker: Callable[[], DeliveryWorker | None]) -> Callable[..., Iterable[Metric]]:
    """A ``StoredStateCollector`` source for the worker ``get_worker`` returns at scrape time."""

    def source(_session: Any, **_kw: Any) -> Iterable[Metric]:
        return worker_families(get_worker())

    return source
