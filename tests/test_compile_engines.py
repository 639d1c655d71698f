"""Workflows, rules, calendars, SLA policies and duplicate rules in YAML: the IR they compile
to, overlays (tenant and business unit), the metadata version, every diagnostic, durations."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from metacrm.cli import main
from metacrm.engines.actions import ActionRegistry, RuleAction
from metacrm.metadata.compiler import Compiler, CompileResult
from metacrm.metadata.describe import describe_entity
from metacrm.metadata.durations import UNITS, format_duration, parse_duration
from metacrm.metadata.ir import (
    NORMALISERS,
    Approval,
    FrozenDict,
    MatchKey,
    Registry,
    Trigger,
)
from metacrm.metadata.library import Library
from metacrm.metadata.schemas import static_schema

WriteLibrary = Callable[[Mapping[str, str]], Library]  # the conftest fixture's type

MODULE = "metadata/modules/crm"
LEAD = """
    entity: lead
    duplicates:
      - rule: email
        keys: [{field: email, normalise: email}]
        action: block
      - {rule: person, keys: [company, {field: contact, normalise: text}],
          when: {field: status, op: ne, value: disqualified}}
    fields:
      company: {type: string, required: true}
      contact: {type: string}
      email: {type: email}
      status: {type: enum, options: [new, contacted, qualified, disqualified], default: new}
      priority: {type: enum, options: [urgent, high, normal], default: normal}
      score: {type: integer}
      expected_value: {type: money}
      due_on: {type: date}
      responded_at: {type: datetime}
      breached_at: {type: datetime}
    """
TICKET = """
    entity: ticket
    fields:
      subject: {type: string}
      stage: {type: enum, options: [open, pending, solved], default: open}
    """
WORKFLOW = """
    workflow: lead_lifecycle
    entity: lead
    field: status
    label: {en: Lead lifecycle, zh-Hant: 線索流程}
    states:
      new: {label: {en: New, zh-Hant: 新}}
      contacted: {}
      qualified: {final: true}
      disqualified: {final: true}
    transitions:
      contact: {from: new, to: contacted}
      qualify:
        from: [contacted]
        to: qualified
        label: Qualify
        roles: [sales_rep]
        requires: [expected_value]
        when: {field: score, op: gte, value: 50}
        approval: {by: role, roles: [sales_manager], count: 2}
        actions: [{create_task: {title: "Kick-off"}}, {notify: {to: owner}}]
      disqualify: {from: "*", to: disqualified, approval: {by: manager, levels: 2}}
    """
RULE = """
    rule: stale_lead
    entity: lead
    label: Stale lead
    trigger: {after: {field: created_at, delay: 3d}}
    when: {field: status, op: eq, value: new}
    do: [{create_task: {title: "Follow up {{ record.company }}"}}]
    """
CALENDAR = """
    calendar: hk_office
    label: Hong Kong office
    timezone: Asia/Hong_Kong
    weekdays: ["13:00-18:00", "09:00-12:00"]
    hours: {fri: ["09:00-15:00"], sat: ["09:00-13:00"]}
    holidays: [2026-12-25, 2026-01-01]
    """
SLA = """
    sla: lead_sla
    entity: lead
    calendar: hk_office
    by: priority
    when: {field: status, op: ne, value: disqualified}
    pause_when: {field: status, op: eq, value: contacted}
    warn_at: 0.75
    clocks:
      first_response:
        stop: {field: responded_at, op: is_empty, value: false}
        targets: {urgent: 1h, high: 4h, default: 1d12h}
        field: breached_at
      resolution:
        start: {field: status, op: eq, value: contacted}
        stop: {field: status, op: in, value: [qualified, disqualified]}
        targets: {default: 2w}
    escalations:
      - {at: 0.8, levels_up: 0, do: [{notify: {to: owner}}]}
      - {at: 1.0, do: [{notify: {to: manager}}]}
    """
ROLES = """
    role: sales_rep
    grants:
      lead: {default: all}
    """
MANAGER = """
    role: sales_manager
    grants:
      lead: {default: all}
    """
BASE = {
    f"{MODULE}/module.yaml": "module: crm\nowner: sales-ops\n",
    f"{MODULE}/entities/lead.yaml": LEAD,
    f"{MODULE}/entities/ticket.yaml": TICKET,
    f"{MODULE}/roles/sales_rep.yaml": ROLES,
    f"{MODULE}/roles/sales_manager.yaml": MANAGER,
    f"{MODULE}/workflows/lead_lifecycle.yaml": WORKFLOW,
    f"{MODULE}/rules/stale_lead.yaml": RULE,
    f"{MODULE}/calendars/hk_office.yaml": CALENDAR,
    f"{MODULE}/slas/lead_sla.yaml": SLA,
}
TENANT = """
    tenant: acme
    team: sales-ops
    modules: [crm]
    overlays: [overlays/tenant]
    business_units:
      retail: {overlays: [overlays/retail]}
      retail_hk: {parent: retail, overlays: [overlays/retail_hk]}
      education: {}
    """


def _params(context: Any, params: Any) -> None:
    return None


ACTIONS = ActionRegistry([
    RuleAction("create_task", _params, "A task.", {
        "type": "object", "required": ["title"],
        "properties": {"title": {"type": "string"}, "due_in": {"type": "string"}},
        "additionalProperties": False}),
    RuleAction("notify", _params, "A message.", None),
])


def library(write_library: WriteLibrary, files: Mapping[str, str | None] | None = None,
            base: Mapping[str, str] = BASE) -> Library:
    """The base library with `files` added or replaced (None: removed)."""
    merged = {**base, "tenants/acme/tenant.yaml": TENANT, **(files or {})}
    lib = write_library({k: v for k, v in merged.items() if v is not None})
    for relative, text in merged.items():
        if text is None:
            (lib.root / relative).unlink(missing_ok=True)
    for folder in ("tenant", "retail", "retail_hk"):
        (lib.root / "tenants/acme/overlays" / folder).mkdir(parents=True, exist_ok=True)
    return lib


def compile_acme(lib: Library, actions: ActionRegistry = ACTIONS) -> CompileResult:
    compiler = Compiler(lib)
    compiler.actions = actions  # independent of the actions other plugins register
    return compiler.compile_tenant("acme")


def compiled(result: CompileResult) -> Registry:
    assert result.ok, "\n".join(d.format() for d in result.diagnostics)
    assert result.registry is not None
    return result.registry


def found(result: CompileResult) -> set[tuple[str, str, int]]:
    return {(d.code, d.file or "", d.line) for d in result.diagnostics}


# -- durations ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("4h", 14_400), ("3d", 259_200), ("1d12h", 129_600), ("2w", 1_209_600),
    ("90s", 90), ("1w2d3h4m5s", 788_645), ("0m", 0),
])
def test_durations_are_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(text, signed=True) == seconds


def test_a_negative_duration_needs_signed() -> None:
    assert parse_duration("-2d", signed=True) == -172_800
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-2d")


@pytest.mark.parametrize("text", ["", "3", "d", "3x", "1h1d", "1d1d", "3 d", "1.5h", "--2d",
                                  "2d-", 3, None, "999999w"])
def test_bad_durations_are_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text, signed=True)


@given(st.integers(min_value=-10**9, max_value=10**9))
def test_format_and_parse_round_trip(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text, signed=True) == seconds
    assert len(text) <= len(format_duration(abs(seconds))) + 1


@given(st.lists(st.tuples(st.sampled_from(list(UNITS)), st.integers(0, 999)), min_size=1,
                max_size=5, unique_by=lambda p: p[0]), st.booleans())
def test_any_well_formed_duration_parses_to_its_sum(parts: list[tuple[str, int]],
                                                    negative: bool) -> None:
    parts.sort(key=lambda p: list(UNITS).index(p[0]))
    text = ("-" if negative else "") + "".join(f"{n}{u}" for u, n in parts)
    total = sum(n * UNITS[u] for u, n in parts)
    assert parse_duration(text, signed=True) == (-total if negative else total)


# -- workflows ------------------------------------------------------------------------------

def test_a_module_workflow_compiles(write_library: WriteLibrary) -> None:
    registry = compiled(compile_acme(library(write_library)))
    scope = registry.scope()
    wf = scope.workflow_for("crm.lead")
    assert wf is not None and wf.key == "crm.lead_lifecycle" and wf.origin == "crm"
    assert (wf.entity, wf.field, wf.initial) == ("crm.lead", "status", "new")
    assert wf.label.get("zh-Hant") == "線索流程"
    assert [(s.name, s.final) for s in wf.states] == [
        ("new", False), ("contacted", False), ("qualified", True), ("disqualified", True)]
    assert wf.states[0].label.get("zh-Hant") == "新"
    assert [t.name for t in wf.transitions] == ["contact", "qualify", "disqualify"]
    contact, qualify, disqualify = wf.transitions
    assert contact.from_states == ("new",) and contact.label.get() == "Contact"
    assert qualify.roles == ("sales_rep",) and qualify.requires == ("expected_value",)
    assert qualify.when == FrozenDict({"field": "score", "op": "gte", "value": 50})
    assert qualify.approval == Approval("role", ("sales_manager",), 2, 1)
    assert qualify.actions == (FrozenDict({"create_task": FrozenDict({"title": "Kick-off"})}),
                               FrozenDict({"notify": FrozenDict({"to": "owner"})}))
    # "*": every state that is not final, except the target
    assert disqualify.from_states == ("new", "contacted")
    assert disqualify.approval == Approval("manager", (), 1, 2)
    assert qualify.source is not None and qualify.source.file.endswith("lead_lifecycle.yaml")
    assert scope.workflow_for("crm.ticket") is None
    hash(wf)
    assert pickle.loads(pickle.dumps(registry)).scope().workflows == scope.workflows


def test_without_states_a_workflow_has_every_option_and_the_field_default(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {f"{MODULE}/workflows/ticket.yaml": """
        workflow: ticket_flow
        entity: ticket
        field: stage
        transitions:
          wait: {from: open, to: pending}
          solve: {from: [open, pending], to: solved}
        """})
    wf = compiled(compile_acme(lib)).scope().workflow_for("crm.ticket")
    assert wf is not None
    assert [s.name for s in wf.states] == ["open", "pending", "solved"]
    assert wf.initial == "open" and wf.label.get() == "Ticket flow"


def test_initial_state_written_or_first(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        f"{MODULE}/entities/ticket.yaml": TICKET.replace(", default: open", ""),
        f"{MODULE}/workflows/ticket.yaml": """
            workflow: ticket_flow
            entity: ticket
            field: stage
            """,
        f"{MODULE}/workflows/lead_lifecycle.yaml": WORKFLOW.replace(
            "field: status\n", "field: status\n    initial: contacted\n")})
    scope = compiled(compile_acme(lib)).scope()
    assert scope.workflows["crm.ticket_flow"].initial == "open"
    assert scope.workflows["crm.lead_lifecycle"].initial == "contacted"


TENANT_WORKFLOW = """
    workflow: lead_lifecycle
    entity: crm.lead
    label: {zh-Hant: 銷售線索}
    transitions:
      contact: {from: [new, disqualified], to: contacted, label: Call}
      archive: {from: [qualified], to: disqualified}
    """
RETAIL_WORKFLOW = """
    workflow: lead_lifecycle
    entity: crm.lead
    states:
      qualified: {label: Store visit booked}
    transitions:
      reopen: {from: [disqualified], to: new, roles: [sales_rep]}
    remove_transitions: [qualify]
    """


def test_overlays_extend_a_workflow_per_tenant_and_unit(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "tenants/acme/overlays/tenant/workflow.yaml": TENANT_WORKFLOW,
        "tenants/acme/overlays/retail/workflow.yaml": RETAIL_WORKFLOW,
    })
    registry = compiled(compile_acme(lib))
    tenant = registry.scope().workflows["crm.lead_lifecycle"]
    assert tenant.origin == "tenant"
    assert tenant.label.get("zh-Hant") == "銷售線索" and tenant.label.get("en") == "Lead lifecycle"
    assert [t.name for t in tenant.transitions] == ["contact", "qualify", "disqualify", "archive"]
    contact = tenant.transition("contact")
    assert contact is not None and contact.from_states == ("new", "disqualified")
    assert contact.label.get() == "Call"

    retail = registry.scope("retail").workflows["crm.lead_lifecycle"]
    assert retail.origin == "unit:retail"
    assert [t.name for t in retail.transitions] == ["contact", "disqualify", "archive", "reopen"]
    assert retail.transition("reopen").roles == ("sales_rep",)  # type: ignore[union-attr]
    assert [s.label.get() for s in retail.states if s.name == "qualified"] == [
        "Store visit booked"]
    # a child unit inherits its parent's workflow (the same object); a sibling the tenant's
    assert registry.scope("retail_hk").workflows["crm.lead_lifecycle"] is retail
    assert registry.scope("education").workflows["crm.lead_lifecycle"] is tenant


def test_an_overlay_may_add_a_new_workflow(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"tenants/acme/overlays/retail/ticket.yaml": """
        workflow: ticket_flow
        entity: crm.ticket
        field: stage
        transitions:
          solve: {from: "*", to: solved}
        """})
    registry = compiled(compile_acme(lib))
    assert registry.scope().workflow_for("crm.ticket") is None
    wf = registry.scope("retail").workflow_for("crm.ticket")
    assert wf is not None and wf.origin == "unit:retail"
    assert wf.transitions[0].from_states == ("open", "pending")


def test_workflow_states_follow_an_option_a_unit_adds(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        f"{MODULE}/workflows/ticket.yaml": "workflow: ticket_flow\nentity: ticket\n"
                                          "field: stage\n",
        "tenants/acme/overlays/retail/ticket.yaml": """
            extend: crm.ticket
            fields:
              stage: {options: {add: [escalated]}}
            """,
        "tenants/acme/overlays/retail/flow.yaml": """
            workflow: ticket_flow
            entity: crm.ticket
            transitions:
              escalate: {from: open, to: escalated}
            """})
    registry = compiled(compile_acme(lib))
    assert [s.name for s in registry.scope().workflows["crm.ticket_flow"].states] == [
        "open", "pending", "solved"]
    assert [s.name for s in registry.scope("retail").workflows["crm.ticket_flow"].states] == [
        "open", "pending", "solved", "escalated"]


# -- rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "trigger"), [
    ("created", Trigger("created")),
    ("updated", Trigger("updated")),
    ("deleted", Trigger("deleted")),
    ("{changed: [status, score]}", Trigger("changed", fields=("status", "score"))),
    ("{changed: status}", Trigger("changed", fields=("status",))),
    ("{transitioned: [qualify]}", Trigger("transitioned", transitions=("qualify",))),
    ('{transitioned: "*"}', Trigger("transitioned")),
    ('{schedule: "0 9 * * mon-fri"}', Trigger("schedule", cron="0 9 * * mon-fri")),
    ("{schedule: '@daily'}", Trigger("schedule", cron="@daily")),
    ("{after: {field: due_on, delay: -2d}}", Trigger("after", field="due_on", delay=-172_800)),
    ("{after: {field: responded_at, delay: 1d12h}}",
     Trigger("after", field="responded_at", delay=129_600)),
])
def test_every_trigger_compiles(write_library: WriteLibrary, written: str,
                                trigger: Trigger) -> None:
    lib = library(write_library, {f"{MODULE}/rules/stale_lead.yaml": RULE.replace(
        "{after: {field: created_at, delay: 3d}}", written)})
    rule = compiled(compile_acme(lib)).scope().rules["crm.stale_lead"]
    assert rule.trigger == trigger


def test_a_module_rule_compiles(write_library: WriteLibrary) -> None:
    scope = compiled(compile_acme(library(write_library))).scope()
    rule = scope.rules["crm.stale_lead"]
    assert (rule.module, rule.name, rule.entity, rule.origin) == (
        "crm", "stale_lead", "crm.lead", "crm")
    assert rule.enabled and rule.label.get() == "Stale lead"
    assert rule.trigger == Trigger("after", field="created_at", delay=259_200)
    assert rule.when == FrozenDict({"field": "status", "op": "eq", "value": "new"})
    assert rule.actions == (FrozenDict({"create_task": FrozenDict(
        {"title": "Follow up {{ record.company }}"})}),)
    assert scope.rules_for("crm.lead") == (rule,)


def test_overlays_disable_change_and_add_rules(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "tenants/acme/overlays/tenant/rule.yaml": """
            rule: stale_lead
            entity: crm.lead
            when: {field: status, op: in, value: [new, contacted]}
            """,
        "tenants/acme/overlays/retail/off.yaml": """
            rule: stale_lead
            entity: crm.lead
            enabled: false
            """,
        "tenants/acme/overlays/retail/new.yaml": """
            rule: welcome
            entity: crm.lead
            trigger: created
            do: [{notify: {to: owner}}]
            """,
    })
    registry = compiled(compile_acme(lib))
    tenant = registry.scope().rules["crm.stale_lead"]
    assert tenant.origin == "tenant" and tenant.enabled
    assert tenant.when == FrozenDict({"field": "status", "op": "in",
                                      "value": ("new", "contacted")})
    assert tenant.trigger.kind == "after" and len(tenant.actions) == 1  # kept
    retail = registry.scope("retail")
    assert not retail.rules["crm.stale_lead"].enabled
    assert retail.rules["crm.stale_lead"].when == tenant.when
    assert [r.name for r in retail.rules_for("crm.lead")] == ["welcome"]
    assert [r.name for r in registry.scope("retail_hk").rules_for("crm.lead")] == ["welcome"]
    assert registry.scope("education").rules["crm.stale_lead"] is tenant
    assert "crm.welcome" not in registry.scope().rules


# -- calendars and SLA policies -------------------------------------------------------------

def test_a_calendar_compiles(write_library: WriteLibrary) -> None:
    calendar = compiled(compile_acme(library(write_library))).scope().calendars["crm.hk_office"]
    assert calendar.timezone == "Asia/Hong_Kong" and calendar.label.get() == "Hong Kong office"
    morning_afternoon = (("09:00", "12:00"), ("13:00", "18:00"))  # sorted
    assert dict(calendar.hours) == {0: morning_afternoon, 1: morning_afternoon,
                                    2: morning_afternoon, 3: morning_afternoon,
                                    4: (("09:00", "15:00"),), 5: (("09:00", "13:00"),)}
    assert calendar.holidays == ("2026-01-01", "2026-12-25")


def test_a_day_can_be_closed_and_24_00_ends_a_day(write_library: WriteLibrary) -> None:
    lib = library(write_library, {f"{MODULE}/calendars/hk_office.yaml": """
        calendar: hk_office
        timezone: UTC
        weekdays: ["00:00-24:00"]
        hours: {wed: []}
        """})
    calendar = compiled(compile_acme(lib)).scope().calendars["crm.hk_office"]
    assert sorted(calendar.hours) == [0, 1, 3, 4] and calendar.hours[0] == (("00:00", "24:00"),)


def test_an_sla_policy_compiles(write_library: WriteLibrary) -> None:
    policy = compiled(compile_acme(library(write_library))).scope().sla_policies["crm.lead_sla"]
    assert (policy.entity, policy.calendar, policy.by, policy.warn_at) == (
        "crm.lead", "crm.hk_office", "priority", 0.75)
    assert policy.when == FrozenDict({"field": "status", "op": "ne", "value": "disqualified"})
    assert policy.pause_when == FrozenDict({"field": "status", "op": "eq", "value": "contacted"})
    first, resolution = policy.clocks
    assert first.name == "first_response" and first.start is None
    assert dict(first.targets) == {"urgent": 3600, "high": 14_400, "": 129_600}
    assert first.field == "breached_at"
    assert first.stop == FrozenDict({"field": "responded_at", "op": "is_empty", "value": False})
    assert resolution.start == FrozenDict({"field": "status", "op": "eq", "value": "contacted"})
    assert dict(resolution.targets) == {"": 1_209_600} and resolution.field is None
    assert [(e.at, e.levels_up) for e in policy.escalations] == [(0.8, 0), (1.0, 1)]
    assert policy.escalations[1].actions == (FrozenDict({"notify": FrozenDict(
        {"to": "manager"})}),)


def test_overlays_change_a_policy_and_a_calendar(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "tenants/acme/overlays/retail/sla.yaml": """
            sla: lead_sla
            entity: crm.lead
            calendar: crm.retail_hours
            warn_at: 0.5
            """,
        "tenants/acme/overlays/retail/hours.yaml": """
            calendar: crm.retail_hours
            timezone: Asia/Shanghai
            hours: {sat: ["10:00-22:00"], sun: ["10:00-22:00"]}
            """,
        "tenants/acme/overlays/tenant/holidays.yaml": """
            calendar: crm.hk_office
            holidays: [2026-10-01]
            timezone: Asia/Hong_Kong
            """,
    })
    registry = compiled(compile_acme(lib))
    tenant = registry.scope()
    assert tenant.calendars["crm.hk_office"].holidays == ("2026-10-01",)
    assert tenant.calendars["crm.hk_office"].hours[0] == (("09:00", "12:00"), ("13:00", "18:00"))
    assert "crm.retail_hours" not in tenant.calendars
    retail = registry.scope("retail")
    policy = retail.sla_policies["crm.lead_sla"]
    assert (policy.calendar, policy.warn_at, policy.origin) == ("crm.retail_hours", 0.5,
                                                                "unit:retail")
    assert policy.clocks == tenant.sla_policies["crm.lead_sla"].clocks
    assert dict(retail.calendars["crm.retail_hours"].hours) == {
        5: (("10:00", "22:00"),), 6: (("10:00", "22:00"),)}


# -- duplicates -----------------------------------------------------------------------------

def test_duplicate_rules_compile(write_library: WriteLibrary) -> None:
    registry = compiled(compile_acme(library(write_library)))
    email, person = registry.scope().entities["crm.lead"].duplicates
    assert (email.name, email.keys, email.action, email.when) == (
        "email", (MatchKey("email", "email"),), "block", None)
    assert person.keys == (MatchKey("company", "exact"), MatchKey("contact", "text"))
    assert person.action == "review"
    assert person.when == FrozenDict({"field": "status", "op": "ne", "value": "disqualified"})
    assert registry.entities["crm.lead"].duplicates == (email, person)
    assert registry.scope().entities["crm.ticket"].duplicates == ()
    described = describe_entity(registry.scope().entities["crm.lead"], registry.scope(),
                                automation=True)
    assert described["duplicates"][0] == {"rule": "email", "action": "block",
                                          "keys": [{"field": "email", "normalise": "email"}]}
    assert list(described["workflow"]) == ["crm.lead_lifecycle"]
    assert list(described["rules"]) == ["crm.stale_lead"]
    assert described["slas"]["crm.lead_sla"]["clocks"]["first_response"]["targets"] == {
        "urgent": "1h", "high": "4h", "default": "1d12h"}
    plain = describe_entity(registry.scope().entities["crm.lead"], registry.scope())
    assert "rules" not in plain and "workflow" not in plain  # the API's _meta: no internals


def test_overlays_add_and_replace_duplicate_rules(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"tenants/acme/overlays/retail/lead.yaml": """
        extend: crm.lead
        duplicates:
          - {rule: email, keys: [{field: email, normalise: email}], action: review}
          - {rule: phone, keys: [{field: contact, normalise: phone}]}
        """})
    registry = compiled(compile_acme(lib))
    retail = registry.scope("retail").entities["crm.lead"].duplicates
    assert [(r.name, r.action) for r in retail] == [("email", "review"), ("person", "review"),
                                                    ("phone", "review")]
    assert retail[0].source is not None and "overlays/retail" in retail[0].source.file
    assert [r.action for r in registry.scope().entities["crm.lead"].duplicates] == [
        "block", "review"]
    assert [r.name for r in registry.entities["crm.lead"].duplicates] == ["email", "person"]


def test_normalisers_in_the_schema_are_the_ir_s() -> None:
    keys = static_schema("common.json")["$defs"]["duplicates"]["items"]["properties"]["keys"]
    assert tuple(keys["items"]["properties"]["normalise"]["enum"]) == NORMALISERS


# -- the metadata version -------------------------------------------------------------------

def version(write_library: WriteLibrary, files: Mapping[str, str | None]) -> str:
    return compiled(compile_acme(library(write_library, files))).version


@pytest.mark.parametrize("change", [
    {f"{MODULE}/workflows/lead_lifecycle.yaml": WORKFLOW.replace("count: 2", "count: 3")},
    {f"{MODULE}/workflows/lead_lifecycle.yaml": WORKFLOW.replace("from: new, to: contacted",
                                                                 "from: [new], to: contacted")},
    {f"{MODULE}/rules/stale_lead.yaml": RULE.replace("delay: 3d", "delay: 4d")},
    {f"{MODULE}/calendars/hk_office.yaml": CALENDAR.replace("2026-01-01", "2026-01-02")},
    {f"{MODULE}/slas/lead_sla.yaml": SLA.replace("high: 4h", "high: 5h")},
    {f"{MODULE}/entities/lead.yaml": LEAD.replace("action: block", "action: review")},
    {"tenants/acme/overlays/retail/off.yaml": "rule: stale_lead\nentity: crm.lead\n"
                                              "enabled: false\n"},
    {"tenants/acme/overlays/retail/wf.yaml": "workflow: lead_lifecycle\nentity: crm.lead\n"
                                             "remove_transitions: [contact]\n"},
    {f"{MODULE}/rules/stale_lead.yaml": None},
])
def test_a_changed_definition_changes_the_version(write_library: WriteLibrary,
                                                   change: Mapping[str, str | None]) -> None:
    before = version(write_library, {})
    assert version(write_library, change) != before


def test_layout_and_comments_keep_the_version(write_library: WriteLibrary) -> None:
    before = version(write_library, {})
    after = version(write_library, {
        f"{MODULE}/workflows/lead_lifecycle.yaml": "# the lead workflow\n" + WORKFLOW,
        f"{MODULE}/rules/stale_lead.yaml": RULE.replace("do: [", "# three days\n    do:\n      [")
    })
    assert after == before


def test_definitions_without_automation_keep_their_version(
        write_library: WriteLibrary, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash only grows a part for workflows, rules, calendars and policies when there are
    some, so definitions without any hash as they did before these kinds existed (the golden
    fixtures pin those versions)."""
    from metacrm.metadata import build

    payloads: list[Any] = []

    def dumps(payload: Any, **kwargs: Any) -> str:
        payloads.append(payload)
        return json.dumps(payload, **kwargs)

    monkeypatch.setattr(build, "json", SimpleNamespace(dumps=dumps))
    bare = {k: v for k, v in BASE.items() if "/entities/" in k or k.endswith("module.yaml")}
    lead = LEAD.split("    duplicates:")[0] + "    fields:" + LEAD.split("    fields:")[1]
    compiled(compile_acme(library(write_library, {f"{MODULE}/entities/lead.yaml": lead},
                                  base=bare)))
    assert all(len(scope) == 5 for scope in payloads[-1]["scopes"])  # no sixth part
    compiled(compile_acme(library(write_library, BASE)))
    assert all(len(scope) == 7 for scope in payloads[-1]["scopes"])  # roles, then automation


