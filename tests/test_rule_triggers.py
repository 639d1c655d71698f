"""Automation rules: every trigger kind and condition filtering, on SQLite and PostgreSQL.

created, updated, changed, deleted, transitioned (event triggers: the outbox row is
written in the change's own transaction, `when` tested against the record as written);
after (a time relative to a field, due under a controllable clock, re-checked when due
and dropped if the record no longer matches); schedule (cron, in the tenant's timezone);
per business unit scopes; hot reload.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytest.register_assert_rewrite("ruleworld")
from ruleworld import DEAL, LEAD, RULES, TASK, World, build_world, rule_files  # noqa: E402

from metacrm.engines.rules import TIMERS, latest_fire  # noqa: E402

PROBE = "do: [{probe: {}}]"


def rule(name: str, trigger: str, when: str | None = None, do: str = PROBE,
         entity: str = "lead") -> str:
    lines = [f"rule: {name}", f"entity: {entity}", f"trigger: {trigger}"]
    if when:
        lines.append(f"when: {when}")
    lines.append(do)
    return "\n".join(lines) + "\n"


def probed(world: World) -> list[tuple[Any, ...]]:
    """(rule source, record id, event kind) of every probe call so far."""
    return [(c.source, c.record["id"], c.event.kind if c.event else None)
            for c, _ in world.actions.calls]


# -- event triggers -----------------------------------------------------------------------------

def test_created_runs_only_for_records_meeting_when(make_platform) -> None:
    world = build_world(make_platform, {
        "hot": rule("hot", "created", "{field: score, op: gte, value: 50}",
                    'do: [{set: {note: "hot {{ record.company }} ({{ record.score }})"}}]')})
    hot = world.lead(score=70)
    cold = world.lead(score=10, company="Beta")
    world.drain()
    assert world.get(LEAD, hot["id"])["note"] == "hot Acme (70)"
    assert world.get(LEAD, cold["id"])["note"] is None
    runs = world.runs()
    assert [(r["rule"], r["record_id"], r["status"], r["trigger"]) for r in runs] == \
        [("crm.hot", hot["id"], "done", "created")]
    assert runs[0]["results"] == [{"action": "set", "result": {"record": hot["id"],
                                                                "changed": ["note"]}}]
    # an update is not a creation
    world.service().update(LEAD, cold["id"], {"score": 90})
    world.drain()
    assert len(world.runs()) == 1


def test_updated_fires_on_every_change_but_not_on_create(make_platform) -> None:
    world = build_world(make_platform, {"touched": rule("touched", "updated")})
    lead = world.lead(owner=None)
    world.drain()
    assert probed(world) == []
    world.service().update(LEAD, lead["id"], {"note": "x"})
    world.service().update(LEAD, lead["id"], {"note": "x"})  # no change: no event, no run
    world.service().assign(LEAD, lead["id"], world.ids["rep2"])  # an assignment is an update
    world.drain()
    assert probed(world) == [("rule:crm.touched", lead["id"], "updated"),
                             ("rule:crm.touched", lead["id"], "assigned")]


def test_changed_fires_only_when_a_listed_field_changes(make_platform) -> None:
    world = build_world(make_platform, {
        "status": rule("status", "{changed: [status]}",
                       "{field: status, op: eq, value: qualified}")})
    lead = world.lead()
    service = world.service()
    service.update(LEAD, lead["id"], {"note": "call back"})
    service.update(LEAD, lead["id"], {"status": "contacted"})  # changed, `when` fails
    service.update(LEAD, lead["id"], {"status": "qualified", "note": "!"})
    world.drain()
    assert probed(world) == [("rule:crm.status", lead["id"], "updated")]
    context, _ = world.actions.calls[0]
    assert context.event.changes["status"] == ("contacted", "qualified")
    assert context.record["status"] == "qualified"


def test_deleted_fires_on_soft_delete(make_platform) -> None:
    world = build_world(make_platform, {"gone": rule("gone", "deleted")})
    lead = world.lead()
    world.service().delete(LEAD, lead["id"])
    world.drain()
    assert probed(world) == [("rule:crm.gone", lead["id"], "deleted")]
    context, _ = world.actions.calls[0]
    assert context.record["deleted_at"] is not None  # the action sees the deleted record


def test_transitioned_fires_for_the_named_transitions(make_platform) -> None:
    from metacrm.engines.workflows import take_transition
    from metacrm.platform.records import Actor

    world = build_world(make_platform, {
        "won": rule("won", "{transitioned: [win]}", entity="deal",
                    do='do: [{set: {note: "won by {{ event.transition }}"}}]'),
        "any": rule("any", '{transitioned: "*"}', entity="deal")})
    deals = [world.service().create(DEAL, {"name": n}) for n in ("a", "b")]
    world.service().update(DEAL, deals[0]["id"], {"note": "plain update"})
    take_transition(world.platform, world.runtime, DEAL, deals[0]["id"], "win", actor=Actor())
    take_transition(world.platform, world.runtime, DEAL, deals[1]["id"], "lose",
                    actor=Actor())
    world.drain()
    assert world.get(DEAL, deals[0]["id"])["note"] == "won by win"
    assert world.get(DEAL, deals[1]["id"])["note"] is None
    assert sorted(probed(world)) == [("rule:crm.any", deals[0]["id"], "updated"),
                                     ("rule:crm.any", deals[1]["id"], "updated")]


def test_when_through_a_reference_reads_the_referenced_record(make_platform) -> None:
    world = build_world(make_platform, {
        "gold": rule("gold", "created", "{field: account.tier, op: eq, value: gold}")})
    gold = world.service().create("crm.account", {"name": "G", "tier": "gold"})
    silver = world.service().create("crm.account", {"name": "S", "tier": "silver"})
    a = world.lead(account=gold["id"])
    world.lead(account=silver["id"])
    world.lead()
    world.drain()
    assert probed(world) == [("rule:crm.gold", a["id"], "created")]


def test_rules_follow_the_records_business_unit(make_platform) -> None:
    """An overlay turns a rule off for the retail unit: retail records skip it, whoever
    edits them; the tenant's records keep it."""
    world = build_world(make_platform, {"hello": rule("hello", "created")}, files={
        "tenants/rt/overlays/retail/hello.yaml": "rule: hello\nentity: crm.lead\n"
                                                 "enabled: false\n"})
    tenant_lead = world.lead()
    world.lead(unit="retail")
    world.drain()
    assert probed(world) == [("rule:crm.hello", tenant_lead["id"], "created")]


