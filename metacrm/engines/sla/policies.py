"""SLA policies made ready to run: conditions parsed, calendars built, per runtime version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ...metadata.ir import Registry, SlaClock, SlaPolicy
from ..conditions import EvalContext, Node, condition_fields, evaluate, parse_condition, to_sql
from .calendar import BusinessCalendar

DEFAULT_TARGET_KEYS = ("", "default")
"""A clock's fallback target: key "" (the compiler's) or `default` (as written)."""


@dataclass(frozen=True, slots=True)
class ClockRule:
    """One clock of a policy with its conditions parsed (`start` None: from creation)."""

    spec: SlaClock
    start: Node | None
    stop: Node

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy ready to run: its calendar and parsed conditions."""

    spec: SlaPolicy
    calendar: BusinessCalendar
    when: Node | None
    pause_when: Node | None
    clocks: tuple[ClockRule, ...]

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def warn_at(self) -> float:
        return self.spec.warn_at

    @property
    def levels(self) -> tuple[float, ...]:
        """The `at` fraction of each escalation level, in the policy's order."""
        return tuple(level.at for level in self.spec.escalations)

    def clock(self, name: str) -> ClockRule | None:
        return next((c for c in self.clocks if c.name == name), None)

    def target(self, clock: ClockRule, record: Mapping[str, Any]) -> int | None:
        """Business seconds allowed for `record` (by the `by` field's value, else the
        default); None when the clock has no target for it."""
        targets = clock.spec.targets
        if self.spec.by is not None:
            value = record.get(self.spec.by)
            if value is not None and str(value) in targets:
                return int(targets[str(value)])
        for key in DEFAULT_TARGET_KEYS:
            if key in targets:
                return int(targets[key])
        return None


def entity_of(policy: SlaPolicy) -> str:
    """The key of the entity a policy covers (a bare name is in the policy's module)."""
    return policy.entity if "." in policy.entity else f"{policy.module}.{policy.entity}"


def _is_created(start: Any) -> bool:
    return start is None or start == "created"


def calendar_of(runtime: Any, scope: Any, policy: SlaPolicy) -> BusinessCalendar:
    """The policy's business calendar (by key, or by name within the policy's module)."""
    calendars = scope.calendars
    found = calendars.get(policy.calendar) or calendars.get(
        f"{policy.module}.{policy.calendar}")
    if found is None:
        raise LookupError(f"SLA policy {policy.key} names calendar {policy.calendar!r}, "
                          "which this scope does not define")
    cache = runtime.extras.setdefault("sla.calendars", {})
    built = cache.get(found)
    if built is None:
        built = cache[found] = BusinessCalendar.of(found)
    return built


def policies_for(runtime: Any, entity: str, unit: str | None) -> tuple[Policy, ...]:
    """The policies covering `entity`'s records of business unit `unit` (cached)."""
    registry: Registry = runtime.registry
    scope_key = unit if unit and unit in registry.scopes else ""
    cache = runtime.extras.setdefault("sla.policies", {})
    found = cache.get((scope_key, entity))
    if found is None:
        scope = registry.scope(scope_key or None)
        operators = runtime.platform.operators if runtime.platform is not None else None
        if operators is None:
            from ..conditions import OperatorRegistry, builtin_operators

            operators = OperatorRegistry(builtin_operators())

        def parse(data: Any) -> Node | None:
            return None if data is None else parse_condition(
                data, entity, registry, operators, unit=scope_key or None)

        found = cache[(scope_key, entity)] = tuple(
            Policy(p, calendar_of(runtime, scope, p), parse(p.when), parse(p.pause_when),
                   tuple(ClockRule(c, None if _is_created(c.start) else parse(c.start),
                                   parse(c.stop)) for c in p.clocks))
            for p in scope.sla_policies.values() if entity_of(p) == entity)
    return found


def covered_entities(registry: Registry) -> frozenset[str]:
    """Every entity some scope's SLA policy covers."""
    return frozenset(entity_of(p) for scope in registry.scopes.values()
                     for p in scope.sla_policies.values())


def eval_context(runtime: Any, now: dt.datetime) -> EvalContext:
    zone = getattr(getattr(runtime, "config", None), "timezone", None) or "UTC"
    return EvalContext(now, ZoneInfo(zone))


def holds(node: Node, row: Mapping[str, Any], *, connection: sa.Connection, runtime: Any,
          entity: str, context: EvalContext) -> bool:
    """Whether the record in `row` meets `node` — in Python, or in SQL when a path goes
    through a reference (the row is read inside the caller's transaction)."""
    if any("." in name for name in condition_fields(node)):
        table = runtime.tables.by_entity[entity]
        where = to_sql(node, entity, runtime.tables.by_entity, runtime.registry, context)
        return connection.execute(sa.select(table.c.id).where(
            table.c.id == row["id"], where)).first() is not None
    return evaluate(node, row, context)
