"""Incidents: the alerts of one run's episode grouped into one story, and when to tell anyone (pure).

No SQL and no clock here: :mod:`.alerting` feeds the alert changes of an ingested batch to
:func:`group` with the run's latest incident (loaded by :mod:`.storage.incidents`) and writes back what
it returns; the delivery worker asks :func:`due_at` and :func:`notification_kind` what to send.

Grouping (one incident per run episode):

* an alert that **fires** on a run joins the run's firing incident; with none, it opens one. An
  incident is ``warning`` until a critical member fires: that is its **confirmation** (``escalated``
  when the incident was a warning before). The first warning member that fired before any
  confirmation is its **first precursor**;
* the incident **resolves** when its last firing member resolves (its **resolution**);
* an alert that fires within :data:`REOPEN_STEPS` steps after the resolution **reopens** the same
  incident (a flapping metric stays one story; ``reopened`` counts it); later, a new incident opens.
  Steps, not seconds: the story is told on the run's step axis, whatever the run's speed.

Pending alerts are not members: like webhooks before, incidents hear only of alerts that fired.

Notifications, after Alertmanager's route timers (settings ``incident_group_wait_s``,
``incident_group_interval_s``, ``incident_repeat_interval_s``):

* the first one waits ``group_wait`` after the incident opened, so alerts that fire together (a
  precursor and its confirmation a few steps later) go out as one message listing both;
* a later change (escalated, resolved, reopened) is sent no sooner than ``group_interval`` after the
  previous notification; changes that cancel out meanwhile (resolved, then reopened) send nothing;
* the resolution of an incident already told as firing is held until it can no longer reopen (the
  run went more than :data:`REOPEN_STEPS` steps past it, or stopped running): a metric that flaps
  around its bound is not told as resolved, reopened, resolved...;
* a firing incident with nothing new is sent again (``repeated``) every ``repeat_interval``, only
  while its run still reports steps (a run that died collapsed does not page forever);
* new warning members of a firing incident are listed in the next message but send none of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "FIRING",
    "REOPEN_STEPS",
    "RESOLVED",
    "AlertChange",
    "Grouped",
    "Incident",
    "Notification",
    "NotifyPolicy",
    "StoryPoint",
    "after_notification",
    "count_notifications",
    "due_at",
    "flush_one",
    "group",
    "notification_kind",
    "recheck_s",
    "resolution_held",
    "simulate",
    "story",
    "story_summary",
]

FIRING, RESOLVED = "firing", "resolved"
REOPEN_STEPS = 50  # an alert firing this many steps or fewer after the resolution reopens the incident
_RANK = {"warning": 1, "critical": 2}


@dataclass(frozen=True)
class StoryPoint:
    """One member alert's place in the story: the rule, its severity, the step it fired at."""

    alert_id: str
    rule: str
    severity: str
    step: int
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "rule": self.rule, "severity": self.severity, "step": self.step,
                "at": self.at}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> StoryPoint | None:
        if not doc:
            return None
        return cls(doc["alert_id"], doc["rule"], doc["severity"], int(doc["step"]), float(doc["at"]))


@dataclass(frozen=True)
class AlertChange:
    """An alert of the run fired (``fired``) or, having fired, resolved (not ``fired``) at ``step``."""

    alert_id: str
    rule: str
    severity: str
    fired: bool
    step: int
    at: float


@dataclass
class Incident:
    """One run episode and what has been told about it (the ``notified_*`` fields are the delivery
    worker's; :func:`group` sets only ``changed_at``)."""

    id: str
    state: str  # firing | resolved
    severity: str  # the highest severity a member reached (never lowered)
    opened_step: int
    opened_at: float
    precursor: StoryPoint | None = None
    confirmation: StoryPoint | None = None
    resolved_step: int | None = None
    resolved_at: float | None = None
    reopened: int = 0
    firing: list[str] = field(default_factory=list)  # member alerts firing now
    changed_at: float | None = None  # the first change not notified yet (None: nothing new)
    notified_state: str | None = None  # state and severity the last notification told
    notified_severity: str | None = None
    last_notified_at: float | None = None
    notifications: int = 0

    def story_json(self) -> dict[str, Any]:
        return {"precursor": self.precursor.to_json() if self.precursor else None,
                "confirmation": self.confirmation.to_json() if self.confirmation else None}


