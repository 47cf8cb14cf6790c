"""Webhook bodies, one per incident notification: our documented ``json`` event, Alertmanager's webhook
body, and a Slack message.

The body is rendered once, when the notification is written to the outbox, so every retry sends the
same bytes under the same event id.

``json`` (``Content-Type: application/json``)::

    {"version": 2, "event_id": "9f0c...", "at": 1764000031.2,
     "type": "incident.opened" | "incident.escalated" | "incident.resolved" | "incident.reopened"
             | "incident.repeated" | "test",
     "incident": {"id": "...", "state": "firing", "severity": "critical",
                  "run_id": "...", "run_name": "...", "project": "...", "algorithm": "sapo",
                  "opened_step": 41, "opened_at": 1764000001.2, "resolved_step": null, "resolved_at": null,
                  "reopened": 0,
                  "story": {"first_precursor": {"alert_id": "...", "rule": "ratio_variance_spike",
                                                "severity": "warning", "step": 41, "at": 1764000001.2},
                            "confirmation": {"alert_id": "...", "rule": "reward_collapse", "severity": "critical",
                                             "step": 66, "at": 1764000021.0},
                            "resolution": null,
                            "summary": "precursor ratio_variance_spike (warning) at step 41; confirmed by ..."},
                  "alerts": [{"id": "...", "rule": "ratio_variance_spike", "severity": "warning",
                              "state": "firing", "started_step": 40, "fired_step": 41, "fired_at": ...,
                              "resolved_step": null, "resolved_at": null,
                              "values": {"log_ratio.std": 0.31}, "description": "..."}, ...],
                  "run_url": "https://monitor.example.org/#/run/...?from=16&to=116"}}

``run_url`` is null unless ``SAPO_MONITOR_PUBLIC_URL`` is set. ``alerts`` lists every member alert in
the order they fired; ``values`` are the metric values at the alert's latest transition, non-finite
ones as ``"NaN"`` / ``"Infinity"`` strings.

``alertmanager``: the body Alertmanager's webhook receiver posts (``version`` "4"), grouped by run
(``groupLabels`` {run}), one entry per member alert with labels ``alertname`` (the rule),
``severity``, ``project``, ``run``, ``algorithm``, ``incident``; ``commonAnnotations.summary`` is the story.
``slack``: ``{"text": "..."}`` for Slack-compatible incoming webhooks.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORMATS", "IncidentEvent", "MemberAlert", "render"]

FORMATS = ("json", "alertmanager", "slack")
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended yet"
_SLACK_MEMBERS = 10  # a Slack message lists this many member alerts, then counts the rest


@dataclass(frozen=True)
class MemberAlert:
    id: str
    rule: str
    severity: str
    state: str  # firing | resolved
    started_step: int
    fired_step: int | None
    fired_at: float | None
    resolved_step: int | None = None
    resolved_at: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class IncidentEvent:
    """Everything a webhook body may say about one incident notification."""

    event_id: str
    type: str  # incident.opened | .escalated | .resolved | .reopened | .repeated | test
    at: float
    incident_id: str
    state: str
    severity: str
    run_id: str
    project: str | None
    opened_step: int
    opened_at: float
    story: dict[str, Any]  # first_precursor, confirmation, resolution, summary
    alerts: list[MemberAlert] = field(default_factory=list)
    run_name: str | None = None
    algorithm: str | None = None
    resolved_step: int | None = None
    resolved_at: float | None = None
    reopened: int = 0
    run_url: str | None = None  # the run page in the web UI (needs SAPO_MONITOR_PUBLIC_URL)


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(ev: IncidentEvent) -> dict[str, Any]:
    return {
        "version": 2,
        "event_id": ev.event_id,
        "type": ev.type,
        "at": ev.at,
        "incident": {
            "id": ev.incident_id,
            "state": ev.state,
            "severity": ev.severity,
            "run_id": ev.run_id,
            "run_name": ev.run_name,
            "project": ev.project,
            "algorithm": ev.algorithm,
            "opened_step": ev.opened_step,
            "opened_at": ev.opened_at,
            "resolved_step": ev.resolved_step,
            "resolved_at": ev.resolved_at,
            "reopened": ev.reopened,
            "story": ev.story,
            "alerts": [a.to_json() for a in ev.alerts],
            "run_url": ev.run_url,
        },
    }


def _where(ev: IncidentEvent) -> str:
    return f"run {ev.run_name or ev.run_id}" + (f" (project {ev.project})" if ev.project else "")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _alert_summary(ev: IncidentEvent, a: MemberAlert) -> str:
    vals = ", ".join(f"{k}={_fmt(v)}" for k, v in a.values.items())
    return f"{a.rule} {a.state} on {_where(ev)} at step {a.fired_step}" + (f": {vals}" if vals else "")


def _alertmanager(ev: IncidentEvent) -> dict[str, Any]:
    status = "resolved" if ev.state == "resolved" else "firing"
    common = {"run": ev.run_id, "incident": ev.incident_id}
    if ev.project:
        common["project"] = ev.project
    if ev.algorithm:
        common["algorithm"] = ev.algorithm
    alerts = []
    for a in ev.alerts:
        a_status = "resolved" if a.state == "resolved" else "firing"
        starts = a.fired_at if a.fired_at is not None else ev.opened_at
        alerts.append({
            "status": a_status,
            "labels": {"alertname": a.rule, "severity": a.severity, **common},
            "annotations": {"summary": _alert_summary(ev, a), "description": a.description,
                            "step": str(a.fired_step)},
            "startsAt": _iso(starts),
            "endsAt": _iso(a.resolved_at or ev.at) if a_status == "resolved" else _ZERO_TIME,
            "generatorURL": ev.run_url or "",
            "fingerprint": a.id[:16],
        })
    severities = {a.severity for a in ev.alerts}
    common_labels = {**common, **({"severity": severities.pop()} if len(severities) == 1 else {})}
    if len(ev.alerts) == 1:
        common_labels["alertname"] = ev.alerts[0].rule
    group_labels = {"run": ev.run_id}
    return {
        "version": "4",
        "groupKey": "{}:" + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "sapo-monitor",
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": {"summary": f"{ev.severity} incident on {_where(ev)}: {ev.story.get('summary', '')}"},
        "externalURL": "",
        "alerts": alerts,
    }


def _slack(ev: IncidentEvent) -> dict[str, Any]:
    kind = ev.type.split(".")[-1]
    icon = {"resolved": ":white_check_mark:", "repeated": ":bell:", "test": ":bell:"}.get(kind, ":rotating_light:")
    lines = [f"{icon} [{kind.upper()}] {ev.severity} incident on {_where(ev)}: {ev.story.get('summary', '')}"]
    for a in ev.alerts[:_SLACK_MEMBERS]:
        lines.append(f"• {a.rule} ({a.severity}) {a.state}, fired at step {a.fired_step}")
    if len(ev.alerts) > _SLACK_MEMBERS:
        lines.append(f"• and {len(ev.alerts) - _SLACK_MEMBERS} more")
    if ev.run_url:
        lines.append(ev.run_url)
    return {"text": "\n".join(lines)}


_RENDER = {"json": _json, "alertmanager": _alertmanager, "slack": _slack}


def render(fmt: str, event: IncidentEvent) -> bytes:
    """The request body for a webhook of format ``fmt`` (one of :data:`FORMATS`)."""
    return json.dumps(_RENDER[fmt](event), separators=(",", ":"), allow_nan=False).encode()
