"""The run's alerts as the service sees them, from each ingest answer (no polling), and the decision to
stop training on one (``stop_on``).

:meth:`AlertWatch.handle` runs on the delivery's sender thread (``Delivery.on_response``). Callbacks run
there too; a callback that raises is logged once and never reaches training code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Alert", "AlertWatch", "parse_stop_on"]

log = logging.getLogger("sapo_monitor")

_SEVERITIES = ("warning", "critical")


@dataclass(frozen=True)
class Alert:
    """An alert firing on this run: its id, the rule and the severity."""

    id: str
    rule: str
    severity: str

    def describe(self) -> str:
        return f"{self.severity} alert {self.rule} (id {self.id})"


def parse_stop_on(stop_on: str | Iterable[str] | None) -> tuple[frozenset[str], frozenset[str]] | None:
    """``stop_on`` as (severities, rule ids): ``"critical"`` (critical only), ``"warning"`` (any alert), a
    comma-separated string or a list mixing severities and rule ids. None or empty: never stop."""
    if stop_on is None:
        return None
    items = [s.strip() for s in (stop_on.split(",") if isinstance(stop_on, str) else stop_on) if s and s.strip()]
    if not items:
        return None
    severities: set[str] = set()
    for s in items:
        if s in _SEVERITIES:  # a severity covers itself and everything above it
            severities.update(_SEVERITIES[_SEVERITIES.index(s):])
    return frozenset(severities), frozenset(s for s in items if s not in _SEVERITIES)


class AlertWatch:
    """Holds the run's firing alerts; calls ``on_alert`` callbacks once per newly firing alert and the stop
    callbacks once, for the first alert that ``stop_on`` matches."""

    def __init__(self, stop_on: str | Iterable[str] | None = None) -> None:
        self._stop_on = parse_stop_on(stop_on)
        self._lock = threading.Lock()
        self._firing: dict[str, Alert] = {}
        self._callbacks: list[Callable[[Alert], None]] = []
        self._stop_callbacks: list[Callable[[Alert], None]] = []
        self.stop_alert: Alert | None = None  # the alert that stopped (or will stop) the run

    @property
    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._firing.values())

    def on_alert(self, callback: Callable[[Alert], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def on_stop(self, callback: Callable[[Alert], None]) -> None:
        with self._lock:
            self._stop_callbacks.append(callback)
            stop = self.stop_alert
        if stop is not None:
            self._call(callback, stop)

    def matches(self, alert: Alert) -> bool:
        if self._stop_on is None:
            return False
        severities, rules = self._stop_on
        return alert.severity in severities or alert.rule in rules

    def handle(self, response: dict[str, Any]) -> None:
        """One ingest answer: ``{"alerts": [{"id", "rule", "severity"}, ...], ...}``."""
        docs = response.get("alerts")
        if not isinstance(docs, list):
            return  # an older service: no alerts in its answers
        now = {str(d["id"]): Alert(str(d["id"]), str(d["rule"]), str(d["severity"])) for d in docs
               if isinstance(d, dict) and {"id", "rule", "severity"} <= d.keys()}
        stop = None
        with self._lock:
            new = [a for k, a in now.items() if k not in self._firing]
            self._firing = now
            callbacks = list(self._callbacks)
            if self.stop_alert is None:
                stop = next((a for a in new if self.matches(a)), None)
                self.stop_alert = stop
            stop_callbacks = list(self._stop_callbacks) if stop is not None else []
        for alert in new:
            for cb in callbacks:
                self._call(cb, alert)
        if stop is not None:
            log.warning("sapo-monitor: stopping the run on %s (stop_on)", stop.describe())
            for cb in stop_callbacks:
                self._call(cb, stop)

    @staticmethod
    def _call(callback: Callable[[Alert], None], alert: Alert) -> None:
        try:
            callback(alert)
        except Exception:  # never into the delivery thread, never into training
            log.exception("sapo-monitor: an on_alert callback raised (ignored)")
