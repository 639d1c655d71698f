"""One SLA clock's state and its transitions, as pure functions of a calendar and a time.

A clock runs in business time from `started_at`. Time spent paused does not count: it
is kept in `paused_seconds` (closed pauses, in business seconds) and, while a pause is
open, from `paused_since`. So the clock's elapsed business time at `now` is

    between(started_at, now) - paused_seconds - between(paused_since, now)

and the instant a fraction `f` of the target is reached is
``add(started_at, f * target + paused_seconds)`` — that is how a pause moves `due_at`.

States: ``running`` → ``paused`` ↔ ``running`` → ``met`` | ``breached``. A breached clock
stays breached: stopping it, reopening the record or changing its priority never turns
it back (its target and due time are final once it fails).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .calendar import BusinessCalendar

RUNNING, PAUSED, MET, BREACHED = "running", "paused", "met", "breached"
STATUSES = (RUNNING, PAUSED, MET, BREACHED)


@dataclass(frozen=True, slots=True)
class Clock:
    """One clock of one policy on one record (a row of ``_metacrm_sla_clocks``)."""

    entity: str
    record_id: int
    policy: str
    clock: str
    target_seconds: int
    started_at: dt.datetime
    due_at: dt.datetime | None = None
    alarm_at: dt.datetime | None = None
    """When the sweep must look at the clock next (None: nothing pending)."""
    paused_since: dt.datetime | None = None
    paused_seconds: float = 0.0
    warned_at: dt.datetime | None = None
    breached_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    status: str = RUNNING
    fired: tuple[int, ...] = ()
    """The escalation levels (indexes into the policy's list) that have run."""
    id: int | None = None
    version: int = 0

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    @property
    def breached(self) -> bool:
        return self.breached_at is not None


def elapsed(clock: Clock, calendar: BusinessCalendar, now: dt.datetime) -> float:
    """Business seconds the clock has run (frozen while paused and once stopped)."""
    end = clock.stopped_at or clock.paused_since or now
    return max(0.0, calendar.between(clock.started_at, end) - clock.paused_seconds)


def reached(clock: Clock, calendar: BusinessCalendar, fraction: float) -> dt.datetime:
    """The instant the clock reaches `fraction` of its target (1.0: its due time), as
    things stand (a pause still open moves it later when it closes)."""
    return calendar.add(clock.started_at,
                        fraction * clock.target_seconds + clock.paused_seconds)


def thresholds(clock: Clock, warn_at: float,
               levels: Sequence[float]) -> list[tuple[str, float]]:
    """What is still to happen to a clock, as (what, fraction): ``warn``, ``breach`` and
    ``level:<i>`` for each escalation level not yet run."""
    pending: list[tuple[str, float]] = []
    if clock.warned_at is None and warn_at < 1:
        pending.append(("warn", warn_at))
    if not clock.breached:
        pending.append(("breach", 1.0))
    pending.extend((f"level:{i}", at) for i, at in enumerate(levels) if i not in clock.fired)
    return pending


def schedule(clock: Clock, calendar: BusinessCalendar, warn_at: float,
             levels: Sequence[float]) -> Clock:
    """`due_at` and `alarm_at` recomputed. A paused clock's time stands still at the
    start of its pause: its alarm is that instant if something was reached by then (for
    the sweep to fire), else none; a stopped clock has no alarm."""
    if clock.stopped:
        return dataclasses.replace(clock, alarm_at=None)
    due = clock.due_at if clock.breached else reached(clock, calendar, 1.0)
    pending = [reached(clock, calendar, f) for _, f in thresholds(clock, warn_at, levels)]
    if clock.paused:
        alarm = clock.paused_since if any(p < clock.paused_since for p in pending) else None
    else:
        alarm = min(pending, default=None)
    return dataclasses.replace(clock, due_at=due, alarm_at=alarm)


def settle(clock: Clock, calendar: BusinessCalendar, now: dt.datetime) -> Clock:
    """Record a breach that happened by `now` (by the start of an open pause) but that no
    sweep has seen yet: breached at the due time, whatever happens next."""
    if clock.stopped or clock.breached:
        return clock
    due = reached(clock, calendar, 1.0)
    if due >= (clock.paused_since or now):
        return clock
    return dataclasses.replace(clock, breached_at=due, due_at=due, status=BREACHED)


def start(entity: str, record_id: int, policy: str, name: str, target: int,
          now: dt.datetime, calendar: BusinessCalendar, warn_at: float,
          levels: Sequence[float], *, paused: bool = False) -> Clock:
    """A new clock started at `now` (already paused when the record is paused)."""
    clock = Clock(entity, record_id, policy, name, target, now,
                  paused_since=now if paused else None, status=PAUSED if paused else RUNNING)
    return schedule(clock, calendar, warn_at, levels)


def pause(clock: Clock, calendar: BusinessCalendar, now: dt.datetime, warn_at: float,
          levels: Sequence[float]) -> Clock:
    """Stop counting from `now` (a breach that happened before stays a breach)."""
    if clock.stopped or clock.paused:
        return clock
    clock = settle(clock, calendar, now)
    clock = dataclasses.replace(clock, paused_since=now,
                                status=BREACHED if clock.breached else PAUSED)
    return schedule(clock, calendar, warn_at, levels)


def resume(clock: Clock, calendar: BusinessCalendar, now: dt.datetime, warn_at: float,
           levels: Sequence[float]) -> Clock:
    """Count again from `now`: the paused business time moves every threshold later."""
    if clock.stopped or not clock.paused:
        return clock
    clock = settle(clock, calendar, now)
    paused = clock.paused_seconds + calendar.between(clock.paused_since, now)
    clock = dataclasses.replace(clock, paused_since=None, paused_seconds=paused,
                                status=BREACHED if clock.breached else RUNNING)
    return schedule(clock, calendar, warn_at, levels)


def retarget(clock: Clock, target: int, calendar: BusinessCalendar, warn_at: float,
             levels: Sequence[float]) -> Clock:
    """A new target, counted from the clock's start (the time already spent counts).

    A breached or stopped clock keeps its target: its result is final."""
    if clock.stopped or clock.breached or target == clock.target_seconds:
        return clock
    return schedule(dataclasses.replace(clock, target_seconds=target), calendar, warn_at,
                    levels)


def stop(clock: Clock, calendar: BusinessCalendar, now: dt.datetime) -> Clock:
    """The stop condition holds: met if the target was kept, else breached (for good).

    A breached clock keeps an alarm at `now` so that the sweep writes its breach field;
    escalation levels not yet run never will (the record no longer waits)."""
    if clock.stopped:
        return clock
    clock = settle(clock, calendar, now)
    if clock.paused:
        clock = dataclasses.replace(
            clock, paused_since=None,
            paused_seconds=clock.paused_seconds + calendar.between(clock.paused_since, now))
    if clock.breached:
        return dataclasses.replace(clock, stopped_at=now, status=BREACHED, alarm_at=now)
    return dataclasses.replace(clock, stopped_at=now, status=MET,
                               due_at=reached(clock, calendar, 1.0), alarm_at=None)


@dataclass(frozen=True, slots=True)
class Tick:
    """What the sweep found due on one clock at one time."""

    clock: Clock
    warned: bool = False
    breached: bool = False
    levels: tuple[int, ...] = ()

    @property
    def changed(self) -> bool:
        return self.warned or self.breached or bool(self.levels)


def tick(clock: Clock, calendar: BusinessCalendar, now: dt.datetime, warn_at: float,
         levels: Sequence[float]) -> Tick:
    """Everything reached by `now` (by the start of an open pause): the warning, the
    breach and escalation levels, each at most once; the clock comes back with its next
    alarm."""
    if clock.stopped:
        return Tick(dataclasses.replace(clock, alarm_at=None))
    until = min(now, clock.paused_since) if clock.paused else now
    warned = breached = False
    fired: list[int] = []
    changes: dict[str, Any] = {}
    for what, fraction in thresholds(clock, warn_at, levels):
        at = reached(clock, calendar, fraction)
        if at >= until:  # reached once time has passed it (stopping at the due time is met)
            continue
        if what == "warn":
            warned, changes["warned_at"] = True, at
        elif what == "breach":
            breached = True
            changes.update(breached_at=at, due_at=at, status=BREACHED)
        else:
            fired.append(int(what.split(":")[1]))
    if warned or breached or fired:
        changes["fired"] = tuple(sorted({*clock.fired, *fired}))
        clock = dataclasses.replace(clock, **changes)
    return Tick(schedule(clock, calendar, warn_at, levels), warned, breached, tuple(fired))
