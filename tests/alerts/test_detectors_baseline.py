"""Baseline-relative detectors on constructed series: shift, sign_shift, trend, reward_hack.

Each family: it fires on the pattern it is for, stays quiet on noise of any level (the same rule on a
run 100x quieter or louder), and resolves with hysteresis (not on the first quiet step). Pure and fast:
no database, a few hundred steps per case, several seeds where noise is drawn.
"""

from __future__ import annotations

import math
import random

import pytest
from sapo_monitor.service.rules import Rule, RunRuleState, StepInput, evaluate_batch
from sapo_monitor.service.rules.builtin import builtin_rule
from sapo_monitor.service.rules.detectors.trend import trend_stats

from tests.alerts.rule_run import events as _events
from tests.alerts.rule_run import rule as _rule


def _noise(rng: random.Random, level: float, rel: float = 0.1) -> float:
    return level * math.exp(rel * rng.gauss(0.0, 1.0))


# --- shift -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1e-4, 0.05, 30.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shift_quiet_on_noise_at_any_level(level: float, seed: int) -> None:
    rng = random.Random(seed)
    rows = [{"x": _noise(rng, level, 0.2)} for _ in range(300)]
    assert _events(_rule("shift", metric="x"), rows) == []


@pytest.mark.parametrize("level", [1e-4, 0.05, 30.0])
def test_shift_fires_on_a_sustained_rise_relative_to_the_run(level: float) -> None:
    """A 3x rise from step 60 fires within a few steps whatever the run's own level."""
    rng = random.Random(4)
    rows = [{"x": _noise(rng, level * (3.0 if s >= 60 else 1.0))} for s in range(1, 121)]
    events = _events(_rule("shift", metric="x"), rows)
    assert events and events[0][0] == "firing" and 60 <= events[0][1] <= 63


def test_shift_catches_a_creep_from_its_own_baseline_not_a_fixed_bound() -> None:
    """gate_saturation's case: 0.02 creeping to 0.08 over 40 steps (never near the old fixed 0.3)."""
    rng = random.Random(5)
    rows = [{"gate.saturated_frac": _noise(rng, 0.02 * (1 + 3 * max(0, s - 40) / 40 if s < 80 else 4.0), 0.1)}
            for s in range(1, 121)]
    rule = builtin_rule("gate_saturation")
    assert rule is not None
    events = _events(rule, rows)
    fired = [s for state, s in events if state == "firing"]
    assert fired and 45 <= fired[0] <= 80 and max(r["gate.saturated_frac"] for r in rows) < 0.3


def test_shift_direction_down_and_min_value() -> None:
    rows = [{"x": 5.0 + 0.1 * (s % 3)} for s in range(1, 41)] + [{"x": 2.0}] * 20
    assert _events(_rule("shift", metric="x", direction="down"), rows)[0] == ("firing", 41)
    assert _events(_rule("shift", metric="x"), rows) == []  # the up side does not see a fall
    up = [{"x": 0.001 + 0.0001 * (s % 3)} for s in range(1, 41)] + [{"x": 0.01}] * 20
    assert _events(_rule("shift", metric="x"), up)[0] == ("firing", 41)
    assert _events(_rule("shift", metric="x", min_value=0.05), up) == []  # tenfold, but of something negligible


def test_shift_skip_zero_ignores_on_policy_steps() -> None:
    """Every 4th step exactly 0 (a rollout's first step): with skip_zero they neither fire nor reset."""
    rng = random.Random(6)
    rows = [{"x": 0.0 if s % 4 == 1 else _noise(rng, 0.1)} for s in range(1, 201)]
    assert _events(_rule("shift", metric="x", skip_zero=True), rows) == []
    rows[120:] = [{"x": 0.0 if s % 4 == 1 else 0.5} for s in range(121, 201)]
    events = _events(_rule("shift", metric="x", skip_zero=True), rows)
    assert events[0] == ("firing", 122)


def test_shift_hysteresis_and_no_learning_from_the_anomaly() -> None:
    """It stays firing through the shift (the baseline does not adopt it), resolves after the shift ends,
    not at its first quiet step, and with clear_steps later still."""
    base = [{"x": 1.0 + 0.05 * ((s * 7) % 5 - 2)} for s in range(1, 41)]
    rows = base + [{"x": 4.0}] * 60 + base
    events = _events(_rule("shift", metric="x"), rows)
    assert events[0] == ("firing", 41)
    resolved = [s for state, s in events if state == "resolved"]
    assert len(events) == 2 and resolved and resolved[0] > 101  # capped sum: clears a few steps after 100
    assert resolved[0] <= 101 + 24 + 1  # 3h / k quiet steps at most
    slow = _events(_rule("shift", metric="x", clear_steps=5), rows)
    assert [s for state, s in slow if state == "resolved"] == [resolved[0] + 4]


