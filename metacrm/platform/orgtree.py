"""A tenant's org tree (group → business unit → region → branch → team, any depth).

Units store a materialized path (``/1/4/9/``): a subtree is one indexed prefix match,
and moving a branch under another region rewrites the paths of that subtree only —
records reference users and units by id, so no record changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from .systables import SystemTables, system_tables

UNIT_KINDS = ("group", "business_unit", "region", "branch", "team", "department")


ORG_VERSION_KEY = "org"
"""The `_metacrm_counters` key bumped by every change to the tree or its members, so
permission caches (subtree members) know when to recompute."""


def bump_org_version(connection: sa.Connection, tables: SystemTables) -> None:
    """Count one change to the org tree (in the caller's transaction)."""
    from sqlalchemy.dialects import postgresql, sqlite

    counters = tables.counters
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(counters).values(key=ORG_VERSION_KEY, value=1)
                       .on_conflict_do_update(index_elements=[counters.c.key],
                                              set_={"value": counters.c.value + 1}))


def path_ids(path: str) -> list[int]:
    """The unit ids along a materialized path, root first (`/1/4/9/` → [1, 4, 9])."""
    return [int(part) for part in path.strip("/").split("/") if part]


def members_below(tables: SystemTables, paths: Iterable[str]) -> sa.Select:
    """SELECT of the user ids placed anywhere in the subtrees at `paths` (prefix matches)."""
    members, units = tables.org_members, tables.org_units
    return sa.select(members.c.user_id).select_from(
        members.join(units, units.c.id == members.c.unit_id)).where(
        sa.or_(*(units.c.path.startswith(path) for path in paths)))


def nearest_business_unit(connection: sa.Connection, tables: SystemTables,
                          path: str) -> str | None:
    """The business unit of the unit at `path`: its own, else its nearest ancestor's."""
    ids = path_ids(path)
    units = tables.org_units
    named = dict(connection.execute(sa.select(units.c.id, units.c.business_unit).where(
        units.c.id.in_(ids), units.c.business_unit.is_not(None))).all())
    return next((named[i] for i in reversed(ids) if named.get(i)), None)


class OrgError(ValueError):
    """A change the org tree refuses (unknown unit, a cycle, a duplicate name)."""


@dataclass(frozen=True, slots=True)
class OrgUnit:
    id: int
    name: str
    label: str
    kind: str
    parent_id: int | None
    path: str
    depth: int
    business_unit: str | None
    manager_id: int | None


