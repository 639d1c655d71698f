"""The shipped `service` module (metadata/modules/service): a call center, end to end.

Everything here is the module's YAML running on the platform: the ticket entity, its
workflow, its roles, the support-hours calendar and the ticket SLA. The demo tenant
(acme's definitions) is served on SQLite and PostgreSQL; `platform.clock` moves through
business hours, a pause and a breach, and the sweep runs as the job runner would.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

pytest.register_assert_rewrite("apifixtures")
from apifixtures import Demo, make_demo  # noqa: E402
from dbfixtures import Project  # noqa: E402

from metacrm.engines.sla.calendar import BusinessCalendar  # noqa: E402
from metacrm.engines.sla.sweep import JOB  # noqa: E402
from metacrm.metadata.compiler import Compiler  # noqa: E402
from metacrm.platform.channels import DELIVERIES  # noqa: E402
from metacrm.platform.jobs import jobs_of  # noqa: E402
from metacrm.platform.orgtree import OrgTree  # noqa: E402
from metacrm.platform.systables import runtime_system_tables  # noqa: E402

pytest_plugins = ["apifixtures"]

TICKET = "service.ticket"
CATEGORY = "service.ticket_category"
TZ = ZoneInfo("Asia/Shanghai")
HOUR = 3600


def at(*args: int) -> dt.datetime:
    """A Shanghai wall-clock time as a UTC instant."""
    return dt.datetime(*args, tzinfo=TZ).astimezone(dt.UTC)


def iso(*args: int) -> str:
    return at(*args).isoformat()


# -- the definitions -------------------------------------------------------------------------

def test_acme_enables_the_service_module(project_compiler: Compiler) -> None:
    result = project_compiler.compile_tenant("acme")
    assert result.registry is not None, [d.format() for d in result.diagnostics]
    scope = result.registry.scope(None)
    assert "service" in scope.modules
    ticket = scope.entities[TICKET]
    assert {f.name for f in ticket.fields} >= {
        "number", "subject", "description", "customer", "category", "priority", "status",
        "channel", "assignee", "first_response_at", "resolved_at", "response_breached_at",
        "resolution_breached_at"}
    assert ticket.get_field("customer").target == "customer.customer"
    assert ticket.get_field("category").target == CATEGORY
    assert scope.entities[CATEGORY].get_field("parent").target == CATEGORY
    assert result.registry.modules["service"].owner == "service-ops"
    assert {"agent", "supervisor"} <= set(scope.roles)
    assert scope.workflow_for(TICKET).field == "status"


def test_the_ticket_sla_reads_as_written(project_compiler: Compiler) -> None:
    scope = project_compiler.compile_tenant("acme").registry.scope(None)
    policy = scope.sla_policies["service.ticket_sla"]
    assert policy.by == "priority" and policy.warn_at == 0.8
    clocks = {c.name: c for c in policy.clocks}
    assert set(clocks) == {"first_response", "resolution"}
    assert clocks["first_response"].targets["urgent"] == 30 * 60
    assert clocks["resolution"].targets["normal"] == 27 * HOUR  # three 9-hour days
    assert [(e.at, e.levels_up) for e in policy.escalations] == [(0.8, 0), (1.0, 1),
                                                                  (1.5, 2)]
    calendar = BusinessCalendar.of(scope.calendars["service.support_hours"])
    # a normal ticket opened on the Friday before Spring Festival: the holidays do not count
    friday = at(2026, 2, 13, 17)
    assert calendar.add(friday, 4 * HOUR) == at(2026, 2, 23, 12)


# -- the call center, end to end -----------------------------------------------------------

class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def desk(make_platform: Project) -> Demo:
    """The demo tenant with a service department: `head` manages it, `lead` its team,
    `agent` works there (role agent); `stranger` is an agent of another business unit."""
    demo = make_demo(make_platform)
    demo.platform.clock = Clock(at(2026, 1, 9, 17))
    demo.add_user("head", "retail", roles=("supervisor",))
    demo.add_user("lead", "retail", roles=("supervisor",))
    demo.add_user("agent", "retail", roles=("agent",))
    demo.add_user("stranger", "education", roles=("agent",))
    with demo.runtime.begin() as connection:
        tree = OrgTree(connection, runtime_system_tables(demo.runtime))
        tree.add("service", "Service", "department", manager_id=demo.user_ids["head"])
        tree.add("service-desk", "Desk", "team", "service", manager_id=demo.user_ids["lead"])
        tree.place(demo.user_ids["agent"], "service-desk")
        tree.place(demo.user_ids["lead"], "service-desk")
        tree.place(demo.user_ids["head"], "service")
    return demo


def set_time(demo: Demo, instant: dt.datetime) -> None:
    demo.platform.clock.now = instant


def sweep(demo: Demo, instant: dt.datetime) -> None:
    set_time(demo, instant)
    jobs_of(demo.platform).run(JOB, {"tenant": demo.slug})


def sla(demo: Demo, ticket: int, who: str = "agent") -> dict[str, dict[str, Any]]:
    response = demo.get(demo.entity_url(TICKET, ticket, "/sla"), who=who)
    assert response.status_code == 200, response.get_json()
    return {c["clock"]: c for c in response.get_json()["clocks"]}


def transition(demo: Demo, ticket: int, name: str, when: dt.datetime,
               values: dict[str, Any] | None = None) -> dict[str, Any]:
    set_time(demo, when)
    response = demo.post(demo.entity_url(TICKET, ticket, f"/transitions/{name}"),
                         {"values": values} if values else {}, who="agent")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def pushes(demo: Demo) -> list[tuple[str, str]]:
    """(recipient user id, subject) of every push notification queued."""
    table = runtime_system_tables(demo.runtime).table(DELIVERIES)
    with demo.connection() as connection:
        return [(r.recipient, r.subject) for r in connection.execute(
            sa.select(table).where(table.c.channel == "push").order_by(table.c.id))]


def open_ticket(demo: Demo, **values: Any) -> dict[str, Any]:
    response = demo.post(demo.entity_url(TICKET), {"subject": "Card charged twice",
                                                   "channel": "phone", **values},
                         who="agent")
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_ticket_runs_its_service_levels_through_the_workflow(desk: Demo) -> None:
    category = desk.post(desk.entity_url(CATEGORY), {"name": "Billing",
                                                     "default_priority": "high"}).get_json()
    ticket = open_ticket(desk, category=category["id"])  # Friday 17:00, priority normal
    assert ticket["number"].startswith("T-") and ticket["status"] == "new"
    clocks = sla(desk, ticket["id"])
    assert clocks["first_response"]["due_at"] == iso(2026, 1, 12, 12)  # Monday noon
    assert clocks["first_response"]["target_seconds"] == 4 * HOUR
    assert clocks["resolution"]["target_seconds"] == 27 * HOUR
    assert clocks["resolution"]["due_at"] == iso(2026, 1, 14, 17)  # 1h + 9h + 9h + 8h

    # Monday 10:00: the agent responds; the first response is met, resolution runs on
    transition(desk, ticket["id"], "respond", at(2026, 1, 12, 10))
    clocks = sla(desk, ticket["id"])
    assert clocks["first_response"]["status"] == "met"
    assert clocks["first_response"]["elapsed_seconds"] == 2 * HOUR
    assert clocks["resolution"]["status"] == "running"

    # waiting for the customer from 11:00 to 13:00 moves the resolution by two hours
    transition(desk, ticket["id"], "wait_for_customer", at(2026, 1, 12, 11))
    assert sla(desk, ticket["id"])["resolution"]["status"] == "paused"
    transition(desk, ticket["id"], "resume", at(2026, 1, 12, 13))
    resolution = sla(desk, ticket["id"])["resolution"]
    assert resolution["status"] == "running"
    assert resolution["paused_seconds"] == 2 * HOUR
    assert resolution["due_at"] == iso(2026, 1, 15, 10)

    # the warning (80% of 27h = 21h36m) reaches the agent; the breach, the team lead
    sweep(desk, at(2026, 1, 14, 13, 36))
    assert not sla(desk, ticket["id"])["resolution"]["warned"]
    sweep(desk, at(2026, 1, 14, 13, 37))
    assert sla(desk, ticket["id"])["resolution"]["warned"]
    sweep(desk, at(2026, 1, 15, 10, 1))
    resolution = sla(desk, ticket["id"])["resolution"]
    assert resolution["status"] == "breached"
    assert resolution["breached_at"] == iso(2026, 1, 15, 10)
    assert resolution["escalations_fired"] == [0, 1]
    sent = pushes(desk)
    assert sent[0] == (str(desk.user_ids["agent"]), f"SLA warning: {ticket['number']}")
    assert sent[1] == (str(desk.user_ids["lead"]), f"SLA breached: {ticket['number']}")
    record = desk.get(desk.entity_url(TICKET, ticket["id"]), who="agent").get_json()
    assert record["resolution_breached_at"] == iso(2026, 1, 15, 10)
    assert record["response_breached_at"] is None

    # half the target again late (40h30m of business time): the head of service hears
    sweep(desk, at(2026, 1, 16, 14, 31))
    assert pushes(desk)[2] == (str(desk.user_ids["head"]),
                               f"SLA breached long ago: {ticket['number']}")

    # resolving now does not undo the breach
    transition(desk, ticket["id"], "resolve", at(2026, 1, 16, 16),
               {"resolution": "Refunded the second charge."})
    resolution = sla(desk, ticket["id"])["resolution"]
    assert resolution["status"] == "breached"
    assert resolution["stopped_at"] == iso(2026, 1, 16, 16)
    record = desk.get(desk.entity_url(TICKET, ticket["id"]), who="agent").get_json()
    assert record["status"] == "resolved" and record["resolved_at"] is not None
    assert len(pushes(desk)) == 3


def test_an_urgent_ticket_answered_late_stays_late(desk: Demo) -> None:
    set_time(desk, at(2026, 1, 12, 9))
    ticket = open_ticket(desk, priority="urgent")
    assert sla(desk, ticket["id"])["first_response"]["due_at"] == iso(2026, 1, 12, 9, 30)
    transition(desk, ticket["id"], "respond", at(2026, 1, 12, 9, 45))
    first = sla(desk, ticket["id"])["first_response"]
    assert first["status"] == "breached" and first["breached_at"] == iso(2026, 1, 12, 9, 30)
    sweep(desk, at(2026, 1, 12, 9, 46))
    record = desk.get(desk.entity_url(TICKET, ticket["id"])).get_json()
    assert record["response_breached_at"] == iso(2026, 1, 12, 9, 30)


def test_raising_the_priority_shortens_the_targets(desk: Demo) -> None:
    set_time(desk, at(2026, 1, 12, 9))
    ticket = open_ticket(desk)
    set_time(desk, at(2026, 1, 12, 9, 10))
    response = desk.patch(desk.entity_url(TICKET, ticket["id"]), {"priority": "urgent"},
                          who="agent")
    assert response.status_code == 200, response.get_json()
    clocks = sla(desk, ticket["id"])
    assert clocks["first_response"]["due_at"] == iso(2026, 1, 12, 9, 30)
    assert clocks["resolution"]["due_at"] == iso(2026, 1, 12, 13)


def test_the_clocks_are_read_within_the_callers_permissions(desk: Demo) -> None:
    ticket = open_ticket(desk)
    assert desk.get(desk.entity_url(TICKET, ticket["id"], "/sla"),
                    who="stranger").status_code == 404
    assert sla(desk, ticket["id"], who="lead")["resolution"]["status"] == "running"
    response = desk.get(desk.entity_url(TICKET, ticket["id"], "/sla"), who=None)
    assert response.status_code == 401
    category = desk.post(desk.entity_url(CATEGORY), {"name": "Delivery"}).get_json()
    response = desk.get(desk.entity_url(CATEGORY, category["id"], "/sla"))
    assert response.status_code == 404
    assert "no SLA policy" in response.get_json()["detail"]
    assert desk.get(desk.entity_url(TICKET, 999_999, "/sla")).status_code == 404


def test_openapi_lists_the_sla_path_of_covered_entities(desk: Demo) -> None:
    paths = desk.get(desk.url("openapi.json"), who="agent").get_json()["paths"]
    assert "/api/v1/service/ticket/{id}/sla" in paths
    assert "/api/v1/service/ticket_category/{id}/sla" not in paths
    assert "/api/v1/customer/customer/{id}/sla" not in paths


def test_an_agent_works_only_the_tickets_assigned_to_them(desk: Demo) -> None:
    ticket = open_ticket(desk)
    other = desk.service("retail").create(TICKET, {"subject": "Someone else's"})
    assert desk.patch(desk.entity_url(TICKET, other["id"]), {"priority": "high"},
                      who="agent").status_code == 403
    assert desk.patch(desk.entity_url(TICKET, ticket["id"]), {"priority": "high"},
                      who="agent").status_code == 200
    refused = desk.patch(desk.entity_url(TICKET, ticket["id"]),
                         {"resolution_breached_at": iso(2026, 1, 9, 17)}, who="agent")
    assert refused.status_code == 403