def test_a_rolled_back_change_leaves_no_run(make_platform) -> None:
    from metacrm.hookspecs import hookimpl
    from metacrm.platform.records import Conflict

    class Refuse:
        @hookimpl(trylast=True)
        def record_writing(self, event, connection, service):
            if event.record.get("company") == "boom":
                raise Conflict("refused by a test plugin")

    world = build_world(make_platform, {"hello": rule("hello", "created")})
    world.platform.plugins.register(Refuse())
    with pytest.raises(Conflict):
        world.lead(company="boom")
    world.lead(company="fine")
    world.drain()
    assert [r["record_id"] for r in world.runs()] == [world.all(LEAD)[0]["id"]]
    assert len(world.actions.calls) == 1


# -- time-relative rules ------------------------------------------------------------------------

STALE = rule("stale", "{after: {field: created_at, delay: 3d}}",
             "{field: status, op: eq, value: new}",
             'do: [{create_task: {title: "Follow up {{ record.company }}", due_in: 1d}}]')


def test_after_rule_is_due_rechecked_and_dropped_under_the_clock(make_platform) -> None:
    world = build_world(make_platform, {"stale": STALE})
    still_new = world.lead(company="Still new")
    moved_on = world.lead(company="Moved on")
    world.drain()
    world.clock.advance(days=2)
    assert world.sweep().timers_fired == 0
    world.service().update(LEAD, moved_on["id"], {"status": "contacted"})
    world.clock.advance(days=1, minutes=1)
    report = world.sweep()
    assert (report.timers_fired, report.timers_dropped) == (1, 1)
    tasks = world.all(TASK)
    assert [(t["title"], t["lead"], t["assignee"]) for t in tasks] == \
        [("Follow up Still new", still_new["id"], world.ids["rep1"])]
    due = dt.datetime.fromisoformat(tasks[0]["due_at"])
    assert abs(due - (world.clock.now + dt.timedelta(days=1))) < dt.timedelta(seconds=1)
    # fired or dropped, the timers are gone: later sweeps do nothing more
    world.clock.advance(days=10)
    assert world.sweep().timers_fired == 0
    assert len(world.all(TASK)) == 1
    assert [r["trigger"] for r in world.runs()] == ["after"]