class OrgTree:
    """Reads and changes the org tree through a connection bound to the tenant."""

    def __init__(self, connection: sa.Connection, tables: SystemTables | None = None) -> None:
        self.connection = connection
        system = tables or system_tables()
        self.system = system
        self.units = system.org_units
        self.members = system.org_members
        self.users = system.users

    def _row(self, where: sa.ColumnElement[bool]) -> OrgUnit | None:
        row = self.connection.execute(sa.select(self.units).where(where)).mappings().first()
        if row is None:
            return None
        return OrgUnit(row["id"], row["name"], row["label"], row["kind"], row["parent_id"],
                       row["path"], row["depth"], row["business_unit"], row["manager_id"])

    def get(self, name: str) -> OrgUnit:
        found = self._row(self.units.c.name == name)
        if found is None:
            raise OrgError(f"there is no org unit {name!r}")
        return found

    def by_id(self, unit_id: int) -> OrgUnit:
        found = self._row(self.units.c.id == unit_id)
        if found is None:
            raise OrgError(f"there is no org unit with id {unit_id}")
        return found

    def add(self, name: str, label: str, kind: str, parent: str | None = None, *,
            business_unit: str | None = None, manager_id: int | None = None) -> OrgUnit:
        """Add a unit under `parent` (None: a root).

        `business_unit` names the Registry unit whose definitions the unit's users see;
        units below inherit it when they name none (see :meth:`business_unit_of`).
        """
        if kind not in UNIT_KINDS:
            raise OrgError(f"unknown unit kind {kind!r}; use one of {', '.join(UNIT_KINDS)}")
        if self._row(self.units.c.name == name) is not None:
            raise OrgError(f"an org unit named {name!r} already exists")
        parent_unit = self.get(parent) if parent else None
        units = self.units
        new_id = self.connection.execute(units.insert().values(
            name=name, label=label, kind=kind, parent_id=parent_unit.id if parent_unit else None,
            path="/", depth=(parent_unit.depth + 1) if parent_unit else 0,
            business_unit=business_unit,
            manager_id=manager_id, created_at=dt.datetime.now(dt.UTC)).returning(units.c.id)
        ).scalar_one()
        path = f"{parent_unit.path if parent_unit else '/'}{new_id}/"
        self.connection.execute(units.update().where(units.c.id == new_id).values(path=path))
        bump_org_version(self.connection, self.system)
        return self.by_id(new_id)

    def move(self, name: str, new_parent: str) -> OrgUnit:
        """Move a unit (and its subtree) under `new_parent`: one update of the paths."""
        unit = self.get(name)
        target = self.get(new_parent)
        if target.path.startswith(unit.path):
            raise OrgError(f"cannot move {name!r} under its own subtree ({new_parent!r})")
        units = self.units
        new_path = f"{target.path}{unit.id}/"
        shift = target.depth + 1 - unit.depth
        old_len = len(unit.path)
        self.connection.execute(units.update().where(units.c.path.startswith(unit.path)).values(
            path=sa.literal(new_path) + sa.func.substr(units.c.path, old_len + 1),
            depth=units.c.depth + shift))
        self.connection.execute(units.update().where(units.c.id == unit.id)
                                .values(parent_id=target.id))
        bump_org_version(self.connection, self.system)
        return self.by_id(unit.id)

    def set_manager(self, name: str, user_id: int | None) -> None:
        units = self.units
        self.connection.execute(units.update().where(units.c.name == name)
                                .values(manager_id=user_id))
        bump_org_version(self.connection, self.system)

    def place(self, user_id: int, unit: str, *, primary: bool = True) -> None:
        """Put a user in a unit (their primary unit replaces any earlier primary one)."""
        target = self.get(unit)
        members = self.members
        if primary:
            self.connection.execute(members.update().where(members.c.user_id == user_id)
                                    .values(is_primary=False))
        self.connection.execute(members.delete().where(members.c.user_id == user_id,
                                                       members.c.unit_id == target.id))
        self.connection.execute(members.insert().values(user_id=user_id, unit_id=target.id,
                                                        is_primary=primary))
        bump_org_version(self.connection, self.system)

    def units_of(self, user_id: int) -> list[OrgUnit]:
        members, units = self.members, self.units
        rows = self.connection.execute(sa.select(units.c.id).select_from(
            members.join(units, units.c.id == members.c.unit_id))
            .where(members.c.user_id == user_id).order_by(members.c.is_primary.desc()))
        return [self.by_id(r) for (r,) in rows]

    def ancestors(self, name: str) -> list[OrgUnit]:
        """The unit's chain up to the root, nearest first."""
        unit = self.get(name)
        return [self.by_id(i) for i in reversed(path_ids(unit.path)[:-1])]

    def managers_above(self, user_id: int) -> list[int]:
        """Managers up the org tree from the user's primary unit (nearest first, no repeats)."""
        chain: list[int] = []
        for unit in self.units_of(user_id)[:1]:
            for node in [unit, *self.ancestors(unit.name)]:
                if node.manager_id and node.manager_id != user_id and node.manager_id not in chain:
                    chain.append(node.manager_id)
        return chain

    def subtree(self, name: str) -> list[OrgUnit]:
        unit = self.get(name)
        rows = self.connection.execute(sa.select(self.units.c.id).where(
            self.units.c.path.startswith(unit.path)).order_by(self.units.c.path))
        return [self.by_id(r) for (r,) in rows]

    def business_unit_of(self, unit: OrgUnit) -> str | None:
        """The business unit of `unit`: its own, else its nearest ancestor's."""
        if unit.business_unit:
            return unit.business_unit
        return nearest_business_unit(self.connection, self.system, unit.path)

    def all(self) -> list[OrgUnit]:
        rows = self.connection.execute(sa.select(self.units.c.id).order_by(self.units.c.path))
        return [self.by_id(r) for (r,) in rows]

    def update(self, name: str, *, label: str | None = None, kind: str | None = None,
               business_unit: str | None | bool = False) -> OrgUnit:
        """Change a unit's label, kind or business unit (False: leave it)."""
        unit = self.get(name)
        values: dict[str, object] = {}
        if label is not None:
            values["label"] = label
        if kind is not None:
            if kind not in UNIT_KINDS:
                raise OrgError(f"unknown unit kind {kind!r}; use one of {', '.join(UNIT_KINDS)}")
            values["kind"] = kind
        if business_unit is not False:
            values["business_unit"] = business_unit
        if values:
            self.connection.execute(self.units.update().where(self.units.c.id == unit.id)
                                    .values(**values))
            bump_org_version(self.connection, self.system)
        return self.by_id(unit.id)

    def remove(self, name: str) -> None:
        """Delete an empty unit (no sub-units, no members)."""
        unit = self.get(name)
        children = self.connection.execute(sa.select(sa.func.count()).where(
            self.units.c.parent_id == unit.id)).scalar()
        members = self.connection.execute(sa.select(sa.func.count()).where(
            self.members.c.unit_id == unit.id)).scalar()
        if children or members:
            raise OrgError(f"org unit {name!r} still has {children} sub-unit(s) and {members} "
                           "member(s); move them first")
        self.connection.execute(self.units.delete().where(self.units.c.id == unit.id))
        bump_org_version(self.connection, self.system)

    def unplace(self, user_id: int, unit: str) -> None:
        target = self.get(unit)
        self.connection.execute(self.members.delete().where(
            self.members.c.user_id == user_id, self.members.c.unit_id == target.id))
        bump_org_version(self.connection, self.system)

    def members_of(self, name: str) -> list[int]:
        unit = self.get(name)
        return [r for (r,) in self.connection.execute(sa.select(self.members.c.user_id).where(
            self.members.c.unit_id == unit.id).order_by(self.members.c.user_id))]
