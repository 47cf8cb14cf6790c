"""Service settings: one pydantic-settings class, read from ``SAPO_MONITOR_*`` environment variables.

Nothing here runs at import time: :func:`sapo_monitor.service.app.create_app` takes a ``Settings``
instance, so tests and the CLI build their own.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DB_URL", "Settings", "is_loopback", "resolve_db_url"]

DEFAULT_DB_URL = "sqlite:///~/.local/share/sapo-monitor/sapo.db"


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


class Settings(BaseSettings):
    """Everything the service needs to start; every field is ``SAPO_MONITOR_<NAME>`` in the environment."""

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