@dataclass
class Grouped:
    """What :func:`group` did: every incident it touched (``new`` ones to insert, the others to
    update) and the memberships it added, ``(incident id, alert id)``."""

    touched: list[Incident] = field(default_factory=list)
    new: set[str] = field(default_factory=set)
    joined: list[tuple[str, str]] = field(default_factory=list)

    def _touch(self, inc: Incident) -> None:
        if all(t is not inc for t in self.touched):
            self.touched.append(inc)


def _changed(inc: Incident, at: float) -> None:
    if inc.changed_at is None:
        inc.changed_at = at


def _point(c: AlertChange) -> StoryPoint:
    return StoryPoint(c.alert_id, c.rule, c.severity, c.step, c.at)


def _join(inc: Incident, c: AlertChange, out: Grouped) -> None:
    inc.firing.append(c.alert_id)
    out.joined.append((inc.id, c.alert_id))
    if c.severity == "critical" and inc.confirmation is None:
        inc.confirmation = _point(c)
        if inc.severity != "critical":
            inc.severity = "critical"
            _changed(inc, c.at)  # escalated
    elif c.severity != "critical" and inc.precursor is None and inc.confirmation is None:
        inc.precursor = _point(c)


def group(latest: Incident | None, changes: Sequence[AlertChange], *, new_id: Callable[[], str],
          reopen_steps: int = REOPEN_STEPS) -> Grouped:
    """Apply one run's alert changes, in the order they happened, to its latest incident (changed in
    place); resolutions of alerts that belong to no incident (fired before incidents existed) are
    ignored."""
    out = Grouped()
    cur = latest
    for c in changes:
        if c.fired:
            if cur is not None and cur.state == FIRING:
                _join(cur, c, out)
            elif cur is not None and cur.resolved_step is not None and c.step - cur.resolved_step <= reopen_steps:
                cur.state, cur.resolved_step, cur.resolved_at = FIRING, None, None
                cur.reopened += 1
                _changed(cur, c.at)
                _join(cur, c, out)
            else:
                cur = Incident(id=new_id(), state=FIRING, severity=c.severity, opened_step=c.step, opened_at=c.at,
                               changed_at=c.at)
                out.new.add(cur.id)
                _join(cur, c, out)
            out._touch(cur)
        elif cur is not None and c.alert_id in cur.firing:
            cur.firing.remove(c.alert_id)
            if not cur.firing:
                cur.state, cur.resolved_step, cur.resolved_at = RESOLVED, c.step, c.at
                _changed(cur, c.at)
            out._touch(cur)
    return out


# --- notifications -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyPolicy:
    """Alertmanager's ``group_wait``, ``group_interval`` and ``repeat_interval``, in seconds."""

    group_wait_s: float = 10.0
    group_interval_s: float = 60.0
    repeat_interval_s: float = 4 * 3600.0


def due_at(inc: Incident, policy: NotifyPolicy) -> float | None:
    """When the incident's next notification may go out (None: nothing to tell until it changes)."""
    if inc.last_notified_at is None:
        return None if inc.changed_at is None else inc.changed_at + policy.group_wait_s
    due: float | None = None
    if inc.changed_at is not None:
        due = max(inc.changed_at, inc.last_notified_at + policy.group_interval_s)
    if inc.state == FIRING:
        repeat = inc.last_notified_at + policy.repeat_interval_s
        due = repeat if due is None else min(due, repeat)
    return due


def notification_kind(inc: Incident, *, now: float, policy: NotifyPolicy, run_active: bool) -> str | None:
    """What to send at ``now`` (a time at or after :func:`due_at`): ``opened``, ``escalated``,
    ``resolved``, ``reopened``, ``repeated`` or None (changes cancelled out; a repeat for a run that
    sent no step since the last notification). Never notified and already resolved: ``resolved`` (one
    message tells the whole short story)."""
    if inc.notified_state is None:
        return "opened" if inc.state == FIRING else "resolved"
    if inc.state == RESOLVED:
        return "resolved" if inc.notified_state == FIRING else None
    if inc.notified_state == RESOLVED:
        return "reopened"
    if _RANK.get(inc.severity, 0) > _RANK.get(inc.notified_severity or "", 0):
        return "escalated"
    if run_active and inc.last_notified_at is not None and now - inc.last_notified_at >= policy.repeat_interval_s:
        return "repeated"
    return None


