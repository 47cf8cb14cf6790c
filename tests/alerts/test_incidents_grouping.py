"""Incident grouping and the notification timers on constructed alert sequences (pure: no database)."""

from __future__ import annotations

from itertools import count

from sapo_monitor.service.incidents import (
    FIRING,
    REOPEN_STEPS,
    RESOLVED,
    AlertChange,
    NotifyPolicy,
    count_notifications,
    group,
    simulate,
    story,
)


def _ids():  # type: ignore[no-untyped-def]
    n = count(1)
    return lambda: f"inc{next(n)}"


def fire(aid: str, sev: str, step: int, at: float | None = None) -> AlertChange:
    return AlertChange(aid, f"rule_{aid}", sev, True, step, float(step) if at is None else at)


def clear(aid: str, sev: str, step: int, at: float | None = None) -> AlertChange:
    return AlertChange(aid, f"rule_{aid}", sev, False, step, float(step) if at is None else at)


def test_one_run_episode_is_one_incident_with_its_story() -> None:
    g = group(None, [fire("w1", "warning", 10), fire("w2", "warning", 14), fire("c1", "critical", 20),
                     fire("w3", "warning", 25)], new_id=_ids())
    assert len(g.touched) == 1 and g.new == {"inc1"}
    inc = g.touched[0]
    assert inc.state == FIRING and inc.severity == "critical"
    assert inc.precursor is not None and inc.precursor.alert_id == "w1" and inc.precursor.step == 10
    assert inc.confirmation is not None and inc.confirmation.alert_id == "c1" and inc.confirmation.step == 20
    assert [a for _, a in g.joined] == ["w1", "w2", "c1", "w3"] and inc.firing == ["w1", "w2", "c1", "w3"]
    assert "precursor rule_w1 (warning) at step 10" in story(inc)["summary"]
    assert "10 steps later" in story(inc)["summary"] and story(inc)["resolution"] is None


def test_resolves_when_the_last_member_resolves_and_later_batches_continue_it() -> None:
    inc = group(None, [fire("a", "warning", 5), fire("b", "critical", 8)], new_id=_ids()).touched[0]
    g = group(inc, [clear("a", "warning", 12)], new_id=_ids())
    assert g.touched == [inc] and inc.state == FIRING and inc.firing == ["b"]
    group(inc, [clear("b", "critical", 30)], new_id=_ids())
    assert inc.state == RESOLVED and inc.resolved_step == 30
    assert story(inc)["resolution"] == {"step": 30, "at": 30.0}
    assert inc.severity == "critical"  # never lowered


def test_an_incident_that_opens_critical_has_no_precursor() -> None:
    inc = group(None, [fire("c", "critical", 3), fire("w", "warning", 4)], new_id=_ids()).touched[0]
    assert inc.precursor is None and inc.confirmation is not None and inc.confirmation.alert_id == "c"


def test_reopen_within_the_window_is_the_same_incident_later_a_new_one() -> None:
    ids = _ids()
    inc = group(None, [fire("a", "warning", 10), clear("a", "warning", 20)], new_id=ids).touched[0]
    assert inc.state == RESOLVED
    again = group(inc, [fire("b", "warning", 20 + REOPEN_STEPS)], new_id=ids)
    assert again.touched == [inc] and not again.new
    assert inc.state == FIRING and inc.reopened == 1 and inc.resolved_step is None and inc.precursor.alert_id == "a"
    group(inc, [clear("b", "warning", 100)], new_id=ids)
    later = group(inc, [fire("c", "critical", 101 + REOPEN_STEPS)], new_id=ids)
    assert later.new == {"inc2"} and later.touched[0] is not inc and inc.state == RESOLVED
    assert later.touched[0].confirmation.alert_id == "c"


def test_a_resolution_of_an_alert_in_no_incident_is_ignored() -> None:
    g = group(None, [clear("old", "critical", 5)], new_id=_ids())
    assert not g.touched and not g.joined


P = NotifyPolicy(group_wait_s=10.0, group_interval_s=60.0, repeat_interval_s=300.0)


def per_second(n: int) -> dict[int, float]:
    """Steps 0..n-1, one per second."""
    return {s: float(s) for s in range(n)}


