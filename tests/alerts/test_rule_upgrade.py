"""Stored overrides of built-ins written by an earlier release, read by this one (SQLite and PostgreSQL).

An override is stored whole (kind, params, ...). Before, a user's ``PUT /rules/kl_blowup
{"severity": "warning"}`` under the pack before issue 12 froze that pack's ``kl.k3 > 1.0`` threshold
forever, and the retired ``mismatch_kl`` came back as a custom rule.
"""

from __future__ import annotations

import json
import logging
import time

from sapo_monitor.service.rules.builtin import builtin_rule
from sapo_monitor.service.storage import rule_defs
from sapo_monitor.service.storage.alert_models import AlertRule
from sapo_monitor.service.storage.alert_queries import list_alerts
from sapo_monitor.service.storage.rule_defs import get_rule, list_rules, replace_rule

from tests.alerts.conftest import BOTH, ingest


def _store_old_override(db, rule_id: str, kind: str, params: dict, **fields) -> None:  # type: ignore[no-untyped-def,type-arg]
    """A row as an earlier release wrote it for ``PUT /rules/{rule_id}``."""
    now = time.time()
    row = dict(kind=kind, severity="warning", params=json.dumps(params), for_steps=3, clear_steps=5,
               description="old text", project=None, run_id=None, enabled=True, builtin=True, version=2,
               created_at=now, updated_at=now)
    row.update(fields)
    with db.write() as s:
        s.add(AlertRule(id=rule_id, **row))


@BOTH
def test_an_override_of_a_kind_that_changed_keeps_the_knobs_and_takes_the_new_detector(db, caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rule_defs, "_told", set())  # notes are logged once per process
    _store_old_override(db, "kl_blowup", "threshold", {"metric": "kl.k3", "op": ">", "value": 1.0},
                        severity="critical", for_steps=7, enabled=False, version=4)
    base = builtin_rule("kl_blowup")
    assert base is not None and base.kind == "shift"
    with caplog.at_level(logging.WARNING, logger="sapo_monitor.rules"), db.read() as s:
        rules = {r.id: r for r in list_rules(s)}
        again = get_rule(s, "kl_blowup")
    rule = rules["kl_blowup"]
    assert (rule.kind, dict(rule.params), rule.description) == (base.kind, dict(base.params), base.description)
    assert (rule.severity, rule.for_steps, rule.enabled, rule.version) == ("critical", 7, False, 4)
    assert again == rule
    notes = [r.getMessage() for r in caplog.records if "kl_blowup" in r.getMessage()]
    assert len(notes) == 1 and "'threshold'" in notes[0] and "'shift'" in notes[0]  # logged once, not per read


@BOTH
def test_an_override_of_the_same_kind_keeps_its_params_and_gains_new_ones(db) -> None:  # type: ignore[no-untyped-def]
    # entropy_collapse as stored before it had stall_metric, with a user's fraction and a retired param
    old = {"metric": "entropy.mean", "baseline_steps": 10, "fraction": 0.25, "guard_metric": "reward.mean",
           "guard_gain": 0.02, "guard_window": 20, "retired_knob": 3}
    _store_old_override(db, "entropy_collapse", "below_baseline", old, severity="critical")
    with db.read() as s:
        rule = get_rule(s, "entropy_collapse")
    assert rule is not None and rule.kind == "below_baseline"
    assert rule.params["fraction"] == 0.25  # the user's value
    assert rule.params["stall_metric"] == "groups.zero_signal_frac"  # this release's new parameter
    assert "retired_knob" not in rule.params


@BOTH
def test_the_override_of_a_retired_builtin_is_retired_with_it(db) -> None:  # type: ignore[no-untyped-def]
    _store_old_override(db, "mismatch_kl", "threshold", {"metric": "mismatch.kl_k3", "op": ">", "value": 0.01},
                        severity="critical", for_steps=1)
    with db.read() as s:
        assert "mismatch_kl" not in {r.id for r in list_rules(s)}
        assert get_rule(s, "mismatch_kl") is None
    # it does not fire on ingest (it did, as a custom rule, before)
    ingest(db, "r", [(s, {"mismatch.kl_k3": 0.5, "reward.mean": 0.3}) for s in range(1, 6)])
    with db.read() as s:
        assert [a.rule for a in list_alerts(s, run_id="r") if a.rule == "mismatch_kl"] == []
    # a user who wants it back PUTs it as a custom rule of their own
    with db.write() as s:
        rule, _ = replace_rule(s, rule_id="mismatch_kl", doc={"kind": "threshold", "severity": "warning",
                                                                "params": {"metric": "mismatch.kl_k3", "op": ">",
                                                                           "value": 0.01}})
    assert not rule.builtin
    with db.read() as s:
        back = get_rule(s, "mismatch_kl")
    assert back is not None and back.kind == "threshold" and not back.builtin