def resolution_held(inc: Incident, *, run_step: int | None, run_running: bool,
                    reopen_steps: int = REOPEN_STEPS) -> bool:
    """True while a resolution must not be told yet: the incident was told as firing, and its run still
    runs within ``reopen_steps`` steps of the resolution (an alert firing now would reopen it)."""
    if inc.state != RESOLVED or inc.notified_state != FIRING or inc.resolved_step is None or not run_running:
        return False
    return run_step is None or run_step - inc.resolved_step <= reopen_steps


def recheck_s(policy: NotifyPolicy) -> float:
    """How soon a held resolution is looked at again (nothing else tells the worker the run moved on)."""
    return max(policy.group_interval_s, 1.0)


def after_notification(inc: Incident, kind: str | None, now: float) -> None:
    """Record a flush at ``now`` that sent ``kind`` (None: sent nothing, the changes are told)."""
    inc.changed_at = None
    if kind is not None:
        inc.notified_state, inc.notified_severity = inc.state, inc.severity
        inc.last_notified_at = now
        inc.notifications += 1


def flush_one(inc: Incident, *, now: float, policy: NotifyPolicy, run_step: int | None, run_running: bool,
              run_active: bool, reopen_steps: int = REOPEN_STEPS) -> tuple[str | None, float | None]:
    """One incident looked at ``now``, by the delivery worker and by :func:`simulate` alike: what to send
    (None: nothing) and when to look at it again (None: not until it changes). When it flushes, the
    incident records it (:func:`after_notification`). ``run_active``: the run reported a step since
    the last notification (repeats need one)."""
    when = due_at(inc, policy)
    if when is None or when > now:  # nothing to tell, or not yet (group_wait, group_interval)
        return None, when
    if resolution_held(inc, run_step=run_step, run_running=run_running, reopen_steps=reopen_steps):
        return None, now + recheck_s(policy)  # it may still reopen
    kind = notification_kind(inc, now=now, policy=policy, run_active=run_active)
    if kind is None and inc.changed_at is None:  # a repeat for a run that sent no step since: later
        return None, now + policy.repeat_interval_s
    after_notification(inc, kind, now)
    return kind, due_at(inc, policy)


def story(inc: Incident) -> dict[str, Any]:
    """The story as the API and webhook bodies show it."""
    resolution = None
    if inc.state == RESOLVED and inc.resolved_step is not None:
        resolution = {"step": inc.resolved_step, "at": inc.resolved_at}
    return {
        "first_precursor": inc.precursor.to_json() if inc.precursor else None,
        "confirmation": inc.confirmation.to_json() if inc.confirmation else None,
        "resolution": resolution,
        "summary": story_summary(inc),
    }


def story_summary(inc: Incident) -> str:
    """The story in one line: first precursor, confirmation (and how many steps later), resolution."""
    parts = []
    if inc.precursor is not None:
        parts.append(f"precursor {inc.precursor.rule} (warning) at step {inc.precursor.step}")
    if inc.confirmation is not None:
        c = inc.confirmation
        later = f", {c.step - inc.precursor.step} steps later" if inc.precursor is not None else ""
        parts.append(f"confirmed by {c.rule} (critical) at step {c.step}{later}")
    if inc.state == RESOLVED and inc.resolved_step is not None:
        parts.append(f"resolved at step {inc.resolved_step}")
    else:
        parts.append(f"firing, {len(inc.firing)} alert{'s' if len(inc.firing) != 1 else ''}")
    if inc.reopened:
        parts.append(f"reopened {inc.reopened}x")
    return "; ".join(parts)


# --- the whole pipeline without a database (tests, bench) ----------------------------------------


@dataclass(frozen=True)
class Notification:
    at: float
    kind: str
    incident: Incident  # a copy as it was told


