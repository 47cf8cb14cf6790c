"""The bucket arithmetic: never more than ``max_points`` points, whatever the window."""

from __future__ import annotations

import random

from sapo_monitor.service.storage.models import ROLLUP_BLOCK
from sapo_monitor.service.storage.series import RAW_LIMIT, bucket_width


def test_bucket_width_bounds_the_points() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        lo = rng.choice([0, rng.randrange(10**6)])
        hi = lo + rng.choice([rng.randrange(1, 100), rng.randrange(1, 10**5), rng.randrange(1, 10**6)])
        max_points = rng.choice([3, 4, 5, 7, 10, 100, 1000, 5000])
        per_bucket = rng.choice([2, 3])
        width = bucket_width(lo, hi, max_points, per_bucket)
        if width is None:
            assert hi - lo + 1 <= max_points
            continue
        buckets = hi // width - lo // width + 1
        assert buckets * per_bucket <= max_points, (lo, hi, max_points, per_bucket, width)
        if hi - lo + 1 > RAW_LIMIT:
            assert width % ROLLUP_BLOCK == 0