# -- diagnostics ----------------------------------------------------------------------------

WF = f"{MODULE}/workflows/lead_lifecycle.yaml"
RL = f"{MODULE}/rules/stale_lead.yaml"
CL = f"{MODULE}/calendars/hk_office.yaml"
SL = f"{MODULE}/slas/lead_sla.yaml"
EN = f"{MODULE}/entities/lead.yaml"
RETAIL = "tenants/acme/overlays/retail/x.yaml"

CASES: list[tuple[str, dict[str, str], list[tuple[str, str, int]]]] = [
    ("workflow unknown entity", {WF: "workflow: w\nentity: leed\nfield: status\n"},
     [("workflow.unknown-entity", WF, 2)]),
    ("workflow unknown field", {WF: "workflow: w\nentity: lead\nfield: state\n"},
     [("workflow.unknown-field", WF, 3)]),
    ("workflow field not enum", {WF: "workflow: w\nentity: lead\nfield: company\n"},
     [("workflow.field-not-enum", WF, 3)]),
    ("workflow needs a field", {WF: "workflow: w\nentity: lead\n"},
     [("workflow.incomplete", WF, 1)]),
    ("workflow state not an option",
     {WF: "workflow: w\nentity: lead\nfield: status\nstates:\n  new: {}\n  won: {}\n"},
     [("workflow.unknown-state", WF, 6)]),
    ("workflow initial not a state",
     {WF: "workflow: w\nentity: lead\nfield: status\ninitial: fresh\n"},
     [("workflow.unknown-state", WF, 4)]),
    ("transition from/to not a state", {WF: """
workflow: w
entity: lead
field: status
transitions:
  go:
    from: [new, nu]
    to: wonn
"""}, [("workflow.unknown-state", WF, 6), ("workflow.unknown-state", WF, 7)]),
    ("transition requires, roles, approval roles", {WF: """
workflow: w
entity: lead
field: status
transitions:
  go:
    from: new
    to: contacted
    requires: [expected_valu]
    roles: [sales_repp, administrator]
    approval: {by: role, roles: [boss]}
  ok:
    from: new
    to: qualified
    approval: {by: role}
"""}, [("workflow.unknown-field", WF, 8), ("workflow.unknown-role", WF, 9),
       ("workflow.unknown-role", WF, 10), ("workflow.approval-roles", WF, 14)]),
    ("transition condition", {WF: """
workflow: w
entity: lead
field: status
transitions:
  go:
    from: new
    to: contacted
    when:
      all:
        - {field: scor, op: gte, value: 5}
"""}, [("workflow.bad-condition", WF, 10)]),
    ("transition condition value", {WF: """
workflow: w
entity: lead
field: status
transitions:
  go: {from: new, to: contacted, when: {field: status, op: eq, value: won}}
"""}, [("workflow.bad-condition", WF, 5)]),
    ("two workflows for one entity",
     {f"{MODULE}/workflows/other.yaml": "workflow: other\nentity: lead\nfield: priority\n"},
     [("workflow.two-for-entity", f"{MODULE}/workflows/other.yaml", 1)]),
    ("remove_transitions in a module", {WF: WORKFLOW.replace(
        "    transitions:\n", "    remove_transitions: [contact]\n    transitions:\n")},
     [("workflow.remove-in-module", WF, 10)]),
    ("overlay removes an unknown transition",
     {RETAIL: "workflow: lead_lifecycle\nentity: crm.lead\nremove_transitions: [contct]\n"},
     [("workflow.unknown-transition", RETAIL, 3)]),
    ("overlay changes the field",
     {RETAIL: "workflow: lead_lifecycle\nentity: crm.lead\nfield: priority\n"},
     [("workflow.field-change", RETAIL, 3)]),
    ("overlay moves to another entity",
     {RETAIL: "workflow: lead_lifecycle\nentity: crm.ticket\nfield: stage\n"},
     [("workflow.entity-mismatch", RETAIL, 2)]),
    ("overlay names a bare entity",
     {RETAIL: "workflow: lead_lifecycle\nentity: lead\n"},
     [("overlay.bare-entity", RETAIL, 2)]),
    ("rule unknown entity", {RL: RULE.replace("entity: lead", "entity: leads")},
     [("rule.unknown-entity", RL, 2)]),
    ("rule changed unknown field", {RL: RULE.replace(
        "{after: {field: created_at, delay: 3d}}", "{changed: [status, stauts]}")},
     [("rule.unknown-field", RL, 4)]),
    ("rule unknown transition", {RL: RULE.replace(
        "{after: {field: created_at, delay: 3d}}", "{transitioned: [qualfy]}")},
     [("rule.unknown-transition", RL, 4)]),
    ("rule transitioned without a workflow", {
        RL: RULE.replace("{after: {field: created_at, delay: 3d}}", '{transitioned: "*"}'),
        WF: None},  # type: ignore[dict-item]
     [("rule.no-workflow", RL, 4)]),
    ("rule bad cron", {RL: RULE.replace("{after: {field: created_at, delay: 3d}}",
                                        '{schedule: "0 25 * * *"}')},
     [("rule.bad-cron", RL, 4)]),
    ("rule six-field cron", {RL: RULE.replace("{after: {field: created_at, delay: 3d}}",
                                              '{schedule: "* * * * * *"}')},
     [("rule.bad-cron", RL, 4)]),
    ("rule after a text field", {RL: RULE.replace("field: created_at", "field: company")},
     [("rule.bad-after-field", RL, 4)]),
    ("rule after an unknown field", {RL: RULE.replace("field: created_at", "field: due")},
     [("rule.bad-after-field", RL, 4)]),
    ("rule bad delay", {RL: RULE.replace("delay: 3d", "delay: 3days")},
     [("schema.pattern", RL, 4)]),
    ("rule bad condition", {RL: RULE.replace("op: eq", "op: equals")},
     [("rule.bad-condition", RL, 5)]),
    ("rule needs trigger and do", {RL: "rule: r\nentity: lead\n"},
     [("rule.incomplete", RL, 1)]),
    ("calendar unknown timezone", {CL: CALENDAR.replace("Asia/Hong_Kong", "Asia/Hongkong_x")},
     [("calendar.unknown-timezone", CL, 3)]),
    ("calendar bad spans", {CL: CALENDAR.replace('"09:00-12:00"', '"12:00-09:00"').replace(
        '["09:00-13:00"]', '["09:00-13:00", "12:00-14:00", "25:00-26:00"]')},
     [("calendar.bad-span", CL, 4), ("calendar.overlapping-spans", CL, 5),
      ("calendar.bad-span", CL, 5)]),
    ("calendar bad holiday", {CL: CALENDAR.replace("2026-12-25", "2026-02-30")},
     [("calendar.bad-holiday", CL, 6)]),
    ("calendar without hours", {CL: "calendar: hk_office\ntimezone: UTC\n"},
     [("calendar.no-hours", CL, 1)]),
    ("sla unknown calendar", {SL: SLA.replace("calendar: hk_office", "calendar: hk_ofice")},
     [("sla.unknown-calendar", SL, 3)]),
    ("sla by not an enum", {SL: SLA.replace("by: priority", "by: score")},
     [("sla.bad-by", SL, 4)]),
    ("sla target not an option", {SL: SLA.replace("high: 4h", "hihg: 4h")},
     [("sla.unknown-target", SL, 11)]),
    ("sla target without by", {SL: SLA.replace("    by: priority\n", "")},
     [("sla.unknown-target", SL, 10)]),
    ("sla zero target", {SL: SLA.replace("high: 4h", "high: 0h")},
     [("sla.bad-target", SL, 11)]),
    ("sla conditions and clock field", {SL: SLA.replace("op: is_empty", "op: empty").replace(
        "field: breached_at", "field: due_on").replace("value: contacted}\n    warn",
                                                       "value: contactd}\n    warn")},
     [("sla.bad-condition", SL, 10), ("sla.bad-clock-field", SL, 12),
      ("sla.bad-condition", SL, 6)]),
    ("sla unknown entity", {SL: SLA.replace("entity: lead", "entity: lad")},
     [("sla.unknown-entity", SL, 2)]),
    ("match rule unknown field", {EN: LEAD.replace("field: contact,", "field: contacts,")},
     [("duplicates.unknown-field", EN, 6)]),
    ("match rule twice", {EN: LEAD.replace("rule: person", "rule: email")},
     [("duplicates.duplicate-rule", EN, 6)]),
    ("match rule condition", {EN: LEAD.replace("value: disqualified}", "value: lost}")},
     [("duplicates.bad-condition", EN, 7)]),]


