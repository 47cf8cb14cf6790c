"""Links into the web UI for messages that leave the service (webhook payloads): they need the
address people reach the service at, ``SAPO_MONITOR_PUBLIC_URL`` (unset: no links)."""

from __future__ import annotations

from urllib.parse import quote

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LinkSettings", "run_page_url"]


class LinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAPO_MONITOR_", extra="ignore")

    public_url: str | None = Field(
        default=None, description="The service's address as people open it (e.g. https://monitor.example.org): "
        "webhook payloads then carry the run page's URL.")

    @field_validator("public_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return v.rstrip("/")


def run_page_url(run_id: str, *, step: int | None = None, public_url: str | None = None) -> str | None:
    """The run's page (zoomed around ``step``) under ``public_url`` or the environment's; None without one."""
    base = public_url if public_url is not None else LinkSettings().public_url
    if not base:
        return None
    url = f"{base.rstrip('/')}/#/run/{quote(run_id, safe='')}"
    if step is not None:
        url += f"?from={max(0, step - 50)}&to={step + 50}"
    return url
