"""Rules as the engine uses them: per runtime version, each scope's rules by entity, with
their conditions parsed once.

A record follows the rules of its own business unit's scope (its `business_unit` column,
when the Registry knows that unit), else the tenant's scope (``""``): so a retail lead
follows the retail overlay's rules whoever edits it. The index is built lazily and kept
in ``runtime.extras``, so a reload (a new runtime) brings new rules with no restart.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ...metadata.ir import Rule, thaw
from ..conditions import ConditionError, EvalContext, Node, Predicate, parse_condition, to_sql
from ..conditions.nodes import walk

log = logging.getLogger(__name__)

INDEX_KEY = "rules.index"
EVENT_TRIGGERS = frozenset({"created", "updated", "changed", "deleted", "transitioned"})
UPDATE_KINDS = frozenset({"updated", "assigned", "restored"})
"""Record event kinds that count as an update: a change of fields, of owner, a restore."""
TRIGGERED_BY = {"created": frozenset({"created"}), "deleted": frozenset({"deleted"}),
                "updated": UPDATE_KINDS, "changed": UPDATE_KINDS,
                "transitioned": UPDATE_KINDS}
"""The record event kinds each event trigger may fire on."""
SYSTEM_DATETIMES = frozenset({"created_at", "updated_at"})
PLANT_MIN_DELAY = 300
"""Rules timed from `created_at` at least this long get their timers from the sweep, in
bulk, instead of from each creation (see `sweep.plant_timers`)."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule in one scope, ready to run: its condition parsed (or why it cannot be)."""

    rule: Rule
    scope: str
    condition: Node | None = None
    needs_sql: bool = False
    """The condition follows a reference (``customer.city``): in SQL for sets of records;
    for one record, the referenced records are read first (`hydrate`)."""
    references: tuple[tuple[str, Any], ...] = ()
    """The references the condition follows, as a tree: ((field, subtree), ...)."""
    anchor_type: str | None = None
    """For `after` rules: the type of the anchor field (`date` or `datetime`)."""
    error: str | None = None
    """Why the rule cannot run (its runs are parked with this message)."""

    @property
    def key(self) -> str:
        return self.rule.key

    @property
    def planted(self) -> bool:
        """Timed from `created_at` (which never changes) by at least PLANT_MIN_DELAY: the
        sweep plants the timers of new records in bulk; creations write none."""
        trigger = self.rule.trigger
        return trigger.kind == "after" and trigger.field == "created_at" and \
            trigger.delay >= PLANT_MIN_DELAY and self.error is None

    def fires_on(self, event: Any) -> bool:
        """Whether a record event is this rule's trigger (before its condition)."""
        trigger = self.rule.trigger
        kind = trigger.kind
        if kind == "created":
            return event.kind == "created"
        if kind == "updated":
            return event.kind in UPDATE_KINDS
        if kind == "deleted":
            return event.kind == "deleted"
        if kind == "changed":
            return event.kind in UPDATE_KINDS and not set(trigger.fields).isdisjoint(
                event.changes)
        if kind == "transitioned":
            return event.transition is not None and (
                not trigger.transitions or event.transition in trigger.transitions)
        return False


@dataclass(frozen=True, slots=True)
class EntityRules:
    """The rules of one entity in one scope, by how they are triggered."""

    on_event: tuple[CompiledRule, ...] = ()
    timed: tuple[CompiledRule, ...] = ()
    """Time-relative rules whose timers each write sets or clears."""
    planted: tuple[CompiledRule, ...] = ()
    """Time-relative rules whose timers the sweep plants (a restore sets one again)."""
    by_kind: Mapping[str, tuple[CompiledRule, ...]] = field(default_factory=dict)
    """`on_event` by the record event kinds that can trigger them."""

    def __bool__(self) -> bool:
        return bool(self.on_event or self.timed or self.planted)

    @classmethod
    def of(cls, rules: list[CompiledRule]) -> EntityRules:
        on_event = tuple(r for r in rules if r.rule.trigger.kind in EVENT_TRIGGERS)
        timed = [r for r in rules if r.rule.trigger.kind == "after"]
        by_kind = {kind: tuple(r for r in on_event if kind in TRIGGERED_BY[r.rule.trigger.kind])
                   for kind in ("created", "deleted", *UPDATE_KINDS)}
        return cls(on_event, tuple(r for r in timed if not r.planted),
                   tuple(r for r in timed if r.planted), by_kind)


NO_RULES = EntityRules()