@pytest.mark.parametrize(("files", "expected"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_problem_is_reported_where_it_is_written(
        write_library: WriteLibrary, files: dict[str, str | None],
        expected: list[tuple[str, str, int]]) -> None:
    result = compile_acme(library(write_library, files))
    assert result.registry is None
    assert found(result) == set(expected), "\n".join(d.format() for d in result.diagnostics)
    for diagnostic in result.diagnostics:
        assert diagnostic.column >= 1 and diagnostic.message


def test_actions_are_checked_against_the_registry(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        WF: WORKFLOW.replace("{notify: {to: owner}}", "{notfy: {to: owner}}"),
        RL: RULE.replace('{title: "Follow up {{ record.company }}"}', "{titel: x}"),
        SL: SLA.replace("{notify: {to: manager}}", "{page: {to: manager}}"),
    })
    result = compile_acme(lib)
    assert found(result) == {("action.unknown", WF, 20), ("action.bad-params", RL, 6),
                             ("action.unknown", SL, 19)}
    messages = {d.code: d for d in result.diagnostics}
    assert messages["action.unknown"].hint is not None
    assert "notify" in (next(d for d in result.diagnostics if d.file == WF).hint or "")
    # with no action registered at all, names cannot be checked and are not
    assert compile_acme(lib, ActionRegistry([])).ok


def test_cli_validate_and_show(write_library: WriteLibrary,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ActionRegistry, "from_plugins", classmethod(lambda cls, _: ACTIONS))
    lib = library(write_library)
    runner = CliRunner()
    result = runner.invoke(main, ["--root", str(lib.root), "validate"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["--root", str(lib.root), "show", "acme", "crm.lead",
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["workflow"]["crm.lead_lifecycle"]["transitions"]["disqualify"]["from"] == [
        "new", "contacted"]
    assert shown["rules"]["crm.stale_lead"]["trigger"] == {
        "after": {"field": "created_at", "delay": "3d"}}


def test_schema_export_includes_the_new_kinds(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for kind in ("workflow", "rule", "calendar", "sla"):
        schema = json.loads((tmp_path / f"{kind}.schema.json").read_text("utf-8"))
        assert kind in schema["properties"] and "condition" in schema["$defs"]
    entity = json.loads((tmp_path / "entity.schema.json").read_text("utf-8"))
    assert "duplicates" in entity["properties"]
