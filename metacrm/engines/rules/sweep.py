"""The periodic sweep: timers and schedules that came due, runs whose job was lost, retries.

Everything here is set-based: a time-relative rule's due timers become runs in one
``INSERT ... SELECT`` that joins the timers to the entity's table and tests the rule's
`when` in SQL (records that no longer match are dropped with their timers); a scheduled
rule fires for every matching record the same way. The clock is ``platform.now()``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import croniter
import sqlalchemy as sa

from .dispatch import enqueue_runs
from .index import CompiledRule, RuleIndex, rule_index
from .settings import settings_for, utc_now
from .statements import dialect_insert
from .tables import RUNS, STATE, TIMERS

log = logging.getLogger(__name__)
RUN_COLUMNS = ("rule", "scope", "entity", "record_id", "trigger", "dedup_key", "status",
               "attempts", "next_attempt_at", "depth", "created_at")


@dataclass
class SweepReport:
    """What one sweep of one tenant did."""

    reclaimed: int = 0
    seeded: int = 0
    planted: int = 0
    timers_fired: int = 0
    timers_dropped: int = 0
    scheduled: int = 0
    handed_out: int = 0
    new_runs: list[int] = field(default_factory=list)


def sweep_tenant(platform: Any, slug: str, *, enqueue: bool = True) -> SweepReport:
    """One sweep of one tenant: take back dead workers' runs, seed and fire timers, fire
    schedules, and hand out due runs as `rules.run` jobs (unless `enqueue` is False)."""
    runtime = platform.runtime(slug)
    index = rule_index(runtime)
    settings = settings_for(runtime)
    system = _system(runtime)
    report = SweepReport()
    now = utc_now(platform)
    report.reclaimed = reclaim(runtime, system, now)
    report.seeded, report.planted = seed_timers(runtime, index, system, now)  # and clean up
    if not index.empty:
        fire_timers(runtime, index, system, now, settings.batch, report)
        fire_schedules(runtime, index, system, now, report)
    due = due_runs(runtime, system, now, settings.grace, settings.batch,
                   exclude=set(report.new_runs))
    handed = report.new_runs + due
    report.handed_out = len(handed)
    if enqueue and handed:
        enqueue_runs(platform, slug, handed, settings.job_size)
    return report


def sweep(platform: Any, payload: Any) -> None:
    """The `rules.sweep` job: every active tenant (or `payload["tenant"]`)."""
    slugs = [payload["tenant"]] if payload and payload.get("tenant") else \
        platform.active_slugs()
    for slug in slugs:
        try:
            sweep_tenant(platform, slug)
        except Exception:  # one tenant's trouble never stops the others' sweep
            log.exception("rules sweep failed for tenant %s", slug)


def _system(runtime: Any) -> Any:
    from ...platform.systables import runtime_system_tables

    return runtime_system_tables(runtime)


# -- runs ---------------------------------------------------------------------------------------

def reclaim(runtime: Any, system: Any, now: dt.datetime) -> int:
    """Runs whose worker died (lease expired) go back to pending."""
    runs = system.table(RUNS)
    with runtime.begin() as connection:
        return connection.execute(runs.update().where(
            runs.c.status == "running", runs.c.lease_until < now).values(
            status="pending", lease_until=None, next_attempt_at=now,
            last_error="taken back: its worker did not finish within the lease")).rowcount


def due_runs(runtime: Any, system: Any, now: dt.datetime, grace: float, limit: int,
             exclude: set[int] = frozenset()) -> list[int]:
    """Pending runs to hand out: retries now due, and first attempts older than `grace`
    (their job was lost: a crash between commit and enqueue, or no queue at all)."""
    runs = system.table(RUNS)
    stale = now - dt.timedelta(seconds=grace)
    with runtime.connect() as connection:
        ids = connection.execute(sa.select(runs.c.id).where(
            runs.c.status == "pending", runs.c.next_attempt_at <= now,
            sa.or_(runs.c.attempts > 0, runs.c.next_attempt_at <= stale))
            .order_by(runs.c.next_attempt_at, runs.c.id).limit(limit)).scalars().all()
    return [i for i in ids if i not in exclude]


def _insert_runs(connection: sa.Connection, runs: sa.Table, select: sa.Select) -> list[int]:
    statement = dialect_insert(connection, runs).from_select(list(RUN_COLUMNS), select)
    statement = statement.on_conflict_do_nothing(index_elements=["dedup_key"])
    return list(connection.execute(statement.returning(runs.c.id)).scalars())


def _run_values(rule: CompiledRule, record_id: Any, dedup: Any, now: dt.datetime,
                trigger: str) -> list[Any]:
    """The SELECT list of a set-based run insert (in RUN_COLUMNS order)."""
    when = sa.literal(now, sa.DateTime(timezone=True))
    return [sa.literal(rule.key, sa.String), sa.literal(rule.scope, sa.String),
            sa.literal(rule.rule.entity, sa.String), record_id, sa.literal(trigger, sa.String),
            dedup, sa.literal("pending", sa.String), sa.literal(0, sa.Integer), when,
            sa.literal(0, sa.Integer), when]


def _text(value: Any) -> Any:
    return sa.cast(value, sa.String)


# -- timers -------------------------------------------------------------------------------------

def fire_timers(runtime: Any, index: RuleIndex, system: Any, now: dt.datetime, batch: int,
                report: SweepReport) -> None:
    """Due timers → runs for records still matching their rule; every due timer is then
    deleted (fired or dropped). Batches of about `batch` timers, oldest first."""
    timers, runs = system.table(TIMERS), system.table(RUNS)
    rules = [r for r in index.of_kind("after") if r.error is None]
    while True:
        with runtime.begin() as connection:
            nth = connection.execute(sa.select(timers.c.due_at).where(timers.c.due_at <= now)
                                     .order_by(timers.c.due_at).offset(batch - 1)
                                     .limit(1)).scalar()
            cutoff = now if nth is None else min(_aware(nth), now)
            fired = 0
            for rule in rules:
                ids = _fire_rule_timers(connection, index, rule, timers, runs, cutoff, now)
                fired += len(ids)
                report.new_runs.extend(ids)
            deleted = connection.execute(timers.delete().where(
                timers.c.due_at <= cutoff)).rowcount
            report.timers_fired += fired
            report.timers_dropped += max(deleted - fired, 0)
        if nth is None or deleted == 0:
            return


def _fire_rule_timers(connection: sa.Connection, index: RuleIndex, rule: CompiledRule,
                      timers: sa.Table, runs: sa.Table, cutoff: dt.datetime,
                      now: dt.datetime) -> list[int]:
    records = index.runtime.tables.by_entity[rule.rule.entity].alias("r")
    dedup = (sa.literal(f"{rule.key}|{rule.rule.entity}|", sa.String) + _text(timers.c.record_id)
             + sa.literal("|t", sa.String) + _text(timers.c.due_epoch))
    select = sa.select(*_run_values(rule, timers.c.record_id, dedup, now, "after")).select_from(
        timers.join(records, records.c.id == timers.c.record_id)).where(
        timers.c.rule == rule.key, timers.c.scope == rule.scope, timers.c.due_at <= cutoff,
        records.c.deleted_at.is_(None), index.where(rule, records, now))
    return _insert_runs(connection, runs, select)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _signature(rule: CompiledRule) -> str:
    trigger = rule.rule.trigger
    if trigger.kind == "after":
        return f"after:{trigger.field}:{trigger.delay}"
    return f"schedule:{trigger.cron}"


def seed_timers(runtime: Any, index: RuleIndex, system: Any,
                now: dt.datetime) -> tuple[int, int]:
    """Timers of time-relative rules for records that have none yet: how many were seeded
    (rules new to the tenant) and planted (records new to a `created_at` rule).

    A rule new to the tenant (or whose field or delay changed) gets timers for its
    existing records whose due time is still ahead: a new rule looks forward. A rule timed
    from `created_at` (`CompiledRule.planted`) also gets timers for the records created
    since the last sweep (creations write none: one set-based statement here is cheaper
    than a row per write). Timers of rules that are gone are removed.
    """
    timers, state = system.table(TIMERS), system.table(STATE)
    rules = [r for r in index.of_kind("after") if r.error is None]
    with runtime.connect() as connection:
        known = {(r.rule, r.scope): r for r in connection.execute(sa.select(
            state.c.rule, state.c.scope, state.c.signature, state.c.last_fire_at,
            state.c.mark).where(state.c.signature.startswith("after:")))}
    seeded = planted = 0
    for rule in rules:
        signature = _signature(rule)
        previous = known.get((rule.key, rule.scope))
        if previous is not None and previous.signature == signature:
            if rule.planted:
                planted += plant_new(runtime, index, rule, timers, state, previous, now)
            continue
        with runtime.begin() as connection:
            if previous is not None:
                connection.execute(timers.delete().where(timers.c.rule == rule.key,
                                                         timers.c.scope == rule.scope))
            high = _last_id(connection, index, rule)
            seeded += _plant(connection, index, rule, timers, due_after=now, high=high)
            _save_state(connection, state, rule, signature, now, previous is not None,
                        last_fire=now, mark=high)
    current = {(r.key, r.scope) for r in rules}
    gone = [key for key in known if key not in current]
    if gone:
        with runtime.begin() as connection:
            for rule_key, scope in gone:
                connection.execute(timers.delete().where(timers.c.rule == rule_key,
                                                         timers.c.scope == scope))
                connection.execute(state.delete().where(state.c.rule == rule_key,
                                                        state.c.scope == scope))
    return seeded, planted


PLANT_SLACK = 10_000
"""Planting looks back this many ids below the last one planted: a creation whose
transaction committed after a sweep saw later ids is still found."""


def plant_new(runtime: Any, index: RuleIndex, rule: CompiledRule, timers: sa.Table,
              state: sa.Table, previous: Any, now: dt.datetime) -> int:
    """Timers for the records created since the last planting (ids above the last mark,
    less `PLANT_SLACK`) whose due time is after that planting: earlier ones were due,
    fired or dropped then. Two sweeps racing: the second finds the mark moved and stops."""
    with runtime.begin() as connection:
        high = _last_id(connection, index, rule)
        taken = connection.execute(state.update().where(
            state.c.rule == rule.key, state.c.scope == rule.scope,
            state.c.mark == previous.mark if previous.mark is not None
            else state.c.mark.is_(None)).values(
            mark=high, last_fire_at=now, updated_at=now)).rowcount
        if taken != 1 or high is None:
            return 0
        since = _aware(previous.last_fire_at) if previous.last_fire_at else now
        return _plant(connection, index, rule, timers, due_after=since,
                      low=max((previous.mark or 0) - PLANT_SLACK, 0), high=high)


def _last_id(connection: sa.Connection, index: RuleIndex, rule: CompiledRule) -> int | None:
    records = index.runtime.tables.by_entity[rule.rule.entity]
    return connection.execute(sa.select(sa.func.max(records.c.id))).scalar()


def _save_state(connection: sa.Connection, state: sa.Table, rule: CompiledRule,
                signature: str, now: dt.datetime, exists: bool,
                last_fire: dt.datetime | None = None, mark: int | None = None) -> None:
    values = {"signature": signature, "updated_at": now, "last_fire_at": last_fire,
              "mark": mark}
    if exists:
        connection.execute(state.update().where(state.c.rule == rule.key,
                                                state.c.scope == rule.scope).values(**values))
    else:
        connection.execute(state.insert().values(rule=rule.key, scope=rule.scope, **values))


def _plant(connection: sa.Connection, index: RuleIndex, rule: CompiledRule, timers: sa.Table,
           *, due_after: dt.datetime, low: int = 0, high: int | None = None) -> int:
    """Timers (unless there is one) for the live records of the rule's scope with ids in
    (low, high] whose due time is after `due_after`; how many were new."""
    if high is None or high <= low:
        return 0
    records = index.runtime.tables.by_entity[rule.rule.entity]
    trigger = rule.rule.trigger
    anchor = records.c[trigger.field or ""]
    live = [records.c.id > low, records.c.id <= high, records.c.deleted_at.is_(None),
            anchor.is_not(None), index.scope_filter(rule.scope, records)]
    if connection.dialect.name == "postgresql":
        return _plant_postgresql(connection, index, rule, timers, records, anchor, live,
                                 due_after)
    from .dispatch import due_time

    statement = dialect_insert(connection, timers).on_conflict_do_nothing(
        index_elements=["rule", "record_id"]).returning(timers.c.record_id)
    count, last = 0, low
    while True:  # SQLite: no time zones in SQL, so the due times are computed here
        rows = connection.execute(sa.select(records.c.id, anchor).where(
            *live, records.c.id > last).order_by(records.c.id).limit(5000)).all()
        if not rows:
            return count
        last = rows[-1][0]
        batch = []
        for record_id, value in rows:
            due = due_time(value, rule.anchor_type or "", trigger.delay, index)
            if due is not None and due > due_after:
                batch.append({"rule": rule.key, "scope": rule.scope,
                              "entity": rule.rule.entity, "record_id": record_id,
                              "due_at": due, "due_epoch": int(due.timestamp())})
        if batch:
            count += len(connection.execute(statement, batch).all())


def _plant_postgresql(connection: sa.Connection, index: RuleIndex, rule: CompiledRule,
                      timers: sa.Table, records: sa.Table, anchor: Any, live: list[Any],
                      due_after: dt.datetime) -> int:
    delay = int(rule.rule.trigger.delay)
    start = anchor if rule.anchor_type == "datetime" else sa.func.timezone(
        str(index.timezone), sa.cast(anchor, sa.DateTime()))
    due = start + sa.literal_column(f"interval '{delay} seconds'")
    select = sa.select(
        sa.literal(rule.key, sa.String), sa.literal(rule.scope, sa.String),
        sa.literal(rule.rule.entity, sa.String), records.c.id, due,
        sa.cast(sa.func.extract("epoch", due), sa.BigInteger)).where(
        *live, due > sa.literal(due_after, sa.DateTime(timezone=True)))
    statement = dialect_insert(connection, timers).from_select(
        ["rule", "scope", "entity", "record_id", "due_at", "due_epoch"], select)
    planted = statement.on_conflict_do_nothing(index_elements=["rule", "record_id"]) \
        .returning(timers.c.record_id).cte("planted")  # counted in the database, not fetched
    return int(connection.execute(sa.select(sa.func.count()).select_from(planted)).scalar())


# -- schedules ----------------------------------------------------------------------------------

def latest_fire(expression: str, now: dt.datetime, timezone: Any) -> dt.datetime:
    """The latest time at or before `now` that cron `expression` names (tenant's zone)."""
    local = now.astimezone(timezone)
    found = croniter.croniter(expression, local + dt.timedelta(microseconds=1)).get_prev(
        dt.datetime)
    while found > local:
        found = croniter.croniter(expression, found).get_prev(dt.datetime)
    return found.astimezone(dt.UTC)


def fire_schedules(runtime: Any, index: RuleIndex, system: Any, now: dt.datetime,
                   report: SweepReport) -> None:
    """Scheduled rules whose fire time passed since the last sweep run once (not once per
    missed time) for every live record of their scope matching `when`. A schedule seen
    for the first time (or changed) starts from now."""
    state, runs = system.table(STATE), system.table(RUNS)
    rules = [r for r in index.of_kind("schedule") if r.error is None]
    if not rules:
        return
    with runtime.connect() as connection:
        known = {(r.rule, r.scope): (r.signature, r.last_fire_at) for r in connection.execute(
            sa.select(state.c.rule, state.c.scope, state.c.signature, state.c.last_fire_at)
            .where(state.c.signature.startswith("schedule:")))}
    for rule in rules:
        signature = _signature(rule)
        previous = known.get((rule.key, rule.scope))
        try:
            latest = latest_fire(rule.rule.trigger.cron or "", now, index.timezone)
        except (ValueError, KeyError, croniter.CroniterError) as exc:
            log.error("rule %s: its schedule %r is not valid: %s", rule.key,
                      rule.rule.trigger.cron, exc)
            continue
        if previous is None or previous[0] != signature or previous[1] is None:
            with runtime.begin() as connection:
                _save_state(connection, state, rule, signature, now, previous is not None,
                            last_fire=latest)
            continue
        last = _aware(previous[1])
        if latest <= last:
            continue
        with runtime.begin() as connection:
            taken = connection.execute(state.update().where(
                state.c.rule == rule.key, state.c.scope == rule.scope,
                state.c.last_fire_at == previous[1]).values(
                last_fire_at=latest, updated_at=now)).rowcount
            if taken != 1:  # another sweep fired it
                continue
            records = index.runtime.tables.by_entity[rule.rule.entity].alias("r")
            dedup = (sa.literal(f"{rule.key}|{rule.rule.entity}|", sa.String)
                     + _text(records.c.id) + sa.literal(f"|s{int(latest.timestamp())}",
                                                        sa.String))
            select = sa.select(*_run_values(rule, records.c.id, dedup, now, "schedule")).where(
                records.c.deleted_at.is_(None), index.scope_filter(rule.scope, records),
                index.where(rule, records, now))
            ids = _insert_runs(connection, runs, select)
        report.scheduled += len(ids)
        report.new_runs.extend(ids)
