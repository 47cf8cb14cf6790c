"""Rule evaluation without a database: the built-in pack on synthetic traces, custom kinds, validation."""

from __future__ import annotations

import json
import math

import pytest
from sapo_monitor.service.rules import (
    BUILTIN_RULES,
    KINDS,
    Rule,
    RuleValidationError,
    RunRuleState,
    StepInput,
    evaluate,
    evaluate_batch,
    validate_params,
)

from tests.alerts.traces import EXPECTED_FIRING, collapse_trace, healthy_metrics, stable_trace


def _steps(trace):
    return [StepInput(s, 1000.0 + s, m) for s, m in trace]


def _firing(transitions):
    return [(t.rule_id, t.step) for t in transitions if t.to_state == "firing"]


def test_collapse_trace_fires_expected_rules_in_order() -> None:
    transitions = evaluate_batch(BUILTIN_RULES, RunRuleState(), "r", _steps(collapse_trace()))
    assert _firing(transitions) == EXPECTED_FIRING
    # Transitions come out in step order, and each fired alert was pending first unless for_steps is 1.
    steps = [t.step for t in transitions]
    assert steps == sorted(steps)
    nan = next(t for t in transitions if t.rule_id == "nonfinite")
    assert nan.from_state is None and nan.severity == "critical" and nan.values["loss"] == "NaN"
    spike = next(t for t in transitions if t.rule_id == "ratio_variance_spike" and t.to_state == "firing")
    assert spike.values["log_ratio.std"] > 3 * spike.values["baseline"]


def test_stable_trace_fires_nothing() -> None:
    assert evaluate_batch(BUILTIN_RULES, RunRuleState(), "r", _steps(stable_trace(300))) == []


def test_state_survives_json_round_trip_between_batches() -> None:
    """Evaluating in batches, storing the state as JSON in between, gives the same transitions."""
    steps = _steps(collapse_trace())
    state_doc = None
    got = []
    for i in range(0, len(steps), 7):
        state = RunRuleState.from_json(json.loads(json.dumps(state_doc)) if state_doc else None)
        got += evaluate_batch(BUILTIN_RULES, state, "r", steps[i : i + 7])
        state_doc = state.to_json()
    assert _firing(got) == EXPECTED_FIRING


def test_replayed_and_late_steps_are_not_reevaluated() -> None:
    steps = _steps(collapse_trace())
    state = RunRuleState()
    first = evaluate_batch(BUILTIN_RULES, state, "r", steps[:80])
    again = evaluate_batch(BUILTIN_RULES, state, "r", steps[:80])  # a replayed batch
    late = evaluate_batch(BUILTIN_RULES, state, "r", steps[70:85])  # overlaps: only 81..85 are new
    assert again == []
    assert all(t.step > 80 for t in late)
    assert state.last_step == 85
    assert [t.step for t in first] == sorted(t.step for t in first)


def test_out_of_order_batch_is_evaluated_in_step_order() -> None:
    steps = _steps(collapse_trace())
    shuffled = list(reversed(steps))
    assert _firing(evaluate_batch(BUILTIN_RULES, RunRuleState(), "r", shuffled)) == EXPECTED_FIRING


def _custom(kind: str, for_steps: int = 1, **params) -> Rule:
    return Rule(id="c", kind=kind, severity="warning", params=validate_params(KINDS[kind], params), for_steps=for_steps)


def _run(rule: Rule, values: list[float | None], metric: str = "x"):
    trace = [StepInput(i + 1, None, {} if v is None else {metric: v}) for i, v in enumerate(values)]
    return [(t.from_state, t.to_state, t.step) for t in evaluate_batch([rule], RunRuleState(), "r", trace)]


def test_threshold_lifecycle_pending_firing_resolved() -> None:
    rule = _custom("threshold", for_steps=3, metric="x", op=">", value=1.0)
    got = _run(rule, [0, 2, 2, None, 2, 0, 2, 0])
    # a step without the metric changes nothing; pending that clears before firing resolves too
    assert got == [
        (None, "pending", 2),
        ("pending", "firing", 5),
        ("firing", "resolved", 6),
        (None, "pending", 7),
        ("pending", "resolved", 8),
    ]


def test_threshold_ignores_nonfinite_values() -> None:
    rule = _custom("threshold", metric="x", op="<", value=0.0)
    assert _run(rule, [1.0, math.nan, -math.inf, -1.0]) == [(None, "firing", 4)]


def test_rate_of_change() -> None:
    rule = _custom("rate_of_change", metric="x", window=2, op=">", value=0.5, relative=True)
    # step 4: (1.8 - 1.0) / 1.0; step 5: (1.9 - 1.0) / 1.0 still above; step 6: (1.9 - 1.8) / 1.8
    assert _run(rule, [1.0, 1.0, 1.0, 1.8, 1.9, 1.9]) == [(None, "firing", 4), ("firing", "resolved", 6)]


def test_ewma_anomaly_does_not_learn_from_anomalies() -> None:
    rule = _custom("ewma_anomaly", for_steps=1, metric="x", alpha=0.2, z=4.0, warmup=5, min_std=0.01)
    values = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0] + [5.0] * 20 + [1.0]
    assert _run(rule, values) == [(None, "firing", 8), ("firing", "resolved", 28)]


