"""Prometheus: the service's own counters and a collector that builds run metrics from stored state.

Run metrics are read from the database at scrape time, so every worker and replica behind one
database exposes the same values, and runs not seen within ``ACTIVE_WINDOW`` drop out (bounded
cardinality). Names:

* ``sapo_<metric>`` gauge per catalogue metric (``.`` -> ``_``; ``x.count`` -> ``sapo_x``,
  ``x.token_count`` -> ``sapo_x_tokens``), labels ``project, run, algorithm``, from each active
  run's latest step;
* ``sapo_log_ratio`` histogram (cumulative ``le`` buckets from the latest step's 42 counts);
* ``sapo_run_last_step``, ``sapo_run_last_seen_timestamp_seconds``, ``sapo_runs_active``;
* ``sapo_ingest_requests_total{code}``, ``sapo_ingest_records_total``,
  ``sapo_http_requests_total{method,route,code}``, ``sapo_http_request_duration_seconds{method,route}``,
  ``sapo_db_errors_total``: this process's own counters.

A project-scoped token sees its own project's runs and alerts, and the webhook counts
(``sapo_webhook_deliveries_total``, ``sapo_webhook_outbox_pending``) of its project's webhooks only.

Other modules add families through :attr:`StoredStateCollector.sources` (the rules hook's
``metric_families`` is one): each is called as ``source(session, now=, window=, project=)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sapo_monitor.client.wire import CATALOGUE, LOG_RATIO_HIST_EDGES
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .storage.alert_models import Webhook, WebhookDelivery, WebhookOutbox
from .storage.db import Database
from .storage.models import Project, Run
from .storage.rows import decode_histograms, decode_row, step_columns

__all__ = ["ServiceMetrics", "StoredStateCollector", "exposition", "prometheus_name"]

Source = Callable[..., Iterable[Metric]]
_LABELS = ["project", "run", "algorithm"]


def prometheus_name(metric: str) -> str:
    """``sapo_`` name of a catalogue metric (counts drop their ``count`` suffix)."""
    if metric.endswith(".count"):
        metric = metric[: -len(".count")]
    elif metric.endswith("_count"):
        metric = metric[: -len("_count")] + "s"
    return "sapo_" + metric.replace(".", "_")


_GAUGE_NAMES = {m: prometheus_name(m) for m in CATALOGUE}
assert len(set(_GAUGE_NAMES.values())) == len(_GAUGE_NAMES)
# le bounds: the 41 inner edges, then +Inf; bin i of 42 is [edge_i, edge_i+1).
_LE = [f"{e + 0.0:.1f}" for e in LOG_RATIO_HIST_EDGES[1:-1]] + ["+Inf"]


@dataclass
class ServiceMetrics:
    """This process's counters, in their own registry (never the global one)."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.ingest_requests = Counter("sapo_ingest_requests", "Step-batch ingest requests by HTTP status.",
                                       ["code"], registry=r)
        self.ingest_records = Counter("sapo_ingest_records", "Step records accepted by ingest.", registry=r)
        self.http_requests = Counter("sapo_http_requests", "HTTP requests by method, route and status.",
                                     ["method", "route", "code"], registry=r)
        self.http_duration = Histogram("sapo_http_request_duration_seconds", "HTTP request latency.",
                                       ["method", "route"], registry=r,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.db_errors = Counter("sapo_db_errors", "Database errors seen while serving requests.", registry=r)


def _run_families(session: Session, *, now: float, window: float, project: str | None) -> Iterable[Metric]:
    q = (
        select(Run.id, Run.run_id, Run.algorithm, Run.last_step, Run.last_seen_at, Project.name)
        .join(Project, Project.id == Run.project_id)
        .where(Run.last_seen_at >= now - window)
        .order_by(Run.id)
    )
    if project is not None:
        q = q.where(Project.name == project)
    runs = session.execute(q).all()
    gauges = {m: GaugeMetricFamily(n, CATALOGUE[m], labels=_LABELS) for m, n in _GAUGE_NAMES.items()}
    hist = HistogramMetricFamily("sapo_log_ratio", "Token log-ratios of the run's latest step (42 bins).",
                                 labels=_LABELS)
    last_step = GaugeMetricFamily("sapo_run_last_step", "Latest step stored for the run.", labels=_LABELS)
    last_seen = GaugeMetricFamily("sapo_run_last_seen_timestamp_seconds",
                                  "When the run last sent anything (epoch seconds).", labels=_LABELS)
    active = GaugeMetricFamily("sapo_runs_active", "Runs seen within the active window.")
    active.add_metric([], len(runs))
    cols = step_columns()
    for pk, run_id, algorithm, step, seen, proj in runs:
        labels = [proj, run_id, algorithm or ""]
        last_seen.add_metric(labels, seen)
        if step is None:
            continue
        last_step.add_metric(labels, step)
        row = session.execute(select(*cols).where(cols[0] == pk, cols[1] == step)).first()
        if row is None:
            continue
        for metric, value in decode_row(row).items():
            if metric in gauges:
                gauges[metric].add_metric(labels, value)
        counts = decode_histograms(row).get("log_ratio")
        if counts:
            acc, buckets = 0, []
            for le, c in zip(_LE, counts, strict=True):
                acc += c
                buckets.append((le, acc))
            hist.add_metric(labels, buckets, None)
    yield from gauges.values()
    yield from (hist, last_step, last_seen, active)


class StoredStateCollector:
    """Collects run metrics from the database at scrape time (a custom collector, one per scrape)."""

    def __init__(self, db: Database, *, window: float, project: str | None, sources: Iterable[Source] = ()):
        self.db = db
        self.window = window
        self.project = project
        self.sources = list(sources)

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        with self.db.read() as session:
            families = list(_run_families(session, now=now, window=self.window, project=self.project))
            for source in self.sources:
                families.extend(source(session, now=now, window=self.window, project=self.project))
            if self.project is not None:  # a project's token learns nothing of other projects' webhooks
                families = [f for f in families if f.name not in _WEBHOOK_FAMILIES]
                families.extend(_project_webhook_families(session, self.project))
        return families


# Families some sources count over every webhook; a project-scoped caller gets its project's counts.
_WEBHOOK_FAMILIES = frozenset({"sapo_webhook_deliveries", "sapo_webhook_outbox_pending"})


def _project_webhook_families(session: Session, project: str) -> list[Metric]:
    """Delivery attempts by outcome and pending deliveries of ``project``'s own webhooks."""
    w, d, o = Webhook.__table__, WebhookDelivery.__table__, WebhookOutbox.__table__
    mine = select(w.c.id).where(w.c.project == project)
    counts: dict[str, int] = dict(session.execute(
        select(d.c.outcome, func.count()).where(d.c.webhook_id.in_(mine)).group_by(d.c.outcome)).all())
    pending = session.scalar(select(func.count()).select_from(o).where(o.c.status == "pending",
                                                                         o.c.webhook_id.in_(mine)))
    deliveries = CounterMetricFamily("sapo_webhook_deliveries",
                                     "Webhook delivery attempts by outcome (delivered, retry, failed).",
                                     labels=["outcome"])
    for outcome in ("delivered", "retry", "failed"):
        deliveries.add_metric([outcome], float(counts.get(outcome, 0)))
    waiting = GaugeMetricFamily("sapo_webhook_outbox_pending", "Webhook deliveries waiting in the outbox.")
    waiting.add_metric([], float(pending or 0))
    return [deliveries, waiting]


def exposition(service: ServiceMetrics, collector: StoredStateCollector) -> bytes:
    """The text exposition: this process's counters, then the stored-state families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(service.registry) + generate_latest(registry)
