"""The older detector families on constructed series: fires, stays quiet, hysteresis (clear_steps).

One test group per module of service/rules/detectors (level, ewma, median, nonfinite, outcome, ratios,
silence); the baseline-relative families are in test_detectors_baseline.py. Pure and fast.
"""

from __future__ import annotations

import math
import random

import pytest
from sapo_monitor.service.rules import KINDS

from tests.alerts.rule_run import events as _events
from tests.alerts.rule_run import rule as _rule


def _x(values: list[float], name: str = "x") -> list[dict[str, float]]:
    return [{name: v} for v in values]


def _resolved(events: list[tuple[str, int]]) -> list[int]:
    return [s for state, s in events if state == "resolved"]


# --- level: threshold ---------------------------------------------------------------------------------


def test_threshold_fires_quiet_and_hysteresis() -> None:
    values = [0.0] * 5 + [2.0] * 5 + [0.0, 2.0] + [0.0] * 6
    assert _events(_rule("threshold", metric="x", value=1.0), _x([0.5] * 50)) == []
    quick = _events(_rule("threshold", metric="x", value=1.0), _x(values))
    assert quick[:2] == [("firing", 6), ("resolved", 11)]
    slow = _events(_rule("threshold", metric="x", value=1.0, clear_steps=3), _x(values))
    assert slow == [("firing", 6), ("resolved", 15)]  # the 2.0 at step 12 restarts the clear streak


# --- ewma ------------------------------------------------------------------------------------------------


def test_ewma_quiet_on_noise_and_hysteresis() -> None:
    rng = random.Random(1)
    noise = [1.0 + 0.05 * rng.gauss(0, 1) for _ in range(300)]
    assert _events(_rule("ewma_anomaly", metric="x", z=6.0, warmup=20), _x(noise)) == []
    values = [1.0 + 0.01 * ((i * 3) % 5 - 2) for i in range(30)] + [3.0] * 5 + [1.0] * 10
    quick = _events(_rule("ewma_anomaly", metric="x", z=4.0, warmup=10, min_std=0.01), _x(values))
    slow = _events(_rule("ewma_anomaly", metric="x", z=4.0, warmup=10, min_std=0.01, clear_steps=4), _x(values))
    assert quick[0] == ("firing", 31) and _resolved(quick) == [36]
    assert _resolved(slow) == [39]


# --- median spike -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1e-3, 1.0, 100.0])
def test_median_spike_relative_to_any_level(level: float) -> None:
    rng = random.Random(2)
    base = [level * (1 + 0.2 * rng.random()) for _ in range(40)]
    rule = _rule("median_spike", metrics=["x"], factor=3.0, window=20, warmup=10)
    assert _events(rule, _x(base)) == []
    spiked = base + [level * 10] * 3 + base[:10]
    events = _events(rule, _x(spiked))
    assert events[0] == ("firing", 41) and _resolved(events) == [44]
    slow = _events(_rule("median_spike", metrics=["x"], factor=3.0, window=20, warmup=10, clear_steps=5), _x(spiked))
    assert _resolved(slow) == [48]


def test_median_spike_does_not_learn_the_spike_and_respects_the_floor() -> None:
    values = [1.0] * 20 + [5.0] * 30
    events = _events(_rule("median_spike", metrics=["x"], factor=3.0, window=10, warmup=5), _x(values))
    assert events == [("firing", 21)]  # 30 steps of 5.0 never become the median
    assert _events(_rule("median_spike", metrics=["x"], factor=3.0, window=10, warmup=5, min_value=10.0),
                   _x(values)) == []


# --- nonfinite -----------------------------------------------------------------------------------------------


def test_nonfinite_fires_at_once_and_clears_after_finite_steps() -> None:
    rows = [{"loss": 0.1, "nonfinite.token_count": 0.0}] * 5
    rows += [{"loss": math.nan, "nonfinite.token_count": 0.0}, {"loss": 0.1, "nonfinite.token_count": 3.0}]
    rows += [{"loss": 0.1, "nonfinite.token_count": 0.0}] * 6
    assert _events(_rule("nonfinite"), rows[:5] * 10) == []
    events = _events(_rule("nonfinite", clear_steps=5), rows)
    assert events == [("firing", 6), ("resolved", 12)]  # step 7's token count keeps it open
    assert _events(_rule("nonfinite"), [{"loss": math.inf}]) == [("firing", 1)]


