"""More failing receivers than the worker has senders (issue 15 item 16: 20 slow receivers delayed another
project's event by 61-77 s): a healthy receiver's new notification is sent as soon as a sender is free,
not after every failing receiver's retries (the claim took the oldest rows first, which were theirs)."""

from __future__ import annotations

import time

from sapo_monitor.service.outbox.worker import DeliveryWorker

from tests.alerts.conftest import BOTH
from tests.alerts.test_outbox_slow import BOUNDED, _hook_with_events, _wait
from tests.support.bad_receivers import BadReceiver

SENDERS = 4
# Failing receivers are due again 0.1-0.3 s after each 1 s attempt: always due when a sender frees.
FEW_SENDERS = BOUNDED.model_copy(update={"webhook_concurrency": SENDERS, "webhook_timeout_s": 1.0})


@BOTH
def test_failing_receivers_beyond_the_senders_do_not_starve_a_healthy_one(db) -> None:  # type: ignore[no-untyped-def]
    hanging = [BadReceiver("hang").start() for _ in range(3 * SENDERS)]
    good = BadReceiver("ok").start()
    for r in hanging:
        _hook_with_events(db, r.url, 1)
    worker = DeliveryWorker(db, FEW_SENDERS)
    worker.start()
    try:
        _wait(lambda: all(r.arrivals for r in hanging), 20, "a first attempt at every hanging receiver")
        t0 = time.monotonic()
        _hook_with_events(db, good.url, 1)  # newer than all of theirs, and never tried
        took = _wait(lambda: len(good.counts()) == 1, 20, "the healthy receiver")
        # A sender frees within one attempt (1 s); before, the hanging rows were claimed first every time
        # and the healthy one was never served. 6 s leaves room for a loaded CI machine.
        assert took < 6.0, f"the healthy receiver waited {took:.1f} s behind {len(hanging)} hanging ones"
        assert time.monotonic() - t0 < 6.0
    finally:
        worker.stop()
        for r in (*hanging, good):
            r.stop()
