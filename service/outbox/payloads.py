"""Webhook bodies: our documented ``json`` event, Alertmanager's webhook body, and a Slack message.

The body is rendered once, when the transition is written to the outbox, so every retry sends the
same bytes under the same event id.

``json`` (``Content-Type: application/json``)::

    {"version": 1, "event_id": "9f0c...", "type": "alert.firing" | "alert.resolved" | "test",
     "alert": {"id": "...", "rule": "reward_collapse", "severity": "critical",
               "state": "firing", "previous_state": "pending",
               "run_id": "...", "run_name": "...", "project": "...", "algorithm": "sapo",
               "step": 67, "step_time": 1764000000.5, "at": 1764000001.2,
               "values": {"reward.mean": 0.05, "baseline": 0.61},
               "description": "The smoothed mean reward fell ...",
               "run_url": "https://monitor.example.org/#/run/...?from=17&to=117"}}

``run_url`` is null unless ``SAPO_MONITOR_PUBLIC_URL`` is set.

``alertmanager``: the body Alertmanager's webhook receiver posts (``version`` "4"), one alert, labels
``alertname`` (the rule), ``severity``, ``project``, ``run``, ``algorithm``.
``slack``: ``{"text": "..."}`` for Slack-compatible incoming webhooks.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORMATS", "AlertEvent", "render"]

FORMATS = ("json", "alertmanager", "slack")
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended yet"


@dataclass(frozen=True)
class AlertEvent:
    """Everything a webhook body may say about one alert transition."""

    event_id: str
    type: str  # alert.firing | alert.resolved | test
    alert_id: str
    rule: str
    severity: str
    state: str
    previous_state: str | None
    run_id: str
    project: str | None
    step: int
    at: float
    started_at: float
    run_name: str | None = None
    algorithm: str | None = None
    step_time: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    run_url: str | None = None  # the run page in the web UI (needs SAPO_MONITOR_PUBLIC_URL)


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(ev: AlertEvent) -> dict[str, Any]:
    return {
        "version": 1,
        "event_id": ev.event_id,
        "type": ev.type,
        "alert": {
            "id": ev.alert_id,
            "rule": ev.rule,
            "severity": ev.severity,
            "state": ev.state,
            "previous_state": ev.previous_state,
            "run_id": ev.run_id,
            "run_name": ev.run_name,
            "project": ev.project,
            "algorithm": ev.algorithm,
            "step": ev.step,
            "step_time": ev.step_time,
            "at": ev.at,
            "started_at": ev.started_at,
            "values": ev.values,
            "description": ev.description,
            "run_url": ev.run_url,
        },
    }


def _summary(ev: AlertEvent) -> str:
    vals = ", ".join(f"{k}={_fmt(v)}" for k, v in ev.values.items())
    where = f"run {ev.run_name or ev.run_id}" + (f" (project {ev.project})" if ev.project else "")
    return f"{ev.rule} {ev.state} on {where} at step {ev.step}" + (f": {vals}" if vals else "")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _alertmanager(ev: AlertEvent) -> dict[str, Any]:
    status = "resolved" if ev.state == "resolved" else "firing"
    labels = {"alertname": ev.rule, "severity": ev.severity, "run": ev.run_id}
    if ev.project:
        labels["project"] = ev.project
    if ev.algorithm:
        labels["algorithm"] = ev.algorithm
    annotations = {"summary": _summary(ev), "description": ev.description, "step": str(ev.step)}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(ev.started_at),
        "endsAt": _iso(ev.at) if status == "resolved" else _ZERO_TIME,
        "generatorURL": ev.run_url or "",
        "fingerprint": ev.alert_id[:16],
    }
    group_labels = {"alertname": ev.rule, "run": ev.run_id}
    return {
        "version": "4",
        "groupKey": "{}:" + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "sapo-monitor",
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [alert],
    }


def _slack(ev: AlertEvent) -> dict[str, Any]:
    icon = {"resolved": ":white_check_mark:", "firing": ":rotating_light:"}.get(ev.state, ":bell:")
    head = f"{icon} [{ev.state.upper()}] {ev.severity}: {_summary(ev)}"
    text = head + (f"\n{ev.description}" if ev.description and ev.state != "resolved" else "")
    return {"text": text + (f"\n{ev.run_url}" if ev.run_url else "")}


_RENDER = {"json": _json, "alertmanager": _alertmanager, "slack": _slack}


def render(fmt: str, event: AlertEvent) -> bytes:
    """The request body for a webhook of format ``fmt`` (one of :data:`FORMATS`)."""
    return json.dumps(_RENDER[fmt](event), separators=(",", ":"), allow_nan=False).encode()
