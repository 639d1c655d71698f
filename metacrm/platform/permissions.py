"""Who may see and do what: roles' grants turned into SQL scopes, record checks and
per-field visibility.

A :class:`Principal` is a signed-in user with their roles and org units. A
:class:`Guard` answers, for one principal, every question the record service asks:
the WHERE clause of a list (scopes compile to SQL through the condition language, so
nothing is fetched and then filtered), whether one record may be read or changed
(checked in Python on the row), and which fields the user may read or write.
The ``administrator`` role, built in, may do everything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..engines.conditions import EvalContext, Node, evaluate, parse_condition, to_sql
from ..metadata.ir import ACTIONS, Entity, ScopeRule
from .orgtree import ORG_VERSION_KEY, members_below, nearest_business_unit, path_ids
from .systables import SystemTables, runtime_system_tables

ADMIN_ROLE = "administrator"
ACROSS_UNITS, UNIT_ONLY = "across_units", "unit_only"
ACCESS_RANK = {"hidden": 0, "read": 1, "write": 2}
MEMBER_LIST_MAX = 2000
"""Up to this many people, a team or subtree scope binds their ids (`owner IN (...)`);
beyond, it stays a subquery over the org tables."""
CACHE_SIZE = 1024
SHARE_ACTIONS = {"read": frozenset({"read"}), "edit": frozenset({"read", "update"})}
"""What a record shared with a user or unit lets them do, by the share's access."""


class Forbidden(Exception):
    """Raised by checks that a caller may not perform; the record service maps it."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in user as the permission checks see them."""

    user_id: int
    username: str
    business_unit: str | None
    roles: frozenset[str]
    unit_ids: tuple[int, ...] = ()
    unit_paths: tuple[str, ...] = ()
    locale: str | None = None
    org_version: int = 0  # the org tree's change counter when the principal was loaded

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def share_unit_ids(self) -> tuple[int, ...]:
        """A share with a unit reaches its whole subtree: the user's units and ancestors."""
        return tuple(sorted({i for path in self.unit_paths for i in path_ids(path)}))


def load_principal(connection: sa.Connection, tables: SystemTables, user: Any,
                   known_units: Iterable[str] = ()) -> Principal:
    """The principal of `user` (an auth.User): roles and org units, read in two queries.

    The business unit comes from the user's primary org unit (or its nearest ancestor
    that names one), else from the user record; one the Registry does not know is None.
    """
    roles = frozenset(r for (r,) in connection.execute(
        tables.statement("principal_roles", lambda: sa.select(tables.user_roles.c.role).where(
            tables.user_roles.c.user_id == sa.bindparam("user_id"))), {"user_id": user.id}))
    units, members = tables.org_units, tables.org_members
    counters = tables.counters
    org_version = sa.select(counters.c.value).where(
        counters.c.key == ORG_VERSION_KEY).scalar_subquery()
    placed = connection.execute(tables.statement("principal_units", lambda: sa.select(
        units.c.id, units.c.path, members.c.is_primary,
        org_version.label("org_version")).select_from(
        members.join(units, units.c.id == members.c.unit_id)).where(
        members.c.user_id == sa.bindparam("user_id")).order_by(
        members.c.is_primary.desc(), units.c.id)), {"user_id": user.id}).all()
    business_unit = user.business_unit
    if placed:
        business_unit = nearest_business_unit(connection, tables, placed[0].path) or \
            business_unit
    known = set(known_units)
    if business_unit not in known:
        business_unit = None
    return Principal(user.id, user.username, business_unit, roles,
                     tuple(r.id for r in placed), tuple(r.path for r in placed),
                     getattr(user, "locale", None),
                     (placed[0].org_version or 0) if placed else 0)


# -- policies: what a set of roles may do, per entity ---------------------------------------


@dataclass(frozen=True, slots=True)
class EntityPolicy:
    """The union of a set of roles' grants on one entity, as one business unit sees it."""

    entity: Entity  # the entity as the user sees it: hidden fields left out
    rules: Mapping[str, tuple[ScopeRule, ...]]
    hidden: frozenset[str]
    read_only: frozenset[str]
    conditions: Mapping[int, Node] = field(default_factory=dict)  # id(rule) → parsed `when`

    def granted(self, action: str) -> bool:
        return bool(self.rules.get(action))