def test_group_wait_batches_a_precursor_and_its_confirmation_into_one_message() -> None:
    _, sent = simulate([fire("w", "warning", 1, at=0.0), fire("c", "critical", 4, at=5.0)], policy=P)
    assert [(n.at, n.kind) for n in sent] == [(10.0, "opened")]
    told = sent[0].incident
    assert told.severity == "critical" and told.firing == ["w", "c"]


def test_escalation_after_the_first_message_waits_for_group_interval() -> None:
    _, sent = simulate([fire("w", "warning", 1, at=0.0), fire("c", "critical", 30, at=30.0)], policy=P)
    assert [(n.at, n.kind) for n in sent] == [(10.0, "opened"), (70.0, "escalated")]
    assert sent[0].incident.severity == "warning" and sent[1].incident.severity == "critical"


def test_changes_that_cancel_out_send_nothing_and_resolution_is_one_message() -> None:
    changes = [fire("a", "warning", 1, at=0.0), clear("a", "warning", 20, at=20.0), fire("b", "warning", 30, at=30.0),
               clear("b", "warning", 100, at=100.0)]
    incidents, sent = simulate(changes, policy=P, step_times=per_second(300), until=300.0)
    assert len(incidents) == 1 and incidents[0].reopened == 1
    # the resolution at step 100 is told once it can no longer reopen (step 151), at the next look
    assert [(n.at, n.kind) for n in sent] == [(10.0, "opened"), (160.0, "resolved")]


def test_a_flapping_incident_is_told_opened_and_resolved_once() -> None:
    changes = []
    for k, start in enumerate((1, 31, 61, 91)):  # fires for 20 steps, quiet for 10, four times
        changes += [fire(f"a{k}", "warning", start), clear(f"a{k}", "warning", start + 20)]
    incidents, sent = simulate(changes, policy=P, step_times=per_second(400), until=400.0)
    assert len(incidents) == 1 and incidents[0].reopened == 3
    assert [n.kind for n in sent] == ["opened", "resolved"] and sent[1].at > 111 + REOPEN_STEPS
    # a run that stops running tells its held resolution at once
    _, stopped = simulate(changes, policy=P, step_times=per_second(121), finished_at=120.0, until=400.0)
    assert [n.kind for n in stopped] == ["opened", "resolved"] and 120.0 <= stopped[1].at <= 120.0 + 60.0


def test_an_incident_over_before_group_wait_is_one_resolved_message() -> None:
    _, sent = simulate([fire("n", "critical", 7, at=0.0), clear("n", "critical", 8, at=2.0)], policy=P)
    assert [n.kind for n in sent] == ["resolved"]


def test_repeat_interval_limits_repeats_and_an_idle_run_is_not_repeated() -> None:
    changes = [fire("c", "critical", 1, at=0.0)]
    _, live = simulate(changes, policy=P, step_times=per_second(1000), until=1000.0)
    assert [(n.at, n.kind) for n in live] == [(10.0, "opened"), (310.0, "repeated"), (610.0, "repeated"),
                                              (910.0, "repeated")]
    # a repeat needs a step since the previous message: a run that stopped at t=399 gets two, then none
    _, stopped = simulate(changes, policy=P, step_times=per_second(400), until=1000.0)
    assert [(n.at, n.kind) for n in stopped] == [(10.0, "opened"), (310.0, "repeated"), (610.0, "repeated")]
    _, idle = simulate(changes, policy=P, step_times=per_second(5), until=1000.0)
    assert [n.kind for n in idle] == ["opened"]


def test_the_bench_count_of_a_failing_run() -> None:
    # a storm of 8 alerts in one collapse (every one firing and resolving) is 2-3 messages, not 16
    alerts = [("warning", 3, 40), ("warning", 10, 41), ("critical", 12, 60), ("warning", 14, None),
              ("critical", 20, 70), ("warning", 25, 80), ("critical", 33, None), ("warning", 50, 90)]
    assert count_notifications(alerts, step_s=1.0) <= 3
    assert count_notifications(alerts, step_s=1.0, policy=NotifyPolicy(0.0, 0.0, 3600.0)) == 2  # opened, escalated
    assert count_notifications([], step_s=1.0) == 0
