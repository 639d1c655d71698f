"""The SLA engine on SQLite and PostgreSQL, under a controllable clock.

A small library defines a ticket, a Monday to Friday 09:00-18:00 calendar in Shanghai with
a holiday, and a policy with a first-response and a resolution clock, a pause state, a
warning at 80% and two escalation levels. The tests move `platform.clock` through
business hours, pauses and holidays and run the sweep (`jobs_of(platform).run`), as the
job runner would every minute.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from dbfixtures import Project
from hypothesis import given, settings
from hypothesis import strategies as st

from metacrm.engines.actions import ActionContext, RuleAction
from metacrm.engines.sla import clocks as C
from metacrm.engines.sla import store
from metacrm.engines.sla.calendar import BusinessCalendar
from metacrm.engines.sla.sweep import JOB, sweep
from metacrm.hookspecs import hookimpl
from metacrm.platform.auth import create_user
from metacrm.platform.jobs import jobs_of
from metacrm.platform.orgtree import OrgTree
from metacrm.platform.records import Actor, RecordService, ValidationFailed
from metacrm.platform.runtime import Platform
from metacrm.platform.systables import runtime_system_tables
from metacrm.plugins import make_plugin_manager

TZ = ZoneInfo("Asia/Shanghai")
UTC = dt.UTC
TICKET = "svc.ticket"
SLUG = "desk"

MODULE = """
module: svc
owner: service-ops
"""
TICKET_YAML = """
entity: ticket
fields:
  subject: {type: string, required: true}
  internal: {type: boolean, default: false}
  priority: {type: enum, options: [low, normal, high, urgent], default: normal}
  status: {type: enum, options: [new, open, pending_customer, resolved], default: new}
  assignee: {type: user}
  first_response_at: {type: datetime}
  response_breached_at: {type: datetime}
"""
CALENDAR = """
calendar: office
timezone: Asia/Shanghai
weekdays: ["09:00-18:00"]
holidays: ["2026-01-19"]
"""
POLICY = """
sla: support
entity: ticket
calendar: office
when: {field: internal, op: eq, value: false}
by: priority
pause_when: {field: status, op: eq, value: pending_customer}
warn_at: 0.8
clocks:
  first_response:
    stop: {field: first_response_at, op: is_empty, value: false}
    targets: {urgent: 30m, default: 1h}
    field: response_breached_at
  resolution:
    stop: {field: status, op: eq, value: resolved}
    targets: {urgent: 2h, default: 4h}
escalations:
  - {at: 0.8, levels_up: 0, do: [{sla_test_record: {note: warning}}]}
  - {at: 1.0, levels_up: 1, do: [{sla_test_record: {note: breached}}]}
  - {at: 1.5, levels_up: 2, do: [{sla_test_record: {note: way late}}]}
"""
ONSITE = """
sla: onsite
entity: ticket
calendar: office
clocks:
  visit:
    start: {field: status, op: eq, value: open}
    stop: {field: status, op: eq, value: resolved}
    targets: {default: 8h}
"""
TENANT = f"""
tenant: {SLUG}
timezone: Asia/Shanghai
modules: [svc]
"""
FILES = {
    "metadata/modules/svc/module.yaml": MODULE,
    "metadata/modules/svc/entities/ticket.yaml": TICKET_YAML,
    "metadata/modules/svc/calendars/office.yaml": CALENDAR,
    "metadata/modules/svc/slas/support.yaml": POLICY,
    "metadata/modules/svc/slas/onsite.yaml": ONSITE,
    f"tenants/{SLUG}/tenant.yaml": TENANT,
}


def at(*args: int) -> dt.datetime:
    """A Shanghai wall-clock time as a UTC instant."""
    return dt.datetime(*args, tzinfo=TZ).astimezone(UTC)


class Recorder:
    """A rule action (`sla_test_record`) that remembers every run."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def run(self, context: ActionContext, params: Any) -> None:
        self.runs.append({"note": params["note"], "to": context.extras["escalate_to"],
                          "source": context.source, "key": context.key,
                          "record": context.record["id"],
                          "clock": context.extras["sla"]["clock"]})

    @hookimpl
    def register_rule_actions(self) -> list[RuleAction]:
        return [RuleAction("sla_test_record", self.run, "Remember an SLA escalation.",
                           {"type": "object", "required": ["note"]})]

    def notes(self, clock: str | None = None) -> list[str]:
        return [r["note"] for r in self.runs if clock is None or r["clock"] == clock]


