"""What a record write does to its SLA clocks, inside the write's transaction.

For each policy covering the record (its `when` holds), each clock:

- starts when its `start` condition holds (no `start`: as soon as the record is covered,
  normally at creation), with the target its `by` field's value picks;
- is paused while the policy's `pause_when` holds (or the record is deleted) and resumes
  when it stops holding — its due time moves by the business time spent paused;
- gets a new target, counted from its start, when the `by` field's value changes (a
  breached clock keeps its target: its result is final);
- stops when its `stop` condition holds: met if in time, else breached. A stopped clock
  never restarts, and a breached one stays breached whatever happens to the record.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from . import clocks as C
from . import store
from .policies import Policy, covered_entities, entity_of, eval_context, holds, policies_for


def now_of(runtime: Any) -> dt.datetime:
    """The engines' time (the platform's controllable clock)."""
    platform = getattr(runtime, "platform", None)
    return platform.now() if platform is not None else dt.datetime.now(dt.UTC)


def record_scope_unit(runtime: Any, row: Any) -> str | None:
    """The business unit whose definitions apply to a record (its own, if it has one)."""
    unit = row.get("business_unit")
    return unit if unit and unit in runtime.registry.scopes else None


def covers(runtime: Any, entity: str) -> bool:
    """Whether some policy covers `entity` (cached per runtime version)."""
    covered = runtime.extras.get("sla.entities")
    if covered is None:
        covered = runtime.extras["sla.entities"] = covered_entities(runtime.registry)
    return entity in covered


def sync_record(connection: sa.Connection, runtime: Any, entity: str, record_id: int) -> None:
    """Bring one record's clocks up to date with the record as just written (in the
    writing transaction: `record_writing`, or `records_imported` for each imported row)."""
    if not covers(runtime, entity):
        return
    table = runtime.tables.by_entity[entity]
    row = connection.execute(sa.select(table).where(table.c.id == record_id)
                             ).mappings().first()
    if row is None:
        return
    policies = policies_for(runtime, entity, record_scope_unit(runtime, row))
    if not policies:
        return
    now = now_of(runtime)
    clocks_table = store.table_of(runtime)
    existing = {(c.policy, c.clock): c for c in store.load(
        connection, clocks_table, entity, record_id, lock=True)}
    context = eval_context(runtime, now)

    def check(node: Any) -> bool:
        return holds(node, row, connection=connection, runtime=runtime, entity=entity,
                     context=context)

    for policy in policies:
        _apply(policy, existing, row, now, check, connection, clocks_table)


def _apply(policy: Policy, existing: dict[tuple[str, str], C.Clock], row: Any,
           now: dt.datetime, check: Any, connection: sa.Connection, table: sa.Table) -> None:
    calendar, warn_at, levels = policy.calendar, policy.warn_at, policy.levels
    deleted = row.get("deleted_at") is not None
    paused = deleted or (policy.pause_when is not None and check(policy.pause_when))
    covered = not deleted and (policy.when is None or check(policy.when))
    for rule in policy.clocks:
        clock = existing.get((policy.key, rule.name))
        if clock is None:
            if not covered or (rule.start is not None and not check(rule.start)):
                continue
            target = policy.target(rule, row)
            if target is None:
                continue
            clock = C.start(entity_of(policy.spec), row["id"], policy.key, rule.name, target, now,
                            calendar, warn_at, levels, paused=paused)
            if check(rule.stop):
                clock = C.stop(clock, calendar, now)
            store.insert(connection, table, clock)
            continue
        if clock.stopped:
            continue
        changed = C.pause(clock, calendar, now, warn_at, levels) if paused else \
            C.resume(clock, calendar, now, warn_at, levels)
        target = policy.target(rule, row)
        if target is not None:
            changed = C.retarget(changed, target, calendar, warn_at, levels)
        if check(rule.stop):
            changed = C.stop(changed, calendar, now)
        if changed != clock and not store.save(connection, table, changed):
            raise RuntimeError(f"SLA clock {clock.id} changed under a lock")