# --- outcome: drop from best, below baseline ------------------------------------------------------------------


def test_drop_from_best_fires_on_a_fall_not_on_a_plateau() -> None:
    rng = random.Random(3)
    rising = [min(0.5, 0.2 + 0.01 * s) + 0.01 * rng.gauss(0, 1) for s in range(100)]
    rule = _rule("drop_from_best", metric="r", alpha=0.15, drop=0.3, warmup=15, min_scale=0.2)
    assert _events(rule, _x(rising, "r")) == []
    fall = rising[:60] + [0.2] * 20 + [0.5] * 20
    events = _events(rule, _x(fall, "r"))
    assert events[0][0] == "firing" and 61 <= events[0][1] <= 66
    assert _resolved(events) and _resolved(events)[0] > 80  # recovers only once the reward is back
    slow = _events(_rule("drop_from_best", metric="r", alpha=0.15, drop=0.3, warmup=15, min_scale=0.2,
                         clear_steps=5), _x(fall, "r"))
    assert _resolved(slow)[0] == _resolved(events)[0] + 4


def test_drop_from_best_ignores_the_opening_transient() -> None:
    """A fall inside the warm-up (RL's first steps after a supervised start) sets no best to fall from."""
    values = [0.3] * 3 + [0.1] * 10 + [0.12] * 60
    assert _events(_rule("drop_from_best", metric="r", alpha=0.15, drop=0.3, warmup=15, min_scale=0.2),
                   _x(values, "r")) == []


def test_below_baseline_fires_quiet_and_hysteresis() -> None:
    values = [2.0] * 20 + [0.5] * 5 + [2.0] * 10
    assert _events(_rule("below_baseline", metric="e", fraction=0.3), _x([2.0] * 50, "e")) == []
    quick = _events(_rule("below_baseline", metric="e", fraction=0.3), _x(values, "e"))
    slow = _events(_rule("below_baseline", metric="e", fraction=0.3, clear_steps=4), _x(values, "e"))
    assert quick == [("firing", 21), ("resolved", 26)] and slow == [("firing", 21), ("resolved", 29)]


# --- ratios: tails, sign spread -------------------------------------------------------------------------------


def test_tails_fire_on_either_tail_and_clear() -> None:
    calm = {"log_ratio.abs_max": 0.5, "log_ratio.p99": 0.2, "log_ratio.p01": -0.2}
    rule = _rule("tails", clear_steps=2)
    assert _events(rule, [calm] * 30) == []
    for bad in ({"log_ratio.abs_max": 6.0}, {"log_ratio.p99": 1.5}, {"log_ratio.p01": -1.5}):
        events = _events(rule, [calm] * 5 + [{**calm, **bad}] * 2 + [calm] * 3)
        assert events == [("firing", 6), ("resolved", 9)], bad


def test_sign_spread_fires_quiet_and_hysteresis() -> None:
    calm = {"sign.pos.ratio_std": 0.1, "sign.neg.ratio_std": 0.12}
    bad = {"sign.pos.ratio_std": 0.1, "sign.neg.ratio_std": 0.5}
    assert _events(_rule("sign_spread"), [calm] * 30) == []
    assert _events(_rule("sign_spread", clear_steps=3), [calm] * 3 + [bad] * 3 + [calm] * 4) == [
        ("firing", 4), ("resolved", 9)]
    small = {"sign.pos.ratio_std": 0.001, "sign.neg.ratio_std": 0.01}  # 10x, but below min_std
    assert _events(_rule("sign_spread"), [small] * 10) == []


# --- silence -----------------------------------------------------------------------------------------------------


def test_silence_never_fires_on_ingest() -> None:
    """Firing is the periodic check's job (tests/alerts/test_api.py); a step that arrives is never silence."""
    assert _events(_rule("silence"), _x([1.0] * 20)) == []
    assert KINDS["silence"].time_based
