"""Business-time arithmetic over a calendar: working hours per weekday, less holidays.

Working hours are wall-clock spans in the calendar's timezone ("09:00-18:00" on a
Monday). Business time is the real time that passes inside those spans, so on the
days a timezone changes its clocks a span that crosses the change is an hour shorter
or longer. Each span boundary is the first instant the wall clock shows that time; a
boundary inside a skipped hour (spring forward) is the instant the clock jumps past it.

    calendar = BusinessCalendar.of(ir_calendar)
    due = calendar.add(created, 4 * 3600)          # 4 business hours later
    spent = calendar.between(created, now)         # business seconds in [created, now)

`between(start, calendar.add(start, s)) == s` for every s ≥ 0 (to the microsecond).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

UTC = dt.UTC
DAY_MINUTES = 24 * 60
ONE_DAY = dt.timedelta(days=1)
SEARCH_DAYS = 3_660
"""How many days `add` looks ahead for working hours before it gives up (ten years)."""
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Span = tuple[int, int]
"""Minutes since local midnight: [start, end), 0 ≤ start < end ≤ 1440."""
Window = tuple[dt.datetime, dt.datetime]
"""One working span of one day as UTC instants: [start, end)."""


def parse_time(text: str) -> int:
    """Minutes since midnight of "HH:MM" (24:00 is the end of the day)."""
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{text!r} is not a time like 09:00")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > DAY_MINUTES:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return value


def parse_spans(spans: Iterable[Any]) -> tuple[Span, ...]:
    """Spans written ("09:00", "12:00") or "09:00-12:00", sorted, overlaps merged."""
    parsed: list[Span] = []
    for span in spans:
        start, end = span.split("-", 1) if isinstance(span, str) else span
        first, last = parse_time(start.strip()), parse_time(end.strip())
        if first >= last:
            raise ValueError(f"the span {start}-{end} ends before it starts")
        parsed.append((first, last))
    merged: list[Span] = []
    for first, last in sorted(parsed):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def _weekday(key: Any) -> int:
    if isinstance(key, int) and 0 <= key <= 6:
        return key
    if isinstance(key, str) and key.lower()[:3] in WEEKDAYS:
        return WEEKDAYS.index(key.lower()[:3])
    raise ValueError(f"{key!r} is not a day of the week (0 = Monday, or mon..sun)")


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Working hours per weekday (0 = Monday) in `zone`, less `holidays` (local dates)."""

    zone: ZoneInfo
    hours: tuple[tuple[Span, ...], ...]
    holidays: frozenset[dt.date] = frozenset()
    _windows: dict[dt.date, tuple[Window, ...]] = field(default_factory=dict, compare=False,
                                                        repr=False)

    def __post_init__(self) -> None:
        if len(self.hours) != 7:
            raise ValueError("a calendar has hours for each of the 7 days of the week")
        if not any(self.hours):
            raise ValueError("a calendar needs working hours on at least one day of the week")

    @classmethod
    def build(cls, timezone: str, hours: Mapping[Any, Iterable[Any]],
              holidays: Iterable[str | dt.date] = ()) -> BusinessCalendar:
        """From plain values: ``hours={"mon": ["09:00-18:00"], ...}`` or keyed 0..6."""
        days: list[tuple[Span, ...]] = [()] * 7
        for key, spans in hours.items():
            days[_weekday(key)] = parse_spans(spans)
        return cls(ZoneInfo(timezone), tuple(days), frozenset(
            d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in holidays))

    @classmethod
    def of(cls, calendar: Any) -> BusinessCalendar:
        """From a Registry `Calendar` (metacrm.metadata.ir)."""
        return cls.build(calendar.timezone, calendar.hours, calendar.holidays)

    # -- one day ------------------------------------------------------------------------------

    def spans(self, day: dt.date) -> tuple[Span, ...]:
        """The working spans of a local date (none on a holiday)."""
        return () if day in self.holidays else self.hours[day.weekday()]

    def windows(self, day: dt.date) -> tuple[Window, ...]:
        """The working spans of a local date as UTC instants (cached per date)."""
        found = self._windows.get(day)
        if found is None:
            found = tuple(w for w in ((self.instant(day, a), self.instant(day, b))
                                      for a, b in self.spans(day)) if w[0] < w[1])
            if len(self._windows) > 4_096:
                self._windows.clear()
            self._windows[day] = found
        return found

    def instant(self, day: dt.date, minute: int) -> dt.datetime:
        """The first instant the wall clock of `day` shows `minute` (past it, if skipped)."""
        if minute >= DAY_MINUTES:
            day, minute = day + ONE_DAY, minute - DAY_MINUTES
        local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60))
        earlier = local.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if self.wall(earlier) == local:
            return earlier
        # `local` is skipped (spring forward): find the second the clock jumps past it
        low = int(local.replace(tzinfo=self.zone, fold=1).timestamp())
        high = int(earlier.timestamp())
        low, high = min(low, high), max(low, high)
        while high - low > 1:  # invariant: wall(low) < local <= wall(high)
            middle = (low + high) // 2
            if self.wall(dt.datetime.fromtimestamp(middle, UTC)) >= local:
                high = middle
            else:
                low = middle
        return dt.datetime.fromtimestamp(high, UTC)

    def wall(self, instant: dt.datetime) -> dt.datetime:
        """The naive local wall-clock time of an instant."""
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def local_date(self, instant: dt.datetime) -> dt.date:
        return instant.astimezone(self.zone).date()

    # -- business time ------------------------------------------------------------------------

    def add(self, start: dt.datetime, seconds: float | dt.timedelta) -> dt.datetime:
        """The earliest instant by which `seconds` of business time have passed since
        `start` (at the end of a span, not the start of the next, when they run out there)."""
        start = _aware(start)
        remaining = seconds if isinstance(seconds, dt.timedelta) else \
            dt.timedelta(seconds=seconds)
        if remaining <= dt.timedelta(0):
            return start
        day = self.local_date(start)
        idle = 0
        while True:
            windows = self.windows(day)
            for first, last in windows:
                if last <= start:
                    continue
                begin = max(first, start)
                available = last - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
            idle = idle + 1 if not windows else 0
            if idle > SEARCH_DAYS:
                raise ValueError(f"no working hours in the {SEARCH_DAYS} days after {day}")
            day += ONE_DAY

    def between(self, start: dt.datetime, end: dt.datetime) -> float:
        """Business seconds in [start, end) (0 when end is not after start)."""
        return self.duration(start, end).total_seconds()

    def duration(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """Business time in [start, end) as a timedelta (exact to the microsecond)."""
        start, end = _aware(start), _aware(end)
        total = dt.timedelta(0)
        if end <= start:
            return total
        day, last_day = self.local_date(start), self.local_date(end)
        while day <= last_day:
            for first, last in self.windows(day):
                overlap = min(last, end) - max(first, start)
                if overlap > dt.timedelta(0):
                    total += overlap
            day += ONE_DAY
        return total

    def is_working(self, instant: dt.datetime) -> bool:
        """Whether `instant` falls inside working hours."""
        instant = _aware(instant)
        day = self.local_date(instant)
        return any(first <= instant < last for d in (day - ONE_DAY, day)
                   for first, last in self.windows(d))


def _aware(value: dt.datetime) -> dt.datetime:
    """An instant in UTC (a naive datetime is taken as UTC, as the platform stores them)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
