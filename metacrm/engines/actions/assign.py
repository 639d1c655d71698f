"""`assign`: give the record to a member of an org unit, round-robin or least loaded.

Members are the active users placed in the unit (with `subtree: true`, in any unit below
it too). A member's *load* is how many live records of the entity they hold in `field`
(the owner by default) that meet `open_when`; with `cap`, members at the cap are
skipped. Round-robin keeps its turn in ``_metacrm_counters`` (one atomic increment per
assignment, so concurrent runs take different turns); least-loaded takes the member with
the smallest load (ties: the lowest user id). Nobody available is a failure the run
retries (a cap may free up), then parks.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ...platform.orgtree import OrgError, OrgTree, members_below
from ...platform.systables import runtime_system_tables
from ..conditions import ConditionError, EvalContext, parse_condition, to_sql
from . import ActionContext, ActionFailed, RuleAction
from .support import refusals, render, system_service

SCHEMA = {
    "type": "object",
    "required": ["unit"],
    "properties": {
        "strategy": {"enum": ["round_robin", "least_loaded"], "description": "Default "
                     "round_robin."},
        "unit": {"type": "string", "description": "An org unit's name, or `owner_team` "
                 "(the primary unit of the record's owner)."},
        "subtree": {"type": "boolean", "description": "Members of units below it too."},
        "cap": {"type": "integer", "minimum": 1, "description": "At most this many open "
                "records per member."},
        "open_when": {"type": "object", "description": "Which records count towards a "
                      "member's load (a condition; default: every live record)."},
        "field": {"type": "string", "description": "`owner` (default) or a user field."},
    },
    "additionalProperties": False,
}


def assign(context: ActionContext, params: Any) -> dict[str, Any]:
    params = render(context, params)
    strategy = params.get("strategy", "round_robin")
    field = params.get("field", "owner")
    runtime = context.runtime
    system = runtime_system_tables(runtime)
    table = runtime.tables.by_entity[context.entity]
    entity = runtime.registry.entities[context.entity]
    if field != "owner":
        found = entity.get_field(field)
        if found is None or found.type != "user" or not found.stored:
            raise ActionFailed(f"`{field}` is not a user field of {context.entity}",
                               retryable=False)
    with runtime.begin() as connection:
        unit = _unit(context, connection, system, params["unit"])
        members = _members(connection, system, unit, bool(params.get("subtree")))
        if not members:
            raise ActionFailed(f"org unit {unit.name!r} has no active members",
                               retryable=True)
        loads = _loads(context, connection, table, entity, field, members,
                       params.get("open_when"))
        cap = params.get("cap")
        available = [m for m in members if cap is None or loads[m] < cap]
        if not available:
            raise ActionFailed(f"every member of {unit.name!r} holds {cap} or more open "
                               f"{context.entity} records (the cap)", retryable=True)
        if strategy == "least_loaded":
            chosen = min(available, key=lambda m: (loads[m], m))
        elif strategy == "round_robin":
            turn = _next_turn(connection, system, f"rules:round_robin:{context.source}:"
                              f"{unit.name}")
            start = turn % len(members)
            order = members[start:] + members[:start]
            chosen = next(m for m in order if m in available)
        else:
            raise ActionFailed(f"unknown strategy {strategy!r}: round_robin or least_loaded",
                               retryable=False)
    service = system_service(context)
    record_id = context.record["id"]
    with refusals(f"assign {context.entity} {record_id}"):
        if field == "owner":
            service.assign(context.entity, record_id, chosen)
        else:
            service.update(context.entity, record_id, {field: chosen})
    return {"assigned": chosen, "unit": unit.name, "load": loads[chosen],
            "strategy": strategy}


def _unit(context: ActionContext, connection: sa.Connection, system: Any, name: str) -> Any:
    tree = OrgTree(connection, system)
    if name == "owner_team":
        owner = context.record.get("owner")
        if owner is None:
            raise ActionFailed("the record has no owner, so no owner_team", retryable=False)
        units = tree.units_of(int(owner))
        if not units:
            raise ActionFailed(f"the owner (user {owner}) is in no org unit",
                               retryable=False)
        return units[0]
    try:
        return tree.get(name)
    except OrgError as exc:
        raise ActionFailed(str(exc), retryable=False) from exc


def _members(connection: sa.Connection, system: Any, unit: Any, subtree: bool) -> list[int]:
    users, members = system.users, system.org_members
    if subtree:
        people = members_below(system, [unit.path])
        where = users.c.id.in_(people)
    else:
        where = users.c.id.in_(sa.select(members.c.user_id).where(
            members.c.unit_id == unit.id))
    return list(connection.execute(sa.select(users.c.id).where(
        where, users.c.active.is_(True)).order_by(users.c.id)).scalars())


def _loads(context: ActionContext, connection: sa.Connection, table: sa.Table, entity: Any,
           field: str, members: list[int], open_when: Any) -> dict[int, int]:
    column = table.c[field]
    where = [table.c.deleted_at.is_(None), column.in_(members)]
    if open_when:
        from zoneinfo import ZoneInfo

        runtime = context.runtime
        try:
            node = parse_condition(open_when, entity, runtime.registry,
                                   context.platform.operators)
        except ConditionError as exc:
            raise ActionFailed(f"`open_when` is not a valid condition: {exc}",
                               retryable=False) from exc
        ctx = EvalContext(context.now(), ZoneInfo(runtime.config.timezone))
        where.append(to_sql(node, context.entity, runtime.tables, runtime.registry, ctx))
    counts = dict(connection.execute(sa.select(column, sa.func.count()).where(*where)
                                     .group_by(column)).all())
    return {m: int(counts.get(m, 0)) for m in members}


def _next_turn(connection: sa.Connection, system: Any, key: str) -> int:
    counters = system.counters
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(counters).values(key=key[:200], value=1)
    statement = statement.on_conflict_do_update(
        index_elements=[counters.c.key], set_={"value": counters.c.value + 1}
    ).returning(counters.c.value)
    return int(connection.execute(statement).scalar_one()) - 1


ACTIONS = [RuleAction("assign", assign, "Give the record to a member of an org unit, "
                      "round-robin or least loaded, with an optional cap.", SCHEMA)]
