"""The rules engine's guarantees, on SQLite and PostgreSQL: idempotency under duplicate
delivery, the depth limit, retries with backoff then parking, the administrators' run
log and retry (API, 403 for others), recovery of lost jobs and dead workers, and the
template sandbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

pytest.register_assert_rewrite("ruleworld")
from ruleworld import LEAD, World, build_world  # noqa: E402

from metacrm.engines.rules import RUN_JOB, RuleSettings, execute_run  # noqa: E402
from metacrm.engines.rules.tables import RUNS  # noqa: E402
from metacrm.platform.jobs import jobs_of  # noqa: E402
from metacrm.platform.systables import runtime_system_tables  # noqa: E402

COUNT = """
    rule: count
    entity: lead
    trigger: created
    do: [{set: {hits: "{{ record.hits + 1 }}"}}, {probe: {}}]
"""
FLAKY = """
    rule: flaky
    entity: lead
    trigger: created
    do: [{set: {note: first}}, {flaky: {}}, {set: {hits: "{{ record.hits + 1 }}"}}]
"""


def run_row(world: World, run_id: int) -> dict:
    return next(r for r in world.runs() if r["id"] == run_id)


# -- idempotency --------------------------------------------------------------------------------

def test_the_same_job_delivered_twice_runs_once(make_platform) -> None:
    world = build_world(make_platform, {"count": COUNT})
    lead = world.lead(owner=None)
    (run,) = world.runs()
    jobs = jobs_of(world.platform)
    payload = {"tenant": "rt", "runs": [run["id"]]}
    jobs.enqueue(RUN_JOB, payload)  # the same job enqueued again (at-least-once delivery)
    world.drain()
    jobs.run(RUN_JOB, payload)  # and once more, by hand
    assert world.get(LEAD, lead["id"])["hits"] == 1
    assert len(world.actions.calls) == 1
    assert execute_run(world.platform, world.runtime, run["id"]) == "claimed elsewhere"
    assert run_row(world, run["id"])["attempts"] == 1


def test_a_duplicate_trigger_makes_no_second_run(make_platform) -> None:
    """The same change delivered twice to the outbox (its dedup key: rule, record, row
    version) inserts one run; two sweeps hand the same run out, it runs once."""
    from metacrm.engines.rules.dispatch import write_runs
    from metacrm.engines.rules.index import rule_index
    from metacrm.platform.events import RecordEvent

    world = build_world(make_platform, {"count": COUNT})
    lead = world.lead(owner=None)
    runtime = world.runtime
    (compiled,) = rule_index(runtime).for_entity(LEAD, "").on_event
    event = RecordEvent("rt", LEAD, lead["id"], "created", None, world.clock.now, "v",
                        {**lead, "row_version": 1}, {}, 0)
    with runtime.begin() as connection:
        again = write_runs(connection, runtime_system_tables(runtime), [compiled], event,
                           world.clock.now, stopped=False, limit=5)
    assert again == [] and len(world.runs()) == 1
    world.clock.advance(minutes=5)  # the job was lost: sweeps hand the run out
    assert world.sweep(drain=False).handed_out == 1
    assert world.sweep(drain=False).handed_out == 1
    world.drain()
    assert world.get(LEAD, lead["id"])["hits"] == 1
    assert world.sweep().handed_out == 0


def test_runs_lost_between_commit_and_enqueue_are_picked_up_by_the_sweep(make_platform) -> None:
    world = build_world(make_platform, {"count": COUNT})
    lead = world.service(emit=False).create(LEAD, {"company": "No queue"})  # no record_event
    assert world.drain() == 0
    assert [r["status"] for r in world.runs()] == ["pending"]
    assert world.sweep().handed_out == 0  # younger than the grace period: maybe in a queue
    world.clock.advance(seconds=RuleSettings().grace + 1)
    assert world.sweep().handed_out == 1
    assert world.get(LEAD, lead["id"])["hits"] == 1


def test_a_dead_workers_run_is_taken_back_after_its_lease(make_platform) -> None:
    world = build_world(make_platform, {"count": COUNT})
    lead = world.lead(owner=None)
    (run,) = world.runs()
    runs = runtime_system_tables(world.runtime).table(RUNS)
    with world.runtime.begin() as connection:  # claimed by a worker that then died
        from metacrm.engines.rules.runner import claim

        assert claim(connection, runs, run["id"], world.clock.now, 600) is not None
    world.drain()  # its job finds it claimed: nothing happens
    assert world.get(LEAD, lead["id"])["hits"] == 0
    world.clock.advance(seconds=601)
    report = world.sweep()
    assert report.reclaimed == 1
    assert world.get(LEAD, lead["id"])["hits"] == 1
    assert run_row(world, run["id"])["attempts"] == 2


# -- depth limit --------------------------------------------------------------------------------

PING = """
    rule: ping
    entity: lead
    trigger: {changed: [pong]}
    do: [{set: {ping: "{{ record.ping + 1 }}"}}]
