"""The client's one retry policy (issue 15, one wire contract): background delivery and ``upload`` both
wait by ``_backoff.Backoff``: full jitter under an exponential ceiling, ``Retry-After`` as a floor, the
cap over everything, and a success starts again from the first wait."""

from __future__ import annotations

import random

from sapo_monitor.client import _backoff, _delivery, upload


def test_waits_are_full_jitter_under_a_doubling_ceiling_and_the_cap() -> None:
    b = _backoff.Backoff(cap=4.0, base=0.5, _rng=random.Random(0))
    for attempt in range(1, 12):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        waits = [_backoff.Backoff(cap=4.0, base=0.5, attempt=attempt - 1, _rng=random.Random(s)).failed()
                 for s in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling  # spread over the whole range
        b.failed()
    assert b.attempt == 11
    b.succeeded()
    assert b.attempt == 0 and b.failed() <= 0.5


def test_retry_after_is_a_floor_and_the_cap_bounds_it() -> None:
    b = _backoff.Backoff(cap=10.0, _rng=random.Random(1))
    assert all(b.failed(retry_after=3.0) >= 3.0 for _ in range(3))
    assert _backoff.Backoff(cap=10.0).failed(retry_after=600.0) == 10.0
    assert _backoff.Backoff(cap=10.0, attempt=10**6).failed() <= 10.0  # no overflow at any count


def test_delivery_and_upload_share_the_policy() -> None:
    assert _delivery.Backoff is _backoff.Backoff and upload.Backoff is _backoff.Backoff