class RuleIndex:
    """Every scope's rules of one runtime version."""

    def __init__(self, runtime: Any, operators: Any) -> None:
        self.runtime = runtime
        self.registry = runtime.registry
        self.operators = operators
        self.timezone = ZoneInfo(runtime.config.timezone)
        self.scope_names = tuple(self.registry.scopes)
        self._compiled: dict[tuple[str, str], CompiledRule] = {}
        self._by_entity: dict[tuple[str, str], EntityRules] = {}
        has_rules = any(scope.rules for scope in self.registry.scopes.values())
        self.empty = not has_rules

    # -- lookups ------------------------------------------------------------------------------

    def scope_of(self, record: Mapping[str, Any]) -> str:
        """The scope whose rules a record follows: its business unit's, else the tenant's."""
        unit = record.get("business_unit")
        return unit if unit and unit in self.registry.scopes else ""

    def for_entity(self, entity: str, scope: str) -> EntityRules:
        """The enabled rules over `entity` in `scope` (built once)."""
        if self.empty:
            return NO_RULES
        found = self._by_entity.get((entity, scope))
        if found is None:
            found = EntityRules.of([self.compiled(scope, r) for r in
                                    self.registry.scope(scope or None).rules_for(entity)])
            if not found:
                found = NO_RULES
            self._by_entity[(entity, scope)] = found
        return found

    def get(self, scope: str, key: str) -> CompiledRule | None:
        """The enabled rule `key` of `scope` (None: removed or disabled since)."""
        known = self.registry.scopes.get(scope)
        rule = known.rules.get(key) if known is not None else None
        if rule is None or not rule.enabled:
            return None
        return self.compiled(scope, rule)

    def of_kind(self, kind: str) -> Iterator[CompiledRule]:
        """Every enabled rule of trigger `kind` in every scope (one per scope it is in)."""
        for scope in self.scope_names:
            for rule in self.registry.scopes[scope].rules.values():
                if rule.enabled and rule.trigger.kind == kind:
                    yield self.compiled(scope, rule)

    # -- building -----------------------------------------------------------------------------

    def compiled(self, scope: str, rule: Rule) -> CompiledRule:
        found = self._compiled.get((scope, rule.key))
        if found is None or found.rule is not rule:
            found = self._compile(scope, rule)
            self._compiled[(scope, rule.key)] = found
        return found

    def _compile(self, scope: str, rule: Rule) -> CompiledRule:
        entities = self.registry.scope(scope or None).entities
        entity = entities.get(rule.entity)
        if entity is None:
            return CompiledRule(rule, scope, error=f"rule {rule.key}: there is no entity "
                                f"{rule.entity} in this scope")
        anchor_type = None
        if rule.trigger.kind == "after":
            name = rule.trigger.field or ""
            found = entity.get_field(name)
            anchor_type = "datetime" if name in SYSTEM_DATETIMES else (
                found.type if found is not None and found.stored else None)
            if anchor_type not in ("date", "datetime"):
                return CompiledRule(rule, scope, error=f"rule {rule.key}: `{name}` is not a "
                                    f"stored date or datetime field of {rule.entity}")
        if rule.when is None:
            return CompiledRule(rule, scope, anchor_type=anchor_type)
        try:
            node = parse_condition(thaw(rule.when), rule.entity, self.registry, self.operators,
                                   unit=scope or None)
        except ConditionError as exc:
            log.error("rule %s: its condition is not valid: %s", rule.key, exc)
            return CompiledRule(rule, scope, error=f"rule {rule.key}: its `when` is not "
                                f"valid: {exc}")
        paths = [n.path[:-1] for n in walk(node) if isinstance(n, Predicate) and len(n.path) > 1]
        return CompiledRule(rule, scope, node, needs_sql=bool(paths), references=_tree(paths),
                            anchor_type=anchor_type)

    # -- conditions ---------------------------------------------------------------------------

    def hydrate(self, connection: sa.Connection, entity: str, record: Mapping[str, Any],
                references: tuple[tuple[str, Any], ...]) -> Mapping[str, Any]:
        """`record` with the records its condition's paths reach nested in place of their
        ids (one read by id per reference; a missing link stays None), so the Python
        backend can test ``account.tier``."""
        if not references:
            return record
        fields = self.registry.entities[entity]
        nested = dict(record)
        for name, subtree in references:
            value = record.get(name)
            target = fields.get_field(name)
            if value is None or target is None or target.target is None:
                continue
            row = connection.execute(self._by_id(target.target), {"id": value}) \
                .mappings().first()
            nested[name] = None if row is None else self.hydrate(
                connection, target.target, dict(row), subtree)
        return nested

    def _by_id(self, entity: str) -> sa.Select:
        cache = self.runtime.extras.setdefault("rules.by_id", {})
        found = cache.get(entity)
        if found is None:
            table = self.runtime.tables.by_entity[entity]
            found = cache[entity] = sa.select(table).where(table.c.id == sa.bindparam("id"))
        return found

    def context(self, now: dt.datetime) -> EvalContext:
        return EvalContext(now, self.timezone)

    def where(self, rule: CompiledRule, table: Any, now: dt.datetime) -> sa.ColumnElement[bool]:
        """`rule`'s condition as SQL over `table` (an alias of its entity's table)."""
        if rule.condition is None:
            return sa.true()
        key = rule.rule.entity
        tables = {**self.runtime.tables.by_entity, key: table}
        return to_sql(rule.condition, key, tables, self.registry, self.context(now))

    def scope_filter(self, scope: str, table: Any) -> sa.ColumnElement[bool]:
        """The records whose rules come from `scope` (see `scope_of`)."""
        if scope:
            return table.c.business_unit == scope
        units = [s for s in self.scope_names if s]
        if not units:
            return sa.true()
        return sa.or_(table.c.business_unit.is_(None), table.c.business_unit.not_in(units))


def _tree(paths: list[tuple[str, ...]]) -> tuple[tuple[str, Any], ...]:
    """Reference paths (``("account", "parent")``...) as a tree of field names."""
    heads: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        heads.setdefault(path[0], [])
        if len(path) > 1:
            heads[path[0]].append(path[1:])
    return tuple((name, _tree(rest)) for name, rest in sorted(heads.items()))


def rule_index(runtime: Any) -> RuleIndex:
    """The runtime's rule index (built once per runtime version)."""
    found = runtime.extras.get(INDEX_KEY)
    if found is None:
        platform = runtime.platform
        found = runtime.extras[INDEX_KEY] = RuleIndex(runtime, platform.operators)
    return found
