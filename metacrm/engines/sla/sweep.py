"""The SLA sweep: warnings, breaches and escalations that come due as time passes.

A periodic job (every minute) looks only at clocks whose `alarm_at` has come (one
indexed range). Each clock is claimed with a conditional update on its `version`, so
whatever is due — the warning, the breach, each escalation level — is recorded and run
exactly once even with several workers; the escalation actions run after the claim
commits (a failing action is logged, never retried into a second notification).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ...platform.orgtree import OrgTree
from ...platform.records import Actor, RecordError, RecordService
from ...platform.systables import runtime_system_tables
from . import clocks as C
from . import store
from .engine import now_of, record_scope_unit
from .policies import Policy, policies_for

log = logging.getLogger(__name__)
BATCH = 500
JOB = "sla.sweep"
RESPONSIBLE_FIELD = "assignee"
"""The user field an escalation climbs the org tree from (the record's owner when unset)."""


@dataclass(frozen=True, slots=True)
class Fired:
    """One claimed tick: what to run once the claim is committed."""

    tick: C.Tick
    policy: Policy | None


def run_sweep(platform: Any, payload: Mapping[str, Any]) -> None:
    """The `sla.sweep` job: one tenant (`payload["tenant"]`) or every active tenant."""
    slugs = [payload["tenant"]] if payload.get("tenant") else platform.active_slugs()
    for slug in slugs:
        try:
            sweep(platform.runtime(slug))
        except Exception:
            log.exception("the SLA sweep failed for tenant %s", slug)


def sweep(runtime: Any) -> int:
    """Fire what is due on one tenant's clocks at the platform's now; how many clocks
    changed."""
    if not any(s.sla_policies for s in runtime.registry.scopes.values()):
        return 0
    now = now_of(runtime)
    table = store.table_of(runtime)
    total = 0
    while True:
        fired: list[Fired] = []
        with runtime.begin() as connection:
            batch = store.due(connection, table, now, BATCH)
            for clock in batch:
                found = _tick(connection, runtime, clock, now)
                if store.save(connection, table, found.tick.clock):
                    fired.append(found)
        for item in fired:
            _after(runtime, item)
        total += len(fired)
        if len(batch) < BATCH or not fired:
            return total


def _tick(connection: sa.Connection, runtime: Any, clock: C.Clock, now: Any) -> Fired:
    """The clock's tick with its policy (a cleared alarm when nothing applies any more)."""
    entity_table = runtime.tables.by_entity.get(clock.entity)
    row = None if entity_table is None else connection.execute(
        sa.select(entity_table).where(entity_table.c.id == clock.record_id)).mappings().first()
    policy = None if row is None else next(
        (p for p in policies_for(runtime, clock.entity, record_scope_unit(runtime, row))
         if p.key == clock.policy), None)
    rule = None if policy is None else policy.clock(clock.clock)
    if policy is None or rule is None:  # the policy or the record is gone: stop looking
        return Fired(C.Tick(dataclasses.replace(clock, alarm_at=None)), None)
    return Fired(C.tick(clock, policy.calendar, now, policy.warn_at, policy.levels), policy)


def _after(runtime: Any, item: Fired) -> None:
    """Write the breach field and run the escalation levels that were claimed."""
    tick, policy = item.tick, item.policy
    clock = tick.clock
    rule = None if policy is None else policy.clock(clock.clock)
    if policy is None or rule is None or not (clock.breached or tick.levels):
        return
    system = RecordService(runtime, Actor(), emit=runtime.platform.emit,
                           operators=runtime.platform.operators)
    if clock.breached and rule.spec.field:
        try:
            record = system.get(clock.entity, clock.record_id)
            if record.get(rule.spec.field) is None:
                system.update(clock.entity, clock.record_id,
                              {rule.spec.field: clock.breached_at.isoformat()})
        except RecordError as exc:
            log.warning("SLA %s could not set %s on %s %s: %s", policy.key, rule.spec.field,
                        clock.entity, clock.record_id, exc.detail)
    for index in tick.levels:
        escalate(runtime, system, policy, clock, index)


def responsible(record: Mapping[str, Any]) -> int | None:
    """Whom an escalation starts from: the record's assignee when set (a user field named
    `assignee`), else its owner."""
    assignee = record.get(RESPONSIBLE_FIELD)
    if isinstance(assignee, int) and not isinstance(assignee, bool):
        return assignee
    owner = record.get("owner")
    return owner if isinstance(owner, int) else None


def escalate_to(runtime: Any, user_id: int | None, levels_up: int) -> list[int]:
    """The user `levels_up` managers above `user_id` in the org tree (0: the user); the
    highest manager there is when the tree is not that tall; nobody without a user."""
    if user_id is None:
        return []
    if levels_up <= 0:
        return [user_id]
    with runtime.connect() as connection:
        chain = OrgTree(connection, runtime_system_tables(runtime)).managers_above(user_id)
    if not chain:
        return []
    return [chain[min(levels_up, len(chain)) - 1]]


def escalate(runtime: Any, system: RecordService, policy: Policy, clock: C.Clock,
             index: int) -> None:
    """Run one escalation level's actions, with `escalate_to` in the context's extras."""
    from ..actions import ActionContext, actions_of

    level = policy.spec.escalations[index]
    try:
        record = system.get(clock.entity, clock.record_id, include_deleted=True)
    except RecordError:
        return
    targets = escalate_to(runtime, responsible(record), level.levels_up)
    context = ActionContext(
        platform=runtime.platform, runtime=runtime, entity=clock.entity, record=record,
        source=f"sla:{policy.key}:{clock.clock}",
        key=f"sla:{runtime.slug}:{clock.id}:{index}",
        extras={"escalate_to": targets, "sla": clock_json(clock, policy, runtime),
                "level": index, "levels_up": level.levels_up, "at": level.at})
    registry = actions_of(runtime.platform)
    for spec in level.actions:
        try:
            registry.run(context, spec)
        except Exception:
            log.exception("SLA %s level %s: action %s failed on %s %s", policy.key, index,
                          next(iter(spec), "?"), clock.entity, clock.record_id)


def clock_json(clock: C.Clock, policy: Policy | None, runtime: Any,
               now: Any = None) -> dict[str, Any]:
    """A clock as the API shows it: status, target, elapsed and remaining business
    seconds, due time, warning and breach."""
    now = now or now_of(runtime)
    spent = C.elapsed(clock, policy.calendar, now) if policy is not None else None

    def iso(value: Any) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "policy": clock.policy, "clock": clock.clock, "status": clock.status,
        "target_seconds": clock.target_seconds,
        "elapsed_seconds": None if spent is None else round(spent, 3),
        "remaining_seconds": None if spent is None else round(clock.target_seconds - spent, 3),
        "started_at": iso(clock.started_at), "due_at": iso(clock.due_at),
        "paused": clock.paused, "paused_since": iso(clock.paused_since),
        "paused_seconds": round(clock.paused_seconds, 3),
        "warned": clock.warned_at is not None, "warned_at": iso(clock.warned_at),
        "breached": clock.breached, "breached_at": iso(clock.breached_at),
        "stopped_at": iso(clock.stopped_at), "escalations_fired": list(clock.fired)}
