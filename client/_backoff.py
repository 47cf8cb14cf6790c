"""The client's one retry policy, used by background delivery and by ``sapo-monitor upload``.

Exponential with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the n-th
consecutive failure waits a uniform random time in ``[0, min(cap, base * 2**(n-1))]``, so many clients
that failed together do not retry together. A ``Retry-After`` from the service is a floor (the service
knows when it will be back), and the cap bounds every wait.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_BASE", "Backoff"]

DEFAULT_BASE = 0.5  # seconds: the ceiling of the first retry's wait


@dataclass
class Backoff:
    """Counts consecutive failures; ``failed()`` returns how long to wait before the next try."""

    cap: float = 60.0
    base: float = DEFAULT_BASE
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def failed(self, retry_after: float | None = None) -> float:
        """One more failure: the seconds to wait (``retry_after`` from the response is a floor)."""
        self.attempt += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt - 1, 62))
        delay = self._rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(self.cap, delay)

    def succeeded(self) -> None:
        self.attempt = 0
