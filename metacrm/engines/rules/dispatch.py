"""From record events to rule runs: the outbox written inside each change's transaction.

`on_writing` runs in the write's own transaction (the `record_writing` hook): for every
rule of the record's scope whose trigger the event is and whose `when` holds for the
record as written, it inserts a pending run into ``_metacrm_rule_runs``. A change that
commits has its runs; one that rolls back has none. Time-relative rules get their timers
set or cleared in the same transaction. `on_committed` (the `record_event` hook, after
commit) hands the new runs to the job queue; a sweep picks up any it missed.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ..conditions import evaluate
from .index import CompiledRule, RuleIndex, rule_index
from .settings import settings_for, utc_now
from .statements import dialect_insert, fixed
from .tables import RUNS, TIMERS

PENDING_KEY = "rules.pending"
RUN_JOB = "rules.run"


class PendingRuns:
    """Run ids written by changes not yet announced, by event (bounded: an entry of a
    change that rolled back is simply forgotten; the sweep covers any that fall out)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: tuple[Any, ...], ids: list[int]) -> None:
        with self._lock:
            self._items.setdefault(key, []).extend(ids)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: tuple[Any, ...]) -> list[int]:
        with self._lock:
            return self._items.pop(key, [])


def pending_runs(platform: Any) -> PendingRuns:
    found = platform.extensions.get(PENDING_KEY)
    if found is None:
        found = platform.extensions.setdefault(PENDING_KEY, PendingRuns())
    return found


def event_key(event: Any) -> tuple[Any, ...]:
    """One change of one record: (tenant, entity, id, row version after the change)."""
    return (event.tenant, event.entity, event.record_id, event.record.get("row_version"))


# -- inside the write's transaction -----------------------------------------------------------

def on_writing(event: Any, connection: sa.Connection, service: Any) -> None:
    runtime = service.runtime
    platform = runtime.platform
    if platform is None:
        return
    index = rule_index(runtime)
    if index.empty:
        return
    rules = index.for_entity(event.entity, index.scope_of(event.record))
    if not rules:
        return
    now = utc_now(platform)
    if rules.timed:
        _set_timers(connection, service, index, rules.timed, event, now)
    if rules.planted and event.kind == "restored":  # the sweep planted none while deleted
        _set_timers(connection, service, index, rules.planted, event, now)
    fired = [r for r in rules.by_kind.get(event.kind, ()) if r.fires_on(event)]
    if not fired:
        return
    ctx = index.context(now)
    chosen = [r for r in fired if r.error is not None or _holds(connection, index, r, event,
                                                                ctx)]
    if not chosen:
        return
    limit = settings_for(runtime).depth_limit
    ids = write_runs(connection, service.system, chosen, event, now,
                     stopped=event.depth >= limit, limit=limit)
    if ids:
        pending_runs(platform).add(event_key(event), ids)


def _holds(connection: sa.Connection, index: RuleIndex, rule: CompiledRule, event: Any,
           ctx: Any) -> bool:
    """Whether `rule`'s `when` holds for the record as this change wrote it (read in the
    change's own transaction, so references see what it sees)."""
    if rule.condition is None:
        return True
    record = event.record
    if rule.needs_sql:
        record = index.hydrate(connection, event.entity, record, rule.references)
    return evaluate(rule.condition, record, ctx)


def run_insert(connection: sa.Connection, system: Any) -> Any:
    """INSERT a run unless its dedup key is taken (built once per dialect). PostgreSQL
    returns the new id; SQLite gives it as `lastrowid` (cheaper than RETURNING)."""
    runs = system.table(RUNS)
    name = f"rules.run_insert.{connection.dialect.name}"

    def build() -> Any:
        statement = dialect_insert(connection, runs).on_conflict_do_nothing(
            index_elements=["dedup_key"])
        if connection.dialect.name == "postgresql":
            statement = statement.returning(runs.c.id)
        return fixed(statement, name)

    return system.statement(name, build)


