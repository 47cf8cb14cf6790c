"""Tables of collapse detection: rules, per-run rule state, alerts and their transitions, webhooks,
the webhook outbox and every delivery attempt.

They live on the service's declarative ``Base`` (so migrations and autogenerate see them) but in their
own module: the step store does not need to know about alerts. Migration ``0002`` creates them.

* ``alert_rules``: custom rules, and stored overrides of built-in rules (``builtin`` true).
* ``alert_rule_state``: one row per run: the last evaluated step and every rule's detector and
  lifecycle state as one JSON document (read once and written once per ingested batch).
* ``alerts``: one row per alert (an episode of a rule on a run); ``alert_transitions``: each change of
  state with the step and the metric values that caused it (ordered by ``id``).
* ``webhooks``; ``webhook_outbox``: one row per (incident notification or test event, webhook), written by the
  delivery worker's flush, the rendered body fixed so every retry sends the same bytes; ``webhook_deliveries``:
  every attempt.
* ``incidents``: one row per run episode (see :mod:`sapo_monitor.service.incidents`): state, severity,
  the story (first precursor and confirmation as JSON, resolution), and what the last notification
  told; ``next_due_at`` is when the delivery worker looks at it next. ``incident_alerts``: its
  member alerts. Migration ``0003`` creates them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

__all__ = [
    "Alert",
    "AlertRule",
    "AlertTransition",
    "Incident",
    "IncidentAlert",
    "RuleState",
    "Webhook",
    "WebhookDelivery",
    "WebhookOutbox",
]


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    params: Mapped[str] = mapped_column(Text)  # JSON object
    for_steps: Mapped[int] = mapped_column(Integer)
    clear_steps: Mapped[int] = mapped_column(Integer, default=1)
    description: Mapped[str] = mapped_column(Text, default="")
    project: Mapped[str | None] = mapped_column(String(200))  # project name; NULL = every project
    run_id: Mapped[str | None] = mapped_column(String(200))  # the client's run id; NULL = every run
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class RuleState(Base):
    __tablename__ = "alert_rule_state"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(Text)  # JSON, see rules.evaluate.RunRuleState
    updated_at: Mapped[float] = mapped_column(Float)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_run_pk_rule_id", "run_pk", "rule_id"),
        Index("ix_alerts_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # pending | firing | resolved
    started_step: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float] = mapped_column(Float)
    fired_step: Mapped[int | None] = mapped_column(BigInteger)
    fired_at: Mapped[float | None] = mapped_column(Float)
    resolved_step: Mapped[int | None] = mapped_column(BigInteger)
    resolved_at: Mapped[float | None] = mapped_column(Float)
    metric_values: Mapped[str] = mapped_column(Text)  # JSON: metric values at the latest transition


class AlertTransition(Base):
    __tablename__ = "alert_transitions"
    __table_args__ = (Index("ix_alert_transitions_run_pk_id", "run_pk", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(BigInteger)
    step_time: Mapped[float | None] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)
    metric_values: Mapped[str] = mapped_column(Text)  # JSON, non-finite values as "NaN"/"Infinity"


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    project: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(200))
    min_severity: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str | None] = mapped_column(String(500))  # needed to sign; never returned by the API
    description: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)


class WebhookOutbox(Base):
    __tablename__ = "webhook_outbox"
    __table_args__ = (
        Index("ix_webhook_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_outbox_webhook_id_order_key_id", "webhook_id", "order_key", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(32))
    order_key: Mapped[str] = mapped_column(String(200))  # the run: deliveries are in order per key
    body: Mapped[str] = mapped_column(Text)  # the rendered request body, identical on every retry
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[float | None] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("webhook_outbox.id", ondelete="CASCADE"), index=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | retry | failed
    error: Mapped[str | None] = mapped_column(Text)


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_run_pk_opened_step", "run_pk", "opened_step"),
        Index("ix_incidents_state", "state"),
        Index("ix_incidents_next_due_at", "next_due_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # firing | resolved
    severity: Mapped[str] = mapped_column(String(16))  # highest a member reached
    opened_step: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[float] = mapped_column(Float)
    resolved_step: Mapped[int | None] = mapped_column(BigInteger)
    resolved_at: Mapped[float | None] = mapped_column(Float)
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    story: Mapped[str] = mapped_column(Text)  # JSON: {"precursor": point | null, "confirmation": point | null}
    firing_alerts: Mapped[str] = mapped_column(Text)  # JSON list: member alert ids firing now
    changed_at: Mapped[float | None] = mapped_column(Float)  # first change not notified yet
    next_due_at: Mapped[float | None] = mapped_column(Float)  # when the delivery worker looks at it
    notified_state: Mapped[str | None] = mapped_column(String(16))
    notified_severity: Mapped[str | None] = mapped_column(String(16))
    last_notified_at: Mapped[float | None] = mapped_column(Float)
    notifications: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


class IncidentAlert(Base):
    __tablename__ = "incident_alerts"

    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)