@dataclasses.dataclass
class Desk:
    """The tenant, its clock, its people and a recorder of escalations."""

    platform: Platform
    recorder: Recorder
    now: dt.datetime
    people: dict[str, int]

    @property
    def runtime(self) -> Any:
        return self.platform.runtime(SLUG)

    def set(self, instant: dt.datetime) -> None:
        self.now = instant

    def service(self, who: str | None = "agent") -> RecordService:
        actor = Actor(self.people[who]) if who else Actor()
        return RecordService(self.runtime, actor, emit=self.platform.emit,
                             operators=self.platform.operators)

    def ticket(self, when: dt.datetime, **values: Any) -> int:
        self.set(when)
        return self.service().create(TICKET, {"subject": "Printer on fire", **values})["id"]

    def update(self, when: dt.datetime, record_id: int, **values: Any) -> dict[str, Any]:
        self.set(when)
        return self.service().update(TICKET, record_id, values)

    def sweep(self, when: dt.datetime) -> None:
        self.set(when)
        jobs_of(self.platform).run(JOB, {"tenant": SLUG})

    def clocks(self, record_id: int) -> dict[str, C.Clock]:
        with self.runtime.connect() as connection:
            return {c.clock: c for c in store.load(connection, store.table_of(self.runtime),
                                                   TICKET, record_id)}

    def clock(self, record_id: int, name: str = "resolution") -> C.Clock:
        return self.clocks(record_id)[name]


def make_desk(project: Project, files: dict[str, str] | None = None) -> Desk:
    project.write(files or FILES)
    recorder = Recorder()
    platform = Platform(project.settings(), make_plugin_manager([recorder]))
    project._platforms.append(platform)
    report = platform.create_tenant(SLUG)
    assert report.ok, report.format()
    desk = Desk(platform, recorder, at(2026, 1, 5, 9), {})
    platform.clock = lambda: desk.now
    runtime = platform.runtime(SLUG)
    with runtime.begin() as connection:
        for name in ("agent", "lead", "head", "other"):
            desk.people[name] = create_user(connection, name)
        tree = OrgTree(connection, runtime_system_tables(runtime))
        tree.add("support", "Support", "department", manager_id=desk.people["head"])
        tree.add("desk", "Desk", "team", "support", manager_id=desk.people["lead"])
        tree.place(desk.people["agent"], "desk")
        tree.place(desk.people["other"], "support")
    return desk


@pytest.fixture
def desk(make_platform: Project) -> Iterator[Desk]:
    yield make_desk(make_platform)


# -- due times in business time ------------------------------------------------------------

def test_friday_five_pm_plus_four_business_hours_is_due_monday_noon(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 9, 17))  # a Friday
    clock = desk.clock(ticket)
    assert clock.status == C.RUNNING
    assert clock.target_seconds == 4 * 3600
    assert clock.started_at == at(2026, 1, 9, 17)
    assert clock.due_at == at(2026, 1, 12, 12)
    assert desk.clock(ticket, "first_response").due_at == at(2026, 1, 9, 18)  # closing time


def test_a_holiday_monday_pushes_it_to_tuesday(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 16, 17))  # the Friday before the 19th, a holiday
    assert desk.clock(ticket).due_at == at(2026, 1, 20, 12)


def test_a_pause_of_two_business_hours_moves_the_due_time_by_two(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))  # Monday, due 13:00
    assert desk.clock(ticket).due_at == at(2026, 1, 5, 13)
    desk.update(at(2026, 1, 5, 10), ticket, status="pending_customer")
    paused = desk.clock(ticket)
    assert paused.status == C.PAUSED and paused.paused_since == at(2026, 1, 5, 10)
    assert paused.alarm_at is None
    desk.sweep(at(2026, 1, 5, 14))  # past the old due time: nothing happens while paused
    assert desk.clock(ticket).breached_at is None
    desk.update(at(2026, 1, 5, 12), ticket, status="open")
    resumed = desk.clock(ticket)
    assert resumed.status == C.RUNNING
    assert resumed.paused_seconds == 2 * 3600
    assert resumed.due_at == at(2026, 1, 5, 15)
    assert desk.clock(ticket, "first_response").due_at == at(2026, 1, 5, 12)


