"""The built-in rule actions on SQLite and PostgreSQL: set, create, create_task, assign
(round-robin, least loaded, caps), notify, webhook (a loopback receiver seeing signed,
retried calls) and transition; and the registry they come from."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.register_assert_rewrite("ruleworld")
from ruleworld import ACCOUNT, DEAL, LEAD, TASK, World, build_world  # noqa: E402

from metacrm.engines.actions import actions_of  # noqa: E402
from metacrm.platform.jobs import jobs_of  # noqa: E402


def on_created(name: str, do: str, when: str | None = None, entity: str = "lead") -> str:
    return "\n".join([f"rule: {name}", f"entity: {entity}", "trigger: created",
                      *([f"when: {when}"] if when else []), f"do: {do}"]) + "\n"


def only_run(world: World) -> dict[str, Any]:
    (run,) = world.runs()
    return run


def test_every_builtin_action_is_registered_with_a_schema(make_platform) -> None:
    world = build_world(make_platform)
    registry = actions_of(world.platform)
    builtin = {"set", "create", "create_task", "assign", "notify", "webhook", "transition"}
    assert builtin <= {a.name for a in registry}
    assert all(registry.get(name).schema for name in builtin)


# -- set ----------------------------------------------------------------------------------------

def test_set_changes_fields_and_reassigns_as_the_system_one_level_deeper(make_platform) -> None:
    world = build_world(make_platform, {"up": on_created(
        "up", '[{set: {status: contacted, score: "{{ record.score * 2 }}", owner: manager}}]')})
    lead = world.lead(owner="rep1", score=21)
    world.drain()
    after = world.get(LEAD, lead["id"])
    assert (after["status"], after["score"]) == ("contacted", 42)
    assert after["owner"] == world.ids["chief"]  # rep1's manager (team1 has none: sales)
    assert only_run(world)["results"][0]["result"]["changed"] == ["score", "status", "owner"]
    history = world.service().history(LEAD, lead["id"])
    assert [h["action"] for h in history][-2:] == ["updated", "assigned"]
    assert history[-1]["actor"] is None


# -- create and create_task ---------------------------------------------------------------------

def test_create_makes_a_record_from_templates(make_platform) -> None:
    world = build_world(make_platform, {"account": on_created(
        "account", '[{create: {entity: account, values: {name: "{{ record.company }} Ltd", '
                   'tier: gold}, owner: owner}}]')})
    world.lead(owner=None, company="Acme")
    world.drain()
    beta = world.lead(company="Beta")  # assigned to rep1 before the rule runs
    world.drain()
    accounts = world.all(ACCOUNT)
    assert [(a["name"], a["tier"], a["owner"]) for a in accounts] == \
        [("Beta Ltd", "gold", world.ids["rep1"])]
    runs = {r["record_id"]: r for r in world.runs()}
    assert runs[beta["id"]]["status"] == "done"
    # the first lead had no owner: `owner: owner` is resolved before anything is made,
    # so the parked run left nothing half done
    (parked,) = [r for r in runs.values() if r["status"] == "parked"]
    assert "has no owner" in parked["last_error"]


def test_create_task_for_owner_manager_or_a_named_user(make_platform) -> None:
    world = build_world(make_platform, {
        "mine": on_created("mine", '[{create_task: {title: "Call {{ record.company }}", '
                           'due_in: 2d, priority: high}}]',
                           "{field: company, op: eq, value: Mine}"),
        "boss": on_created("boss", '[{create_task: {title: Review, assignee: manager}}]',
                           "{field: company, op: eq, value: Boss}"),
        "named": on_created("named", "[{create_task: {title: Help, assignee: rep3, "
                            "values: {status: done}}}]",
                            "{field: company, op: eq, value: Named}")})
    service = world.service()
    mine = service.create(LEAD, {"company": "Mine"})
    service.assign(LEAD, mine["id"], world.ids["rep2"])
    # the rule runs after commit: by then the lead is rep2's
    boss = service.create(LEAD, {"company": "Boss"})
    service.assign(LEAD, boss["id"], world.ids["chief"])
    named = service.create(LEAD, {"company": "Named"})
    world.drain()
    tasks = {t["title"]: t for t in world.all(TASK)}
    assert tasks["Call Mine"]["assignee"] == world.ids["rep2"]
    assert tasks["Call Mine"]["lead"] == mine["id"]
    assert (tasks["Call Mine"]["related_entity"], tasks["Call Mine"]["related_id"]) == \
        (LEAD, mine["id"])
    due = dt.datetime.fromisoformat(tasks["Call Mine"]["due_at"])
    assert abs(due - (world.clock.now + dt.timedelta(days=2))) < dt.timedelta(seconds=1)
    assert tasks["Review"]["assignee"] == world.ids["boss"]  # chief's manager
    assert (tasks["Help"]["assignee"], tasks["Help"]["status"]) == (world.ids["rep3"], "done")
    assert tasks["Help"]["lead"] == named["id"]


def test_create_task_refuses_clearly_without_a_task_entity(make_platform) -> None:
    from types import SimpleNamespace

    from metacrm.engines.actions import ActionContext, ActionFailed
    from metacrm.engines.actions.create import task_entity

    world = build_world(make_platform, {"task": on_created(
        "task", "[{create_task: {title: x, entity: account}}]")})
    world.lead()
    world.drain()
    run = only_run(world)  # an entity without the task's fields: refused, and why
    assert run["status"] == "parked" and "title" in run["last_error"]
    registry = world.runtime.registry
    no_tasks = SimpleNamespace(registry=SimpleNamespace(entities={
        k: v for k, v in registry.entities.items() if v.name != "task"}))
    context = ActionContext(world.platform, no_tasks, LEAD, {"id": 1}, "rule:x", "k")
    with pytest.raises(ActionFailed, match="there is no task entity"):
        task_entity(context, None)
    assert task_entity(ActionContext(world.platform, world.runtime, LEAD, {"id": 1},
                                     "rule:x", "k"), None) == TASK


def test_create_task_names_a_missing_assignee(make_platform) -> None:
    world = build_world(make_platform, {"nobody": on_created(
        "nobody", "[{create_task: {title: x, assignee: nobody_here}}]")})
    world.lead()
    world.drain()
    run = only_run(world)
    assert run["status"] == "parked"
    assert "there is no active user 'nobody_here'" in run["last_error"]


# -- assign -------------------------------------------------------------------------------------

def test_assign_round_robin_takes_turns_and_skips_members_at_their_cap(make_platform) -> None:
    world = build_world(make_platform, {"rr": on_created(
        "rr", "[{assign: {unit: team1, cap: 2, open_when: {field: status, op: in, "
              "value: [new, contacted]}}}]")})
    reps = [world.ids[n] for n in ("rep1", "rep2", "rep3")]
    owners = []
    for _ in range(4):
        lead = world.lead(owner=None)
        world.drain()
        owners.append(world.get(LEAD, lead["id"])["owner"])
    assert owners == [reps[0], reps[1], reps[2], reps[0]]
    # rep1 now holds 2 open leads (the cap): the turn passes to rep2
    nxt = world.lead(owner=None)
    world.drain()
    assert world.get(LEAD, nxt["id"])["owner"] == reps[1]
    # a lead that is closed no longer counts towards its owner's load
    first = world.all(LEAD)[0]
    world.service().update(LEAD, first["id"], {"status": "lost"})
    world.drain()
    results = [r["results"][0]["result"] for r in world.runs(status="done")]
    assert {r["strategy"] for r in results} == {"round_robin"}


def test_assign_least_loaded_and_nobody_available(make_platform) -> None:
    world = build_world(make_platform, {"ll": on_created(
        "ll", "[{assign: {strategy: least_loaded, unit: team1, cap: 2}}]",
        "{field: company, op: ne, value: Seed}")})
    service = world.service()
    for name, count in (("rep1", 2), ("rep2", 1)):
        for _ in range(count):
            lead = service.create(LEAD, {"company": "Seed"})
            service.assign(LEAD, lead["id"], world.ids[name])
    picks, made = [], []
    for _ in range(3):
        lead = world.lead(owner=None)
        world.drain()
        made.append(lead["id"])
        picks.append(world.get(LEAD, lead["id"])["owner"])
    # loads 2/1/0 → rep3; 2/1/1 → rep2 (lowest id of the least loaded); 2/2/1 → rep3
    assert picks == [world.ids["rep3"], world.ids["rep2"], world.ids["rep3"]]
    full = world.lead(owner=None)  # everyone holds 2: nobody is available
    world.drain()
    run = next(r for r in world.runs() if r["record_id"] == full["id"])
    assert run["status"] == "pending" and run["attempts"] == 1
    assert "the cap" in run["last_error"]
    # a lead is closed, so a member frees up: the retry assigns
    service.delete(LEAD, made[0])  # rep3's
    world.clock.advance(seconds=31)
    world.sweep()
    assert world.get(LEAD, full["id"])["owner"] == world.ids["rep3"]


def test_assign_to_the_owners_team_and_to_a_user_field(make_platform) -> None:
    world = build_world(make_platform, {"helper": on_created(
        "helper", "[{assign: {unit: owner_team, field: helper}}]"),
        "empty": on_created("empty", "[{assign: {unit: team2}}]",
                            "{field: company, op: eq, value: Empty}")})
    lead = world.lead(owner="rep2")
    world.drain()
    after = world.get(LEAD, lead["id"])
    assert after["helper"] in {world.ids[n] for n in ("rep1", "rep2", "rep3")}
    assert after["owner"] == world.ids["rep2"]
    world.lead(company="Empty")
    world.drain()
    empty = next(r for r in world.runs() if r["rule"] == "crm.empty")
    assert "has no active members" in empty["last_error"]


# -- notify -------------------------------------------------------------------------------------

def test_notify_sends_through_the_channels_once_per_run(make_platform) -> None:
    world = build_world(make_platform, {"mail": on_created(
        "mail", '[{notify: {channel: email, to: [owner, manager, "ops@example.com"], '
                'subject: "New lead {{ record.company }}", body: "Score {{ record.score }}"}}]')})
    world.lead(owner=None)
    world.drain()
    run = only_run(world)
    assert run["status"] == "parked" and "has no owner" in run["last_error"]

    service = world.service()
    lead = service.create(LEAD, {"company": "Acme", "score": 7})
    with world.runtime.begin() as connection:  # owned before the rule runs
        table = world.runtime.tables.by_entity[LEAD]
        connection.execute(table.update().where(table.c.id == lead["id"]).values(
            owner=world.ids["rep1"]))
    world.drain()
    from metacrm.platform.channels import deliveries

    with world.runtime.connect() as connection:
        sent = deliveries.listing(connection)
    assert sorted((d["recipient"], d["status"], d["subject"]) for d in sent) == [
        ("chief@example.com", "sent", "New lead Acme"),
        ("ops@example.com", "sent", "New lead Acme"),
        ("rep1@example.com", "sent", "New lead Acme")]
    outbox = list((world.project.var_dir / "outbox").rglob("*.eml"))
    assert len(outbox) == 3 and "Score 7" in outbox[0].read_text("utf-8")
    # the same action again (a worker died after sending) sends nothing new: one
    # delivery per run, action and recipient
    from metacrm.engines.actions import ActionContext
    from metacrm.engines.rules.runner import action_key

    done = next(r for r in world.runs() if r["status"] == "done")
    context = ActionContext(world.platform, world.runtime, LEAD, world.get(LEAD, lead["id"]),
                            "rule:crm.mail", f"{action_key(done)}#0")
    again = actions_of(world.platform).run(context, {"notify": {
        "channel": "email", "to": ["owner", "manager", "ops@example.com"]}})
    assert {m["delivery"] for m in again["messages"]} == \
        {m["delivery"] for m in done["results"][0]["result"]["messages"]}
    with world.runtime.connect() as connection:
        assert len(deliveries.listing(connection)) == 3


# -- webhook ------------------------------------------------------------------------------------

class Receiver:
    """A loopback HTTP receiver: answers each call with the next status of `answers`."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver([500]) as found:
        yield found


