"""entropy_collapse compares like with like: entropy falling while the reward stopped improving over the
same recent window fires, even after the reward had improved earlier; falling while it climbs does not."""

from __future__ import annotations

import importlib

import pytest
from sapo_monitor.service.rules.builtin import builtin_rule
from sapo_monitor.service.rules.evaluate import StepInput
from sapo_monitor.service.rules.replay import replay

evaluate = importlib.import_module("sapo_monitor.service.rules.evaluate")  # the package re-exports a function of that name


def _trace(reward, entropy) -> list[StepInput]:  # type: ignore[no-untyped-def]
    return [StepInput(s, float(s), {"reward.mean": reward(s), "entropy.mean": entropy(s)}) for s in range(1, 121)]


def _entropy(s: int) -> float:  # 2.0 for 60 steps, then down to 0.2 by step 80
    return 2.0 if s <= 60 else max(0.2, 2.0 - 0.09 * (s - 60))


def _fired(trace, fast: bool, monkeypatch) -> list[tuple[str, int | None, int | None]]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(evaluate, "USE_BATCH_FAST_PATH", fast)
    rule = builtin_rule("entropy_collapse")
    assert rule is not None
    return [(a.rule, a.fired_step, a.resolved_step) for a in replay([rule], trace, batch=16).alerts]


@pytest.mark.parametrize("fast", [True, False])
def test_collapse_after_an_earlier_reward_gain_fires(fast: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # reward 0.1 -> 0.5 over steps 1-40, then flat: the old guard (EWMA 0.2 above the early mean) hid this
    trace = _trace(lambda s: 0.1 + 0.01 * min(s, 40), _entropy)
    alerts = _fired(trace, fast, monkeypatch)
    assert len(alerts) == 1 and alerts[0][1] is not None and 76 <= alerts[0][1] <= 82 and alerts[0][2] is None


@pytest.mark.parametrize("fast", [True, False])
def test_entropy_falling_while_the_reward_climbs_is_quiet(fast: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    trace = _trace(lambda s: 0.1 + 0.005 * s, _entropy)  # +0.1 per 20 steps all along: convergence
    assert _fired(trace, fast, monkeypatch) == []


@pytest.mark.parametrize("fast", [True, False])
def test_recovered_entropy_resolves_after_clear_steps(fast: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    trace = _trace(lambda s: 0.3, lambda s: 0.2 if 60 < s <= 90 else 2.0)
    alerts = _fired(trace, fast, monkeypatch)
    assert [(r, f) for r, f, _ in alerts] == [("entropy_collapse", 63)]  # for_steps 3
    assert alerts[0][2] == 95  # clear_steps 5 (hysteresis)


@pytest.mark.parametrize("fast", [True, False])
def test_a_climbing_reward_excuses_nothing_once_the_groups_carry_no_signal(fast: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The climbing reward of the quiet case above, but from step 70 on (nearly) every group's rewards are
    # equal: no gradient, so the falling entropy is no convergence (TRL's lr x20 fault does this).
    def trace(zero_from: int) -> list[StepInput]:
        return [StepInput(s, float(s), {"reward.mean": 0.1 + 0.005 * s, "entropy.mean": _entropy(s),
                                        "groups.zero_signal_frac": 1.0 if s >= zero_from else 0.25})
                for s in range(1, 121)]

    alerts = _fired(trace(70), fast, monkeypatch)
    assert len(alerts) == 1 and alerts[0][1] is not None and 73 <= alerts[0][1] <= 80
    # a signal that stays partial (a quarter of the groups silent) keeps the guard's excuse
    assert _fired(trace(10**6), fast, monkeypatch) == []
