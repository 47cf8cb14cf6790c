"""Where :class:`AlertingSettings` lived before it became part of the service's ``Settings``
(:mod:`sapo_monitor.service.settings`); kept so existing imports keep working."""

from __future__ import annotations

from ..settings import AlertingSettings

__all__ = ["AlertingSettings"]
