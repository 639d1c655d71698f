"""A small tenant for workflow tests: a lead workflow in YAML, an org tree with a manager
chain, users with roles and tokens, served by the real app.

Org tree (managers in brackets)::

    hq [boss] ── sales [director] ── team1 [lead1] ── rep, rep2
                                  └─ team2 (no manager) ── loner

`manager` (approval by manager, 2 levels) climbs rep → lead1 → director.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dbfixtures import Project
from flask import Flask
from flask.testing import FlaskClient

from metacrm.engines.actions import ActionContext, ActionFailed, RuleAction
from metacrm.hookspecs import hookimpl
from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, issue_token, set_roles, user_by_name
from metacrm.platform.orgtree import OrgTree
from metacrm.platform.permissions import load_principal
from metacrm.platform.records import Actor, RecordService
from metacrm.platform.runtime import Platform, TenantRuntime
from metacrm.platform.systables import runtime_system_tables
from metacrm.plugins import make_plugin_manager

SLUG = "wf"
LEAD = "sales.lead"
TICKET = "sales.ticket"

WORKFLOW = """
    workflow: lead_lifecycle
    entity: lead
    field: status
    label: {en: Lead lifecycle}
    initial: new
    states:
      new: {label: {en: New}}
      contacted: {label: {en: Contacted}}
      qualified: {label: {en: Qualified}}
      disqualified: {label: {en: Disqualified}, final: true}
      won: {label: {en: Won}, final: true}
    transitions:
      contact: {from: [new], to: contacted}
      qualify:
        from: [contacted]
        to: qualified
        roles: [sales_rep]
        requires: [expected_value]
        when: {field: score, op: gte, value: 50}
      disqualify:
        from: [new, contacted]
        to: disqualified
        approval: {by: manager, levels: 2}
      win:
        from: [qualified]
        to: won
        approval: {by: role, roles: [sales_manager], count: 2}
      reopen: {from: [qualified], to: contacted, roles: [sales_manager]}
"""

LIBRARY: dict[str, str] = {
    "metadata/modules/sales/module.yaml": "module: sales\nowner: sales-team\n",
    "metadata/modules/sales/entities/lead.yaml": """
        entity: lead
        label: {en: Lead}
        title: "{company}"
        fields:
          company: {type: string, required: true}
          status: {type: enum, options: [new, contacted, qualified, disqualified, won],
                   default: new}
          score: {type: integer, min: 0, max: 100}
          expected_value: {type: money, currency: CNY}
          note: {type: string}
          secret: {type: string}
    """,
    "metadata/modules/sales/entities/task.yaml": """
        entity: task
        label: {en: Task}
        fields:
          title: {type: string, required: true}
          lead: {type: reference, to: lead}
    """,
    "metadata/modules/sales/entities/ticket.yaml": """
        entity: ticket
        label: {en: Ticket}
        fields:
          title: {type: string, required: true}
          stage: {type: enum, options: [open, working, closed]}
          lead: {type: reference, to: lead}
    """,
    "metadata/modules/sales/workflows/lead_lifecycle.yaml": WORKFLOW,
    "metadata/modules/sales/workflows/ticket_flow.yaml": """
        workflow: ticket_flow
        entity: ticket
        field: stage
        initial: open
        transitions:
          start:
            from: [open]
            to: working
            actions:
              - wf_test_record: {tag: started}
              - wf_test_fail: {message: the mail server is down}
              - wf_test_record: {tag: after}
          touch: {from: [working], to: working}
          close: {from: [working], to: closed, when: {field: lead.score, op: gte, value: 50}}
    """,
    "metadata/modules/sales/roles/sales_rep.yaml": """
        role: sales_rep
        label: {en: Sales rep}
        grants:
          sales.lead: {read: all, create: all, update: own, transition: own,
                       fields: {secret: read}}
          sales.task: {read: all, create: all}
          sales.ticket: {read: all, create: all, update: own, transition: own}
    """,
    "metadata/modules/sales/roles/sales_manager.yaml": """
        role: sales_manager
        label: {en: Sales manager}
        grants:
          sales.lead: {read: all, update: all, transition: all}
          sales.task: {read: all}
    """,
    "metadata/modules/sales/roles/viewer.yaml": """
        role: viewer
        label: {en: Viewer}
        grants:
          sales.lead: {read: all, update: all}
    """,
    f"tenants/{SLUG}/tenant.yaml": f"""
        tenant: {SLUG}
        modules: [sales]
        team: admins
    """,
}

UNITS = (("hq", "group", None), ("sales", "department", "hq"), ("team1", "team", "sales"),
         ("team2", "team", "sales"))
USERS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "boss": ("hq", ("sales_manager",)), "director": ("sales", ("sales_manager",)),
    "lead1": ("team1", ("sales_manager",)), "rep": ("team1", ("sales_rep",)),
    "rep2": ("team1", ("sales_rep",)), "loner": ("team2", ("sales_rep",)),
    "viewer": ("team1", ("viewer",)), "admin": ("hq", ("administrator",))}
MANAGERS = {"hq": "boss", "sales": "director", "team1": "lead1"}


class ActionsPlugin:
    """Two rule actions for the tests: `wf_test_record` keeps what it saw, `wf_test_fail`
    always fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[ActionContext, Any]] = []

    def record(self, context: ActionContext, params: Any) -> dict[str, Any]:
        self.calls.append((context, params))
        return {"tag": params.get("tag"), "state": context.record.get("stage")}

    @staticmethod
    def fail(context: ActionContext, params: Any) -> None:
        raise ActionFailed(params.get("message", "failed"), retryable=False)

    @hookimpl
    def register_rule_actions(self) -> list[RuleAction]:
        return [RuleAction("wf_test_record", self.record, "Keeps its calls (tests)."),
                RuleAction("wf_test_fail", self.fail, "Always fails (tests).")]