def build_policy(registry: Any, unit: str | None, roles: frozenset[str], entity_key: str,
                 operators: Any) -> EntityPolicy:
    """The policy of `roles` on `entity_key` in `unit`'s scope (no roles: nothing)."""
    scope = registry.scope(unit)
    full = scope.entities[entity_key]
    grants = [scope.roles[r].grants[entity_key] for r in sorted(roles)
              if r in scope.roles and entity_key in scope.roles[r].grants]
    # a grant of no action gives no access, so it cannot unhide what another role hides
    grants = [g for g in grants if any(r.scope != "none" for r in g.actions.values())]
    rules: dict[str, list[ScopeRule]] = {}
    access: dict[str, int] = {}
    for grant in grants:
        for action, rule in grant.actions.items():
            if rule.scope != "none":
                rules.setdefault(action, []).append(rule)
        for f in full.fields:
            rank = ACCESS_RANK[grant.fields.get(f.name, "write")]
            access[f.name] = max(access.get(f.name, 0), rank)
    if not grants:
        access = {f.name: 0 for f in full.fields}
    hidden = {name for name, rank in access.items() if rank == 0}
    for f in full.fields:  # a formula over a hidden field would reveal it
        if f.formula is not None and any(path[0] in hidden for path in f.formula.field_paths()):
            hidden.add(f.name)
    read_only = frozenset(n for n, rank in access.items() if rank == 1 and n not in hidden)
    visible = dataclasses.replace(full, fields=tuple(f for f in full.fields
                                                     if f.name not in hidden))
    conditions = {}
    for action_rules in rules.values():
        for rule in action_rules:
            if rule.when is not None and id(rule) not in conditions:
                conditions[id(rule)] = parse_condition(rule.when, full, registry, operators,
                                                       unit=unit)
    return EntityPolicy(visible, {a: tuple(r) for a, r in rules.items()}, frozenset(hidden),
                        read_only, conditions)


