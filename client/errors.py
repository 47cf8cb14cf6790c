"""The client's errors, one tree.

    SapoMonitorError            base of everything the client raises
    ├── ConfigError             bad arguments to init / attach (run id, server URL, options); ValueError
    │   └── AdapterNotFoundError  attach() got a trainer type no adapter supports; TypeError too
    ├── InputError              tensors given to observe / compute_step_stats do not fit; ValueError
    └── DeliveryError           a batch could not be delivered (never raised into training code:
        │                       delivery runs in the background and logs these)
        ├── TransportError      the HTTP exchange failed; ``retryable`` says whether to try again
        └── SpoolError          the on-disk spool could not be written or read

``observe`` and ``end_step`` never raise into training code: they log the reason once and go on
(``Monitor(strict=True)`` re-raises InputError, for tests and debugging).
"""

from __future__ import annotations

__all__ = [
    "AdapterNotFoundError",
    "ConfigError",
    "DeliveryError",
    "InputError",
    "SapoMonitorError",
    "SpoolError",
    "TransportError",
]


class SapoMonitorError(Exception):
    """Base class of the client's errors."""


class ConfigError(SapoMonitorError, ValueError):
    """Raised by ``init`` / ``attach`` for arguments that cannot work (bad run id, server URL...)."""


class AdapterNotFoundError(ConfigError, TypeError):
    """Raised by ``attach`` for a trainer whose type no registered adapter supports."""


class InputError(SapoMonitorError, ValueError):
    """Raised by ``compute_step_stats`` for tensors of the wrong kind or shape."""


class DeliveryError(SapoMonitorError):
    """A batch could not be delivered; logged by the background worker, never raised into training."""


class TransportError(DeliveryError):
    """The HTTP exchange failed. ``status`` is the HTTP status (None: no response at all)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after  # seconds, from the response's Retry-After header


class SpoolError(DeliveryError):
    """The on-disk spool could not be written or read (disk full, permissions)."""
