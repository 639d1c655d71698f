"""Business-time arithmetic (metacrm.engines.sla.calendar): properties and worked examples.

Properties hold for many calendars, instants and durations (hypothesis): adding then
measuring gives the duration back; both operations are monotonic; measuring is additive;
holidays and closed days contribute nothing; DST days are as long as their wall clock.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metacrm.engines.sla.calendar import BusinessCalendar, parse_spans

UTC = dt.UTC
HOUR = 3600
SHANGHAI = "Asia/Shanghai"
NINE_TO_SIX = {d: ["09:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe",
         "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham")


def office(zone: str = SHANGHAI, holidays: tuple[str, ...] = ()) -> BusinessCalendar:
    return BusinessCalendar.build(zone, NINE_TO_SIX, holidays)


def local(zone: str, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone))


# -- strategies ---------------------------------------------------------------------------

@st.composite
def day_spans(draw: st.DrawFn) -> list[str]:
    """Zero to three non-overlapping spans of one day, on 15-minute boundaries."""
    cuts = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    return [f"{a // 4:02d}:{a % 4 * 15:02d}-{b // 4:02d}:{b % 4 * 15:02d}"
            for a, b in zip(cuts[::2], cuts[1::2], strict=True) if a < b]


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    zone = draw(st.sampled_from(ZONES))
    hours = {day: draw(day_spans()) for day in range(7)}
    if not any(hours.values()):
        hours[draw(st.integers(0, 6))] = ["09:00-17:00"]
    holidays = draw(st.lists(st.dates(dt.date(2025, 12, 1), dt.date(2027, 3, 1)),
                             max_size=20))
    return BusinessCalendar.build(zone, hours, holidays)


instants = st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 31),
                        timezones=st.just(UTC))
durations = st.integers(0, 30 * 24 * HOUR)


# -- properties ---------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(calendars(), instants, durations)
def test_adding_then_measuring_gives_the_duration_back(calendar: BusinessCalendar,
                                                       start: dt.datetime,
                                                       seconds: int) -> None:
    assert calendar.between(start, calendar.add(start, seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(calendars(), instants, durations, durations)
def test_adding_is_monotonic_and_composes(calendar: BusinessCalendar, start: dt.datetime,
                                          a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert calendar.add(start, low) <= calendar.add(start, high)
    assert calendar.add(start, low) >= start
    if b:  # adding in two steps lands where adding at once does
        assert calendar.add(calendar.add(start, a), b) == calendar.add(start, a + b)


@settings(max_examples=200, deadline=None)
@given(calendars(), instants, instants, instants)
def test_measuring_is_monotonic_and_additive(calendar: BusinessCalendar, a: dt.datetime,
                                             b: dt.datetime, c: dt.datetime) -> None:
    first, middle, last = sorted((a, b, c))
    whole = calendar.duration(first, last)
    assert whole == calendar.duration(first, middle) + calendar.duration(middle, last)
    assert calendar.between(first, last) >= calendar.between(middle, last) >= 0
    assert calendar.between(last, first) == 0
    assert calendar.between(first, last) <= (last - first).total_seconds()


@settings(max_examples=200, deadline=None)
@given(calendars(), st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31)))
def test_holidays_and_closed_days_contribute_nothing(calendar: BusinessCalendar,
                                                     day: dt.date) -> None:
    start = calendar.instant(day, 0)
    end = calendar.instant(day + dt.timedelta(days=1), 0)
    if not calendar.spans(day):
        assert calendar.between(start, end) == 0
    holiday = BusinessCalendar(calendar.zone, calendar.hours, calendar.holidays | {day})
    assert holiday.between(start, end) == 0
    # what lies around the holiday is untouched
    before = calendar.instant(day - dt.timedelta(days=3), 0)
    assert holiday.between(before, start) == calendar.between(before, start)


@settings(max_examples=200, deadline=None)
@given(calendars(), instants, st.integers(1, 30 * 24 * HOUR))
def test_a_positive_duration_ends_inside_working_hours(calendar: BusinessCalendar,
                                                       start: dt.datetime,
                                                       seconds: int) -> None:
    end = calendar.add(start, seconds)
    just_before = end - dt.timedelta(microseconds=1)
    assert calendar.is_working(just_before)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ZONES), st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31)))
def test_a_round_the_clock_day_lasts_as_long_as_its_wall_clock(zone: str,
                                                               day: dt.date) -> None:
    calendar = BusinessCalendar.build(zone, {d: ["00:00-24:00"] for d in range(7)})
    tz = ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    real = (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds()
    assert calendar.between(start, end) == real


# -- DST days -------------------------------------------------------------------------------

def test_spring_forward_day_is_an_hour_short() -> None:
    calendar = BusinessCalendar.build("America/New_York", {d: ["00:00-24:00"] for d in range(7)})
    day = dt.date(2026, 3, 8)  # 02:00 → 03:00
    start, end = calendar.instant(day, 0), calendar.instant(day + dt.timedelta(days=1), 0)
    assert calendar.between(start, end) == 23 * HOUR


def test_fall_back_day_is_an_hour_long() -> None:
    calendar = BusinessCalendar.build("Europe/London", {d: ["00:00-24:00"] for d in range(7)})
    day = dt.date(2026, 10, 25)  # 02:00 BST → 01:00 GMT
    start, end = calendar.instant(day, 0), calendar.instant(day + dt.timedelta(days=1), 0)
    assert calendar.between(start, end) == 25 * HOUR


def test_office_hours_keep_their_length_on_dst_days() -> None:
    calendar = BusinessCalendar.build("America/New_York", {d: ["09:00-17:00"] for d in range(7)})
    for day in (dt.date(2026, 3, 8), dt.date(2026, 11, 1)):
        start = dt.datetime.combine(day, dt.time(), ZoneInfo("America/New_York"))
        assert calendar.between(start, start + dt.timedelta(days=1)) == 8 * HOUR
    # Saturday 16:00 + 2h → Sunday (spring forward) 10:00 local, wall clock
    saturday = local("America/New_York", 2026, 3, 7, 16)
    assert calendar.add(saturday, 2 * HOUR) == local("America/New_York", 2026, 3, 8, 10)


def test_a_span_opening_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    calendar = BusinessCalendar.build("America/New_York", {6: ["02:30-04:00"]})
    day = dt.date(2026, 3, 8)  # a Sunday; 02:00-03:00 does not exist
    (first, last), = calendar.windows(day)
    assert first == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert last == dt.datetime(2026, 3, 8, 8, 0, tzinfo=UTC)  # 04:00 EDT
    assert calendar.between(first - dt.timedelta(hours=5), last) == HOUR


def test_a_span_in_the_repeated_hour_opens_the_first_time_the_clock_shows_it() -> None:
    calendar = BusinessCalendar.build("Europe/London", {6: ["01:30-03:00"]})
    (first, last), = calendar.windows(dt.date(2026, 10, 25))
    assert first == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 01:30 BST
    assert last == dt.datetime(2026, 10, 25, 3, 0, tzinfo=UTC)  # 03:00 GMT
    assert calendar.between(first, last) == 2.5 * HOUR


# -- worked examples ------------------------------------------------------------------------

def test_friday_afternoon_plus_four_business_hours_is_monday_noon() -> None:
    friday = local(SHANGHAI, 2026, 1, 9, 17)
    assert office().add(friday, 4 * HOUR) == local(SHANGHAI, 2026, 1, 12, 12)


def test_a_holiday_monday_moves_it_to_tuesday() -> None:
    friday = local(SHANGHAI, 2026, 1, 9, 17)
    calendar = office(holidays=("2026-01-12",))
    assert calendar.add(friday, 4 * HOUR) == local(SHANGHAI, 2026, 1, 13, 12)
    assert calendar.between(friday, local(SHANGHAI, 2026, 1, 13, 12)) == 4 * HOUR


def test_time_outside_hours_starts_counting_at_the_next_opening() -> None:
    saturday = local(SHANGHAI, 2026, 1, 10, 11)
    assert office().add(saturday, 30 * 60) == local(SHANGHAI, 2026, 1, 12, 9, 30)
    assert office().between(saturday, local(SHANGHAI, 2026, 1, 12, 9, 30)) == 30 * 60


def test_running_out_at_closing_time_ends_at_closing_time() -> None:
    morning = local(SHANGHAI, 2026, 1, 9, 9)
    assert office().add(morning, 9 * HOUR) == local(SHANGHAI, 2026, 1, 9, 18)
    assert office().add(morning, 0) == morning


def test_a_lunch_break_does_not_count() -> None:
    calendar = BusinessCalendar.build(SHANGHAI, {"mon": ["09:00-12:00", "13:00-18:00"]})
    monday = local(SHANGHAI, 2026, 1, 12, 11)
    assert calendar.add(monday, 2 * HOUR) == local(SHANGHAI, 2026, 1, 12, 14)


def test_naive_datetimes_are_utc() -> None:
    calendar = office("UTC")
    assert calendar.add(dt.datetime(2026, 1, 12, 9), HOUR) == \
        dt.datetime(2026, 1, 12, 10, tzinfo=UTC)


@pytest.mark.parametrize("spans, expected", [
    (["09:00-12:00", "13:00-18:00"], ((540, 720), (780, 1080))),
    (["13:00-18:00", "09:00-13:30"], ((540, 1080),)),
    ([("08:00", "24:00")], ((480, 1440),)),
])
def test_spans_are_sorted_and_merged(spans: list, expected: tuple) -> None:
    assert parse_spans(spans) == expected


@pytest.mark.parametrize("spans", [["18:00-09:00"], ["25:00-26:00"], ["9-5"], ["09:61-10:00"]])
def test_bad_spans_are_refused(spans: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_spans(spans)


def test_a_calendar_without_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        BusinessCalendar.build("UTC", {})
