"""The workflow engine through its Python interface, on SQLite and PostgreSQL: refusals
and their reasons, the state field's guard, history, approvals (n of m, up a manager
chain), actions, and hot reload of the YAML."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from dbfixtures import Project
from workflowworld import LEAD, SLUG, TICKET, WORKFLOW, World, build_world

from metacrm.engines.workflows import (
    APPROVALS,
    HISTORY,
    VOTES,
    WorkflowEngine,
    record_history,
    take_transition,
    vote,
    waiting_for,
    workflow_bypass,
)
from metacrm.platform.events import RecordEvent
from metacrm.platform.records import (
    Actor,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RecordError,
    RecordService,
    ValidationFailed,
)
from metacrm.platform.systables import runtime_system_tables


@pytest.fixture
def world(make_platform: Project) -> World:
    return build_world(make_platform)


def take(world: World, who: str | None, record_id: int, name: str, entity: str = LEAD,
         **kwargs: Any) -> Any:
    return take_transition(world.platform, world.runtime, entity, record_id, name,
                           actor=world.actor(who), **kwargs)


def refused(world: World, who: str | None, record_id: int, name: str, error: type,
            **kwargs: Any) -> RecordError:
    with pytest.raises(error) as caught:
        take(world, who, record_id, name, **kwargs)
    return caught.value


def engine(world: World, who: str | None) -> WorkflowEngine:
    return WorkflowEngine(world.platform, world.runtime, world.actor(who))


def decide(world: World, who: str, record_id: int, approval_id: int,
           decision: str = "approve", comment: str | None = None) -> dict[str, Any]:
    return vote(engine(world, who), LEAD, record_id, approval_id, decision, comment)


def state(world: World, record_id: int, entity: str = LEAD) -> str:
    return RecordService(world.runtime).get(entity, record_id)[
        "status" if entity == LEAD else "stage"]


def rows(world: World, table: str) -> list[dict[str, Any]]:
    found = runtime_system_tables(world.runtime).table(table)
    with world.runtime.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(found).order_by(found.c.id))
                .mappings()]


def events_of(world: World) -> list[RecordEvent]:
    seen: list[RecordEvent] = []
    world.platform.subscribe(seen.append)
    return seen


# -- moving ------------------------------------------------------------------------------------

def test_a_transition_moves_the_record_and_writes_history_audit_and_event(world: World) -> None:
    lead = world.lead(score=70)
    seen = events_of(world)
    result = take(world, "rep", lead["id"], "contact", comment="called them")
    assert (result.status, result.from_state, result.to_state) == ("done", "new", "contacted")
    assert result.record["status"] == "contacted" and state(world, lead["id"]) == "contacted"
    (entry,) = record_history(engine(world, "rep"), LEAD, lead["id"])
    assert entry["id"] == result.history_id
    assert (entry["transition"], entry["from"], entry["to"], entry["actor"],
            entry["comment"]) == ("contact", "new", "contacted", world.ids["rep"],
                                  "called them")
    (event,) = seen
    assert (event.kind, event.transition, event.changes["status"]) == (
        "updated", "contact", ("new", "contacted"))
    audit = RecordService(world.runtime).history(LEAD, lead["id"])
    assert audit[-1]["changes"]["status"] == {"before": "new", "after": "contacted"}


def test_values_fill_required_fields_in_the_same_move(world: World) -> None:
    lead = world.lead(score=70)
    take(world, "rep", lead["id"], "contact")
    seen = events_of(world)
    error = refused(world, "rep", lead["id"], "qualify", Conflict)
    assert "`expected_value`" in error.detail and error.errors == {
        "expected_value": ["required by this transition"]}
    assert [r["code"] for r in error.extra["reasons"]] == ["requires"]
    result = take(world, "rep", lead["id"], "qualify", values={"expected_value": "1200.50"})
    assert result.record["expected_value"] == "1200.50"
    (event,) = seen  # one write: the value and the state together
    assert event.transition == "qualify"
    assert set(event.changes) == {"status", "expected_value"}
    audit = RecordService(world.runtime).history(LEAD, lead["id"])
    assert set(audit[-1]["changes"]) == {"status", "expected_value"}


def test_values_obey_field_access_and_cannot_name_the_state(world: World) -> None:
    lead = world.lead(score=70)
    error = refused(world, "rep", lead["id"], "contact", Forbidden,
                    values={"secret": "x"})  # `secret` is read-only for sales_rep
    assert "secret" in error.errors
    error = refused(world, "rep", lead["id"], "contact", ValidationFailed,
                    values={"status": "won"})
    assert "status" in error.errors
    refused(world, "rep", lead["id"], "contact", ValidationFailed, values={"score": "many"})
    refused(world, "rep", lead["id"], "contact", ValidationFailed, values=["score"])
    refused(world, "rep", lead["id"], "contact", ValidationFailed, comment=12)
    assert state(world, lead["id"]) == "new"


def test_every_refusal_says_why(world: World) -> None:
    lead = world.lead(score=30)
    error = refused(world, "rep", lead["id"], "qualify", Conflict)  # wrong state
    assert error.extra["reasons"][0]["code"] == "state"
    assert error.detail == "`qualify` leads from `contacted`; the record is `new`"
    error = refused(world, "viewer", lead["id"], "contact", Forbidden)  # no transition grant
    assert error.detail == "your roles do not allow `transition` on sales.lead"
    error = refused(world, "rep2", lead["id"], "contact", Forbidden)  # transition: own
    assert error.detail == f"your roles do not allow `transition` on sales.lead {lead['id']}"
    take(world, "rep", lead["id"], "contact")
    error = refused(world, "director", lead["id"], "qualify", Forbidden)  # roles
    assert error.detail == "`qualify` is for `sales_rep`; your roles are `sales_manager`"
    error = refused(world, "rep", lead["id"], "qualify", Conflict)  # guard and requires
    codes = [r["code"] for r in error.extra["reasons"]]
    assert codes == ["guard", "requires"]
    assert error.detail == ("the condition of `qualify` does not hold: score gte 50 "
                            "(score is 30)")
    error = refused(world, "rep", lead["id"], "qualify", Conflict,
                    values={"score": 40, "expected_value": 5})
    assert "(score is 40)" in error.detail and len(error.extra["reasons"]) == 1
    result = take(world, "rep", lead["id"], "qualify", values={"score": 55,
                                                                "expected_value": 5})
    assert result.record["status"] == "qualified"
    with pytest.raises(NotFound):
        take(world, "rep", lead["id"], "teleport")
    with pytest.raises(NotFound):
        take(world, "rep", 10_000, "contact")
    with pytest.raises(NotFound):  # an entity without a workflow
        take(world, "rep", 1, "contact", entity="sales.task")


def test_forbidden_comes_before_conflict(world: World) -> None:
    lead = world.lead(score=30)
    error = refused(world, "director", lead["id"], "qualify", Forbidden)  # role and state
    assert {r["code"] for r in error.extra["reasons"]} == {"role", "state"}


def test_the_system_skips_roles_and_permissions_but_not_the_record(world: World) -> None:
    lead = world.lead(score=10)
    take(world, None, lead["id"], "contact", depth=2)
    error = refused(world, None, lead["id"], "qualify", Conflict)
    assert [r["code"] for r in error.extra["reasons"]] == ["guard", "requires"]
    seen = events_of(world)
    take(world, None, lead["id"], "qualify", values={"score": 90, "expected_value": 1},
         depth=3)
    assert seen[0].depth == 3 and seen[0].transition == "qualify"


def test_options_list_each_transition_with_its_reasons(world: World) -> None:
    lead = world.lead(score=30)
    subject = engine(world, "rep").subject(LEAD, lead["id"])
    options = {o.transition.name: o for o in engine(world, "rep").options(subject)}
    assert options["contact"].available
    assert [r.code for r in options["qualify"].refusals] == ["state"]
    assert [r.code for r in options["reopen"].refusals] == ["role", "state"]
    assert options["disqualify"].available


def test_a_stale_version_is_refused(world: World) -> None:
    lead = world.lead()
    with pytest.raises(PreconditionFailed):
        take(world, "rep", lead["id"], "contact", expected_version=lead["row_version"] + 5)
    take(world, "rep", lead["id"], "contact", expected_version=lead["row_version"])


def test_a_transition_into_the_same_state_is_recorded(world: World) -> None:
    ticket = world.service("rep").create(TICKET, {"title": "t"})
    with workflow_bypass():
        RecordService(world.runtime).update(TICKET, ticket["id"], {"stage": "working"})
    result = take(world, "rep", ticket["id"], "touch", entity=TICKET, comment="still on it")
    assert (result.from_state, result.to_state) == ("working", "working")
    (entry,) = record_history(engine(world, "rep"), TICKET, ticket["id"])
    assert (entry["transition"], entry["comment"]) == ("touch", "still on it")


def test_a_guard_follows_a_reference(world: World) -> None:
    lead = world.lead(score=10)
    ticket = world.service("rep").create(TICKET, {"title": "t", "lead": lead["id"]})
    with workflow_bypass():
        RecordService(world.runtime).update(TICKET, ticket["id"], {"stage": "working"})
    error = refused(world, "rep", ticket["id"], "close", Conflict, entity=TICKET)
    assert error.detail.endswith("lead.score gte 50 (lead.score is 10)")
    RecordService(world.runtime).update(LEAD, lead["id"], {"score": 80})
    take(world, "rep", ticket["id"], "close", entity=TICKET)


# -- the state field's guard --------------------------------------------------------------------

def test_direct_writes_to_the_state_are_refused(world: World) -> None:
    lead = world.lead()
    for service in (world.service("rep"), world.service("admin"), RecordService(world.runtime)):
        with pytest.raises(Conflict) as caught:
            service.update(LEAD, lead["id"], {"status": "contacted"})
        assert caught.value.extra == {"workflow": "sales.lead_lifecycle",
                                      "transitions": ["contact", "reopen"]}
        assert "changes only through a transition" in caught.value.detail
    result = RecordService(world.runtime).bulk_upsert(LEAD, [{"company": "B",
                                                              "status": "won"}])
    assert result.errors[0]["status"] == 409 and not result.created
    world.service("rep").update(LEAD, lead["id"], {"status": "new", "note": "same state"})
    assert state(world, lead["id"]) == "new"


def test_a_transition_name_must_match_the_move(world: World) -> None:
    lead = world.lead()
    service = RecordService(world.runtime)
    with pytest.raises(Conflict, match="leads from new to contacted, not from new to won"):
        service.update(LEAD, lead["id"], {"status": "won"}, transition="contact")
    with pytest.raises(Conflict, match="no transition `fly`"):
        service.update(LEAD, lead["id"], {"status": "won"}, transition="fly")
    assert state(world, lead["id"]) == "new" and rows(world, HISTORY) == []


def test_new_records_start_in_the_initial_state(world: World) -> None:
    with pytest.raises(Conflict) as caught:
        world.lead(status="qualified")
    assert "starts in `new`" in caught.value.detail
    assert caught.value.extra["transitions"] == ["qualify"]
    ticket = world.service("rep").create(TICKET, {"title": "no stage given"})
    assert ticket["stage"] == "open"  # no default: the initial state is filled in
    assert state(world, ticket["id"], TICKET) == "open"


def test_the_import_escape_hatch_writes_states_directly(world: World) -> None:
    with workflow_bypass():
        result = RecordService(world.runtime).bulk_upsert(LEAD, [
            {"company": "Old", "status": "won"}, {"company": "Older", "status": "qualified"}])
    assert not result.errors
    assert [state(world, i) for i in result.created] == ["won", "qualified"]
    assert rows(world, HISTORY) == []
    with pytest.raises(Conflict):  # only inside the block
        RecordService(world.runtime).update(LEAD, result.created[0], {"status": "new"})


# -- actions ------------------------------------------------------------------------------------

def test_actions_run_after_the_move_and_a_failure_does_not_undo_it(world: World) -> None:
    ticket = world.service("rep").create(TICKET, {"title": "t"})
    result = take(world, "rep", ticket["id"], "start", entity=TICKET, depth=1)
    assert state(world, ticket["id"], TICKET) == "working"
    assert result.actions == [
        {"action": "wf_test_record", "ok": True, "result": {"tag": "started",
                                                             "state": "working"}},
        {"action": "wf_test_fail", "ok": False, "error": "the mail server is down"},
        {"action": "wf_test_record", "ok": True, "result": {"tag": "after",
                                                             "state": "working"}}]
    (entry,) = record_history(engine(world, "rep"), TICKET, ticket["id"])
    assert entry["actions"] == result.actions
    context, params = world.actions.calls[0]
    assert params == {"tag": "started"}
    assert context.source == "workflow:sales.ticket_flow:start"
    assert context.depth == 1 and context.actor_id == world.ids["rep"]
    assert context.event is not None and context.event.transition == "start"
    assert context.key != world.actions.calls[1][0].key  # one key per action run


# -- approvals ----------------------------------------------------------------------------------

def qualified_lead(world: World, owner: str = "rep") -> dict[str, Any]:
    lead = world.lead(owner, score=80, expected_value="10")
    take(world, owner, lead["id"], "contact")
    take(world, owner, lead["id"], "qualify")
    return lead


def test_approval_by_role_needs_n_of_m_and_never_the_requester(world: World) -> None:
    lead = qualified_lead(world)
    # the director asks: he holds the approving role himself
    result = take(world, "director", lead["id"], "win", comment="big one")
    assert result.status == "pending" and state(world, lead["id"]) == "qualified"
    approval = result.approval
    assert (approval["by"], approval["needed"], approval["approved"]) == ("role", 2, 0)
    with pytest.raises(Forbidden, match="your own request"):
        decide(world, "director", lead["id"], approval["id"])
    with pytest.raises(Forbidden, match="holders of `sales_manager`"):
        decide(world, "rep2", lead["id"], approval["id"])
    after_one = decide(world, "boss", lead["id"], approval["id"], comment="ok")
    assert (after_one["status"], after_one["approved"]) == ("pending", 1)
    with pytest.raises(Conflict, match="already voted"):
        decide(world, "boss", lead["id"], approval["id"])
    assert state(world, lead["id"]) == "qualified"
    done = decide(world, "lead1", lead["id"], approval["id"])
    assert done["status"] == "approved" and state(world, lead["id"]) == "won"
    entry = record_history(engine(world, "rep"), LEAD, lead["id"])[-1]
    assert (entry["transition"], entry["approval_id"], entry["actor"], entry["comment"]) == (
        "win", approval["id"], world.ids["director"], "big one")
    assert done["history_id"] == entry["id"]
    votes = rows(world, VOTES)
    assert [(v["user_id"], v["decision"]) for v in votes] == [
        (world.ids["boss"], "approve"), (world.ids["lead1"], "approve")]
    with pytest.raises(Conflict, match="is approved"):
        decide(world, "director", lead["id"], approval["id"])


def test_double_votes_are_impossible_in_the_database(world: World) -> None:
    lead = qualified_lead(world)
    approval = take(world, "rep", lead["id"], "win").approval
    decide(world, "boss", lead["id"], approval["id"])
    votes = runtime_system_tables(world.runtime).table(VOTES)
    with pytest.raises(sa.exc.IntegrityError), world.runtime.begin() as connection:
        connection.execute(votes.insert().values(
            approval_id=approval["id"], user_id=world.ids["boss"], decision="reject",
            at=world.platform.now()))


def test_approval_up_a_manager_chain_of_two_levels(world: World) -> None:
    lead = world.lead("rep")
    result = take(world, "rep", lead["id"], "disqualify", comment="no budget")
    approval = result.approval
    assert result.status == "pending" and approval["by"] == "manager"
    assert approval["chain"] == [world.ids["lead1"], world.ids["director"]]  # nearest first
    assert approval["waiting_for"] == {"users": [world.ids["lead1"]]}
    mine = waiting_for(engine(world, "lead1"))
    assert [a["id"] for a in mine] == [approval["id"]]
    assert waiting_for(engine(world, "director")) == []  # not their turn yet
    with pytest.raises(Conflict, match="waits for level 1"):
        decide(world, "director", lead["id"], approval["id"])
    with pytest.raises(Forbidden, match="not one of them"):
        decide(world, "boss", lead["id"], approval["id"])  # level 3: not asked
    level_one = decide(world, "lead1", lead["id"], approval["id"])
    assert (level_one["status"], level_one["waiting_for"]) == (
        "pending", {"users": [world.ids["director"]]})
    assert state(world, lead["id"]) == "new"
    assert [a["id"] for a in waiting_for(engine(world, "director"))] == [approval["id"]]
    done = decide(world, "director", lead["id"], approval["id"])
    assert done["status"] == "approved" and state(world, lead["id"]) == "disqualified"
    assert [(v["user"], v["level"]) for v in done["votes"]] == [
        (world.ids["lead1"], 1), (world.ids["director"], 2)]
    mine = waiting_for(engine(world, "rep"), requested=True)
    assert mine == []  # nothing of rep's is pending any more


def test_the_requester_is_skipped_in_the_manager_chain(world: World) -> None:
    lead = world.lead("rep")
    approval = take(world, "lead1", lead["id"], "disqualify").approval
    assert approval["chain"] == [world.ids["director"], world.ids["boss"]]


def test_too_few_approvers_is_a_conflict(world: World) -> None:
    own = RecordService(world.runtime, Actor(world.ids["director"])).create(
        LEAD, {"company": "Director's"})
    error = refused(world, "director", own["id"], "disqualify", Conflict)
    assert error.extra["reasons"][0]["code"] == "approvers"
    assert "2 manager(s)" in error.detail and "only 1 found" in error.detail


def test_a_reject_ends_the_request(world: World) -> None:
    lead = world.lead("rep")
    approval = take(world, "rep", lead["id"], "disqualify").approval
    error = refused(world, "rep", lead["id"], "disqualify", Conflict)
    assert error.extra["reasons"][0]["code"] == "pending"
    rejected = decide(world, "lead1", lead["id"], approval["id"], "reject", "keep trying")
    assert rejected["status"] == "rejected" and "keep trying" in rejected["reason"]
    assert state(world, lead["id"]) == "new"
    with pytest.raises(Conflict, match="is rejected"):
        decide(world, "director", lead["id"], approval["id"])
    again = take(world, "rep", lead["id"], "disqualify").approval  # a new request may follow
    assert again["id"] != approval["id"]


def test_a_move_elsewhere_cancels_the_pending_request(world: World) -> None:
    lead = world.lead("rep")
    approval = take(world, "rep", lead["id"], "disqualify").approval
    take(world, "rep", lead["id"], "contact")
    (row,) = [r for r in rows(world, APPROVALS) if r["id"] == approval["id"]]
    assert row["status"] == "cancelled" and "by `contact`" in row["reason"]
    with pytest.raises(Conflict, match="is cancelled"):
        decide(world, "lead1", lead["id"], approval["id"])


def test_an_approval_fails_when_the_record_no_longer_allows_the_move(world: World) -> None:
    files = {"metadata/modules/sales/workflows/lead_lifecycle.yaml": WORKFLOW.replace(
        "approval: {by: role, roles: [sales_manager], count: 2}",
        "approval: {by: role, roles: [sales_manager], count: 1}\n"
        "        requires: [expected_value]")}
    world.project.write(files)
    assert world.platform.reload(SLUG).ok
    lead = qualified_lead(world)
    approval = take(world, "rep", lead["id"], "win").approval
    world.service("rep").update(LEAD, lead["id"], {"expected_value": None})
    failed = decide(world, "boss", lead["id"], approval["id"])
    assert failed["status"] == "failed"
    assert "`expected_value`" in failed["reason"] and state(world, lead["id"]) == "qualified"


def test_values_sent_with_an_approval_request_are_saved_at_once(world: World) -> None:
    lead = qualified_lead(world)
    result = take(world, "rep", lead["id"], "win", values={"note": "signed"})
    assert result.status == "pending" and result.record["note"] == "signed"


# -- hot reload ---------------------------------------------------------------------------------

def test_a_transition_added_to_the_yaml_works_after_reload(world: World) -> None:
    lead = world.lead()
    with pytest.raises(NotFound):
        take(world, "rep", lead["id"], "park")
    world.project.write({"metadata/modules/sales/workflows/lead_lifecycle.yaml":
                         WORKFLOW + "      park: {from: [new], to: contacted}\n"})
    report = world.platform.reload(SLUG)
    assert report.ok and report.changed, report.format()
    result = take(world, "rep", lead["id"], "park")
    assert result.record["status"] == "contacted"
    response = world.call("GET", world.lead_url(lead["id"], "/workflow"))
    assert "park" in [t["name"] for t in response.get_json()["transitions"]]


def test_a_business_units_overlay_extends_the_workflow_for_its_records(
        make_platform: Project) -> None:
    world = build_world(make_platform, {
        f"tenants/{SLUG}/tenant.yaml": f"""
            tenant: {SLUG}
            modules: [sales]
            team: admins
            business_units:
              north: {{label: North, team: north-ops, overlays: [overlays/north]}}
        """,
        f"tenants/{SLUG}/overlays/north/lead_lifecycle.yaml": """
            workflow: lead_lifecycle
            entity: sales.lead
            remove_transitions: [disqualify]
            transitions:
              fast_track: {from: [new], to: qualified}
        """})
    runtime = world.runtime
    north = RecordService(runtime, Actor(world.ids["rep"], "north")).create(
        LEAD, {"company": "North"})
    plain = world.lead()
    assert (north["business_unit"], plain["business_unit"]) == ("north", None)
    take(world, None, north["id"], "fast_track")
    assert state(world, north["id"]) == "qualified"
    with pytest.raises(NotFound):
        take(world, None, plain["id"], "fast_track")
    with pytest.raises(NotFound):
        take(world, None, north["id"], "disqualify")
    assert take(world, "rep", plain["id"], "disqualify").status == "pending"
