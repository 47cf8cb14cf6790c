"""Per-process read caches.

``ReadCache``: a short-lived cache of a small table read on every ingest batch (rules, webhooks).
Changes made through this process clear it at once and again after their commit (so a reader that
cached the old rows between the two does not keep them); other replicas see changes within ``ttl_s``.

``VersionedCache``: a few recent reads of large, rarely changing data (a run's series pieces), each
kept with a version the caller reads from the database on every use (a run's ``last_seen_at`` and
step range, which every ingest into the run changes): an entry is only returned while its version is
the database's, so a change made through any replica is never hidden.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, cast

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

__all__ = ["ReadCache", "VersionedCache"]

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


class VersionedCache(Generic[T]):
    """At most ``size`` values, least recently used out first; thread-safe (routes run in a pool)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Hashable, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Hashable, load: Callable[[], T]) -> T:
        """The value kept for ``key`` if it was loaded at ``version``, else ``load()`` (kept)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] == version:
                self._entries.move_to_end(key)
                return hit[1]
        value = load()
        with self._lock:
            self._entries[key] = (version, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def peek(self, key: Hashable, version: Hashable) -> T | None:
        """The value kept for ``key`` at ``version``, or None (nothing loaded)."""
        with self._lock:
            hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
