"""The workflow routes of the REST API, on SQLite and PostgreSQL: the workflow view,
transitions (200, 202, and 403/404/409/412/422 problem+json saying why), direct writes,
approvals, the caller's queue, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from dbfixtures import Project
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from workflowworld import LEAD, World, build_world


@pytest.fixture
def world(make_platform: Project) -> World:
    return build_world(make_platform)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def transition(world: World, record_id: int, name: str, who: str = "rep", body: Any = None,
               **kwargs: Any) -> Any:
    return world.call("POST", world.lead_url(record_id, f"/transitions/{name}"), who, body,
                      **kwargs)


def test_the_workflow_view_lists_state_transitions_history_and_approvals(world: World) -> None:
    lead = world.lead(score=10)
    response = world.call("GET", world.lead_url(lead["id"], "/workflow"))
    assert response.status_code == 200
    view = response.get_json()
    assert view["workflow"] == "sales.lead_lifecycle" and view["field"] == "status"
    assert view["state"] == {"name": "new", "label": "New", "final": False}
    transitions = {t["name"]: t for t in view["transitions"]}
    assert transitions["contact"]["available"] and transitions["contact"]["reasons"] == []
    assert transitions["reopen"]["reasons"][0] == {
        "code": "role", "status": 403,
        "reason": "`reopen` is for `sales_manager`; your roles are `sales_rep`"}
    assert transitions["disqualify"]["approval"] == {"by": "manager", "levels": 2}
    assert view["history"] == [] and view["approvals"] == []


def test_taking_a_transition(world: World) -> None:
    lead = world.lead(score=80)
    response = transition(world, lead["id"], "contact", body={"comment": "first call"})
    assert response.status_code == 200, response.get_data(True)
    body = response.get_json()
    assert (body["status"], body["from"], body["to"]) == ("done", "new", "contacted")
    assert body["record"]["status"] == "contacted"
    assert response.headers["ETag"] == f'"{lead["id"]}-{body["record"]["row_version"]}"'
    response = transition(world, lead["id"], "qualify",
                          body={"values": {"expected_value": 99}},
                          headers={"If-Match": response.headers["ETag"]})
    assert response.status_code == 200, response.get_data(True)
    history = world.call("GET", world.lead_url(lead["id"], "/workflow")).get_json()["history"]
    assert [(h["transition"], h["comment"]) for h in history] == [
        ("contact", "first call"), ("qualify", None)]


def test_refusals_are_problems_that_say_why(world: World) -> None:
    lead = world.lead(score=10)
    body = problem(transition(world, lead["id"], "qualify"), 409)
    assert body["detail"] == "`qualify` leads from `contacted`; the record is `new`"
    assert body["reasons"][0]["code"] == "state" and body["state"] == "new"
    body = problem(transition(world, lead["id"], "contact", "viewer"), 403)
    assert "`transition`" in body["detail"]
    body = problem(transition(world, lead["id"], "contact", "rep2"), 403)
    transition(world, lead["id"], "contact")
    body = problem(transition(world, lead["id"], "qualify"), 409)
    assert [r["code"] for r in body["reasons"]] == ["guard", "requires"]
    assert body["errors"] == {"expected_value": ["required by this transition"]}
    body = problem(transition(world, lead["id"], "qualify", "director"), 403)
    assert body["reasons"][0]["code"] == "role"
    body = problem(transition(world, lead["id"], "nope"), 404)
    assert "contact" in body["transitions"]
    problem(transition(world, 999_999, "contact"), 404)
    problem(transition(world, lead["id"], "qualify", headers={"If-Match": '"1-99"'}), 412)
    problem(world.call("POST", world.url("sales/task/1/transitions/x")), 404)
    problem(world.call("POST", world.url("sales/nothing/1/transitions/x")), 404)
    problem(transition(world, lead["id"], "contact", None), 401)


@pytest.mark.parametrize("raw", ["{", "[1]", '{"values": 3}', '{"comment": 5}',
                                 '{"extra": 1}', '{"values": {"status": "won"}}',
                                 '{"values": {"score": "lots"}}', '"text"', "null",
                                 '{"comment": "\\ud800"}'])
def test_garbage_bodies_are_refused_as_problems(world: World, raw: str) -> None:
    lead = world.lead()
    response = transition(world, lead["id"], "contact", body=raw)
    assert response.status_code in (400, 422)
    problem(response, response.status_code)


def test_a_patch_of_the_state_is_refused(world: World) -> None:
    lead = world.lead()
    body = problem(world.call("PATCH", world.lead_url(lead["id"]), "rep",
                              {"status": "contacted"}), 409)
    assert body["workflow"] == "sales.lead_lifecycle"
    assert body["transitions"] == ["contact", "reopen"]
    assert "changes only through a transition" in body["detail"]
    body = problem(world.call("POST", world.url("sales/lead"), "rep",
                              {"company": "x", "status": "won"}), 409)
    assert "starts in `new`" in body["detail"]


def test_approvals_through_the_api(world: World) -> None:
    lead = world.lead(score=10)
    response = transition(world, lead["id"], "disqualify", body={"comment": "dead end"})
    assert response.status_code == 202, response.get_data(True)
    approval = response.get_json()["approval"]
    assert approval["status"] == "pending"
    queue = world.call("GET", world.url("_workflow/approvals?mine=true"), "lead1").get_json()
    assert [a["id"] for a in queue["items"]] == [approval["id"]]
    assert queue["items"][0]["can_vote"]
    assert world.call("GET", world.url("_workflow/approvals"), "director").get_json()[
        "items"] == []
    mine = world.call("GET", world.url("_workflow/approvals?requested=true"), "rep").get_json()
    assert [a["id"] for a in mine["items"]] == [approval["id"]]
    base = world.lead_url(lead["id"], f"/approvals/{approval['id']}")
    body = problem(world.call("POST", f"{base}/approve", "director"), 409)
    assert "waits for level 1" in body["detail"]
    problem(world.call("POST", f"{base}/approve", "boss"), 403)
    problem(world.call("POST", f"{base}/maybe", "lead1"), 404)
    problem(world.call("POST", world.lead_url(lead["id"], "/approvals/999/approve"),
                       "lead1"), 404)
    response = world.call("POST", f"{base}/approve", "lead1", {"comment": "fine by me"})
    assert response.status_code == 200 and response.get_json()["approved"] == 1
    problem(world.call("POST", f"{base}/approve", "lead1"), 409)  # a second vote
    response = world.call("POST", f"{base}/approve", "director")
    assert response.get_json()["status"] == "approved"
    view = world.call("GET", world.lead_url(lead["id"], "/workflow")).get_json()
    assert view["state"]["name"] == "disqualified" and view["state"]["final"]
    assert view["approvals"][0]["status"] == "approved"
    assert view["history"][-1]["approval_id"] == approval["id"]


def test_a_rejection_through_the_api(world: World) -> None:
    lead = world.lead()
    approval = transition(world, lead["id"], "disqualify").get_json()["approval"]
    base = world.lead_url(lead["id"], f"/approvals/{approval['id']}")
    response = world.call("POST", f"{base}/reject", "lead1", {"comment": "not yet"})
    assert response.get_json()["status"] == "rejected"
    problem(world.call("POST", f"{base}/approve", "director"), 409)


def test_the_approvals_queue_refuses_unknown_parameters(world: World) -> None:
    problem(world.call("GET", world.url("_workflow/approvals?all=1"), "rep"), 400)
    problem(world.call("GET", world.url("_workflow/approvals?mine=maybe"), "rep"), 400)
    problem(world.call("GET", world.url("_workflow/approvals?mine=false"), "rep"), 400)


def test_the_openapi_document_lists_the_workflow_routes(world: World) -> None:
    document = world.call("GET", world.url("openapi.json"), "admin").get_json()
    paths = document["paths"]
    base = "/api/v1/sales/lead/{id}"
    assert f"{base}/workflow" in paths
    operation = paths[f"{base}/transitions/{{name}}"]["post"]
    assert operation["parameters"][1]["schema"]["enum"] == [
        "contact", "qualify", "disqualify", "win", "reopen"]
    assert {"200", "202", "403", "404", "409", "412", "422"} <= set(operation["responses"])
    assert f"{base}/approvals/{{approval_id}}/{{decision}}" in paths
    assert "/api/v1/sales/task/{id}/workflow" not in paths  # no workflow there
    assert "/api/v1/_workflow/approvals" in paths
    assert LEAD  # the routes are the entity's own


# -- the workflow routes honour their OpenAPI document (schemathesis) --------------------------

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = {"sqlite": 15, "postgresql": 5}


@pytest.fixture
def workflow_schema(world: World) -> Any:
    """The world's OpenAPI document, only the workflow operations, as the rep."""
    for score in (10, 60, 90):
        world.lead(score=score)
    world.lead(score=90, expected_value="10")
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {world.tokens['rep']}"},
        "generation": {"max-examples": EXAMPLES[world.backend], "deterministic": True}})
    schema = schemathesis.openapi.from_wsgi(world.url("openapi.json"), world.app,
                                            config=config, headers={
                                                "Authorization": f"Bearer {world.tokens['admin']}"})
    return schema


fuzzed = schemathesis.pytest.from_fixture("workflow_schema").include(
    path_regex=r"/(workflow|transitions/|approvals)")


@fuzzed.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_workflow_routes_honour_their_document(case: Any, world: World) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {world.tokens['rep']}"},
                           checks=CHECKS)