def simulate(changes: Sequence[AlertChange], *, policy: NotifyPolicy, step_times: Mapping[int, float] | None = None,
             finished_at: float | None = None, reopen_steps: int = REOPEN_STEPS,
             until: float | None = None) -> tuple[list[Incident], list[Notification]]:
    """Group one run's alert changes and flush notifications as a punctual delivery worker would, on
    the changes' own clock (``at``): the incidents and every notification sent, in order.

    ``step_times``: step -> when the run reported it (repeats need a live run; a held resolution
    waits for the run to move on); ``finished_at``: when the run stopped running (None: it runs on);
    ``until``: keep flushing to this time (default: the last change plus ``group_wait`` and
    ``group_interval``).
    """
    counter = iter(range(1, 1 << 30))
    incidents: list[Incident] = []
    sent: list[Notification] = []
    hold: dict[str, float] = {}  # the worker's next look at an incident (next_due_at)
    pending = sorted(changes, key=lambda c: c.at)
    end = until if until is not None else (
        (pending[-1].at if pending else 0.0) + policy.group_wait_s + policy.group_interval_s)
    steps = sorted((t, s) for s, t in (step_times or {}).items())

    def step_at(t: float) -> int | None:
        done = [s for ts, s in steps if ts <= t]
        return max(done) if done else None

    def flush(now: float) -> None:
        for inc in incidents:
            while True:
                due = due_at(inc, policy)
                if due is None:
                    break
                t = max(due, hold.get(inc.id, due))
                if t > now:
                    break
                active = inc.last_notified_at is None or any(inc.last_notified_at < ts <= t for ts, _ in steps)
                kind, again = flush_one(inc, now=t, policy=policy, run_step=step_at(t),
                                        run_running=finished_at is None or t < finished_at, run_active=active,
                                        reopen_steps=reopen_steps)
                if again is None:
                    hold.pop(inc.id, None)
                else:
                    hold[inc.id] = again
                if kind is not None:
                    sent.append(Notification(t, kind, replace(inc, firing=list(inc.firing))))

    i = 0
    while i < len(pending):
        at = pending[i].at
        flush(at - 1e-9)  # what was due before these changes went out first
        batch = []
        while i < len(pending) and pending[i].at == at:
            batch.append(pending[i])
            i += 1
        latest = incidents[-1] if incidents else None
        result = group(latest, batch, new_id=lambda: f"i{next(counter)}", reopen_steps=reopen_steps)
        incidents += [inc for inc in result.touched if inc.id in result.new]
        for inc in result.touched:  # ingest marks a changed incident due now
            hold.pop(inc.id, None)
    flush(end)
    sent.sort(key=lambda n: n.at)
    return incidents, sent


def count_notifications(alerts: Sequence[tuple[str, int, int | None]], *, step_s: float = 1.0,
                        step_times: Mapping[int, float] | None = None, policy: NotifyPolicy | None = None) -> int:
    """Notifications one webhook gets for one run's fired alerts, ``(severity, fired step, resolved
    step or None)``, when the run reports a step every ``step_s`` seconds, or at ``step_times`` (step ->
    epoch seconds, e.g. the records' own times) where given, and finishes after its last step (the
    bench's count)."""
    policy = policy or NotifyPolicy()
    last = max([s for _, f, r in alerts for s in (f, r) if s is not None], default=0)
    if step_times:
        last = max(last, max(step_times))

    def when(step: int) -> float:
        if step_times:
            known = step_times.get(step)
            if known is not None:
                return known
            return max((t for s, t in step_times.items() if s <= step), default=min(step_times.values()))
        return step * step_s

    changes = []
    for k, (severity, fired, resolved) in enumerate(alerts):
        changes.append(AlertChange(f"a{k}", f"r{k}", severity, True, fired, when(fired)))
        if resolved is not None:
            changes.append(AlertChange(f"a{k}", f"r{k}", severity, False, resolved, when(resolved)))
    changes.sort(key=lambda c: (c.at, c.step, not c.fired))
    times = dict(step_times) if step_times else {k: k * step_s for k in range(last + 1)}
    finished = max(times.values()) if times else None
    until = (finished or 0.0) + policy.group_wait_s + policy.group_interval_s + recheck_s(policy)
    _, sent = simulate(changes, policy=policy, step_times=times, finished_at=finished, until=until)
    return len(sent)
