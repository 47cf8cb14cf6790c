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
