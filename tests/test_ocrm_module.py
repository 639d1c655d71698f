"""The sales module (ocrm) as shipped, with acme's two business units, on SQLite and
PostgreSQL: the pipeline's probabilities, lead conversion, round-robin assignment with
caps, the stage clock and stale-deal reminders with their escalation, activities, tasks,
roles, and what the retail and education overlays change."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import pytest
from dbfixtures import Project
from salesworld import (
    ACCOUNT,
    ACTIVITY,
    CONTACT,
    LEAD,
    OPPORTUNITY,
    TASK,
    Sales,
    build_sales,
)

from metacrm.metadata.compiler import Compiler
from metacrm.metadata.ir import Registry
from metacrm.metadata.library import Library

pytest_plugins = ["apifixtures"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROBABILITY = {"prospecting": 10, "qualification": 25, "proposal": 60, "negotiation": 80,
               "won": 100, "lost": 0}


@pytest.fixture
def sales(make_platform: Project) -> Sales:
    return build_sales(make_platform)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def opportunity(sales: Sales, who: str = "ming", **values: Any) -> dict[str, Any]:
    account = sales.create(ACCOUNT, who, name=f"Account of {who}")
    return sales.create(OPPORTUNITY, who, name="Big deal", account=account["id"], **values)


# -- the definitions (no database) --------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    result = Compiler(Library.at(PROJECT_ROOT)).compile_tenant("acme")
    assert result.registry is not None, "\n".join(d.format() for d in result.diagnostics)
    return result.registry


def test_the_module_compiles_with_its_entities_workflows_rules_and_roles(
        registry: Registry) -> None:
    module = registry.modules["ocrm"]
    assert module.owner == "sales-ops" and module.depends == ("customer",)
    scope = registry.scope()
    assert {k for k in scope.entities if k.startswith("ocrm.")} == {
        LEAD, ACCOUNT, CONTACT, OPPORTUNITY, ACTIVITY, TASK}
    assert registry.entities[ACCOUNT].get_field("customer").target == "customer.customer"
    assert registry.entities[ACTIVITY].get_field("type").option_values == (
        "call", "visit", "email", "meeting")
    lead_flow = scope.workflow_for(LEAD)
    assert lead_flow is not None and lead_flow.field == "status"
    assert lead_flow.transition("convert").actions[0]["convert"]["records"]["account"][
        "link"] == "converted_account"
    assert scope.workflow_for(OPPORTUNITY).field == "stage"
    stale = {r.name: r for r in scope.rules_for(OPPORTUNITY) if r.name.startswith("stale_")}
    days = {name: rule.trigger.delay // 86400 for name, rule in stale.items()}
    assert days == {"stale_prospecting": 14, "stale_prospecting_escalation": 21,
                    "stale_qualification": 10, "stale_qualification_escalation": 15,
                    "stale_proposal": 7, "stale_proposal_escalation": 11,
                    "stale_negotiation": 5, "stale_negotiation_escalation": 8}
    assert all(r.trigger.field == "stage_changed_at" for r in stale.values())
    # roles merge across modules: the customer module's sales_rep plus ocrm's grants
    rep = scope.roles["sales_rep"]
    assert "customer.customer" in rep.grants and LEAD in rep.grants
    assert rep.grants[OPPORTUNITY].fields["stage_changed_at"] == "read"
    assert rep.grants[TASK].actions["read"].scope == "assigned"


def test_each_business_unit_shapes_sales_its_own_way(registry: Registry) -> None:
    retail, education, tenant = (registry.scope("retail"), registry.scope("education"),
                                 registry.scope())
    retail_lead, education_lead = retail.entities[LEAD], education.entities[LEAD]
    assert retail_lead.get_field("store_code") is not None
    assert "store_walk_in" in retail_lead.get_field("source").option_values
    assert education_lead.get_field("store_code") is None
    assert "store_walk_in" not in education_lead.get_field("source").option_values
    assert {"program", "intake", "student_grade"} <= set(education_lead.field_names)
    assert "program" not in retail_lead.field_names
    assert "store_walk_in" not in tenant.entities[LEAD].get_field("source").option_values
    # one table for both: the stored lead has every unit's fields
    assert {"store_code", "program", "intake"} <= set(registry.entities[LEAD].field_names)
    # education enrols without negotiating; retail keeps the module's pipeline
    edu_flow, retail_flow = (education.workflow_for(OPPORTUNITY),
                             retail.workflow_for(OPPORTUNITY))
    assert edu_flow.transition("enrol").requires == ("program", "intake")
    assert edu_flow.transition("negotiate") is None
    assert retail_flow.transition("negotiate") is not None
    assert retail_flow.transition("enrol") is None
    # the walk-in rule exists for retail only
    assert "ocrm.store_walk_in_followup" in retail.rules
    assert "ocrm.store_walk_in_followup" not in education.rules
    assert "ocrm.store_walk_in_followup" not in tenant.rules


# -- the pipeline -------------------------------------------------------------------------------


def test_probability_and_weighted_amount_follow_the_stage(sales: Sales) -> None:
    deal = opportunity(sales, amount="200000.00", close_date="2030-01-31")
    assert (deal["stage"], deal["probability"]) == ("prospecting", 10)
    assert decimal.Decimal(str(deal["weighted_amount"])) == decimal.Decimal("20000")
    for name, stage in (("qualify", "qualification"), ("propose", "proposal"),
                        ("negotiate", "negotiation"), ("win", "won")):
        moved = sales.moved(OPPORTUNITY, deal["id"], name, "ming")["record"]
        assert moved["stage"] == stage
        assert moved["probability"] == PROBABILITY[stage]
        assert decimal.Decimal(str(moved["weighted_amount"])) == \
            decimal.Decimal(200000 * PROBABILITY[stage]) / 100
    lost = opportunity(sales)
    refused = problem(sales.take(OPPORTUNITY, lost["id"], "lose", "ming"), 409)
    assert "lost_reason" in refused["detail"]
    done = sales.moved(OPPORTUNITY, lost["id"], "lose", "ming", {"lost_reason": "price"})
    assert done["record"]["probability"] == 0


def test_the_stage_is_changed_only_through_the_pipeline(sales: Sales) -> None:
    deal = opportunity(sales)
    refused = problem(sales.demo.patch(sales.url(OPPORTUNITY, deal["id"]), {"stage": "won"},
                                       who="ming"), 409)
    assert "transition" in refused["detail"]
    skipped = problem(sales.take(OPPORTUNITY, deal["id"], "propose", "ming"), 409)
    assert "prospecting" in skipped["detail"]
    needs = problem(sales.take(OPPORTUNITY, deal["id"], "win", "ming"), 409)
    assert needs["detail"]
    # only a manager reopens a lost deal
    sales.moved(OPPORTUNITY, deal["id"], "lose", "ming", {"lost_reason": "no_budget"})
    problem(sales.take(OPPORTUNITY, deal["id"], "reopen", "ming"), 403)
    assert sales.moved(OPPORTUNITY, deal["id"], "reopen", "hua")["record"]["stage"] == \
        "prospecting"


def test_the_stage_clock_restarts_on_every_stage_change(sales: Sales) -> None:
    deal = opportunity(sales)
    started = deal["stage_changed_at"]
    assert started is not None  # set when the deal is made
    sales.drain()
    later = sales.clock.advance(days=3)
    sales.moved(OPPORTUNITY, deal["id"], "qualify", "ming")
    sales.drain()
    record = sales.get(OPPORTUNITY, deal["id"])
    assert record["stage_changed_at"] != started
    assert abs(_instant(record["stage_changed_at"]) - later).total_seconds() < 1
    # reps read the clock; only the rules move it
    refused = problem(sales.demo.patch(sales.url(OPPORTUNITY, deal["id"]),
                                       {"stage_changed_at": started}, who="ming"), 403)
    assert "stage_changed_at" in refused["detail"]


def _instant(text: str) -> Any:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def test_a_stale_deal_reminds_its_owner_then_escalates_to_the_manager(sales: Sales) -> None:
    stuck = opportunity(sales, "ming")
    moving = opportunity(sales, "ming")
    sales.drain()
    sales.sweep()  # the rules start watching
    sales.clock.advance(days=8)
    sales.moved(OPPORTUNITY, moving["id"], "qualify", "ming")  # moves on: its clock restarts
    sales.drain()
    sales.clock.advance(days=6, hours=1)  # stuck: 14 days in prospecting
    sales.sweep()
    tasks = sales.all(TASK, opportunity=stuck["id"])
    assert [(t["assignee"], t["priority"]) for t in tasks] == [(sales.ids["ming"], "high")]
    assert "14 days in prospecting" in tasks[0]["title"]
    assert tasks[0]["related_entity"] == OPPORTUNITY and tasks[0]["related_id"] == stuck["id"]
    assert sales.all(TASK, opportunity=moving["id"]) == []  # 6 days in qualification
    sales.clock.advance(days=7)  # 21 days: the owner's manager (hua, retail-north) steps in
    sales.sweep()
    tasks = sales.all(TASK, opportunity=stuck["id"])
    escalated = [t for t in tasks if t["assignee"] == sales.ids["hua"]]
    assert len(tasks) == 2 and len(escalated) == 1
    assert escalated[0]["priority"] == "urgent" and "Escalated" in escalated[0]["title"]
    runs = [r for r in sales.runs(rule="ocrm.stale_prospecting_escalation")
            if r["record_id"] == stuck["id"]]
    assert [r["status"] for r in runs] == ["done"]
    notified = runs[0]["results"][1]["result"]["messages"]
    assert notified[0]["to"] == "hua@acme.example"
    # the deal that moved on gets its own reminder after 10 days in qualification
    tasks = sales.all(TASK, opportunity=moving["id"])
    assert [t["assignee"] for t in tasks] == [sales.ids["ming"]]
    assert "in qualification" in tasks[0]["title"]
    sales.sweep()  # nothing fires twice
    assert len(sales.all(TASK, opportunity=stuck["id"])) == 2


# -- leads --------------------------------------------------------------------------------------


def test_converting_a_lead_makes_an_account_contact_and_opportunity_linked_back(
        sales: Sales) -> None:
    customer = sales.create("customer.customer", "ming", display_name="Acme Foods",
                            kind="company")
    lead = sales.create(LEAD, "ming", company="Acme Foods", contact_name="陳大文",
                        job_title="採購經理", email="dawen@foods.example", source="referral",
                        store_code="TPE-01", customer=customer["id"])
    assert lead["status"] == "new" and lead["number"].startswith("L-")
    refused = problem(sales.take(LEAD, lead["id"], "convert", "ming"), 409)
    assert "`new`" in refused["detail"]
    needs = problem(sales.take(LEAD, lead["id"], "qualify", "ming"), 409)
    assert needs["errors"] == {"expected_value": ["required by this transition"]}
    sales.moved(LEAD, lead["id"], "qualify", "ming", {"expected_value": "880000"})
    result = sales.moved(LEAD, lead["id"], "convert", "ming")
    assert result["to"] == "converted"
    assert [a["ok"] for a in result["actions"]] == [True], result["actions"]
    after = sales.get(LEAD, lead["id"])
    account = sales.get(ACCOUNT, after["converted_account"])
    contact = sales.get(CONTACT, after["converted_contact"])
    deal = sales.get(OPPORTUNITY, after["converted_opportunity"])
    assert after["converted_at"] is not None
    assert (account["name"], account["customer"]) == ("Acme Foods", customer["id"])
    assert (contact["name"], contact["account"], contact["email"], contact["is_primary"]) == (
        "陳大文", account["id"], "dawen@foods.example", True)
    assert (deal["account"], deal["contact"], deal["stage"]) == (
        account["id"], contact["id"], "prospecting")
    assert decimal.Decimal(str(deal["amount"])) == decimal.Decimal("880000")
    assert deal["name"] == f"Acme Foods · {lead['number']}"
    for record in (account, contact, deal):  # the rep keeps what they converted
        assert record["owner"] == sales.ids["ming"]
        assert record["business_unit"] == "retail"
    # converted is final; the links are the platform's to write
    problem(sales.take(LEAD, lead["id"], "disqualify", "ming",
                       {"disqualified_reason": "x"}), 409)
    problem(sales.demo.patch(sales.url(LEAD, lead["id"]), {"converted_account": None},
                             who="ming"), 403)


def test_new_web_leads_go_round_robin_within_the_owners_team(sales: Sales) -> None:
    made = [sales.create(LEAD, "ming", company=f"Web {n}", contact_name="X", source="web")
            for n in range(4)]
    referral = sales.create(LEAD, "ming", company="Friend", contact_name="Y",
                            source="referral")
    sales.drain()
    owners = [sales.get(LEAD, lead["id"])["owner"] for lead in made]
    ming, wei = sales.ids["ming"], sales.ids["wei"]
    assert owners == [ming, wei, ming, wei]  # retail-taipei-1: ming and wei, in turn
    assert sales.get(LEAD, referral["id"])["owner"] == ming  # not a web or event lead
    # education's team is another team
    edu = [sales.create(LEAD, "mei", company=f"Edu {n}", contact_name="Z", source="event")
           for n in range(2)]
    sales.drain()
    assert {sales.get(LEAD, lead["id"])["owner"] for lead in edu} == {
        sales.ids["mei"], sales.ids["jun"]}


def test_the_assignment_cap_keeps_anyone_from_holding_too_many_open_leads(
        sales: Sales) -> None:
    """A tenant overlay lowers the cap to 2 (YAML only) to show it."""
    sales.demo.project.write({f"tenants/{sales.demo.slug}/overlays/tenant/caps.yaml": """
        rule: lead_assignment
        entity: ocrm.lead
        do:
          - assign:
              strategy: round_robin
              unit: owner_team
              cap: 2
              open_when: {field: status, op: in, value: [new, contacted, qualified]}
        """})
    assert sales.platform.reload(sales.demo.slug).ok
    made = [sales.create(LEAD, "ming", company=f"Web {n}", contact_name="X", source="web")
            for n in range(5)]
    sales.drain()
    owners = [sales.get(LEAD, lead["id"])["owner"] for lead in made]
    ming, wei = sales.ids["ming"], sales.ids["wei"]
    assert owners.count(wei) == 2  # wei is full at 2
    runs = {r["record_id"]: r for r in sales.runs(rule="ocrm.lead_assignment")}
    refused = [runs[lead["id"]] for lead in made if runs[lead["id"]]["status"] != "done"]
    assert refused and all("cap" in (r["last_error"] or "") for r in refused)
    # closing leads frees room: disqualifying ming's open leads lets the next one in
    for lead, owner in zip(made, owners, strict=True):
        if owner == ming:
            sales.moved(LEAD, lead["id"], "disqualify", "admin", {"disqualified_reason": "x"})
    late = sales.create(LEAD, "ming", company="Late", contact_name="X", source="web")
    sales.drain()
    assert sales.get(LEAD, late["id"])["owner"] == ming


def test_the_lead_lifecycle_and_its_permissions(sales: Sales) -> None:
    lead = sales.create(LEAD, "ming", company="Team lead", contact_name="A",
                        source="cold_call")
    sales.moved(LEAD, lead["id"], "contact", "ming")
    problem(sales.take(LEAD, lead["id"], "disqualify", "ming"), 409)  # needs a reason
    sales.moved(LEAD, lead["id"], "disqualify", "ming", {"disqualified_reason": "no budget"})
    problem(sales.take(LEAD, lead["id"], "reopen", "ming"), 403)  # managers only
    assert sales.moved(LEAD, lead["id"], "reopen", "hua")["record"]["status"] == "new"
    # wei (same team) reads ming's lead but may not change it; ting (another team) does
    # not even see it; mei (education) neither
    assert sales.get(LEAD, lead["id"], "wei")["company"] == "Team lead"
    problem(sales.demo.patch(sales.url(LEAD, lead["id"]), {"score": 5}, who="wei"), 403)
    problem(sales.take(LEAD, lead["id"], "contact", "wei"), 403)
    for outsider in ("ting", "mei"):
        assert sales.demo.get(sales.url(LEAD, lead["id"]), who=outsider).status_code == 404
    assert sales.get(LEAD, lead["id"], "chen")["company"] == "Team lead"  # auditor reads all


# -- overlays -----------------------------------------------------------------------------------


def test_a_store_walk_in_gets_a_call_back_task_in_retail_only(sales: Sales) -> None:
    walk_in = sales.create(LEAD, "ming", company="Walk-in", contact_name="林小姐",
                           source="store_walk_in", store_code="TPE-02")
    sales.drain()
    tasks = sales.all(TASK, lead=walk_in["id"])
    assert [(t["title"], t["assignee"]) for t in tasks] == [
        ("回電門市來客 林小姐（TPE-02）", sales.ids["ming"])]  # noqa: RUF001
    due = _instant(tasks[0]["due_at"]) - sales.clock.now
    assert 23 * 3600 < due.total_seconds() <= 24 * 3600
    # education has neither the option nor the rule
    refused = problem(sales.demo.post(sales.url(LEAD), {
        "company": "School", "contact_name": "B", "source": "store_walk_in"}, who="mei"), 422)
    assert "source" in refused["errors"]
    problem(sales.demo.post(sales.url(LEAD), {"company": "School", "contact_name": "B",
                                              "store_code": "X"}, who="mei"), 422)
    school = sales.create(LEAD, "mei", company="School", contact_name="B", source="event",
                          program="coding", intake="2026-09-01", student_grade=7)
    sales.drain()
    assert sales.all(TASK, lead=school["id"]) == []


def test_education_enrols_without_negotiating(sales: Sales) -> None:
    deal = opportunity(sales, "mei", program="english", amount="36000")
    sales.moved(OPPORTUNITY, deal["id"], "qualify", "mei")
    assert problem(sales.take(OPPORTUNITY, deal["id"], "enrol", "mei"), 409)["errors"] == {
        "intake": ["required by this transition"]}
    won = sales.moved(OPPORTUNITY, deal["id"], "enrol", "mei", {"intake": "2026-09-01"})
    assert (won["record"]["stage"], won["record"]["probability"]) == ("won", 100)
    other = opportunity(sales, "mei", amount="1000", close_date="2030-01-01")
    sales.moved(OPPORTUNITY, other["id"], "qualify", "mei")
    sales.moved(OPPORTUNITY, other["id"], "propose", "mei")
    problem(sales.take(OPPORTUNITY, other["id"], "negotiate", "mei"), 404)
    # retail has no `enrol`, and keeps negotiating
    retail = opportunity(sales, "ming", amount="1000", close_date="2030-01-01")
    sales.moved(OPPORTUNITY, retail["id"], "qualify", "ming")
    problem(sales.take(OPPORTUNITY, retail["id"], "enrol", "ming"), 404)
    sales.moved(OPPORTUNITY, retail["id"], "propose", "ming")
    sales.moved(OPPORTUNITY, retail["id"], "negotiate", "ming")


# -- activities and tasks -----------------------------------------------------------------------


def test_activities_and_tasks_belong_to_their_people(sales: Sales) -> None:
    deal = opportunity(sales, "ming")
    kinds = []
    for kind in ("call", "visit", "email", "meeting"):
        activity = sales.create(ACTIVITY, "ming", type=kind, subject=f"{kind} about it",
                                opportunity=deal["id"], due_at="2030-01-01T10:00:00+08:00")
        kinds.append(activity["type"])
    assert kinds == ["call", "visit", "email", "meeting"]
    problem(sales.demo.post(sales.url(ACTIVITY), {"type": "fax", "subject": "x"},
                            who="ming"), 422)
    call = sales.all(ACTIVITY, type="call")[0]
    sales.demo.patch(sales.url(ACTIVITY, call["id"]), {"done": True}, who="ming")
    sales.drain()
    assert sales.get(ACTIVITY, call["id"])["done_at"] is not None
    # a task ming gives wei: wei sees and works it (assigned), ting does not see it
    task = sales.create(TASK, "ming", title="Send the quote", assignee=sales.ids["wei"],
                        opportunity=deal["id"], due_at="2030-01-02T09:00:00+08:00")
    assert task["status"] == "open" and task["priority"] == "normal"
    assert sales.get(TASK, task["id"], "wei")["title"] == "Send the quote"
    assert sales.demo.get(sales.url(TASK, task["id"]), who="ting").status_code == 404
    response = sales.demo.patch(sales.url(TASK, task["id"]), {"status": "done"}, who="wei")
    assert response.status_code == 200, response.get_data(as_text=True)
    sales.drain()
    assert sales.get(TASK, task["id"])["done_at"] is not None
    # the opportunity lists its activities and tasks
    record = sales.demo.get(sales.url(OPPORTUNITY, deal["id"])).get_json()
    assert record["id"] == deal["id"]
