"""A rule's metric names follow the wire's one metric-name rule (issue 15, one wire contract), and rule
ids are checked whole: ``re.match`` with ``$`` took a trailing newline, so a rule could be created
that no path could name, and a metric no step can carry."""

from __future__ import annotations

import pytest
from sapo_monitor.client import wire
from sapo_monitor.service.rules.detectors import KINDS, validate_params
from sapo_monitor.service.rules.model import RuleValidationError
from sapo_monitor.service.rules.spec import build_rule


@pytest.mark.parametrize("name", ["loss\n", "Loss", "a b", "", "m" * (wire.METRIC_NAME_MAX_LEN + 1), 7])
def test_rule_metrics_the_wire_refuses_are_refused(name: object) -> None:
    assert not wire.is_metric_name(name)
    with pytest.raises(RuleValidationError) as err:
        validate_params(KINDS["threshold"], {"metric": name, "op": ">", "value": 1.0})
    assert err.value.field == "params.metric"


@pytest.mark.parametrize("name", ["loss", "reward.mean", "custom_metric.x9", "m" * wire.METRIC_NAME_MAX_LEN])
def test_rule_metrics_the_wire_takes_are_taken(name: str) -> None:
    assert wire.is_metric_name(name)
    assert validate_params(KINDS["threshold"], {"metric": name, "op": ">", "value": 1.0})["metric"] == name


@pytest.mark.parametrize("rule_id", ["abc\n", "Abc", "-abc", "a" * 64])
def test_rule_ids_are_checked_whole(rule_id: str) -> None:
    with pytest.raises(RuleValidationError) as err:
        build_rule({"id": rule_id, "kind": "threshold", "params": {"metric": "loss", "op": ">", "value": 1.0}})
    assert err.value.field == "id"


_RULE = {"id": "scoped", "kind": "threshold", "params": {"metric": "loss", "op": ">", "value": 1.0}}


@pytest.mark.parametrize(("field", "value"), [("run_id", ".."), ("run_id", "-x"), ("run_id", "a b"),
                                              ("run_id", "r" * (wire.RUN_ID_MAX_LEN + 1)), ("project", " p"),
                                              ("project", "p\n"), ("project", "")])
def test_rule_scopes_no_run_or_project_can_have_are_refused(field: str, value: str) -> None:
    # before, any string of 1-200 characters was taken: a rule that could never match any run
    with pytest.raises(RuleValidationError) as err:
        build_rule({**_RULE, field: value})
    assert err.value.field == field


@pytest.mark.parametrize(("field", "value"), [("run_id", "run-1.a_b"), ("project", "team a:rl-1")])
def test_rule_scopes_the_wire_takes_are_taken(field: str, value: str) -> None:
    assert getattr(build_rule({**_RULE, field: value}), field) == value
