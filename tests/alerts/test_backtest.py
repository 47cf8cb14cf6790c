"""``replay`` and ``sapo-monitor rules backtest``: the same alerts ingest gives, nothing stored or sent."""

from __future__ import annotations

import json
import math
import time

import httpx
from sapo_monitor.client.wire import StepRecord
from sapo_monitor.service.rules.builtin import BUILTIN_RULES
from sapo_monitor.service.rules.evaluate import StepInput
from sapo_monitor.service.rules.replay import load_rule_file, replay
from typer.testing import CliRunner

from sapo_monitor.cli.main import app
from tests.alerts.conftest import BOTH
from tests.alerts.receiver import Receiver
from tests.alerts.server import live_service
from tests.alerts.test_api import SECRET, post_trace
from tests.alerts.traces import EXPECTED_FIRING, collapse_trace, stable_trace


def _inputs(trace) -> list[StepInput]:  # type: ignore[no-untyped-def]
    return [StepInput(s, float(s), m) for s, m in trace]


def test_replay_gives_the_pack_s_firing_steps_whatever_the_batch_size() -> None:
    for batch in (1, 7, 500):
        result = replay(BUILTIN_RULES, _inputs(collapse_trace()), batch=batch)
        fired = [(a.rule, a.fired_step) for a in result.alerts if a.fired_step is not None]
        assert fired == EXPECTED_FIRING
    assert replay(BUILTIN_RULES, _inputs(stable_trace(90))).alerts == []


def test_candidate_rule_file_overrides_builtins_and_adds_rules() -> None:
    rules = load_rule_file({"rules": [
        {"id": "nonfinite", "enabled": False},
        {"id": "loss-high", "kind": "threshold", "severity": "critical", "params": {"metric": "loss", "value": 5.0}},
    ]})
    trace = [(s, {"loss": 1.0 if s < 10 else (math.nan if s == 15 else 9.0)}) for s in range(1, 20)]
    result = replay(rules, _inputs(trace))
    assert [(a.rule, a.fired_step) for a in result.alerts] == [("loss-high", 10)]
    assert result.first_step("critical") == 10 and result.first_step("warning") is None


def test_bad_candidate_rule_names_the_entry_and_field() -> None:
    import pytest
    from sapo_monitor.service.rules.model import RuleValidationError

    with pytest.raises(RuleValidationError) as err:
        load_rule_file([{"id": "kl_blowup"}, {"id": "x", "kind": "threshold", "params": {"metric": "m", "value": math.nan}}])
    assert err.value.field == "rules[1].params.value"


