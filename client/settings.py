"""The client's settings: arguments to ``init`` win, then ``SAPO_MONITOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_SPOOL_DIR", "ClientSettings"]

DEFAULT_SPOOL_DIR = Path("~/.cache/sapo-monitor/spool")


class ClientSettings(BaseSettings):
    """Where and how the client delivers. Every field reads ``SAPO_MONITOR_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="SAPO_MONITOR_", extra="ignore")

    server: str | None = Field(None, description="Service URL, e.g. http://127.0.0.1:8321; None: offline (spool only).")
    token: SecretStr | None = Field(None, description="Bearer token with the ingest role for the run's project.")
    project: str = Field("default", description="Project the run belongs to.")
    spool_dir: Path = Field(DEFAULT_SPOOL_DIR, description="Root of the on-disk spool; one folder per run.")
    batch_max_steps: int = Field(200, ge=1, le=5000, description="Most steps in one POST.")
    batch_max_bytes: int = Field(1_000_000, ge=1_000, description="Most uncompressed JSON bytes in one POST.")
    flush_interval: float = Field(1.0, gt=0, description="Seconds a step may wait to be batched with others.")
    queue_size: int = Field(10_000, ge=1, description="Steps held in memory before they go to the spool.")
    timeout: float = Field(10.0, gt=0, description="HTTP timeout in seconds.")
    max_backoff: float = Field(60.0, gt=0, description="Longest wait between retries, in seconds.")
    close_timeout: float = Field(10.0, ge=0, description="How long close() (and exit) may spend delivering.")
    stats_batch: int | None = Field(None, ge=1, le=1024,
                                    description="Small CPU steps whose statistics are computed together (fewer, larger "
                                                "operations); 1: each at end_step. Unset: 1, or the adapter's own "
                                                "default (the bundled trainer's: 32).")

    @field_validator("server")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    def run_spool_dir(self, run_id: str) -> Path:
        return self.spool_dir.expanduser() / run_id
