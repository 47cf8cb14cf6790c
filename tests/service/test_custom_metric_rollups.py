"""Metrics outside the catalogue take the column-at-a-time rollup path (as fast as catalogue ones): its
block statistics equal the per-value reference on any mix of gaps, ties, NaN and infinities."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from sapo_monitor.client.wire import StepRecord
from sapo_monitor.service.storage.rollups import _metric_stats, block_stats

_values = st.one_of(st.sampled_from([0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e308]), st.floats())
_metrics = st.dictionaries(st.sampled_from(["a.x", "b", "c_c"]), _values, max_size=3)


def _same(a: list | None, b: list | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(_metrics, min_size=1, max_size=70), st.booleans())
def test_custom_metric_block_stats_equal_the_reference(metrics: list[dict[str, float]], same_shape: bool) -> None:
    if same_shape:  # one key order for every step: the transposed path
        metrics = [{k: m.get(k, 0.5) for k in ("a.x", "b", "c_c")} for m in metrics]
    records = [StepRecord(s * 3, None, m) for s, m in enumerate(metrics)]
    stats = block_stats(records)
    for block, bs in stats.items():
        grp = [r for r in records if r.step // 64 == block]
        assert bs.steps == len(grp)
        for name in ("a.x", "b", "c_c"):
            assert _same(bs.metrics.get(name), _metric_stats(grp, name)), (name, [r.metrics for r in grp])