def test_a_pause_over_the_weekend_counts_only_its_business_hours(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 9, 16))  # Friday; due Monday 11:00
    assert desk.clock(ticket).due_at == at(2026, 1, 12, 11)
    desk.update(at(2026, 1, 9, 16, 30), ticket, status="pending_customer")
    desk.update(at(2026, 1, 12, 10), ticket, status="open")  # 1h30 Friday + 1h Monday
    clock = desk.clock(ticket)
    assert clock.paused_seconds == 2.5 * 3600
    assert clock.due_at == at(2026, 1, 12, 13, 30)


def test_a_breach_before_a_pause_stays_a_breach(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 9, 9))  # Friday, due 13:00; no sweep has run
    desk.update(at(2026, 1, 9, 17), ticket, status="pending_customer")
    paused = desk.clock(ticket)
    assert paused.status == C.BREACHED and paused.breached_at == at(2026, 1, 9, 13)
    assert paused.alarm_at == at(2026, 1, 9, 17)  # the sweep still escalates
    desk.update(at(2026, 1, 12, 10), ticket, status="open")
    assert desk.clock(ticket).due_at == at(2026, 1, 9, 13)
    desk.sweep(at(2026, 1, 12, 10, 1))
    assert "breached" in desk.recorder.notes("resolution")
    assert desk.clock(ticket).breached_at == at(2026, 1, 9, 13)


def test_deleting_pauses_and_restoring_resumes(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.set(at(2026, 1, 5, 10))
    desk.service().delete(TICKET, ticket)
    assert desk.clock(ticket).status == C.PAUSED
    desk.set(at(2026, 1, 5, 11))
    desk.service().restore(TICKET, ticket)
    assert desk.clock(ticket).due_at == at(2026, 1, 5, 14)


# -- warnings, breaches and escalations ---------------------------------------------------

def test_the_warning_at_80_percent_fires_once(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9), first_response_at="2026-01-05T01:10:00Z")
    for minute in (11, 12):  # 80% of 4h = 3h12m: reached once it has passed
        desk.sweep(at(2026, 1, 5, 12, minute))
    assert desk.clock(ticket).warned_at is None
    assert desk.recorder.runs == []
    desk.sweep(at(2026, 1, 5, 12, 13))
    clock = desk.clock(ticket)
    assert clock.warned_at == at(2026, 1, 5, 12, 12)
    assert clock.status == C.RUNNING and clock.fired == (0,)
    assert desk.recorder.notes() == ["warning"]
    assert desk.recorder.runs[0]["to"] == [desk.people["agent"]]  # levels_up 0: the owner
    for minute in (14, 20, 59):
        desk.sweep(at(2026, 1, 5, 12, minute))
    assert desk.recorder.notes() == ["warning"]


def test_a_breach_escalates_to_the_managers_up_the_org_tree(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9), first_response_at="2026-01-05T01:10:00Z")
    desk.sweep(at(2026, 1, 5, 13, 0, 1))
    clock = desk.clock(ticket)
    assert clock.status == C.BREACHED
    assert clock.breached_at == at(2026, 1, 5, 13)
    assert clock.warned_at == at(2026, 1, 5, 12, 12)
    assert desk.recorder.notes("resolution") == ["warning", "breached"]
    breached = desk.recorder.runs[-1]
    assert breached["to"] == [desk.people["lead"]]
    assert breached["source"] == "sla:svc.support:resolution"
    desk.sweep(at(2026, 1, 5, 14, 59))
    assert desk.recorder.notes("resolution") == ["warning", "breached"]
    desk.sweep(at(2026, 1, 5, 15, 1))  # 150% of 4h: the manager's manager
    assert desk.recorder.notes("resolution") == ["warning", "breached", "way late"]
    assert desk.recorder.runs[-1]["to"] == [desk.people["head"]]
    assert desk.clock(ticket).fired == (0, 1, 2)
    assert desk.clock(ticket).alarm_at is None
    desk.sweep(at(2026, 1, 9, 15))
    assert len(desk.recorder.notes("resolution")) == 3
    assert len({r["key"] for r in desk.recorder.runs}) == len(desk.recorder.runs)


