"""A small tenant for the automation-rule tests: leads, accounts, tasks and deals (with a
workflow), a business unit, an org tree with managers, users with tokens, a controllable
clock, and two test actions. Rules are YAML files each test passes in.

Org tree (managers in brackets)::

    hq [boss] ── sales [chief] ── team1 ── rep1, rep2, rep3
                               └─ team2 ── (nobody)

`admin` (administrator) and `reader` (may only read leads) are placed in hq.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dbfixtures import Project
from flask import Flask
from flask.testing import FlaskClient

from metacrm.engines.actions import ActionContext, ActionFailed, RuleAction
from metacrm.engines.rules import sweep_tenant
from metacrm.engines.rules.admin import list_runs
from metacrm.hookspecs import hookimpl
from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, issue_token, set_roles
from metacrm.platform.jobs import jobs_of
from metacrm.platform.orgtree import OrgTree
from metacrm.platform.records import Actor, RecordService
from metacrm.platform.runtime import Platform, TenantRuntime
from metacrm.platform.systables import runtime_system_tables
from metacrm.plugins import make_plugin_manager

SLUG = "rt"
LEAD = "crm.lead"
TASK = "crm.task"
ACCOUNT = "crm.account"
DEAL = "crm.deal"
RULES = "metadata/modules/crm/rules"

LIBRARY: dict[str, str] = {
    "metadata/modules/crm/module.yaml": "module: crm\nowner: crm-team\n",
    "metadata/modules/crm/entities/account.yaml": """
        entity: account
        fields:
          name: {type: string, required: true}
          tier: {type: enum, options: [gold, silver, bronze], default: bronze}
    """,
    "metadata/modules/crm/entities/lead.yaml": """
        entity: lead
        title: "{company}"
        fields:
          company: {type: string, required: true}
          status: {type: enum, options: [new, contacted, qualified, lost], default: new}
          score: {type: integer}
          note: {type: string}
          hits: {type: integer, default: 0}
          ping: {type: integer, default: 0}
          pong: {type: integer, default: 0}
          email: {type: email}
          follow_up_on: {type: date}
          call_at: {type: datetime}
          helper: {type: user}
          account: {type: reference, to: account}
    """,
    "metadata/modules/crm/entities/task.yaml": """
        entity: task
        fields:
          title: {type: string, required: true}
          assignee: {type: user}
          due_at: {type: datetime}
          status: {type: enum, options: [open, done], default: open}
          priority: {type: enum, options: [normal, high], default: normal}
          lead: {type: reference, to: lead}
          related_entity: {type: string}
          related_id: {type: integer}
    """,
    "metadata/modules/crm/entities/deal.yaml": """
        entity: deal
        fields:
          name: {type: string, required: true}
          stage: {type: enum, options: [open, won, lost], default: open}
          note: {type: string}
    """,
    "metadata/modules/crm/workflows/deal_flow.yaml": """
        workflow: deal_flow
        entity: deal
        field: stage
        initial: open
        transitions:
          win: {from: [open], to: won}
          lose: {from: [open], to: lost}
    """,
    "metadata/modules/crm/roles/reader.yaml": """
        role: reader
        label: {en: Reader}
        grants:
          crm.lead: {read: all}
    """,
    f"tenants/{SLUG}/tenant.yaml": f"""
        tenant: {SLUG}
        modules: [crm]
        team: admins
        timezone: Asia/Shanghai
        business_units:
          retail: {{label: Retail, overlays: [overlays/retail]}}
    """,
    f"tenants/{SLUG}/overlays/retail/account.yaml": """
        extend: crm.account
        fields:
          store_code: {type: string}
    """,
}

UNITS = (("hq", "group", None), ("sales", "department", "hq"), ("team1", "team", "sales"),
         ("team2", "team", "sales"))
USERS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "boss": ("hq", ()), "chief": ("sales", ()), "rep1": ("team1", ()),
    "rep2": ("team1", ()), "rep3": ("team1", ()), "admin": ("hq", ("administrator",)),
    "reader": ("hq", ("reader",))}
MANAGERS = {"hq": "boss", "sales": "chief"}


class Clock:
    """A settable clock for `platform.clock` (starts at the wall clock's now)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now

    def set(self, value: dt.datetime) -> None:
        self.now = value.astimezone(dt.UTC)


class TestActions:
    """Test actions: `probe` keeps what it saw; `flaky` fails while `failures` > 0 (or
    always, with `fail_for_good`)."""

    def __init__(self) -> None:
        self.calls: list[tuple[ActionContext, Any]] = []
        self.failures = 0
        self.retryable = True

    def probe(self, context: ActionContext, params: Any) -> dict[str, Any]:
        self.calls.append((context, params))
        return {"saw": context.record.get("id"), "params": dict(params or {})}

    def flaky(self, context: ActionContext, params: Any) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ActionFailed("the service is down", retryable=self.retryable)
        self.calls.append((context, params))
        return "ok"

    @hookimpl
    def register_rule_actions(self) -> list[RuleAction]:
        return [RuleAction("probe", self.probe, "Keeps its calls (tests).",
                           {"type": "object"}),
                RuleAction("flaky", self.flaky, "Fails while told to (tests).")]


@dataclass
class World:
    project: Project
    platform: Platform
    app: Flask
    client: FlaskClient
    actions: TestActions
    clock: Clock
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> TenantRuntime:
        return self.platform.runtime(SLUG)

    @property
    def backend(self) -> str:
        return self.project.backend.name

    def service(self, unit: str | None = None, *, emit: bool = True,
                depth: int = 0) -> RecordService:
        """The record service as the system (optionally of a business unit)."""
        return RecordService(self.runtime, Actor(None, unit, depth),
                             emit=self.platform.emit if emit else None,
                             operators=self.platform.operators)

    def lead(self, unit: str | None = None, owner: str | None = "rep1",
             **values: Any) -> dict[str, Any]:
        """A new lead (owned by `owner`), as the system of `unit`."""
        service = self.service(unit)
        record = service.create(LEAD, {"company": "Acme", **values})
        if owner is not None:
            record = service.assign(LEAD, record["id"], self.ids[owner])
        return record

    def get(self, entity: str, record_id: int) -> dict[str, Any]:
        return self.service().get(entity, record_id, include_deleted=True)

    def all(self, entity: str) -> list[dict[str, Any]]:
        from metacrm.platform.records import ListQuery

        return self.service().list(entity, ListQuery(limit=500)).items

    def drain(self) -> int:
        return jobs_of(self.platform).drain()

    def sweep(self, drain: bool = True) -> Any:
        report = sweep_tenant(self.platform, SLUG)
        if drain:
            self.drain()
        return report

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        return list_runs(self.runtime, limit=500, **filters)["items"]

    def reload(self, files: Mapping[str, str]) -> None:
        self.project.write(files)
        report = self.platform.reload(SLUG)
        assert report.ok, report.format()

    # -- HTTP ---------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"/t/{SLUG}/api/v1/{path.lstrip('/')}"

    def call(self, method: str, path: str, who: str | None = "admin", body: Any = None) -> Any:
        headers = {}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        return self.client.open(self.url(path), method=method, data=data, headers=headers)


def rule_files(rules: Mapping[str, str]) -> dict[str, str]:
    """`{name: YAML}` → files under the crm module's rules folder."""
    return {f"{RULES}/{name}.yaml": textwrap.dedent(text) for name, text in rules.items()}


def build_world(project: Project, rules: Mapping[str, str] | None = None,
                files: Mapping[str, str] | None = None) -> World:
    """Write the library with `rules` (and other `files`), provision the tenant, fill the
    org tree and users, serve it, and put the platform on a controllable clock."""
    project.write({**LIBRARY, **rule_files(rules or {}), **(files or {})})
    actions = TestActions()
    platform = Platform(project.settings(), make_plugin_manager([actions]))
    project._platforms.append(platform)  # closed with the project
    clock = Clock()
    platform.clock = clock
    report = platform.create_tenant(SLUG)
    assert report.ok, report.format()
    app = create_app(project.settings(), platform)
    app.testing = True
    world = World(project, platform, app, app.test_client(), actions, clock)
    runtime = world.runtime
    with runtime.begin() as connection:
        tree = OrgTree(connection, runtime_system_tables(runtime))
        for name, kind, parent in UNITS:
            tree.add(name, name, kind, parent)
        for username, (unit, roles) in USERS.items():
            world.ids[username] = create_user(connection, username,
                                              email=f"{username}@example.com")
            set_roles(connection, world.ids[username], roles)
            tree.place(world.ids[username], unit)
            world.tokens[username] = issue_token(connection, world.ids[username], "tests")
        for unit, username in MANAGERS.items():
            tree.set_manager(unit, world.ids[username])
    return world
