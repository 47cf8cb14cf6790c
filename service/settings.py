"""Service settings: one pydantic-settings class, read from ``SAPO_MONITOR_*`` environment variables.

Nothing here runs at import time: :func:`sapo_monitor.service.app.create_app` takes a ``Settings``
instance, so tests and the CLI build their own. Collapse detection and webhook delivery have their own
group of fields (:class:`AlertingSettings`): ``Settings`` includes them under the same flat names
(``SAPO_MONITOR_WEBHOOK_TIMEOUT_S``), and :attr:`Settings.alerting` hands the delivery worker just those.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import Self  # typing.Self is 3.11+; the project supports 3.10

from .incidents import NotifyPolicy

__all__ = ["DEFAULT_DB_URL", "AlertingSettings", "Settings", "is_loopback", "resolve_db_url"]

DEFAULT_DB_URL = "sqlite:///~/.local/share/sapo-monitor/sapo.db"
_NOTIFY = NotifyPolicy()  # the incident timers' defaults, kept in one place


def resolve_db_url(url: str) -> str:
    """Expand ``~`` in a SQLite path and create its folder; other URLs pass through.

    A bare ``postgresql://`` address means psycopg 3 for SQLAlchemy 2.1, which is what we ship.
    """
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != "sqlite:///:memory:":
        path = os.path.expanduser(url[len(prefix):])
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return prefix + path
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    return url


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (the only places auth may be off)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AlertingSettings(BaseModel):
    """Collapse detection, incident notifications and webhook delivery. Part of :class:`Settings` (read
    from the environment with it); a plain model, so tests build their own without the environment."""

    rules: bool = Field(True, description="Evaluate alert rules on ingest (off only to measure their cost).")
    delivery_worker: bool = Field(True, description="Run the webhook delivery worker and silence check here.")
    webhook_retry_period_s: float = Field(
        24 * 3600.0, gt=0,
        description="Delivery expiry: keep retrying a delivery for this long after the transition, then mark it "
        "failed and give up.",
    )
    webhook_backoff_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles on every failure.")
    webhook_backoff_max_s: float = Field(300.0, gt=0, description="Longest delay between two attempts.")
    webhook_timeout_s: float = Field(
        10.0, gt=0,
        description="Total time of one delivery attempt (name resolution, connect, request, status line, reading "
        "the answer): a receiver that hangs or drips bytes is cut off after it.",
    )
    webhook_max_response_bytes: int = Field(
        64 * 1024, ge=0, description="Bytes of a receiver's answer read at most; the rest is never read."
    )
    webhook_concurrency: int = Field(
        8, ge=1, le=256, description="Receivers (webhooks) delivered to at the same time; each one in order."
    )
    webhook_allow_hosts: str = Field(
        "",
        description="Comma-separated host names, addresses and CIDR blocks webhooks may reach although they "
        "are loopback, private or link-local (refused by default), e.g. '127.0.0.0/8,::1,hooks.internal'.",
    )
    webhook_lease_s: float = Field(
        60.0, gt=0,
        description="How long a worker owns a delivery it is about to send (renewed before each send; longer "
        "than webhook_timeout_s); a crashed worker's claim expires after it.",
    )
    outbox_poll_s: float = Field(1.0, gt=0, description="How often an idle worker looks for due deliveries.")
    outbox_stall_s: float = Field(
        15.0, gt=0,
        description="The delivery worker counts as stalled (readiness 503, sapo_outbox_delivering 0) when it "
        "has not read the outbox for this long.",
    )
    silent_check_s: float = Field(30.0, gt=0, description="How often runs are checked for silence (silent_run).")
    # Incident notifications, after Alertmanager's route timers (defaults: service/incidents.py's NotifyPolicy).
    incident_group_wait_s: float = Field(
        _NOTIFY.group_wait_s, ge=0, le=24 * 3600,
        description="An incident's first notification waits this long after it opens, so the alerts that "
        "arrive together (a precursor and its confirmation) go out as one message.",
    )
    incident_group_interval_s: float = Field(
        _NOTIFY.group_interval_s, ge=0, le=24 * 3600,
        description="After a notification, the incident's next change (escalated to critical, resolved, "
        "reopened) is sent no sooner than this.",
    )
    incident_repeat_interval_s: float = Field(
        _NOTIFY.repeat_interval_s, gt=0, le=30 * 24 * 3600,
        description="A firing incident with nothing new is sent again (incident.repeated) at most this often, "
        "and only while its run still reports steps.",
    )

    def notify_policy(self) -> NotifyPolicy:
        """The incident notification timers."""
        return NotifyPolicy(self.incident_group_wait_s, self.incident_group_interval_s,
                            self.incident_repeat_interval_s)

    @model_validator(mode="after")
    def _lease_covers_an_attempt(self) -> Self:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                f"webhook_lease_s ({self.webhook_lease_s:g}) must be longer than webhook_timeout_s "
                f"({self.webhook_timeout_s:g}): a lease that expires mid-attempt lets another worker send a duplicate"
            )
        return self


class Settings(BaseSettings, AlertingSettings):
    """Everything the service needs to start; every field is ``SAPO_MONITOR_<NAME>`` in the environment
    (the fields of :class:`AlertingSettings` included)."""

    model_config = SettingsConfigDict(env_prefix="SAPO_MONITOR_", extra="ignore")

    db: str = Field(DEFAULT_DB_URL, description="SQLAlchemy database URL (SQLite or PostgreSQL).")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8321, ge=0, le=65535, description="Port to bind.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Bearer-token auth: 'auto' is off on a loopback address and on elsewhere; "
        "'off' is refused on a non-loopback address.",
    )
    active_window: timedelta = Field(
        timedelta(minutes=15),
        description="Runs seen within this window are exported on /metrics (seconds or ISO 8601).",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body (as sent).")
    max_decoded_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="Largest request body after gzip decompression."
    )
    pool_size: int = Field(8, ge=1, description="Database connection pool size (PostgreSQL).")
    db_connect_timeout_s: float = Field(
        3.0, gt=0, le=600, description="PostgreSQL: connecting (TCP and handshake) gives up after this long."
    )
    db_statement_timeout_s: float = Field(
        15.0, gt=0, le=3600,
        description="PostgreSQL: a statement (server statement_timeout) or a connection that stays silent "
        "(cut by the client) fails after this long.",
    )
    db_pool_timeout_s: float = Field(
        2.0, gt=0, le=600, description="Waiting for a free pooled database connection gives up after this long."
    )
    migrate_on_start: bool = Field(
        True, description="Create the schema through the migrations when the database is empty."
    )

    @field_validator("active_window", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))  # "900" in the environment means seconds
            except ValueError:
                return value  # ISO 8601 ("PT15M") or "HH:MM:SS": pydantic parses it
        return value

    @field_validator("db")
    @classmethod
    def _expand(cls, value: str) -> str:
        return resolve_db_url(value)

    @property
    def alerting(self) -> AlertingSettings:
        """The alerting fields alone (what the delivery worker and the silence check read)."""
        return AlertingSettings.model_validate({k: getattr(self, k) for k in AlertingSettings.model_fields})

    @property
    def auth_enabled(self) -> bool:
        if self.auth == "auto":
            return not is_loopback(self.host)
        return self.auth == "on"

    def check_safe(self) -> None:
        """Refuse settings that would expose an unauthenticated service beyond this machine."""
        if not self.auth_enabled and not is_loopback(self.host):
            raise ValueError(
                f"auth is off but the service would bind to {self.host}: auth can only be off on a "
                "loopback address (127.0.0.1, ::1, localhost). Set SAPO_MONITOR_AUTH=on and create tokens "
                "with `sapo-monitor token create --project P --role R`."
            )
