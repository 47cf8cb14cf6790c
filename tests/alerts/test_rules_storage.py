"""Rules evaluated inside the ingest transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from sapo_monitor.service.storage.alert_models import RuleState
from sapo_monitor.service.storage.alert_queries import first_alert_steps, list_alerts, run_transitions
from sapo_monitor.service.storage.models import Run
from sapo_monitor.service.storage.rule_defs import replace_rule
from sqlalchemy import func, select

from tests.alerts.conftest import BOTH, ingest
from tests.alerts.traces import EXPECTED_FIRING, collapse_trace, stable_trace


def _transitions(db, run_id):  # type: ignore[no-untyped-def]
    with db.read() as s:
        pk = s.scalar(select(Run.id).where(Run.run_id == run_id))
        return run_transitions(s, run_pk=pk)


@BOTH
def test_collapse_trace_in_batches_fires_in_order(db) -> None:  # type: ignore[no-untyped-def]
    trace = collapse_trace()
    for i in range(0, len(trace), 9):  # batches of 9, state stored between them
        ingest(db, "collapse", trace[i : i + 9])
    ingest(db, "stable", stable_trace(120))
    got = [(t.rule, t.step) for t in _transitions(db, "collapse") if t.to_state == "firing"]
    assert got == EXPECTED_FIRING
    assert _transitions(db, "stable") == []
    with db.read() as s:
        firing = list_alerts(s, state="firing", run_id="collapse")
        assert {a.rule for a in firing} == {r for r, _ in EXPECTED_FIRING}
        assert list_alerts(s, run_id="stable") == []
        steps = first_alert_steps(s, ["collapse", "stable"])
    assert steps["collapse"] == {"first_warning_step": EXPECTED_FIRING[0][1], "first_critical_step": 62}
    assert steps["stable"] == {"first_warning_step": None, "first_critical_step": None}


@BOTH
def test_replayed_and_late_batches_never_fire_twice(db) -> None:  # type: ignore[no-untyped-def]
    trace = collapse_trace()
    ingest(db, "r", trace[:80])
    before = _transitions(db, "r")
    ingest(db, "r", trace[:80])  # replay
    ingest(db, "r", trace[40:60])  # late
    assert _transitions(db, "r") == before
    with db.read() as s:
        assert s.scalar(select(RuleState.last_step)) == 80
    ingest(db, "r", trace[75:])
    assert len(_transitions(db, "r")) == len(before)  # nothing new after 80 in this trace
    with db.read() as s:
        assert s.scalar(select(RuleState.last_step)) == 90


@BOTH
def test_disabling_a_rule_resolves_its_alert(db) -> None:  # type: ignore[no-untyped-def]
    trace = collapse_trace()
    ingest(db, "r", trace[:55])
    with db.write() as s:
        replace_rule(s, rule_id="gate_saturation", doc={"enabled": False})
    ingest(db, "r", trace[55:58])
    gate = [(t.from_state, t.to_state, t.step) for t in _transitions(db, "r") if t.rule == "gate_saturation"]
    assert gate == [(None, "pending", 50), ("pending", "firing", 52), ("firing", "resolved", 56)]


@BOTH
def test_pending_alerts_are_stored_only_once_they_fire(db) -> None:  # type: ignore[no-untyped-def]
    from sapo_monitor.service.storage.alert_models import Alert, AlertTransition
    from sapo_monitor.service.storage.rule_defs import create_rule

    with db.write() as s:
        create_rule(s, doc={"id": "x-high", "kind": "threshold", "for_steps": 3,
                            "params": {"metric": "x", "op": ">", "value": 1.0}})
    ingest(db, "r", [(1, {"x": 2.0}), (2, {"x": 0.0}), (3, {"x": 2.0}), (4, {"x": 2.0}), (5, {"x": 0.0})])
    ingest(db, "r", [(6, {"x": 2.0}), (7, {"x": 2.0})])
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 0  # flickers left no rows
        assert s.scalar(select(func.count()).select_from(AlertTransition)) == 0
        pending = list_alerts(s, state="pending", run_id="r")
    assert [(a.rule, a.started_step, a.values) for a in pending] == [("x-high", 6, {"x": 2.0})]
    ingest(db, "r", [(8, {"x": 3.0})])
    with db.read() as s:
        assert list_alerts(s, state="pending") == []
        [alert] = list_alerts(s, run_id="r")
    assert (alert.state, alert.started_step, alert.fired_step) == ("firing", 6, 8)
    assert [(t.from_state, t.to_state, t.step, t.values) for t in _transitions(db, "r")] == [
        (None, "pending", 6, {"x": 2.0}), ("pending", "firing", 8, {"x": 3.0})]


@BOTH
def test_metric_families_export_firing_alerts_of_active_runs(db) -> None:  # type: ignore[no-untyped-def]
    import time

    from sapo_monitor.service.alerting_runtime import metric_families

    ingest(db, "c", collapse_trace())

    def firing(now: float) -> set[tuple[str, ...]]:
        with db.read() as s:
            fams = {f.name: f for f in metric_families(s, now=now, project=None, window=900.0)}
        return {tuple(x.labels[k] for k in ("run", "rule", "severity")) for x in fams["sapo_alert_firing"].samples}

    assert firing(time.time()) == {("c", rule, "critical" if rule in ("entropy_collapse", "reward_collapse", "nonfinite")
                                    else "warning") for rule, _ in EXPECTED_FIRING}
    assert firing(time.time() + 3600) == set()  # the run went idle: it drops out, like its gauges


def test_project_scope_holds_across_databases_in_one_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Project ids repeat across databases: id 1 is "a" in the first and "b" in the second. A cache of
    # names by id alone once applied the first database's name in the second.
    from sapo_monitor.service.storage import migrate
    from sapo_monitor.service.storage.db import Database
    from sapo_monitor.service.storage.rule_defs import create_rule

    fired = {}
    for label, project in (("one", "a"), ("two", "b")):
        url = f"sqlite:///{tmp_path}/{label}.db"
        migrate.upgrade(url)
        db = Database(url, pool_size=1)
        with db.write() as s:
            create_rule(s, doc={"id": "b-only", "kind": "threshold", "for_steps": 1, "project": "b",
                                "params": {"metric": "x", "op": ">", "value": 1.0}})
        ingest(db, "r", [(1, {"x": 2.0}), (2, {"x": 2.0})], project=project)
        fired[project] = [(t.rule, t.to_state) for t in _transitions(db, "r")]
        db.dispose()
    assert fired == {"a": [], "b": [("b-only", "firing")]}
