"""A short-lived, per-process cache of a small table read on every ingest batch (rules, webhooks).

Changes made through this process clear it at once and again after their commit (so a reader that
cached the old rows between the two does not keep them); other replicas see changes within ``ttl_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

__all__ = ["ReadCache"]

T = TypeVar("T")


class ReadCache(Generic[T]):
    """``load(session)``'s result, at most ``ttl_s`` old, kept per database URL."""

    def __init__(self, load: Callable[[Session], T], ttl_s: float = 2.0) -> None:
        self._load = load
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, T]] = {}

    def get(self, session: Session) -> T:
        key = str(cast(Engine, session.get_bind()).url)  # sessions here are bound to an Engine
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = self._load(session)
        self._entries[key] = (now, value)
        return value

    def invalidate(self) -> None:
        self._entries.clear()

    def invalidate_on_commit(self, session: Session) -> None:
        """Clear now and once more after ``session`` commits the change being made."""
        self.invalidate()
        event.listen(session, "after_commit", lambda _s: self.invalidate(), once=True)
