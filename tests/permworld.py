"""A small tenant for permission tests: an org tree, users in it, roles of every scope,
and records owned by each user — plus an independent model of who may see what.

Org tree (business units in brackets)::

    g (group)
    ├── north [north] ── n1 (region) ── n1a (team: a, b), n1b (team: c); m sits on n1
    ├── south [south] ── s1 (team: s)
    └── hq (department: h)

Each user owns `PER_USER` live deals and accounts, and one deleted deal. The model
(`expected`) is written from the definitions of the scopes, not from the platform's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from metacrm.metadata.ir import SCOPES
from metacrm.platform.auth import create_user, issue_token, set_roles, user_by_name
from metacrm.platform.orgtree import OrgTree
from metacrm.platform.permissions import load_principal
from metacrm.platform.records import Actor, RecordService
from metacrm.platform.runtime import Platform, TenantRuntime
from metacrm.platform.systables import runtime_system_tables

SLUG = "perm"
ENTITIES = ("sales.deal", "sales.account")
PER_USER = 2
USERS: Mapping[str, tuple[str, str | None]] = {
    "a": ("n1a", "north"), "b": ("n1a", "north"), "c": ("n1b", "north"),
    "m": ("n1", "north"), "s": ("s1", "south"), "h": ("hq", None)}
UNITS = (("g", "group", None, None), ("north", "business_unit", "g", "north"),
         ("n1", "region", "north", None), ("n1a", "team", "n1", None),
         ("n1b", "team", "n1", None), ("south", "business_unit", "g", "south"),
         ("s1", "team", "south", None), ("hq", "department", "g", None))


def _scope_role(scope: str) -> str:
    return f"""
        role: scope_{scope}
        label: {{en: "Scope {scope}"}}
        grants:
          sales.deal: {{default: {scope}}}
          sales.account: {{default: {scope}}}
    """


def library(headquarters: str = "across_units") -> dict[str, str]:
    files = {
        "metadata/modules/sales/module.yaml": "module: sales\nowner: sales-team\n",
        "metadata/modules/sales/entities/account.yaml": """
            entity: account
            label: {en: Account}
            fields:
              name: {type: string, required: true}
              region: {type: string}
        """,
        "metadata/modules/sales/entities/deal.yaml": """
            entity: deal
            label: {en: Deal}
            fields:
              title: {type: string, required: true}
              amount: {type: money, currency: CNY, default: 0}
              stage: {type: enum, options: [open, won, lost], default: open}
              secret: {type: string}
              score: {type: integer}
              assignee: {type: user}
              account: {type: reference, to: account}
              doubled: {type: formula, expression: "score * 2", returns: integer}
        """,
        "metadata/modules/sales/roles/limited.yaml": """
            role: limited
            label: {en: Limited fields}
            grants:
              sales.deal:
                read: all
                create: all
                update: all
                export: all
                fields: {secret: hidden, amount: read, score: hidden}
              sales.account: {read: all}
        """,
        "metadata/modules/sales/roles/open_only.yaml": """
            role: open_only
            label: {en: Open deals only}
            grants:
              sales.deal:
                read: all
                update: {scope: all, when: {field: stage, op: eq, value: open}}
              sales.account: {read: all}
        """,
        "metadata/modules/sales/roles/account_reader.yaml": """
            role: account_reader
            label: {en: Reads own accounts}
            grants:
              sales.account: {read: own}
              sales.deal: {read: all, create: all}
        """,
        f"tenants/{SLUG}/tenant.yaml": f"""
            tenant: {SLUG}
            modules: [sales]
            team: admins
            permissions: {{headquarters: {headquarters}}}
            business_units:
              north: {{label: North, team: north-ops}}
              south: {{label: South, team: south-ops}}
        """,
    }
    for scope in SCOPES:
        files[f"metadata/modules/sales/roles/scope_{scope}.yaml"] = _scope_role(scope)
    return files


@dataclass
class World:
    platform: Platform
    ids: dict[str, int] = field(default_factory=dict)  # username → user id
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # entity → rows
    members: dict[str, set[str]] = field(default_factory=dict)  # unit → usernames
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> TenantRuntime:
        return self.platform.runtime(SLUG)

    def service(self, username: str | None) -> RecordService:
        """The record service as `username` with their current roles (None: the system)."""
        if username is None:
            return RecordService(self.runtime, Actor())
        with self.runtime.connect() as connection:
            principal = load_principal(connection, runtime_system_tables(self.runtime),
                                       user_by_name(connection, username),
                                       self.runtime.registry.units)
        return RecordService(self.runtime, Actor.of(principal),
                             operators=self.platform.operators)

    def grant(self, username: str, *roles: str) -> None:
        with self.runtime.begin() as connection:
            set_roles(connection, self.ids[username], roles)

    def name_of(self, user_id: int | None) -> str | None:
        return next((n for n, i in self.ids.items() if i == user_id), None)

    # -- the model ------------------------------------------------------------------------------

    def team(self, username: str) -> set[str]:
        unit = USERS[username][0]
        return self.members[unit]

    def subtree(self, username: str) -> set[str]:
        unit = USERS[username][0]
        below = {unit}
        changed = True
        while changed:
            changed = False
            for name, _, parent, _ in UNITS:
                if parent in below and name not in below:
                    below.add(name)
                    changed = True
        return set().union(*(self.members.get(u, set()) for u in below))

    def expected(self, scope: str, username: str, row: Mapping[str, Any]) -> bool:
        """Whether a user whose role grants `scope` reaches `row` (by the definitions)."""
        owner = self.name_of(row["owner"])
        if scope == "none":
            return False
        if scope == "all":
            return True
        if scope == "own":
            return owner == username
        if scope == "assigned":
            return owner == username or self.name_of(row.get("assignee")) == username
        if scope == "team":
            return owner in self.team(username)
        if scope == "subtree":
            return owner in self.subtree(username)
        if scope == "business_unit":
            return row["business_unit"] == USERS[username][1]
        raise AssertionError(scope)


def build_world(platform: Platform) -> World:
    """Provision the tenant and fill it (as the system)."""
    report = platform.create_tenant(SLUG)
    assert report.ok, report.format()
    world = World(platform)
    runtime = world.runtime
    tables = runtime_system_tables(runtime)
    with runtime.begin() as connection:
        tree = OrgTree(connection, tables)
        for name, kind, parent, business_unit in UNITS:
            tree.add(name, name, kind, parent, business_unit=business_unit)
        for username, (unit, _) in USERS.items():
            world.ids[username] = create_user(connection, username)
            tree.place(world.ids[username], unit)
            world.members.setdefault(unit, set()).add(username)
            world.tokens[username] = issue_token(connection, world.ids[username], "tests")
        tree.set_manager("n1", world.ids["m"])
    names = list(USERS)
    for index, username in enumerate(names):
        owner = RecordService(runtime, Actor(world.ids[username], USERS[username][1]))
        for n in range(PER_USER):
            account = owner.create("sales.account", {"name": f"{username}-acct-{n}"})
            world.records.setdefault("sales.account", []).append(account)
            assignee = world.ids[names[(index + 1) % len(names)]] if n == 0 else None
            deal = owner.create("sales.deal", {
                "title": f"{username}-deal-{n}", "secret": f"secret-{username}-{n}",
                "score": 10 * index + n, "assignee": assignee, "account": account["id"],
                "stage": "open" if n == 0 else "won"})
            world.records.setdefault("sales.deal", []).append(deal)
        gone = owner.create("sales.deal", {"title": f"{username}-deleted"})
        owner.delete("sales.deal", gone["id"])
        world.records.setdefault("deleted", []).append({**gone, "deleted": True})
    return world


def live_ids(world: World, entity: str) -> list[int]:
    return [r["id"] for r in world.records[entity]]


def table_rows(world: World, entity: str) -> list[dict[str, Any]]:
    table = world.runtime.tables.by_entity[entity]
    with world.runtime.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(table)).mappings()]