def test_after_rule_follows_changes_of_its_field(make_platform) -> None:
    """One day before `follow_up_on` (a date: the tenant's local midnight); moving the
    date moves the timer, clearing it drops it, deleting the record drops it."""
    world = build_world(make_platform, {"remind": rule(
        "remind", "{after: {field: follow_up_on, delay: -1d}}")})
    tz = ZoneInfo("Asia/Shanghai")
    today = world.clock.now.astimezone(tz).date()
    moved = world.lead(follow_up_on=(today + dt.timedelta(days=5)).isoformat())
    cleared = world.lead(follow_up_on=(today + dt.timedelta(days=2)).isoformat())
    deleted = world.lead(follow_up_on=(today + dt.timedelta(days=2)).isoformat())
    world.lead()  # no date: no timer
    world.service().update(LEAD, moved["id"], {"follow_up_on": (
        today + dt.timedelta(days=3)).isoformat()})
    world.service().update(LEAD, cleared["id"], {"follow_up_on": None})
    world.service().delete(LEAD, deleted["id"])
    # due: local midnight of (today + 3) minus one day = local midnight of today + 2
    due = dt.datetime.combine(today + dt.timedelta(days=2), dt.time(), tzinfo=tz)
    world.clock.set(due - dt.timedelta(minutes=1))
    world.sweep()
    assert probed(world) == []
    world.clock.set(due + dt.timedelta(seconds=1))
    world.sweep()
    assert probed(world) == [("rule:crm.remind", moved["id"], None)]
    assert world.actions.calls[0][0].extras["trigger"] == "after"


def test_after_rule_added_by_reload_seeds_timers_for_existing_records(make_platform) -> None:
    world = build_world(make_platform)
    old = world.lead(company="Old")
    world.lead(company="Young")
    table = world.runtime.tables.by_entity[LEAD]
    with world.runtime.begin() as connection:  # "Old" was created four days ago
        connection.execute(table.update().where(table.c.id == old["id"]).values(
            created_at=world.clock.now - dt.timedelta(days=4)))
    world.reload(rule_files({"stale": STALE}))
    report = world.sweep()
    # a record already past due is not fired retroactively: a new rule looks forward
    assert report.seeded == 1 and report.timers_fired == 0
    world.clock.advance(days=3, minutes=1)
    assert world.sweep().timers_fired == 1
    assert [t["title"] for t in world.all(TASK)] == ["Follow up Young"]


def test_after_rule_seeding_is_once_and_a_removed_rule_loses_its_timers(make_platform) -> None:
    world = build_world(make_platform, {"stale": STALE})
    world.lead()
    assert world.sweep().seeded == 1  # first sight of the rule: its records get timers
    assert world.sweep().seeded == 0
    world.project.remove(f"{RULES}/stale.yaml")
    assert world.platform.reload("rt").ok
    world.sweep()
    with world.runtime.connect() as connection:
        assert fetch_count(world, connection, TIMERS) == 0
    world.clock.advance(days=4)
    assert world.sweep().timers_fired == 0
    assert world.all(TASK) == []


def fetch_count(world: World, connection: Any, table: str) -> int:
    import sqlalchemy as sa

    from metacrm.platform.systables import runtime_system_tables

    found = runtime_system_tables(world.runtime).table(table)
    return connection.execute(sa.select(sa.func.count()).select_from(found)).scalar()


