"""Settings of collapse detection and webhook delivery (``SAPO_MONITOR_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AlertingSettings"]


class AlertingSettings(BaseSettings):
    """Read from the environment like the service's own settings; tests pass their own."""

    model_config = SettingsConfigDict(env_prefix="SAPO_MONITOR_", extra="ignore")

    rules: bool = Field(True, description="Evaluate alert rules on ingest (off only to measure their cost).")
    delivery_worker: bool = Field(True, description="Run the webhook delivery worker and silence check here.")
    webhook_retry_period_s: float = Field(
        24 * 3600.0, gt=0, description="Keep retrying a delivery for this long after the transition, then give up."
    )
    webhook_backoff_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles on every failure.")
    webhook_backoff_max_s: float = Field(300.0, gt=0, description="Longest delay between two attempts.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one delivery attempt.")
    webhook_lease_s: float = Field(
        60.0, gt=0, description="How long a worker owns a claimed delivery; a crashed worker's claim expires after it."
    )
    outbox_poll_s: float = Field(1.0, gt=0, description="How often an idle worker looks for due deliveries.")
    silent_check_s: float = Field(30.0, gt=0, description="How often runs are checked for silence (silent_run).")