def test_shift_state_survives_json_and_batching() -> None:
    import json

    rng = random.Random(7)
    rows = [{"x": _noise(rng, 1.0 if s < 50 else 5.0)} for s in range(1, 90)]
    rule = _rule("shift", metric="x")
    whole = _events(rule, rows, batch=500)
    state_doc = None
    got = []
    for i in range(0, len(rows), 5):
        state = RunRuleState.from_json(json.loads(json.dumps(state_doc)) if state_doc else None)
        got += [(t.to_state, t.step) for t in evaluate_batch(
            [rule], state, "r", [StepInput(j + 1, None, rows[j]) for j in range(i, min(i + 5, len(rows)))])]
        state_doc = state.to_json()
    assert got == whole and whole


# --- sign_shift ----------------------------------------------------------------------------------------


def _signs(rng: random.Random, pos: float, neg: float) -> dict[str, float]:
    return {"sign.pos.ratio_std": _noise(rng, pos), "sign.neg.ratio_std": _noise(rng, neg)}


@pytest.mark.parametrize("seed", [0, 1])
def test_sign_shift_fires_when_the_negative_side_outgrows_the_positive(seed: int) -> None:
    rng = random.Random(seed)
    # Both sides grow from step 50 (a general spread rise is not this rule's business) ...
    both = [_signs(rng, 0.1 * (3 if s >= 50 else 1), 0.12 * (3 if s >= 50 else 1)) for s in range(1, 121)]
    assert _events(_rule("sign_shift"), both) == []
    # ... the negative side alone triples from step 50: fires, though neg/pos never reaches the old 2x rule.
    neg = [_signs(rng, 0.1, 0.06 * (3 if s >= 50 else 1)) for s in range(1, 121)]
    events = _events(_rule("sign_shift"), neg)
    assert events and events[0][0] == "firing" and 50 <= events[0][1] <= 53


def test_sign_shift_ignores_on_policy_steps_and_small_spreads() -> None:
    rng = random.Random(2)
    rows = [{"sign.pos.ratio_std": 0.0, "sign.neg.ratio_std": 0.0} if s % 4 == 1 else _signs(rng, 0.1, 0.1)
            for s in range(1, 200)]
    assert _events(_rule("sign_shift"), rows) == []
    tiny = [_signs(rng, 0.001, 0.001 * (5 if s > 50 else 1)) for s in range(1, 100)]
    assert _events(_rule("sign_shift", min_std=0.02), tiny) == []


# --- trend -----------------------------------------------------------------------------------------------


def test_trend_stats() -> None:
    up, tau = trend_stats([0.0, 1.0, 2.0, 3.0])
    assert up == pytest.approx(3.0) and tau == 1.0
    assert trend_stats([1.0, 1.0, 1.0]) == (0.0, 0.0)


def test_trend_fires_on_a_steady_rise_not_on_a_spike_or_a_high_flat_level() -> None:
    rng = random.Random(3)
    flat_high = [{"m": _noise(rng, 0.05, 0.3)} for _ in range(200)]  # an off-policy preset's routine mismatch
    assert _events(_rule("trend", metric="m", rise=1.5), flat_high) == []
    spiky = [{"m": 0.05 * (20 if s % 37 == 0 else 1)} for s in range(1, 200)]
    assert _events(_rule("trend", metric="m", rise=1.5), spiky) == []
    rising = [{"m": _noise(rng, 1e-4 * (1.1 ** max(0, s - 50)), 0.1)} for s in range(1, 120)]
    events = _events(_rule("trend", metric="m", rise=1.5), rising)
    assert events and events[0][0] == "firing" and 55 <= events[0][1] <= 75


def test_trend_from_exact_zero_and_the_verl_level() -> None:
    rows = [{"m": 0.0}] * 40 + [{"m": 5e-6}] * 40  # bf16 rollouts switched on at step 41
    events = _events(_rule("trend", metric="m", rise=1.5, floor=1e-8), rows)
    # the window has to hold enough raised steps for tau >= 0.5 (8 of 20), and once the jump sits in the
    # middle of the window (13 of 20) the series reads as flat again: the trend ends
    assert events == [("firing", 48), ("resolved", 53)]
    level = [{"m": 0.001}] * 10 + [{"m": 0.02}] * 3
    assert _events(_rule("trend", metric="m", level=0.01), level) == [("firing", 11)]


def test_trend_hysteresis() -> None:
    rows = [{"m": 1e-4 * 1.2 ** s} for s in range(30)] + [{"m": 1e-4 * 1.2 ** 30}] * 40
    quick = _events(_rule("trend", metric="m", window=10, rise=1.0), rows)
    slow = _events(_rule("trend", metric="m", window=10, rise=1.0, clear_steps=6), rows)
    assert quick[0][0] == "firing" and quick[-1][0] == "resolved"
    assert slow[-1][1] == quick[-1][1] + 5


# --- reward_hack ---------------------------------------------------------------------------------------------