def test_evaluate_single_step_is_pure() -> None:
    rule = _custom("threshold", metric="x", op=">", value=1.0)
    state, cond = evaluate(rule, None, StepInput(1, None, {"x": 2.0}))
    assert cond.active is True and cond.values == {"x": 2.0}
    state2, cond2 = evaluate(rule, state, StepInput(2, None, {}))
    assert cond2.active is None and state2 == state and state2 is not state


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("threshold", {"op": ">"}, "params.metric"),
        ("threshold", {"metric": "x"}, "params.value"),
        ("threshold", {"metric": "x", "value": 1, "bogus": 2}, "params.bogus"),
        ("threshold", {"metric": "x", "value": 1, "op": "=="}, "params.op"),
        ("threshold", {"metric": "X Y", "value": 1}, "params.metric"),
        ("ewma_anomaly", {"metric": "x", "alpha": 2.0}, "params.alpha"),
        ("rate_of_change", {"metric": "x", "value": 1, "window": 0}, "params.window"),
        ("rate_of_change", {"metric": "x", "value": "NaN"}, "params.value"),
    ],
)
def test_validation_names_the_field(kind: str, params: dict, field: str) -> None:
    with pytest.raises(RuleValidationError) as err:
        validate_params(KINDS[kind], params)
    assert err.value.field == field


def test_builtin_pack_is_complete_and_documented() -> None:
    ids = [r.id for r in BUILTIN_RULES]
    assert ids == [
        "nonfinite", "ratio_variance_spike", "ratio_tail_blowup", "gate_saturation",
        "negative_token_instability", "clip_burst", "entropy_collapse", "reward_collapse", "reward_decline",
        "response_length_drop", "reward_hack", "grad_norm_spike", "kl_blowup", "mismatch_trend", "mismatch_shift", "moe_route_flip",
        "stalled", "silent_run",
    ]  # fmt: skip
    for r in BUILTIN_RULES:
        assert r.severity in ("warning", "critical") and len(r.description) > 80 and "heck" in r.description
    # The severity contract: critical only for outcome signals (learning stopped or reversed, non-finite).
    critical = {r.id for r in BUILTIN_RULES if r.severity == "critical"}
    assert critical == {"nonfinite", "entropy_collapse", "reward_collapse", "reward_hack"}


def test_batch_scans_never_miss_a_true_step() -> None:
    """A stateless kind's batch scan may say "maybe" falsely, never "nowhere" falsely."""
    import random

    rng = random.Random(3)
    specials = [math.nan, math.inf, -math.inf, 0.0, -1.0, 5.0]
    stateless = [r for r in BUILTIN_RULES if KINDS[r.kind].scan is not None]
    assert {r.kind for r in stateless} == {"nonfinite", "threshold", "silence"}
    stateless += [_custom("tails"), _custom("sign_spread")]  # kinds no built-in uses any more
    for _ in range(300):
        batch = []
        for _ in range(rng.randint(1, 5)):
            m = {}
            for name in ("loss", "grad_norm", "kl.k3", "nonfinite.token_count", "log_ratio.abs_max", "log_ratio.p99",
                         "log_ratio.p01", "gate.saturated_frac", "sign.neg.ratio_std", "sign.pos.ratio_std",
                         "groups.zero_signal_frac", "moe.route_flip_frac", "mismatch.kl_k3"):
                if rng.random() < 0.7:
                    m[name] = rng.choice(specials) if rng.random() < 0.1 else rng.random() * rng.choice([0.1, 1, 10])
            batch.append(m)
        for rule in stateless:
            kind = KINDS[rule.kind]
            fn = kind.compile(rule.params)
            if not kind.scan(rule.params)(batch):
                assert not any(fn({}, m) for m in batch), (rule.id, batch)


def _noisy_trace(seed: int, n: int = 400) -> list[tuple[int, dict[str, float]]]:
    """Random walks with spikes, NaNs and gaps: every rule fires and resolves somewhere."""
    import random

    rng = random.Random(seed)
    level = {k: v for k, v in healthy_metrics(1, rng).items()}
    out = []
    for s in range(1, n + 1):
        m = {}
        for k, v in level.items():
            v *= 1.0 + 0.15 * (2 * rng.random() - 1)
            level[k] = v
            r = rng.random()
            if r < 0.03:
                v *= 8.0  # spike
            elif r < 0.05:
                v *= 0.05  # collapse
            elif r < 0.055:
                v = math.nan
            if rng.random() < 0.95:
                m[k] = v
        out.append((s, m))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_batch_fast_path_changes_nothing(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same transitions and the same stored state with and without the batch fast path, on a noisy
    trace (falls back often), then a healthy one and a collapse (fast path mostly taken)."""
    import importlib

    ev = importlib.import_module("sapo_monitor.service.rules.evaluate")  # the module, not the function
    trace = _steps(_noisy_trace(seed))
    trace += [StepInput(s + 400, t, m) for s, t, m in ((x.step, x.time, x.metrics) for x in _steps(stable_trace(300, seed)))]
    trace += [StepInput(s + 700, t, m) for s, t, m in ((x.step, x.time, x.metrics) for x in _steps(collapse_trace(seed=seed)))]
    results = []
    for fast in (True, False):
        monkeypatch.setattr(ev, "USE_BATCH_FAST_PATH", fast)
        state = RunRuleState()
        got = []
        for i in range(0, len(trace), 37):
            got += evaluate_batch(BUILTIN_RULES, state, "r", trace[i : i + 37])
        results.append(([(t.rule_id, t.from_state, t.to_state, t.step, t.values) for t in got],
                        json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "a"} for k, v in state.rules.items()},
                                   sort_keys=True)))
    assert results[0][0] and len({r for r, *_ in results[0][0]}) >= 8  # the trace exercises most rules
    assert results[0] == results[1]
