"""The bucket arithmetic: never more than ``max_points`` points, whatever the window; and the
series reads' shortcuts give the answers of the plain reads."""

from __future__ import annotations

import math
import random

import pytest
from sapo_monitor.service.storage.db import Database
from sapo_monitor.service.storage.models import CATALOGUE_COLUMNS, ROLLUP_BLOCK
from sapo_monitor.service.storage.range_reads import mean, prime_means
from sapo_monitor.service.storage.runs import get_run
from sapo_monitor.service.storage.series import RAW_LIMIT, bucket_width
from sqlalchemy import event

from tests.alerts.conftest import BOTH, db_url, ingest  # noqa: F401 (fixture)


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


@BOTH
def test_means_read_together_equal_means_read_one_by_one(db_url: str) -> None:  # noqa: F811
    """``prime_means`` (one pass for several metrics, as ``/compare`` uses it) changes how much is read,
    never a mean: a NaN, an infinity, values whose sum needs scaling (1e300) and a metric missing from
    part of the range give the same answers, and the primed ranges read no step again."""
    trace = []
    for s in range(0, 1500):
        m = {"loss": 1.0 / (s + 1), "ratio.mean": 1e300 * (1 + s % 3), "kl.k3": math.nan if s == 700 else s * 0.5,
             "entropy.mean": math.inf if s == 1400 else 0.25}
        if s >= 1000:
            m["reward.mean"] = -0.5 * s
        trace.append((s, m))
    db = Database(db_url, pool_size=2)
    ranges = {m: rng for m, rng in (("loss", (10, 1400)), ("ratio.mean", (10, 1400)), ("kl.k3", (10, 1400)),
                                    ("entropy.mean", (10, 1400)), ("reward.mean", (10, 1400)), ("grad_norm", (10, 1400)),
                                    ("lr", (3, 9)))}
    try:
        ingest(db, "m", trace)
        with db.read() as session:
            pk = get_run(session, run_id="m").pk  # type: ignore[union-attr]
            one = {m: mean(session, run_pk=pk, metric=m, lo=a, hi=b) for m, (a, b) in ranges.items()}
        with db.read() as session:
            prime_means(session, run_pk=pk, ranges=ranges)
            scans: list[str] = []
            listen = lambda *a: scans.append(a[2]) if "FROM steps" in a[2] else None  # noqa: E731
            event.listen(db.engine, "before_cursor_execute", listen)
            try:
                together = {m: mean(session, run_pk=pk, metric=m, lo=a, hi=b, nan_free=m != "kl.k3")
                            for m, (a, b) in ranges.items()}
            finally:
                event.remove(db.engine, "before_cursor_execute", listen)
    finally:
        db.dispose()
    assert repr(together) == repr(one)
    assert one["loss"] == pytest.approx(sum(1.0 / (s + 1) for s in range(10, 1401)) / 1391)
    assert math.isnan(one["kl.k3"]) and one["entropy.mean"] == math.inf and one["grad_norm"] is None
    assert one["ratio.mean"] == pytest.approx(1e300 * sum(1 + s % 3 for s in range(10, 1401)) / 1391)
    assert one["reward.mean"] == pytest.approx(-0.5 * (1000 + 1400) / 2)
    # Read again: kl.k3 (its NaN), ratio.mean (its sum needs scaling), entropy.mean (an infinity) and
    # lr (a range of its own); not loss and reward.mean.
    assert not any(CATALOGUE_COLUMNS[m] in q for q in scans for m in ("loss", "reward.mean")), scans
    assert all(any(CATALOGUE_COLUMNS[m] in q for q in scans) for m in ("kl.k3", "ratio.mean", "entropy.mean", "lr"))
