"""Issue 15 items 2 and 9: rule state keeps non-finite floats across batches; rule parameters that
are not finite numbers (NaN, Infinity, integers beyond float range) are a 422 naming the field."""

from __future__ import annotations

import math

import pytest
from sapo_monitor.service.rules.evaluate import RunRuleState
from sapo_monitor.service.rules.model import RuleValidationError
from sapo_monitor.service.storage.alert_queries import list_alerts
from sapo_monitor.service.storage.rule_defs import create_rule, replace_rule
from sapo_monitor.service.storage.rule_state import decode_state, encode_state
from sqlalchemy import text

from tests.alerts.conftest import BOTH, ingest

BAD = [math.nan, math.inf, -math.inf, 10**400]


def test_state_document_keeps_non_finite_detector_values() -> None:
    state = RunRuleState(last_step=3, rules={"r": {"d": {"m": math.inf, "w": [1.0, -math.inf, math.nan]},
                                                   "o": {"values": {"x": "NaN"}}}})
    back = decode_state(encode_state(state))
    d = back.rules["r"]["d"]
    assert d["m"] == math.inf and d["w"][:2] == [1.0, -math.inf] and math.isnan(d["w"][2])
    assert back.rules["r"]["o"]["values"] == {"x": "NaN"}  # alert values stay in the wire encoding


@BOTH
def test_values_near_float_max_do_not_poison_the_run(db) -> None:  # type: ignore[no-untyped-def]
    # reward.mean = 1e308, -1e308, 1e308 overflowed EWMA / baseline state to inf; stored as null,
    # every later batch of the run raised on None arithmetic.
    big = [(1, 1e308), (2, -1e308), (3, 1e308)]
    for step, v in big:
        ingest(db, "r", [(step, {"reward.mean": v, "entropy.mean": v, "kl.k3": v, "ratio.mean": v})])
    for step in range(4, 40):
        ingest(db, "r", [(step, {"reward.mean": 0.5, "entropy.mean": 1.0, "kl.k3": 0.01, "ratio.mean": 1.0})])
    with db.read() as s:
        list_alerts(s, run_id="r")  # readable
        row = s.execute(text("SELECT last_step FROM alert_rule_state")).scalar()
    assert row == 39


@BOTH
@pytest.mark.parametrize("name", ["window", "warmup", "value"])
@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf", "1e400"])
def test_non_finite_rule_params_name_the_field(db, name: str, bad: float) -> None:  # type: ignore[no-untyped-def]
    kind = {"window": "rate_of_change", "warmup": "ewma_anomaly", "value": "threshold"}[name]
    params = {"metric": "x", "op": ">", "value": 1.0, name: bad} if kind != "ewma_anomaly" else {"metric": "x", name: bad}
    with db.write() as s, pytest.raises(RuleValidationError) as err:
        create_rule(s, doc={"id": "custom", "kind": kind, "params": params})
    assert err.value.field == f"params.{name}"


@BOTH
@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf", "1e400"])
def test_non_finite_params_on_a_builtin_rule(db, bad: float) -> None:  # type: ignore[no-untyped-def]
    with db.write() as s, pytest.raises(RuleValidationError) as err:
        replace_rule(s, rule_id="ratio_variance_spike", doc={"params": {"h": bad}})  # a real parameter of it
    assert err.value.field == "params.h" and ("finite" in err.value.message or "magnitude" in err.value.message)


@BOTH
def test_detector_state_of_an_earlier_kind_restarts_instead_of_raising(db) -> None:  # type: ignore[no-untyped-def]
    # A release that changes a built-in's kind keeps its id and version (grad_norm_spike was a median
    # spike, is a CUSUM shift now). The run's stored state from the old release then fed the new kind
    # keys it never wrote (KeyError 'mu': every later batch of the run failed). State written before
    # the kind was recorded, or by another kind, restarts the detector.
    steady = {"grad_norm": 1.0, "reward.mean": 0.5, "entropy.mean": 1.0}
    ingest(db, "r", [(s, steady) for s in range(1, 31)])
    with db.write() as s:
        doc = s.execute(text("SELECT state FROM alert_rule_state")).scalar()
        state = decode_state(doc)
        old = state.rules["grad_norm_spike"]
        assert old["k"] == "shift" and "mu" in old["d"]
        del old["k"]  # the earlier release wrote no kind
        old["d"] = {"n": 59, "e": 1.0, "ref": 1.0}  # what a drop_from_best detector keeps
        s.execute(text("UPDATE alert_rule_state SET state = :s"), {"s": encode_state(state)})
    ingest(db, "r", [(s, {**steady, "grad_norm": 1.0 + 0.01 * s}) for s in range(31, 61)])
    with db.read() as s:
        state = decode_state(s.execute(text("SELECT state FROM alert_rule_state")).scalar())
        last = s.execute(text("SELECT last_step FROM alert_rule_state")).scalar()
    assert last == 60
    fresh = state.rules["grad_norm_spike"]
    # warmed up anew on the 30 new steps: its own keys, none of the old detector's, its count restarted
    assert fresh["k"] == "shift" and "mu" in fresh["d"] and "e" not in fresh["d"] and fresh["d"]["n"] <= 30
