"""Walk the shipped dashboards: every PromQL expression, the metric names they use, and variable substitution.

Also the export contract with the service, written out independently of the service's own code so that
a change on either side shows up as a failing test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sapo_monitor.client.wire import CATALOGUE


def exported_gauge(name: str) -> str:
    """The Prometheus gauge the service exports for catalogue metric ``name``.

    ``sapo_`` + name with dots as underscores; a ``.count`` / ``_count`` suffix is dropped
    (a gauge must not end in ``_count``): tokens.count -> sapo_tokens.
    """
    flat = name.replace(".", "_")
    if flat.endswith("_count"):
        flat = flat[: -len("_count")]
        # nonfinite.token_count -> sapo_nonfinite_tokens: the counted thing is plural
        if flat.endswith("_token"):
            flat += "s"
    return f"sapo_{flat}"


RUN_LABELS = ("project", "run", "algorithm")
CATALOGUE_GAUGES = {exported_gauge(n) for n in CATALOGUE}
# Metric names Prometheus stores from the service's /metrics (histograms as their series names).
EXPORTED = CATALOGUE_GAUGES | {
    "sapo_log_ratio_bucket",
    "sapo_run_last_step",
    "sapo_run_last_seen_timestamp_seconds",
    "sapo_runs_active",
    "sapo_ingest_requests_total",
    "sapo_ingest_records_total",
    "sapo_http_requests_total",
    "sapo_http_request_duration_seconds_bucket",
    "sapo_db_errors_total",
    "sapo_alert_firing",
    "sapo_webhook_deliveries_total",
    "sapo_webhook_outbox_pending",
}
# Series Prometheus makes itself for every scrape job.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# PromQL words that look like identifiers but are functions, aggregations or keywords.
_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "rate", "irate", "increase", "time",
    "vector", "or", "and", "unless", "on", "ignoring", "group_left", "group_right", "histogram_quantile",
    "label_values", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "delta", "deriv", "le",
    "bool", "offset", "quantile", "stddev", "avg_over_time", "max_over_time", "min_over_time",
}  # fmt: skip


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title or annotation name
    expr: str


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))  # collapsed rows nest their panels


def queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    """Every PromQL expression of every panel target and annotation of ``dashboard``."""
    out = [
        Query(name, panel.get("title", "?"), target["expr"])
        for panel in iter_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    out += [
        Query(name, f"annotation {a['name']}", a["expr"])
        for a in dashboard.get("annotations", {}).get("list", [])
        if a.get("expr")
    ]
    return out


def variable_queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    """The ``label_values(selector, label)`` variable queries, as the selector they evaluate."""
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        assert m, f"{name}: variable {var['name']} is not label_values(selector, label): {q}"
        out.append(Query(name, f"variable {var['name']}", m.group(1)))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (label names, strings and ranges removed)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range selectors
    stripped = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", stripped)  # grouping labels
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", stripped))
    return {w for w in words if w not in _PROMQL_WORDS and not w.startswith("$")}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana's template variables as Grafana would before sending the query."""
    builtins = {"__rate_interval": "15s", "__interval": "5s", "__range": "5m"}
    for key, value in {**builtins, **variables}.items():
        expr = expr.replace("${" + key + "}", value).replace("$" + key, value)
    assert "$" not in expr, f"unsubstituted variable left in {expr}"
    return expr
