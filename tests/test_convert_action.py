"""The `convert` rule action (metacrm.engines.actions.convert), on SQLite and PostgreSQL:
records made in order with templates that see the earlier ones, links written back,
a retried conversion that finishes instead of duplicating, refusals that say why, its
use from a rule as well as a transition, and its parameters checked when definitions
compile."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from dbfixtures import Project
from salesworld import ACCOUNT, CONTACT, LEAD, Sales, build_sales

from metacrm.engines.actions import ActionContext, ActionFailed, actions_of
from metacrm.metadata.compiler import Compiler
from metacrm.metadata.library import Library

pytest_plugins = ["apifixtures"]

SPEC: dict[str, Any] = {"convert": {
    "records": {
        "account": {"entity": "ocrm.account", "link": "converted_account",
                    "values": {"name": "{{ record.company }}"}},
        "contact": {"entity": "ocrm.contact", "link": "converted_contact",
                    "values": {"name": "{{ record.contact_name }}",
                               "account": "{{ created.account.id }}",
                               "job_title": "of {{ created.account.name }}"}}},
    "set": {"description": "converted by {{ event.kind or 'hand' }}"}}}


@pytest.fixture
def sales(make_platform: Project) -> Sales:
    return build_sales(make_platform)


def run(sales: Sales, record_id: int, spec: dict[str, Any], key: str = "k") -> Any:
    record = sales.system("retail").get(LEAD, record_id)
    context = ActionContext(sales.platform, sales.runtime, LEAD, record, "test", key,
                            extras={"scope": "retail"})
    return actions_of(sales.platform).run(context, spec)


def test_records_are_made_in_order_linked_back_and_never_twice(sales: Sales) -> None:
    lead = sales.create(LEAD, "ming", company="Tea House", contact_name="Ann")
    result = run(sales, lead["id"], SPEC)
    assert [(r["name"], r["entity"]) for r in result["records"]] == [
        ("account", ACCOUNT), ("contact", CONTACT)]
    assert result["linked"] == ["converted_account", "converted_contact"]
    after = sales.get(LEAD, lead["id"])
    assert after["description"] == "converted by hand"
    account = sales.get(ACCOUNT, after["converted_account"])
    contact = sales.get(CONTACT, after["converted_contact"])
    assert account["name"] == "Tea House" and account["owner"] == sales.ids["ming"]
    assert (contact["account"], contact["job_title"]) == (account["id"], "of Tea House")
    assert contact["owner"] == sales.ids["ming"] and contact["business_unit"] == "retail"
    # a second run (a retry) uses the linked records instead of making new ones
    again = run(sales, lead["id"], SPEC)
    assert [r.get("existing") for r in again["records"]] == [True, True]
    assert len(sales.all(ACCOUNT)) == 1 and len(sales.all(CONTACT)) == 1


def test_a_half_done_conversion_is_finished_by_the_retry(sales: Sales) -> None:
    lead = sales.create(LEAD, "ming", company="Half", contact_name="Bo")
    first = {"convert": {"records": {"account": SPEC["convert"]["records"]["account"]}}}
    run(sales, lead["id"], first)
    account_id = sales.get(LEAD, lead["id"])["converted_account"]
    result = run(sales, lead["id"], SPEC)
    assert [r.get("existing", False) for r in result["records"]] == [True, False]
    contact = sales.get(CONTACT, sales.get(LEAD, lead["id"])["converted_contact"])
    assert contact["account"] == account_id
    assert len(sales.all(ACCOUNT)) == 1


def test_refusals_say_why_and_are_not_retried(sales: Sales) -> None:
    lead = sales.create(LEAD, "ming", company="Odd", contact_name="Cy")
    cases = {
        "converted_contact": {"records": {"a": {"entity": "ocrm.account",
                                                "link": "converted_contact",
                                                "values": {"name": "x"}}}},
        "template": {"records": {"a": {"entity": "ocrm.account",
                                       "values": {"name": "{{ created.nothing.id }}"}}}},
        "ocrm.nothing": {"records": {"a": {"entity": "ocrm.nothing", "values": {}}}},
        "name": {"records": {"a": {"entity": "ocrm.account", "values": {}}}},
    }
    for needle, params in cases.items():
        with pytest.raises(ActionFailed) as caught:
            run(sales, lead["id"], {"convert": params})
        assert needle in str(caught.value) and not caught.value.retryable, str(caught.value)
    assert sales.all(ACCOUNT) == []


def test_a_rule_converts_too(sales: Sales) -> None:
    """A tenant overlay rule (YAML only): partner leads become accounts at once."""
    sales.demo.project.write({f"tenants/{sales.demo.slug}/overlays/tenant/partners.yaml": """
        rule: partner_leads_become_accounts
        entity: ocrm.lead
        trigger: created
        when: {field: source, op: eq, value: partner}
        do:
          - convert:
              records:
                account:
                  entity: ocrm.account
                  link: converted_account
                  values: {name: "{{ record.company }} (partner)", industry: other}
        """})
    assert sales.platform.reload(sales.demo.slug).ok
    partner = sales.create(LEAD, "mei", company="Bridge", contact_name="Di", source="partner")
    other = sales.create(LEAD, "mei", company="Plain", contact_name="Ed", source="referral")
    sales.drain()
    account = sales.get(ACCOUNT, sales.get(LEAD, partner["id"])["converted_account"])
    assert (account["name"], account["owner"]) == ("Bridge (partner)", sales.ids["mei"])
    assert sales.get(LEAD, other["id"])["converted_account"] is None


def test_its_parameters_are_checked_when_definitions_compile(write_library: Any) -> None:
    library: Library = write_library({
        "metadata/modules/crm/module.yaml": "module: crm\nowner: t\n",
        "metadata/modules/crm/entities/lead.yaml": textwrap.dedent("""
            entity: lead
            fields:
              name: {type: string}
            """),
        "metadata/modules/crm/rules/bad.yaml": textwrap.dedent("""
            rule: bad
            entity: lead
            trigger: created
            do:
              - convert: {records: {a: {entity: crm.lead}}}
            """),
        "tenants/t1/tenant.yaml": "tenant: t1\nmodules: [crm]\n",
    })
    result = Compiler(library).compile_tenant("t1")
    assert result.registry is None
    problems = [d for d in result.diagnostics if d.code == "action.bad-params"]
    assert problems and "values" in problems[0].message