class Guard:
    """Permission answers for one principal on one tenant runtime (one per request)."""

    def __init__(self, runtime: Any, principal: Principal, operators: Any) -> None:
        self.runtime = runtime
        self.principal = principal
        self.operators = operators
        self.registry = runtime.registry
        self.unit_only = getattr(runtime.config, "headquarters", ACROSS_UNITS) == UNIT_ONLY
        self.tables: SystemTables = runtime_system_tables(runtime)
        tz = ZoneInfo(runtime.config.timezone)
        self.context = EvalContext(dt.datetime.now(tz), tz)

    # -- policy -------------------------------------------------------------------------------

    def policy(self, entity_key: str) -> EntityPolicy:
        """Cached per Registry version, business unit and set of roles."""
        cache = self.runtime.extras.setdefault("policies", {})
        key = (entity_key, self.principal.business_unit, self.principal.roles)
        found = cache.get(key)
        if found is None:
            found = cache[key] = build_policy(self.registry, self.principal.business_unit,
                                              self.principal.roles, entity_key, self.operators)
        return found

    def can(self, entity_key: str, action: str) -> bool:
        """Whether the principal may perform `action` on at least some records."""
        if self.principal.is_admin or self.policy(entity_key).granted(action):
            return True
        return action in SHARE_ACTIONS["edit"] and self.visible(entity_key)

    def visible(self, entity_key: str) -> bool:
        return self.principal.is_admin or any(self.policy(entity_key).rules.values())

    def hidden(self, entity_key: str) -> frozenset[str]:
        return frozenset() if self.principal.is_admin else self.policy(entity_key).hidden

    def read_only(self, entity_key: str) -> frozenset[str]:
        return frozenset() if self.principal.is_admin else self.policy(entity_key).read_only

    def fingerprint(self) -> tuple[Any, ...]:
        """What decides the caller's view of definitions (for caching generated documents)."""
        return (self.principal.business_unit, self.principal.roles)

    # -- sets of records: SQL -----------------------------------------------------------------

    def where(self, entity_key: str, action: str, table: Any) -> sa.ColumnElement[bool] | None:
        """The WHERE clause limiting `action` to the principal's records (None: all).

        Built once per principal (org version included) and kept while no rule of the
        action has a `when` (a condition may hold a relative date, bound per request).
        """
        if self.principal.is_admin:
            return None
        policy = self.policy(entity_key)
        cacheable = table is self.runtime.tables.by_entity[entity_key] and not any(
            rule.when is not None for rule in policy.rules.get(action, ()))
        if not cacheable:
            return self._build_where(entity_key, action, table, policy)
        cache = _lru(self.runtime.extras, "permission_where")
        key = (entity_key, action, self.principal, self.unit_only)
        if key not in cache:
            cache[key] = self._build_where(entity_key, action, table, policy)
            _trim(cache)
        return cache[key]

    def _build_where(self, entity_key: str, action: str, table: Any,
                     policy: EntityPolicy) -> sa.ColumnElement[bool] | None:
        clauses = []
        for rule in policy.rules.get(action, ()):
            clause = self._scope_sql(rule.scope, policy.entity, table)
            if rule.when is not None:
                condition = to_sql(policy.conditions[id(rule)], entity_key,
                                   self.runtime.tables.by_entity, self.registry, self.context)
                clause = condition if clause is None else sa.and_(clause, condition)
            if clause is None and not self.unit_only:
                return None
            clauses.append(sa.true() if clause is None else clause)
        if self.visible(entity_key):
            shared = self._shared_sql(entity_key, action, table)
            if shared is not None:
                clauses.append(shared)
        if not clauses:
            return sa.false()
        combined = sa.or_(*clauses) if len(clauses) > 1 else clauses[0]
        if self.unit_only:
            combined = sa.and_(combined, self._unit_sql(table))
        return combined

    def _scope_sql(self, scope: str, entity: Entity, table: Any) -> sa.ColumnElement[bool] | None:
        p = self.principal
        if scope == "all":
            return None
        if scope == "business_unit":
            return self._unit_sql(table)
        if scope == "own" or (scope in ("team", "subtree") and not p.unit_ids):
            return table.c.owner == p.user_id
        if scope == "assigned":
            people = [table.c.owner == p.user_id]
            people += [table.c[f.name] == p.user_id for f in self.registry.entities[
                entity.key].fields if f.type == "user" and f.stored]
            return sa.or_(*people)
        if scope in ("team", "subtree"):
            people = self._people(scope)
            if len(people) > MEMBER_LIST_MAX:
                return table.c.owner.in_(self._people_select(scope))
            if self.runtime.db.dialect == "postgresql":  # one array parameter, not N
                return table.c.owner == sa.any_(sa.literal(
                    sorted(people), type_=postgresql.ARRAY(sa.BigInteger)))
            return table.c.owner.in_(sorted(people))
        raise ValueError(f"unknown scope {scope!r}")

    def _people_select(self, scope: str) -> sa.Select:
        """The user ids of the principal's units (team) or of their subtrees (subtree)."""
        if scope == "team":
            members = self.tables.org_members
            return sa.select(members.c.user_id).where(
                members.c.unit_id.in_(self.principal.unit_ids))
        return members_below(self.tables, self.principal.unit_paths)

    def _people(self, scope: str, connection: sa.Connection | None = None) -> frozenset[int]:
        """The people a team or subtree scope reaches, cached per org version."""
        p = self.principal
        cache = _lru(self.runtime.extras, "org_people")
        key = (scope, p.org_version, p.unit_ids if scope == "team" else p.unit_paths)
        found = cache.get(key)
        if found is None:
            if connection is not None:
                found = frozenset(r for (r,) in connection.execute(self._people_select(scope)))
            else:
                with self.runtime.connect() as own:
                    found = frozenset(r for (r,) in own.execute(self._people_select(scope)))
            cache[key] = found
            _trim(cache)
        return found

    def _unit_sql(self, table: Any) -> sa.ColumnElement[bool]:
        unit = self.principal.business_unit
        return table.c.business_unit.is_(None) if unit is None else \
            table.c.business_unit == unit

    def _share_terms(self, entity_key: str, action: str) -> list[Any] | None:
        """What a share must match to allow `action` to the principal (None: no share can)."""
        allowed = [access for access, actions in SHARE_ACTIONS.items() if action in actions]
        if not allowed:
            return None
        shares = self.tables.shares
        target = shares.c.user_id == self.principal.user_id
        if self.principal.unit_ids:
            target = sa.or_(target, shares.c.unit_id.in_(self.principal.share_unit_ids))
        return [shares.c.entity == entity_key, target, shares.c.access.in_(allowed)]

    def _shared_sql(self, entity_key: str, action: str,
                    table: Any) -> sa.ColumnElement[bool] | None:
        terms = self._share_terms(entity_key, action)
        if terms is None:
            return None
        return table.c.id.in_(sa.select(self.tables.shares.c.record_id).where(*terms))

    # -- one record: Python -------------------------------------------------------------------

    def allows(self, connection: sa.Connection, entity_key: str, action: str,
               row: Mapping[str, Any]) -> bool:
        """Whether `action` on the record in `row` (all its columns) is allowed."""
        if self.principal.is_admin:
            return True
        policy = self.policy(entity_key)
        if self.unit_only and row.get("business_unit") != self.principal.business_unit:
            return False
        for rule in policy.rules.get(action, ()):
            if not self._in_scope(connection, rule.scope, policy.entity, row):
                continue
            if rule.when is None:
                return True
            node = policy.conditions[id(rule)]
            if _has_paths(node):  # a path through a reference: the database answers
                if self._sql_check(connection, entity_key, node, row["id"]):
                    return True
            elif evaluate(node, row, self.context):
                return True
        if self.visible(entity_key):
            return self._shared(connection, entity_key, action, row["id"])
        return False

    def _in_scope(self, connection: sa.Connection, scope: str, entity: Entity,
                  row: Mapping[str, Any]) -> bool:
        p = self.principal
        owner = row.get("owner")
        if scope == "all":
            return True
        if scope == "business_unit":
            return row.get("business_unit") == p.business_unit
        if scope == "own" or (scope in ("team", "subtree") and not p.unit_ids):
            return owner is not None and owner == p.user_id
        if scope == "assigned":
            return owner == p.user_id or any(
                row.get(f.name) == p.user_id for f in self.registry.entities[entity.key].fields
                if f.type == "user" and f.stored)
        if scope in ("team", "subtree"):
            return owner in self._people(scope, connection)
        return False

    def _shared(self, connection: sa.Connection, entity_key: str, action: str,
                record_id: int) -> bool:
        terms = self._share_terms(entity_key, action)
        if terms is None:
            return False
        shares = self.tables.shares
        return connection.execute(sa.select(shares.c.id).where(
            *terms, shares.c.record_id == record_id).limit(1)).first() is not None

    def _sql_check(self, connection: sa.Connection, entity_key: str, node: Node,
                   record_id: int) -> bool:
        table = self.runtime.tables.by_entity[entity_key]
        condition = to_sql(node, entity_key, self.runtime.tables.by_entity, self.registry,
                           self.context)
        return connection.execute(sa.select(table.c.id).where(
            table.c.id == record_id, condition)).first() is not None


def _lru(extras: dict[str, Any], name: str) -> OrderedDict[Any, Any]:
    cache = extras.get(name)
    if cache is None:
        cache = extras[name] = OrderedDict()
    return cache


def _trim(cache: OrderedDict[Any, Any]) -> None:
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def _has_paths(node: Node) -> bool:
    from ..engines.conditions import condition_fields

    return any("." in name for name in condition_fields(node))


def check_actions(actions: Iterable[str]) -> None:
    unknown = sorted(set(actions) - set(ACTIONS))
    if unknown:
        raise ValueError(f"unknown action(s): {', '.join(unknown)}")