def test_webhook_calls_are_signed_and_retried(make_platform, receiver: Receiver,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from metacrm.platform.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature

    monkeypatch.setenv("RULES_TEST_SECRET", "s3cret")
    world = build_world(make_platform, {"hook": f"""
        rule: hook
        entity: lead
        trigger: created
        do:
          - webhook:
              url: {receiver.url}
              secret_env: RULES_TEST_SECRET
              payload: {{company: "{{{{ record.company }}}}", id: "{{{{ record.id }}}}"}}
    """})
    lead = world.lead()
    world.drain()
    assert len(receiver.calls) == 1  # answered 500: a retry is scheduled
    assert only_run(world)["status"] == "done"  # the run handed the call to the channels
    world.clock.advance(seconds=11)
    jobs_of(world.platform).sweep()
    world.drain()
    assert len(receiver.calls) == 2
    keys = {headers[DELIVERY_HEADER] for headers, _ in receiver.calls}
    assert len(keys) == 1  # the same delivery key on every attempt
    for headers, body in receiver.calls:
        assert verify_signature("s3cret", headers[SIGNATURE_HEADER], body)
        assert not verify_signature("wrong", headers[SIGNATURE_HEADER], body)
        assert json.loads(body) == {"company": "Acme", "id": lead["id"]}
    jobs_of(world.platform).sweep()
    world.drain()
    assert len(receiver.calls) == 2  # delivered: no more calls


def test_webhook_without_its_secret_retries_then_parks(make_platform,
                                                       receiver: Receiver) -> None:
    world = build_world(make_platform, {"hook": on_created(
        "hook", f"[{{webhook: {{url: '{receiver.url}', secret_env: RULES_NO_SUCH_SECRET}}}}]")})
    world.lead()
    world.drain()
    run = only_run(world)
    assert run["status"] == "pending"
    assert "RULES_NO_SUCH_SECRET" in run["last_error"]
    assert receiver.calls == []


# -- transition ---------------------------------------------------------------------------------

def test_transition_takes_a_workflow_transition(make_platform) -> None:
    world = build_world(make_platform, {
        "win": on_created("win", "[{transition: {name: win}}]",
                          "{field: name, op: eq, value: Big}", entity="deal"),
        "bad": on_created("bad", "[{transition: {name: win}}, {transition: {name: lose}}]",
                          "{field: name, op: eq, value: Twice}", entity="deal")})
    big = world.service().create(DEAL, {"name": "Big"})
    small = world.service().create(DEAL, {"name": "Small"})
    twice = world.service().create(DEAL, {"name": "Twice"})
    world.drain()
    assert world.get(DEAL, big["id"])["stage"] == "won"
    assert world.get(DEAL, small["id"])["stage"] == "open"
    assert world.get(DEAL, twice["id"])["stage"] == "won"
    bad = next(r for r in world.runs() if r["rule"] == "crm.bad")
    assert bad["status"] == "parked" and "lose" in bad["last_error"]