def test_escalation_climbs_from_the_assignee_when_there_is_one(desk: Desk) -> None:
    desk.ticket(at(2026, 1, 5, 9), assignee=desk.people["other"],
                first_response_at="2026-01-05T01:10:00Z")
    desk.sweep(at(2026, 1, 5, 13, 1))
    # `other` sits in `support`, managed by `head`; nobody is above head: head again
    assert [r["to"] for r in desk.recorder.runs] == [
        [desk.people["other"]], [desk.people["head"]]]
    desk.sweep(at(2026, 1, 5, 15, 1))
    assert desk.recorder.runs[-1]["to"] == [desk.people["head"]]


def test_one_sweep_after_a_long_silence_fires_every_level_once(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.sweep(at(2026, 1, 7, 9))
    assert sorted(desk.recorder.notes("resolution")) == ["breached", "warning", "way late"]
    assert sorted(desk.recorder.notes("first_response")) == ["breached", "warning", "way late"]
    assert desk.clock(ticket, "first_response").breached_at == at(2026, 1, 5, 10)


def test_a_breach_writes_the_clock_field_on_the_record(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.sweep(at(2026, 1, 5, 10, 5))
    record = desk.service(None).get(TICKET, ticket)
    assert record["response_breached_at"] == at(2026, 1, 5, 10).isoformat()
    assert desk.clock(ticket).breached_at is None  # resolution is still in time


# -- a failed SLA stays failed ---------------------------------------------------------------

def test_stopping_after_a_breach_stays_breached(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.sweep(at(2026, 1, 5, 13, 30))
    desk.update(at(2026, 1, 5, 14), ticket, status="resolved")
    clock = desk.clock(ticket)
    assert clock.status == C.BREACHED and clock.stopped_at == at(2026, 1, 5, 14)
    desk.update(at(2026, 1, 5, 15), ticket, status="open", priority="low")
    desk.update(at(2026, 1, 5, 15, 30), ticket, status="pending_customer")
    desk.update(at(2026, 1, 5, 16), ticket, priority="urgent")
    after = desk.clock(ticket)
    assert after.status == C.BREACHED
    assert after.breached_at == at(2026, 1, 5, 13)
    assert after.target_seconds == 4 * 3600
    assert after.stopped_at == at(2026, 1, 5, 14)


def test_a_late_stop_the_sweep_has_not_seen_is_a_breach(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.update(at(2026, 1, 5, 10, 30), ticket, first_response_at="2026-01-05T02:30:00Z")
    clock = desk.clock(ticket, "first_response")
    assert clock.status == C.BREACHED and clock.breached_at == at(2026, 1, 5, 10)
    desk.sweep(at(2026, 1, 5, 10, 31))
    assert desk.service(None).get(TICKET, ticket)["response_breached_at"] == \
        at(2026, 1, 5, 10).isoformat()
    assert "breached" not in desk.recorder.notes("first_response")  # stopped: no escalation


def test_stopping_in_time_is_met_and_never_restarts(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.update(at(2026, 1, 5, 11), ticket, status="resolved")
    clock = desk.clock(ticket)
    assert clock.status == C.MET and clock.alarm_at is None
    desk.update(at(2026, 1, 5, 12), ticket, status="open")
    desk.sweep(at(2026, 1, 6, 12))
    assert desk.clock(ticket).status == C.MET
    assert desk.recorder.notes("resolution") == []


# -- independent clocks, targets by priority ------------------------------------------------

def test_first_response_and_resolution_run_independently(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.update(at(2026, 1, 5, 9, 30), ticket, first_response_at="2026-01-05T01:30:00Z")
    assert desk.clock(ticket, "first_response").status == C.MET
    assert desk.clock(ticket).status == C.RUNNING
    desk.sweep(at(2026, 1, 5, 13, 1))
    assert desk.clock(ticket, "first_response").status == C.MET
    assert desk.clock(ticket).status == C.BREACHED
    assert desk.recorder.notes("first_response") == []
    assert desk.service(None).get(TICKET, ticket)["response_breached_at"] is None


def test_a_priority_change_recomputes_the_target_from_the_start(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    desk.update(at(2026, 1, 5, 9, 20), ticket, priority="urgent")
    clock = desk.clock(ticket)
    assert clock.target_seconds == 2 * 3600 and clock.due_at == at(2026, 1, 5, 11)
    assert desk.clock(ticket, "first_response").due_at == at(2026, 1, 5, 9, 30)
    desk.update(at(2026, 1, 5, 10), ticket, priority="low")  # back to the default
    assert desk.clock(ticket).due_at == at(2026, 1, 5, 13)
    desk.update(at(2026, 1, 5, 12), ticket, priority="urgent")  # already past 2h
    desk.sweep(at(2026, 1, 5, 12, 0, 30))
    assert desk.clock(ticket).breached_at == at(2026, 1, 5, 11)


# -- which records, and when clocks start --------------------------------------------------

def test_records_the_policy_does_not_cover_get_no_clocks(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9), internal=True)
    assert set(desk.clocks(ticket)) == set()
    desk.update(at(2026, 1, 5, 10), ticket, internal=False)  # covered from now on
    assert desk.clock(ticket).started_at == at(2026, 1, 5, 10)


def test_a_clock_with_a_start_condition_starts_when_it_holds(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    assert "visit" not in desk.clocks(ticket)
    desk.update(at(2026, 1, 5, 14), ticket, status="open")
    visit = desk.clock(ticket, "visit")
    assert visit.started_at == at(2026, 1, 5, 14)
    assert visit.due_at == at(2026, 1, 6, 13)  # 4h Monday + 4h Tuesday
    desk.update(at(2026, 1, 5, 15), ticket, status="resolved")
    desk.update(at(2026, 1, 5, 16), ticket, status="open")
    assert desk.clock(ticket, "visit").status == C.MET  # started once, stopped for good


def test_a_refused_write_leaves_the_clocks_as_they_were(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    before = desk.clock(ticket)
    with pytest.raises(ValidationFailed):
        desk.update(at(2026, 1, 5, 10), ticket, status="pending_customer", priority="nope")
    with pytest.raises(ValidationFailed):
        desk.update(at(2026, 1, 5, 10), ticket, status="pending_customer", subject=None)
    assert desk.clock(ticket) == before


def test_imported_records_get_their_clocks(desk: Desk, tmp_path: Any) -> None:
    from metacrm.platform.importer import import_csv

    source = tmp_path / "tickets.csv"
    source.write_text("subject,priority,status\nPhone dead,urgent,new\nOld one,low,resolved\n",
                      "utf-8")
    desk.set(at(2026, 1, 5, 9))
    result = import_csv(desk.service(None), TICKET, source)
    assert result.created == 2, result
    table = desk.runtime.tables.by_entity[TICKET]
    with desk.runtime.connect() as connection:
        ids = dict(connection.execute(sa.select(table.c.subject, table.c.id)).all())
    urgent = desk.clock(ids["Phone dead"])
    assert urgent.status == C.RUNNING and urgent.due_at == at(2026, 1, 5, 11)
    assert desk.clock(ids["Old one"]).status == C.MET


# -- the sweep claims each clock once ------------------------------------------------------

def test_a_stale_clock_cannot_be_claimed_twice(desk: Desk) -> None:
    ticket = desk.ticket(at(2026, 1, 5, 9))
    stale = desk.clock(ticket)
    table = store.table_of(desk.runtime)
    with desk.runtime.begin() as connection:
        assert store.save(connection, table, dataclasses.replace(stale, warned_at=desk.now))
    with desk.runtime.begin() as connection:
        assert not store.save(connection, table, dataclasses.replace(stale, fired=(0,)))
    assert desk.clock(ticket).fired == ()


def test_the_sweep_looks_only_at_clocks_whose_alarm_has_come(desk: Desk) -> None:
    first = desk.ticket(at(2026, 1, 5, 9))
    second = desk.ticket(at(2026, 1, 5, 11))
    desk.ticket(at(2026, 1, 5, 12))
    desk.set(at(2026, 1, 5, 12, 30))
    with desk.runtime.connect() as connection:
        due = store.due(connection, store.table_of(desk.runtime), desk.now, 100)
    assert {(c.record_id, c.clock) for c in due} == {
        (first, "first_response"), (first, "resolution"), (second, "first_response")}
    assert sweep(desk.runtime) == 3
    assert sweep(desk.runtime) == 0


def test_the_sweep_is_a_periodic_job() -> None:
    specs = [s for batch in make_plugin_manager().hook.register_jobs() for s in batch]
    (found,) = [s for s in specs if s.name == JOB]
    assert found.every == 60


def test_the_clock_table_has_its_keys(desk: Desk) -> None:
    table = store.table_of(desk.runtime)
    assert {c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint)} == {
        "uq__metacrm_sla_clocks_clock"}
    assert {i.name: [c.name for c in i.columns] for i in table.indexes}[
        "ix__metacrm_sla_clocks_due"] == ["status", "due_at"]


# -- pure transitions (no database) ------------------------------------------------------------

CAL = BusinessCalendar.build("Asia/Shanghai", {d: ["09:00-18:00"] for d in range(5)})


def test_tick_breaches_at_the_due_time_not_at_the_sweep() -> None:
    clock = C.start(TICKET, 1, "svc.support", "resolution", 3600, at(2026, 1, 5, 9), CAL, 0.8,
                    (1.0,))
    found = C.tick(clock, CAL, at(2026, 1, 5, 17), 0.8, (1.0,))
    assert found.breached and found.warned and found.levels == (0,)
    assert found.clock.breached_at == at(2026, 1, 5, 10)
    assert found.clock.warned_at == at(2026, 1, 5, 9, 48)
    again = C.tick(found.clock, CAL, at(2026, 1, 6, 17), 0.8, (1.0,))
    assert not again.changed


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 5 * 24 * 60), min_size=2, max_size=8, unique=True),
       st.integers(60, 40 * 3600))
def test_pauses_move_the_due_time_by_their_business_time(minutes: list[int],
                                                         target: int) -> None:
    start = at(2026, 1, 5, 8)
    edges = [start + dt.timedelta(minutes=m) for m in sorted(minutes)]
    edges = edges[:len(edges) // 2 * 2]
    clock = C.start(TICKET, 1, "p", "c", target, start, CAL, 2.0, ())
    paused = 0.0
    for begin, end in zip(edges[::2], edges[1::2], strict=True):
        clock = C.pause(clock, CAL, begin, 2.0, ())
        clock = C.resume(clock, CAL, end, 2.0, ())
        paused += CAL.between(begin, end)
    assert clock.paused_seconds == pytest.approx(paused)
    if not clock.breached:
        assert clock.due_at == CAL.add(start, target + clock.paused_seconds)
        assert C.elapsed(clock, CAL, clock.due_at) == pytest.approx(target)
    else:  # it ran out before a pause began: that is when it failed
        assert clock.breached_at <= max(edges[::2])
        assert C.elapsed(clock, CAL, clock.breached_at) <= target


def test_a_paused_clock_does_not_tick_and_resumes_later() -> None:
    clock = C.start(TICKET, 1, "p", "c", 3600, at(2026, 1, 5, 9), CAL, 0.8, ())
    paused = C.pause(clock, CAL, at(2026, 1, 5, 9, 30), 0.8, ())
    assert not C.tick(paused, CAL, at(2026, 1, 6, 9), 0.8, ()).changed
    resumed = C.resume(paused, CAL, at(2026, 1, 5, 17, 30), 0.8, ())
    assert resumed.due_at == at(2026, 1, 5, 18)
    assert C.elapsed(resumed, CAL, at(2026, 1, 5, 17, 45)) == 45 * 60