def write_runs(connection: sa.Connection, system: Any, rules: list[CompiledRule],
               event: Any, now: dt.datetime, *, stopped: bool, limit: int) -> list[int]:
    """Insert one run per rule (a duplicate `dedup_key` inserts nothing); new run ids."""
    version = event.record.get("row_version")
    common: dict[str, Any] = {"entity": event.entity, "record_id": event.record_id,
                              "attempts": 0, "next_attempt_at": now, "depth": event.depth,
                              "created_at": now}
    if event.actor is not None:
        common["actor"] = event.actor
    if event.kind != "created" or event.transition is not None:
        # (a creation is its record, which the run reads, and the run's own columns)
        common["event"] = jsonable({"kind": event.kind, "changes": event.changes,
                                    "transition": event.transition, "actor": event.actor,
                                    "at": event.at, "unit": event.unit})
    statement = run_insert(connection, system)
    returning = connection.dialect.name == "postgresql"
    ids: list[int] = []
    for rule in rules:
        values = {**common, "rule": rule.key, "scope": rule.scope,
                  "trigger": rule.rule.trigger.kind, "status": "pending",
                  "dedup_key": f"{rule.key}|{event.entity}|{event.record_id}|v{version}"}
        if rule.error is not None:
            values.update(status="parked", last_error=rule.error, finished_at=now)
        elif stopped:
            values.update(status="stopped", finished_at=now, last_error=(
                f"not run: this change was made {event.depth} automation level(s) deep and "
                f"the limit is {limit} (rules that trigger each other?)"))
        result = connection.execute(statement, values)
        if returning:
            row = result.first()
            new_id = row[0] if row is not None else None
        else:
            new_id = result.lastrowid if result.rowcount == 1 else None
        if new_id is not None and values["status"] == "pending":
            ids.append(new_id)
    return ids


# -- timers of time-relative rules ------------------------------------------------------------

def due_time(value: Any, anchor_type: str, delay: int, index: RuleIndex) -> dt.datetime | None:
    """When a rule `delay` seconds after an anchor value (a date: local midnight) is due."""
    if value is None:
        return None
    if anchor_type == "date":
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
        start = dt.datetime.combine(day, dt.time(), tzinfo=index.timezone)
    else:
        start = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(
            str(value))
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    return (start + dt.timedelta(seconds=delay)).astimezone(dt.UTC)


def _set_timers(connection: sa.Connection, service: Any, index: RuleIndex,
                rules: tuple[CompiledRule, ...], event: Any, now: dt.datetime) -> None:
    timers = service.system.table(TIMERS)
    for rule in rules:
        if rule.error is not None:
            continue
        trigger = rule.rule.trigger
        if event.kind == "deleted":
            due = None
        elif event.kind in ("created", "restored") or trigger.field in event.changes:
            due = due_time(event.record.get(trigger.field or ""), rule.anchor_type or "",
                           trigger.delay, index)
        else:
            continue
        if due is None:
            if event.kind != "created":
                connection.execute(timers.delete().where(timers.c.rule == rule.key,
                                                         timers.c.record_id == event.record_id))
            continue
        name = f"rules.timer_upsert.{connection.dialect.name}"
        upsert = service.system.statement(name, lambda: fixed(
            _timer_upsert(connection, timers), name))  # noqa: B023 - built once, here
        connection.execute(upsert, {"rule": rule.key, "scope": rule.scope,
                                    "entity": event.entity, "record_id": event.record_id,
                                    "due_at": due, "due_epoch": int(due.timestamp())})


def _timer_upsert(connection: sa.Connection, timers: sa.Table) -> Any:
    statement = dialect_insert(connection, timers)
    return statement.on_conflict_do_update(
        index_elements=["rule", "record_id"],
        set_={"due_at": statement.excluded.due_at, "due_epoch": statement.excluded.due_epoch,
              "scope": statement.excluded.scope})


# -- after commit --------------------------------------------------------------------------------

def on_committed(event: Any, platform: Any) -> None:
    """Hand the runs this change wrote to the job queue."""
    ids = pending_runs(platform).pop(event_key(event)) if PENDING_KEY in \
        platform.extensions else []
    if ids:
        enqueue_runs(platform, event.tenant, ids)


def enqueue_runs(platform: Any, tenant: str, ids: list[int], size: int = 200) -> None:
    from ...platform.jobs import jobs_of

    jobs = jobs_of(platform)
    for start in range(0, len(ids), size):
        jobs.enqueue(RUN_JOB, {"tenant": tenant, "runs": ids[start:start + size]})


def jsonable(value: Any) -> Any:
    """A value for a JSON column (dates as ISO text, decimals as text)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