def test_backtest_a_trace_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "collapse.jsonl"
    path.write_text("".join(json.dumps(StepRecord(s, time.time(), m).to_wire()) + "\n" for s, m in collapse_trace()))
    out = CliRunner().invoke(app, ["rules", "backtest", "--file", str(path), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["run_id"] == "collapse"
    assert [(a["rule"], a["fired_step"]) for a in doc["alerts"] if a["fired_step"]] == EXPECTED_FIRING


@BOTH
def test_backtest_stored_runs_touches_nothing(db_url: str) -> None:
    receiver = Receiver(SECRET).start()
    try:
        with live_service(db_url) as base, httpx.Client(base_url=base, timeout=20) as c:
            post_trace(c, "collapse", collapse_trace())
            post_trace(c, "stable", stable_trace(90))
            # a webhook registered after ingest: a backtest that notified would reach it
            assert c.post("/api/v1/webhooks", json={"url": receiver.url, "secret": SECRET}).status_code == 201
            before = c.get("/api/v1/alerts").json()
            out = CliRunner().invoke(app, ["rules", "backtest", "--project", "p", "--json", "--server", base])
            assert out.exit_code == 0, out.output
            docs = {d["run_id"]: d for d in map(json.loads, out.output.splitlines())}
            fired = [(a["rule"], a["fired_step"]) for a in docs["collapse"]["alerts"] if a["fired_step"]]
            assert fired == EXPECTED_FIRING and docs["stable"]["alerts"] == []
            table = CliRunner().invoke(app, ["rules", "backtest", "--run", "collapse", "--server", base])
            assert table.exit_code == 0 and "entropy_collapse" in table.output
            time.sleep(0.5)
            assert c.get("/api/v1/alerts").json() == before
        assert receiver.raw == []
    finally:
        receiver.stop()


def test_detection_bench_scores_incidents_and_precursor_only_kinds() -> None:
    """bench/detection_replay.py's scoring: what its table's targets rest on."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        from detection_replay import Fired, Outcome
    finally:
        sys.path.pop(0)
    alerts = [Fired("a", "warning", 40, 50), Fired("b", "warning", 45, 60), Fired("c", "critical", 55, None),
              Fired("d", "warning", 95, 99)]
    o = Outcome("collapse", 100, 50, alerts, collapsed=True)
    assert [[a.rule for a in inc] for inc in o.incidents()] == [["a", "b", "c", "d"]]  # the fallback model
    # the service's incidents: opened by a (b joins in the same message), escalated by c, never resolved
    assert o.incident_notifications() == 2
    assert o.notifications() == 7  # per alert: 4 firings, 3 resolutions
    assert o.detection_delay() == 5 and o.first_warning() == 40
    # within the reopen window (50 steps) one incident; beyond it, two, each told opened and resolved
    near = Outcome("healthy", 200, None, [Fired("a", "warning", 10, 20), Fired("b", "warning", 60, 70)])
    apart = Outcome("healthy", 200, None, [Fired("a", "warning", 10, 20), Fired("b", "warning", 100, 110)])
    assert near.warning_incidents() == 1 and apart.warning_incidents() == 2
    assert apart.incident_notifications() == 4
    # A precursor-only kind is detected by a warning; its critical is not what counts.
    pre = Outcome("fault:epochs", 100, 50, [Fired("x", "warning", 58, None), Fired("y", "critical", 52, None)],
                  precursor_only=True)
    assert pre.detection_delay() == 8


def test_detection_trl_plan_and_lr_jump() -> None:
    """bench/detection_trl.py: its fault onsets sit inside the run, and the lr jump lands on the onset step
    and survives the scheduler's next step (a jump the scheduler undid would be no fault at all)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        from detection_trl import TRL_FAULT, LrJump, plan_trl
    finally:
        sys.path.pop(0)
    plans = plan_trl(3, 100)
    faults = [p for p in plans if p.kind.startswith("fault:")]
    assert len(plans) == 9 and len({p.run_id for p in plans}) == 9
    assert [p.onset for p in faults] == [40, 50, 60] and {p.algo for p in faults} == {"grpo", "sapo"}
    assert all(p.faults == f"{p.onset}:lr*{TRL_FAULT[1]:g}" for p in faults)

    class State:
        global_step = 0

    class Optimizer:
        def __init__(self) -> None:
            self.param_groups = [{"lr": 1e-3}]

    class Linear:  # what torch's LambdaLR does on step(): lr = base lr x factor(step); no torch import here
        def __init__(self, opt: Optimizer) -> None:
            self.opt, self.base_lrs, self.k = opt, [1e-3], 0

        def step(self) -> None:
            self.k += 1
            for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * (1.0 - self.k / 100)

    opt = Optimizer()
    sched = Linear(opt)
    jump, state, lrs = LrJump(5, 20.0), State(), []
    for step in range(1, 9):  # steps as the spool numbers them; global_step is step - 1 at step begin
        state.global_step = step - 1
        jump.on_step_begin(None, state, None, optimizer=opt, lr_scheduler=sched)
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert all(lr < 1.1e-3 for lr in lrs[:4])
    assert all(lr > 1.8e-2 for lr in lrs[4:])  # from step 5 on, decaying from 20x
