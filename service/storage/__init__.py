"""Storage: tables, engine and the transactions the API uses.

Importing this package registers every table on ``Base.metadata`` (the migrations' ``env.py`` reads
it): the alerts tables live in ``alert_models`` and are imported here when present.
"""

from __future__ import annotations

import importlib

from .models import Base

__all__ = ["Base", "load_all_models"]


def load_all_models() -> None:
    """Import every module that defines tables so ``Base.metadata`` is complete."""
    for name in ("models", "alert_models"):
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
