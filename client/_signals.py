"""SIGTERM secures every step a process ended before the process goes.

SIGTERM is what Kubernetes, Slurm preemption and ``timeout`` send first, and Python's default action
ends the process without ``atexit``, so ``Monitor.close`` never runs. ``install`` (called by ``init``, on
the main thread only: Python accepts handlers nowhere else) puts a handler in front of whatever was
there. The handler puts every step the live monitors ended on disk (``Monitor.secure``: waiting small
steps are computed, the spool writer empties its queue; bounded by ``SECURE_TIMEOUT``), then:

- a handler the trainer installed before runs next, unchanged (it may save a checkpoint and exit:
  ``atexit`` then delivers and marks the run as usual);
- with the default action, the default is restored and the signal sent again, so the process ends by
  SIGTERM as it would have without us (exit status 143 / -15);
- an ignored SIGTERM stays ignored.

The signal is never swallowed. A handler the trainer installs after ``init`` replaces ours; its own
exit path (``sys.exit``) runs ``atexit``, which closes the monitor.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import Any, Protocol

__all__ = ["SECURE_TIMEOUT", "install"]

log = logging.getLogger("sapo_monitor.client")

SECURE_TIMEOUT = 2.0  # seconds the handler may spend per monitor putting steps on disk


class _Securable(Protocol):
    def secure(self, timeout: float) -> bool: ...


_monitors: weakref.WeakSet[Any] = weakref.WeakSet()
_previous: Any = None
_installed = False


def install(monitor: _Securable) -> bool:
    """Secure ``monitor``'s steps on SIGTERM; True when the handler is in place (main thread only)."""
    global _previous, _installed
    _monitors.add(monitor)
    if threading.current_thread() is not threading.main_thread():
        return _installed
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return True
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError) as exc:  # e.g. an embedded interpreter that owns its signals
        log.debug("sapo-monitor: no SIGTERM handler: %s", exc)
        return False
    _previous = current
    _installed = True
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    for monitor in list(_monitors):
        try:
            if not monitor.secure(SECURE_TIMEOUT):
                log.warning("sapo-monitor: SIGTERM: not every step of %r reached the spool within %.0fs",
                            monitor, SECURE_TIMEOUT)
        except Exception as exc:  # never stand between the process and its signal
            log.warning("sapo-monitor: SIGTERM: securing %r failed: %s", monitor, exc)
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # The default action (or a handler installed outside Python): die by the signal, as without us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
