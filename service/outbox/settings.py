"""Settings of collapse detection and webhook delivery (``SAPO_MONITOR_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import Self  # typing.Self is 3.11+; the project supports 3.10

__all__ = ["AlertingSettings"]


class AlertingSettings(BaseSettings):
    """Read from the environment like the service's own settings; tests pass their own."""

    model_config = SettingsConfigDict(env_prefix="SAPO_MONITOR_", extra="ignore")

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

    @model_validator(mode="after")
    def _lease_covers_an_attempt(self) -> Self:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                f"webhook_lease_s ({self.webhook_lease_s:g}) must be longer than webhook_timeout_s "
                f"({self.webhook_timeout_s:g}): a lease that expires mid-attempt lets another worker send a duplicate"
            )
        return self
