"""The Grafana dashboards and Prometheus/Alertmanager configuration shipped with sapo-monitor.

This folder is installed as the package ``sapo_monitor.dashboards`` so that ``sapo-monitor grafana
push`` finds the dashboards from a plain ``pip install`` as well as from a checkout.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["DASHBOARD_FILES", "load_dashboards"]

# File name -> what it shows; the order is the order `grafana push` reports them in.
DASHBOARD_FILES: dict[str, str] = {
    "run-stability.json": "One run: importance ratio, SAPO gate, sign breakdown, clipping, collapse signals.",
    "run-comparison.json": "Several runs overlaid on the key panels.",
    "service-health.json": "Ingest rate, latency, errors and webhook deliveries of the service.",
}


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every shipped dashboard, parsed, keyed by file name."""
    root = resources.files(__name__)
    return {name: json.loads(root.joinpath(name).read_text(encoding="utf-8")) for name in DASHBOARD_FILES}
