"""The clock and timezone both backends evaluate against, durations and calendar periods.

Nothing here reads the wall clock except :meth:`EvalContext.current`; relative dates
(`today`, `older_than: 3d`, ...) are always computed from an :class:`EvalContext`, so the
SQL and Python backends see the same instant and tests control time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.UTC

DURATION = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
DURATION_UNITS = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1),
                  "d": dt.timedelta(days=1), "w": dt.timedelta(weeks=1)}
LONGEST_DURATION = dt.timedelta(days=36_600)  # about 100 years

PERIODS = ("today", "this_week", "this_month")


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time written `30m`, `12h`, `3d` or `2w` (a day is 24 hours)."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        """The duration `text` names; ValueError when it names none."""
        match = DURATION.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r} is not a duration like 30m, 12h, 3d or 2w")
        found = cls(int(match.group(1)), match.group(2))
        if found.delta > LONGEST_DURATION:
            raise ValueError(f"{text!r} is longer than 100 years")
        return found

    @property
    def delta(self) -> dt.timedelta:
        return self.amount * DURATION_UNITS[self.unit]

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True, slots=True)
class EvalContext:
    """The instant (`now`, timezone-aware) and the tenant's `timezone` conditions run at."""

    now: dt.datetime
    timezone: ZoneInfo | dt.tzinfo
    """The tenant's timezone: a ZoneInfo (or any tzinfo; a name is converted)."""

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("EvalContext.now must be timezone-aware")
        if isinstance(self.timezone, str):  # a convenience: EvalContext(now, "Asia/Shanghai")
            object.__setattr__(self, "timezone", ZoneInfo(self.timezone))

    @classmethod
    def current(cls, timezone: ZoneInfo | str = "UTC") -> EvalContext:
        """A context at the wall clock's now (the one place the clock is read)."""
        zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
        return cls(dt.datetime.now(UTC), zone)

    @property
    def local_now(self) -> dt.datetime:
        return self.now.astimezone(self.timezone)

    def today(self) -> dt.date:
        """Today's date in the tenant's timezone."""
        return self.local_now.date()

    def local(self, value: dt.datetime) -> dt.datetime:
        """A datetime literal made aware: without an offset it is tenant-local time."""
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=self.timezone)
        return value

    def day_start(self, day: dt.date) -> dt.datetime:
        """The first moment (midnight) of `day` in the tenant's timezone, in UTC."""
        return dt.datetime.combine(day, dt.time(), tzinfo=self.timezone).astimezone(UTC)

    def period(self, name: str) -> tuple[dt.date, dt.date]:
        """[first day, day after the last) of `today`, `this_week` (ISO, Monday first) or
        `this_month`, in the tenant's timezone."""
        today = self.today()
        if name == "today":
            return today, today + dt.timedelta(days=1)
        if name == "this_week":
            monday = today - dt.timedelta(days=today.weekday())
            return monday, monday + dt.timedelta(days=7)
        if name == "this_month":
            first = today.replace(day=1)
            following = (first + dt.timedelta(days=32)).replace(day=1)
            return first, following
        raise ValueError(f"unknown period {name!r}; known: {', '.join(PERIODS)}")

    def instants(self, name: str) -> tuple[dt.datetime, dt.datetime]:
        """The period `name` as [start, end) instants in UTC."""
        first, after = self.period(name)
        return self.day_start(first), self.day_start(after)

    def cutoff(self, duration: Duration) -> dt.datetime:
        """The instant `duration` before now, in UTC."""
        return (self.now - duration.delta).astimezone(UTC)

    def first_day_from(self, instant: dt.datetime) -> dt.date:
        """The earliest date whose first moment (local midnight) is at or after `instant`."""
        day = instant.astimezone(self.timezone).date()
        return day if self.day_start(day) >= instant else day + dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class OperandContext:
    """What an operator sees besides the values: the evaluation context and the field type."""

    eval: EvalContext
    type: str

    @property
    def now(self) -> dt.datetime:
        return self.eval.now

    @property
    def timezone(self) -> ZoneInfo | dt.tzinfo:
        return self.eval.timezone