@dataclass
class World:
    project: Project
    platform: Platform
    app: Flask
    client: FlaskClient
    actions: ActionsPlugin
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> TenantRuntime:
        return self.platform.runtime(SLUG)

    @property
    def backend(self) -> str:
        return self.project.backend.name

    def actor(self, username: str | None) -> Actor:
        if username is None:
            return Actor()
        with self.runtime.connect() as connection:
            principal = load_principal(connection, runtime_system_tables(self.runtime),
                                       user_by_name(connection, username),
                                       self.runtime.registry.units)
        return Actor.of(principal)

    def service(self, username: str | None) -> RecordService:
        return RecordService(self.runtime, self.actor(username), emit=self.platform.emit,
                             operators=self.platform.operators)

    def lead(self, owner: str = "rep", **values: Any) -> dict[str, Any]:
        """A new lead owned by `owner` (created as them)."""
        return self.service(owner).create(LEAD, {"company": "Acme", **values})

    def set_state(self, record_id: int, state: str) -> None:
        """Put a record in `state` directly (the import escape hatch)."""
        from metacrm.engines.workflows import workflow_bypass

        with workflow_bypass():
            RecordService(self.runtime).update(LEAD, record_id, {"status": state})

    # -- HTTP ---------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"/t/{SLUG}/api/v1/{path.lstrip('/')}"

    def lead_url(self, record_id: int, tail: str = "") -> str:
        return self.url(f"sales/lead/{record_id}{tail}")

    def call(self, method: str, url: str, who: str | None = "rep", body: Any = None,
             headers: Mapping[str, str] | None = None) -> Any:
        all_headers = dict(headers or {})
        if who is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[who]}"
        data = None
        if body is not None:
            data = body if isinstance(body, str | bytes) else json.dumps(body)
            all_headers["Content-Type"] = "application/json"
        return self.client.open(url, method=method, data=data, headers=all_headers)


def build_world(project: Project, files: Mapping[str, str] | None = None) -> World:
    """Write the library (with `files` laid over it), provision the tenant, fill the org
    tree and users, and serve it."""
    project.write({**LIBRARY, **(files or {})})
    actions = ActionsPlugin()
    platform = Platform(project.settings(), make_plugin_manager([actions]))
    project._platforms.append(platform)  # closed with the project
    report = platform.create_tenant(SLUG)
    assert report.ok, report.format()
    app = create_app(project.settings(), platform)
    app.testing = True
    world = World(project, platform, app, app.test_client(), actions)
    runtime = world.runtime
    with runtime.begin() as connection:
        tree = OrgTree(connection, runtime_system_tables(runtime))
        for name, kind, parent in UNITS:
            tree.add(name, name, kind, parent)
        for username, (unit, roles) in USERS.items():
            world.ids[username] = create_user(connection, username)
            set_roles(connection, world.ids[username], roles)
            tree.place(world.ids[username], unit)
            world.tokens[username] = issue_token(connection, world.ids[username], "tests")
        for unit, username in MANAGERS.items():
            tree.set_manager(unit, world.ids[username])
    return world