"""
PONG = """
    rule: pong
    entity: lead
    trigger: {changed: [ping]}
    do: [{set: {pong: "{{ record.pong + 1 }}"}}]
"""


def test_the_depth_limit_stops_two_rules_feeding_each_other(make_platform) -> None:
    world = build_world(make_platform, {"ping": PING, "pong": PONG})
    lead = world.lead(owner=None)
    world.service().update(LEAD, lead["id"], {"ping": 1})  # depth 0 → pong
    world.drain()
    after = world.get(LEAD, lead["id"])
    # depth 0: pong, 1: ping, 2: pong, 3: ping, 4: pong; the change at depth 5 stops
    assert (after["ping"], after["pong"]) == (3, 3)
    done = world.runs(status="done")
    assert sorted(r["depth"] for r in done) == [0, 1, 2, 3, 4]
    (stopped,) = world.runs(status="stopped")
    assert stopped["depth"] == 5 and stopped["rule"] == "crm.ping"
    assert "limit is 5" in stopped["last_error"]


def test_the_depth_limit_is_a_tenant_setting(make_platform) -> None:
    world = build_world(make_platform, {"ping": PING, "pong": PONG}, files={
        "tenants/rt/tenant.yaml": """
            tenant: rt
            modules: [crm]
            team: admins
            timezone: Asia/Shanghai
            business_units:
              retail: {label: Retail, overlays: [overlays/retail]}
            settings:
              rules: {depth_limit: 2}
        """})
    lead = world.lead(owner=None)
    world.service().update(LEAD, lead["id"], {"ping": 1})
    world.drain()
    assert sorted(r["depth"] for r in world.runs(status="done")) == [0, 1]
    assert [r["depth"] for r in world.runs(status="stopped")] == [2]


# -- retries, parking, the administrators' retry --------------------------------------------------

def test_a_failing_action_is_retried_with_backoff_then_parked_then_retried_by_an_admin(
        make_platform) -> None:
    world = build_world(make_platform, {"flaky": FLAKY})
    world.actions.failures = 100
    lead = world.lead(owner=None)
    world.drain()
    (run,) = world.runs()
    assert (run["status"], run["attempts"]) == ("pending", 1)
    assert "the service is down" in run["last_error"]
    delays = []
    for attempt in range(2, 6):
        before = world.clock.now
        world.clock.advance(seconds=29)
        world.sweep()
        assert run_row(world, run["id"])["attempts"] == attempt - 1  # not due yet
        due = run_row(world, run["id"])["next_attempt_at"]
        world.clock.set(dt.datetime.fromisoformat(due))
        delays.append(round((world.clock.now - before).total_seconds()))
        world.sweep()
        assert run_row(world, run["id"])["attempts"] == attempt
    assert delays == [30, 60, 120, 240]
    parked = run_row(world, run["id"])
    assert parked["status"] == "parked" and "after 5 attempts" in parked["last_error"]
    # the first action ran once and is never repeated
    assert world.get(LEAD, lead["id"])["note"] == "first"
    assert [r["action"] for r in parked["results"]] == ["set"]

    # administrators see it; others are refused
    listed = world.call("GET", "_automation/runs?status=parked")
    assert listed.status_code == 200
    assert [r["id"] for r in listed.get_json()["items"]] == [run["id"]]
    refused = world.call("GET", "_automation/runs?status=parked", who="reader")
    assert refused.status_code == 403
    assert "administrators" in refused.get_json()["detail"]
    assert world.call("POST", f"_automation/runs/{run['id']}/retry",
                      who="reader").status_code == 403
    assert world.call("GET", "_automation/runs?status=nope").status_code == 400
    assert world.call("GET", "_automation/runs/999999").status_code == 404

    world.actions.failures = 0
    retried = world.call("POST", f"_automation/runs/{run['id']}/retry")
    assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
    world.drain()
    done = world.call("GET", f"_automation/runs/{run['id']}").get_json()
    assert done["status"] == "done"
    assert [r["action"] for r in done["results"]] == ["set", "flaky", "set"]
    after = world.get(LEAD, lead["id"])
    assert (after["note"], after["hits"]) == ("first", 1)
    assert world.call("POST", f"_automation/runs/{run['id']}/retry").status_code == 409


def test_a_failure_no_retry_can_fix_parks_at_once(make_platform) -> None:
    world = build_world(make_platform, {"flaky": FLAKY, "bad": """
        rule: bad
        entity: lead
        trigger: created
        do: [{set: {score: "not a number"}}]
    """})
    world.actions.failures, world.actions.retryable = 1, False
    world.lead(owner=None)
    world.drain()
    runs = {r["rule"]: r for r in world.runs()}
    assert runs["crm.flaky"]["status"] == "parked"
    assert runs["crm.flaky"]["attempts"] == 1
    assert "cannot fix" in runs["crm.flaky"]["last_error"]
    assert runs["crm.bad"]["status"] == "parked"
    assert "score" in runs["crm.bad"]["last_error"]


def test_the_run_log_lists_pages_and_filters(make_platform) -> None:
    world = build_world(make_platform, {"count": COUNT})
    leads = [world.lead(owner=None, company=f"c{i}") for i in range(3)]
    world.drain()
    page = world.call("GET", "_automation/runs?limit=2").get_json()
    assert [r["record_id"] for r in page["items"]] == [leads[2]["id"], leads[1]["id"]]
    rest = world.call("GET", f"_automation/runs?limit=2&before={page['next']}").get_json()
    assert [r["record_id"] for r in rest["items"]] == [leads[0]["id"]]
    assert rest["next"] is None
    one = world.call("GET", f"_automation/runs?record_id={leads[1]['id']}&rule=crm.count")
    assert [r["record_id"] for r in one.get_json()["items"]] == [leads[1]["id"]]
    assert world.call("GET", "_automation/runs?limit=0").status_code == 400
    document = world.call("GET", "openapi.json").get_json()
    assert "/api/v1/_automation/runs/{id}/retry" in document["paths"]


# -- templates ----------------------------------------------------------------------------------

def test_templates_render_in_a_sandbox(make_platform) -> None:
    world = build_world(make_platform, {
        "good": """
            rule: good
            entity: lead
            trigger: created
            when: {field: company, op: eq, value: Good}
            do:
              - set:
                  score: "{{ record.hits + 41 + 1 }}"
                  note: "{{ record.company | upper }} by {{ user.username if user else 'system' }}"
                  call_at: "{{ now + duration('2h') }}"
        """,
        "escape": """
            rule: escape
            entity: lead
            trigger: created
            when: {field: company, op: eq, value: Escape}
            do: [{set: {note: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}}]
        """,
        "mutate": """
            rule: mutate
            entity: lead
            trigger: created
            when: {field: company, op: eq, value: Mutate}
            do: [{set: {note: "{{ [].append(1) }}"}}]
        """,
        "unknown": """
            rule: unknown
            entity: lead
            trigger: created
            when: {field: company, op: eq, value: Unknown}
            do: [{set: {note: "{{ record.no_such_field }}"}}]
        """})
    good = world.lead(owner=None, company="Good")
    for company in ("Escape", "Mutate", "Unknown"):
        world.lead(owner=None, company=company)
    world.drain()
    record = world.get(LEAD, good["id"])
    assert record["score"] == 42 and record["note"] == "GOOD by system"
    call_at = dt.datetime.fromisoformat(record["call_at"])
    assert abs(call_at - (world.clock.now + dt.timedelta(hours=2))) < dt.timedelta(seconds=1)
    runs = {r["rule"]: r for r in world.runs()}
    assert runs["crm.good"]["status"] == "done"
    for name in ("escape", "mutate", "unknown"):
        assert runs[f"crm.{name}"]["status"] == "parked", name
        assert "template error" in runs[f"crm.{name}"]["last_error"]
    assert "unsafe" in runs["crm.escape"]["last_error"] or \
        "__class__" in runs["crm.escape"]["last_error"]
    assert "no_such_field" in runs["crm.unknown"]["last_error"]


def test_template_environment_is_per_platform_and_cached() -> None:
    from types import SimpleNamespace

    from metacrm.engines.templates import Templates, render_value, templates_of

    platform = SimpleNamespace(extensions={})
    assert templates_of(platform) is templates_of(platform)
    assert isinstance(templates_of(platform), Templates)
    variables = {"record": {"n": 2, "name": "x"}}
    assert render_value(platform, {"a": ["{{ record.n * 2 }}", "n={{ record.n }}"],
                                   "b": 3, "c": "plain"}, variables) == \
        {"a": [4, "n=2"], "b": 3, "c": "plain"}
    assert render_value(platform, "{{ record.n }}{{ record.n }}", variables) == "22"
    assert render_value(platform, "{% if record.n > 1 %}big{% endif %}", variables) == "big"


# -- the admin page -----------------------------------------------------------------------------

def test_the_admin_page_lists_runs_for_administrators_only(make_platform) -> None:
    import re

    from metacrm.platform.passwords import hash_password
    from metacrm.platform.systables import runtime_system_tables as tables

    world = build_world(make_platform, {"flaky": FLAKY})
    world.actions.failures, world.actions.retryable = 1, False
    lead = world.lead(owner=None)
    world.drain()
    users = tables(world.runtime).users
    with world.runtime.begin() as connection:
        connection.execute(users.update().values(password_hash=hash_password("pw-123456"),
                                                 locale="en"))

    def browser(username: str) -> tuple[Any, str]:
        client = world.app.test_client()
        page = client.get("/t/rt/admin/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        answer = client.post("/t/rt/admin/login", data={
            "username": username, "password": "pw-123456", "csrf_token": token})
        assert answer.status_code == 302, answer.get_data(as_text=True)
        return client, token

    admin, _ = browser("admin")
    page = admin.get("/t/rt/admin/_automation/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'data-run="{world.runs()[0]["id"]}"' in html and "crm.flaky" in html
    assert "the service is down" in html
    assert f"/admin/crm/lead/{lead['id']}" in html  # a link to the record
    assert "Automation runs" in admin.get("/t/rt/admin/").get_data(as_text=True)  # menu
    done = admin.get("/t/rt/admin/_automation/?status=done").get_data(as_text=True)
    assert 'id="no-runs"' in done
    reader, _ = browser("reader")
    assert reader.get("/t/rt/admin/_automation/").status_code == 403


def test_run_ids_beyond_64_bits_are_not_found(make_platform) -> None:
    world = build_world(make_platform)
    for path in ("_automation/runs/9223372036854775808",
                 "_automation/runs/0"):
        assert world.call("GET", path).status_code == 404
    assert world.call("POST", "_automation/runs/9223372036854775808/retry").status_code == 404
    assert world.call("GET", "_automation/runs?before=99999999999999999999").status_code == 400
    assert world.call("GET", "_automation/runs?limit=%C2%B2").status_code == 400
    assert world.call("GET", "_automation/runs?rule=a%00b").status_code == 400