def test_created_at_timers_are_planted_by_the_sweep_not_by_each_write(make_platform) -> None:
    """A rule timed from created_at writes nothing per creation: each sweep plants the
    timers of the records created since the last one, in one statement; a creation that
    committed after a sweep saw later ids is still found; a record restored after it was
    deleted gets its timer back."""
    world = build_world(make_platform, {"stale": STALE})
    world.sweep()  # the rule's first sight
    first = world.lead(company="First")
    with world.runtime.connect() as connection:
        assert fetch_count(world, connection, TIMERS) == 0  # the write planted nothing
    assert world.sweep().planted == 1
    assert world.sweep().planted == 0
    late = world.lead(company="Late")
    gone = world.lead(company="Gone")
    world.service().delete(LEAD, gone["id"])
    state = runtime_state(world)
    with world.runtime.begin() as connection:  # a sweep saw ids beyond `late` already
        connection.execute(state.update().values(mark=late["id"] + 100))
    assert world.sweep().planted == 1  # `late`, below the mark but within the slack
    world.service().restore(LEAD, gone["id"])  # its timer comes with the restore
    assert world.sweep().planted == 0
    world.clock.advance(days=3, minutes=1)
    assert world.sweep().timers_fired == 3
    assert sorted(t["title"] for t in world.all(TASK)) == [
        "Follow up First", "Follow up Gone", "Follow up Late"]
    assert first["id"] < late["id"]


def runtime_state(world: World) -> Any:
    from metacrm.engines.rules import STATE
    from metacrm.platform.systables import runtime_system_tables

    return runtime_system_tables(world.runtime).table(STATE)


# -- schedules ----------------------------------------------------------------------------------

def test_schedule_fires_once_per_fire_time_in_the_tenants_timezone(make_platform) -> None:
    world = build_world(make_platform, {"daily": rule(
        "daily", '{schedule: "0 9 * * *"}', "{field: status, op: eq, value: new}")})
    tz = ZoneInfo("Asia/Shanghai")
    new = world.lead(company="New")
    world.lead(company="Contacted", status="contacted")
    day = world.clock.now.astimezone(tz).date() + dt.timedelta(days=1)
    nine = dt.datetime.combine(day, dt.time(9), tzinfo=tz)
    world.clock.set(nine - dt.timedelta(minutes=2))
    assert world.sweep().scheduled == 0  # first sight: starts from now
    world.clock.set(nine - dt.timedelta(seconds=1))
    assert world.sweep().scheduled == 0
    world.clock.set(nine + dt.timedelta(seconds=20))
    assert world.sweep().scheduled == 1
    world.clock.set(nine + dt.timedelta(seconds=40))
    assert world.sweep().scheduled == 0  # the same fire time: once
    assert probed(world) == [("rule:crm.daily", new["id"], None)]
    # missed fire times run once, for the latest one
    world.clock.set(nine + dt.timedelta(days=3, minutes=5))
    assert world.sweep().scheduled == 1
    keys = sorted(r["dedup_key"] for r in world.runs())
    assert keys[0] != keys[1]


def test_latest_fire_is_local_and_never_in_the_future() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    at = dt.datetime(2024, 3, 5, 9, 0, 0, tzinfo=tz)
    assert latest_fire("0 9 * * *", at.astimezone(dt.UTC), tz) == at.astimezone(dt.UTC)
    just_before = at - dt.timedelta(microseconds=1)
    assert latest_fire("0 9 * * *", just_before, tz) == at - dt.timedelta(days=1)
    assert latest_fire("*/15 * * * *", at + dt.timedelta(minutes=14, seconds=59), tz) == at


# -- hot reload ---------------------------------------------------------------------------------

def test_a_reloaded_rule_applies_with_no_restart(make_platform) -> None:
    world = build_world(make_platform)
    first = world.lead()
    world.drain()
    assert world.runs() == []
    world.reload(rule_files({"hello": rule("hello", "created")}))
    second = world.lead()
    world.drain()
    assert probed(world) == [("rule:crm.hello", second["id"], "created")]
    assert first["id"] != second["id"]
    # a rule removed before its run started: the run is skipped, and says why
    third = world.lead()
    world.project.remove(f"{RULES}/hello.yaml")
    assert world.platform.reload("rt").ok
    world.drain()
    skipped = world.runs(status="skipped")
    assert [r["record_id"] for r in skipped] == [third["id"]]
    assert "removed or disabled" in skipped[0]["last_error"]