def _run(rng: random.Random, n: int, hack_at: int | None, *, reward_gain: float = 0.5, kl: float = 0.01):
    rows = []
    for s in range(1, n + 1):
        h = 0.0 if hack_at is None or s < hack_at else min(1.0, (s - hack_at) / 20)
        rows.append({
            "response_len.mean": _noise(rng, 5.0 * (1 - 0.8 * h), 0.05),
            "reward.mean": _noise(rng, 0.2 + reward_gain * h, 0.05),
            "entropy.mean": _noise(rng, 2.0 * (1 - 0.5 * h), 0.03),
            "kl.k3": 0.0 if s % 4 == 1 else _noise(rng, kl * (1 + 4 * h), 0.1),
        })
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_hack_fires_on_the_signature_and_not_on_convergence(seed: int) -> None:
    rng = random.Random(seed)
    rule = builtin_rule("reward_hack")
    assert rule is not None and rule.severity == "critical"
    fired = [s for state, s in _events(rule, _run(rng, 120, hack_at=50)) if state == "firing"]
    assert fired and 55 <= fired[0] <= 75
    assert _events(rule, _run(rng, 120, hack_at=None)) == []
    # Converging: entropy falls and the reward rises, but the answers keep their length.
    conv = _run(rng, 120, hack_at=50)
    for r in conv:
        r["response_len.mean"] = _noise(rng, 5.0, 0.05)
    assert _events(rule, conv) == []
    # Shorter answers with a falling reward: the task is failing, not being gamed (reward_collapse's case).
    assert _events(rule, _run(rng, 120, hack_at=50, reward_gain=-0.1)) == []


def test_reward_hack_optional_kl_confirmation() -> None:
    rng = random.Random(9)
    rule = _rule("reward_hack", for_steps=3, length_fraction=0.75, entropy_fraction=0.95, kl_factor=2.0)
    assert _events(rule, _run(rng, 120, hack_at=50, kl=0.01))  # KL rises 5x with the hack
    flat_kl = _run(rng, 120, hack_at=50)
    for r in flat_kl:
        r["kl.k3"] = 0.01
    assert _events(rule, flat_kl) == []


def test_reward_hack_hysteresis() -> None:
    rng = random.Random(11)
    rows = _run(rng, 100, hack_at=30)
    rows += [{"response_len.mean": 5.0, "reward.mean": 0.2, "entropy.mean": 2.0}] * 40  # fixed reward
    quick = _events(_rule("reward_hack", length_fraction=0.75, entropy_fraction=0.95), rows)
    slow = _events(_rule("reward_hack", length_fraction=0.75, entropy_fraction=0.95, clear_steps=5), rows)
    assert quick[0][0] == "firing" and quick[-1][0] == "resolved" and quick[-1][1] > 100
    assert slow[-1][1] == quick[-1][1] + 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cusum_batch_fast_path_changes_nothing(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """shift and sign_shift skip quiet batches in one pass: the same transitions and state either way,
    including steps whose sum passed h but whose value is below min_value (a clear step, level frozen)."""
    import importlib
    import json

    ev = importlib.import_module("sapo_monitor.service.rules.evaluate")
    rng = random.Random(seed)
    rows = []
    for s in range(1, 400):
        bump = 4.0 if 120 <= s < 160 or 300 <= s < 310 else 1.0
        rows.append({"x": 0.0 if s % 4 == 1 else _noise(rng, 0.01 * bump, 0.3),
                     "sign.pos.ratio_std": _noise(rng, 0.1), "sign.neg.ratio_std": _noise(rng, 0.1 * bump)})
    rules = [_rule("shift", metric="x", skip_zero=True), _rule("shift", metric="x", min_value=0.03, clear_steps=3),
             _rule("shift", metric="x", direction="down", log=False), _rule("sign_shift", min_std=0.3)]
    rules = [Rule(**{**r.__dict__, "id": f"r{i}"}) for i, r in enumerate(rules)]
    results = []
    for fast in (True, False):
        monkeypatch.setattr(ev, "USE_BATCH_FAST_PATH", fast)
        state = RunRuleState()
        got = []
        for i in range(0, len(rows), 23):
            got += evaluate_batch(rules, state, "r", [StepInput(j + 1, None, rows[j]) for j in range(i, min(i + 23, len(rows)))])
        results.append(([(t.rule_id, t.to_state, t.step, t.values) for t in got],
                        json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "a"} for k, v in state.rules.items()},
                                   sort_keys=True)))
    assert results[0][0] and results[0] == results[1]


def test_mismatch_rules_see_a_precision_change_at_once_and_ignore_a_routine_level() -> None:
    """bf16 rollouts switched on at step 41: mismatch_shift within 2 steps; an off-policy preset's steady
    mismatch (noisy, 0.05) raises neither mismatch rule."""
    jump = _events(builtin_rule("mismatch_shift"), [{"mismatch.kl_k3": 0.0}] * 40 + [{"mismatch.kl_k3": 5e-6}] * 20)  # type: ignore[arg-type]
    assert [s for state, s in jump if state == "firing"] == [42]
    rng = random.Random(8)
    routine = [{"mismatch.kl_k3": _noise(rng, 0.05, 0.4)} for _ in range(200)]
    for rule_id in ("mismatch_shift", "mismatch_trend"):
        assert _events(builtin_rule(rule_id), routine) == [], rule_id  # type: ignore[arg-type]
