"""A warning logged once per key: a hook that fails on every step must not flood the training log."""

from __future__ import annotations

import logging

__all__ = ["WarnOnce"]


class WarnOnce:
    """``warn(key, message)`` logs ``message`` at WARNING the first time ``key`` is seen, then never again."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def __call__(self, key: str, message: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self._logger.warning(message)
