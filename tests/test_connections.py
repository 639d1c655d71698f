"""One connection per request (metacrm.platform.connections), on SQLite and PostgreSQL.

An API request checks out one connection, reads on it without holding a transaction, and
writes on it in a transaction of its own, which `record_writing` plugins share; a write a
plugin starts inside another is a savepoint of it. Outside a request nothing is shared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from metacrm.hookspecs import hookimpl
from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, issue_token, set_roles
from metacrm.platform.records import Conflict
from metacrm.platform.runtime import Platform

SLUG = "cx"
LIBRARY = {
    "metadata/modules/crm/module.yaml": "module: crm\nowner: sales-ops\n",
    "metadata/modules/crm/entities/lead.yaml": """\
        entity: lead
        fields:
          name: {type: string, max_length: 100}
          status: {type: enum, options: [new, won, lost], default: new}
        """,
    "metadata/modules/crm/entities/task.yaml": """\
        entity: task
        fields:
          title: {type: string, max_length: 100}
          lead: {type: reference, to: crm.lead}
        """,
    f"tenants/{SLUG}/tenant.yaml": f"tenant: {SLUG}\nmodules: [crm]\n",
}


def in_transaction(connection: sa.Connection) -> bool:
    """Whether the database driver has a transaction open on `connection` (not
    SQLAlchemy's bookkeeping: what the server or SQLite sees)."""
    driver = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        return bool(driver.in_transaction)
    from psycopg.pq import TransactionStatus

    return driver.info.transaction_status != TransactionStatus.IDLE


@dataclass
class Probe:
    """A plugin: an API route that reads, lets another connection write, then writes;
    and a `record_writing` hook noting the connection it is given."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    follow_up: str | None = None  # the hook creates a task so titled for each new lead

    @hookimpl
    def install_api_routes(self, app: Flask, api: Any) -> None:
        from metacrm.generators.api import json_response

        def api_probe(record_id: int) -> Any:
            runtime = api.runtime
            before = api.service().get("crm.lead", record_id)
            with runtime.connect() as connection:
                shared = connection
                after_read = in_transaction(connection)
            leads = runtime.tables.by_entity["crm.lead"]
            with runtime.db.begin() as other:  # someone else commits in between
                other.execute(leads.update().where(leads.c.id == record_id).values(
                    name="changed elsewhere"))
            updated = api.service().update("crm.lead", record_id, {"status": "won"})
            with runtime.connect() as connection:
                same = connection is shared
                after_write = in_transaction(connection)
            return json_response({"before": before["name"], "after_read": after_read,
                                  "updated": updated["name"], "same": same,
                                  "after_write": after_write,
                                  "hook_same": self.seen[-1]["connection"] is shared})

        app.add_url_rule("/api/v1/_probe/<int:record_id>", "api_probe", api_probe,
                         methods=["POST"])

    @hookimpl
    def record_writing(self, event: Any, connection: Any, service: Any) -> None:
        self.seen.append({"kind": event.kind, "entity": event.entity,
                          "connection": connection, "open": in_transaction(connection)})
        if event.entity == "crm.lead" and event.record.get("status") == "lost":
            raise Conflict("a lead is never lost here")
        if self.follow_up and event.entity == "crm.lead" and event.kind == "created":
            service.create("crm.task", {"title": self.follow_up, "lead": event.record_id})


@dataclass
class Served:
    platform: Platform
    client: FlaskClient
    probe: Probe
    token: str

    @property
    def runtime(self) -> Any:
        return self.platform.runtime(SLUG)

    @property
    def pool(self) -> Any:
        return self.runtime.db.engine.pool

    def open(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.open(f"/t/{SLUG}/api/v1/{path}", method=method,
                                data=None if body is None else json.dumps(body),
                                headers={"Authorization": f"Bearer {self.token}",
                                         "Content-Type": "application/json"})

    def rows(self, entity: str) -> list[dict[str, Any]]:
        table = self.runtime.tables.by_entity[entity]
        with self.runtime.connect() as connection:
            return [dict(r) for r in connection.execute(
                sa.select(table).order_by(table.c.id)).mappings()]


@pytest.fixture
def served(make_platform: Any) -> Iterator[Served]:
    platform = make_platform(LIBRARY, check_interval=3600)  # no version checks mid-test
    assert platform.create_tenant(SLUG).ok
    probe = Probe()
    platform.plugins.register(probe)
    runtime = platform.runtime(SLUG)
    with runtime.begin() as connection:
        user_id = create_user(connection, "admin")
        set_roles(connection, user_id, ["administrator"])
        token = issue_token(connection, user_id, "tests")
    app = create_app(make_platform.settings(), platform)
    app.testing = True
    yield Served(platform, app.test_client(), probe, token)


@pytest.fixture
def checkouts(served: Served) -> Iterator[list[str]]:
    """Every connection checkout from the tenant's pool (and BEGINs sent through it)."""
    seen: list[str] = []
    engine = served.runtime.db.engine

    def checkout(*_: Any) -> None:
        seen.append("checkout")

    def statement(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        if text.startswith("BEGIN"):
            seen.append(text)

    sa.event.listen(engine.pool, "checkout", checkout)
    sa.event.listen(engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        sa.event.remove(engine.pool, "checkout", checkout)
        sa.event.remove(engine, "before_cursor_execute", statement)


def test_a_request_reads_and_writes_on_one_connection_given_back_at_the_end(
        served: Served, checkouts: list[str]) -> None:
    created = served.open("POST", "crm/lead", {"name": "Ada"})
    assert created.status_code == 201, created.get_json()
    lead = created.get_json()
    assert served.pool.checkedout() == 0
    # authentication (token, principal), the record read and the write: one checkout, and
    # reads send no BEGIN (SQLite: only the write's BEGIN IMMEDIATE)
    sqlite = served.runtime.db.dialect == "sqlite"
    assert checkouts == ["checkout", *(["BEGIN IMMEDIATE"] if sqlite else [])]
    checkouts.clear()
    got = served.open("GET", f"crm/lead/{lead['id']}")
    assert got.status_code == 200 and got.get_json()["name"] == "Ada"
    assert checkouts == ["checkout"] and served.pool.checkedout() == 0
    checkouts.clear()
    missing = served.open("GET", "crm/lead/999")  # an error answer gives it back too
    assert missing.status_code == 404 and served.pool.checkedout() == 0
    assert checkouts == ["checkout"]


def test_reads_hold_no_transaction_and_a_write_sees_what_others_committed(
        served: Served) -> None:
    lead = served.open("POST", "crm/lead", {"name": "Ada"}).get_json()
    answer = served.open("POST", f"_probe/{lead['id']}")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {
        "before": "Ada", "after_read": False,  # autocommit: nothing held between reads
        "updated": "changed elsewhere",  # the write's transaction began after the other
        "same": True, "after_write": False, "hook_same": True}
    hook = served.probe.seen[-1]
    assert (hook["kind"], hook["open"]) == ("updated", True)  # inside the write
    assert [r["status"] for r in served.rows("crm.lead")] == ["won"]


def test_a_plugin_refusal_rolls_the_write_back_and_the_next_request_is_clean(
        served: Served) -> None:
    lead = served.open("POST", "crm/lead", {"name": "Ada"}).get_json()
    refused = served.open("PATCH", f"crm/lead/{lead['id']}", {"status": "lost",
                                                               "name": "Bo"})
    assert refused.status_code == 409, refused.get_json()
    assert [(r["name"], r["status"]) for r in served.rows("crm.lead")] == [("Ada", "new")]
    assert served.pool.checkedout() == 0
    changed = served.open("PATCH", f"crm/lead/{lead['id']}", {"name": "Bo"})
    assert changed.status_code == 200 and changed.get_json()["name"] == "Bo"
    history = served.open("GET", f"crm/lead/{lead['id']}/history").get_json()["items"]
    assert [entry["action"] for entry in history] == ["created", "updated"]


def test_a_write_inside_a_write_is_a_savepoint_of_it(served: Served) -> None:
    """A plugin creating a task for each new lead: the task refers to the lead that is not
    committed yet, so only the same transaction can write it (another connection would
    wait for SQLite's lock, or not see the lead on PostgreSQL)."""
    served.probe.follow_up = "call"
    created = served.open("POST", "crm/lead", {"name": "Ada"})
    assert created.status_code == 201, created.get_json()
    lead = created.get_json()
    assert [(t["title"], t["lead"]) for t in served.rows("crm.task")] == [("call", lead["id"])]
    task_hook = next(s for s in served.probe.seen if s["entity"] == "crm.task")
    lead_hook = next(s for s in served.probe.seen if s["entity"] == "crm.lead")
    assert task_hook["connection"] is lead_hook["connection"]
    # the nested write is refused (a title too long): the lead is not written either
    served.probe.follow_up = "x" * 200
    refused = served.open("POST", "crm/lead", {"name": "Bo"})
    assert refused.status_code == 422, refused.get_json()
    assert [r["name"] for r in served.rows("crm.lead")] == ["Ada"]
    assert len(served.rows("crm.task")) == 1
    assert served.pool.checkedout() == 0


def test_outside_a_request_each_connect_is_its_own(served: Served) -> None:
    runtime = served.runtime
    assert runtime.request_connection() is None
    with runtime.connect() as first, runtime.connect() as second:
        assert first is not second
    with served.platform.databases.tenant(SLUG).connect() as connection:
        assert not in_transaction(connection)


# -- pinging pooled PostgreSQL connections -----------------------------------------------------

@pytest.fixture
def pg_engine(backend: Any) -> Iterator[sa.Engine]:
    if not backend.is_postgres:
        pytest.skip("the idle ping is for PostgreSQL's pool (SQLite files need none)")
    engine = sa.create_engine(backend.database_url, pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_connection_is_pinged_only_after_sitting_idle(pg_engine: sa.Engine,
                                                        monkeypatch: Any) -> None:
    from metacrm.platform.database import ping_when_idle

    pings: list[int] = []
    real = pg_engine.dialect.do_ping
    monkeypatch.setattr(pg_engine.dialect, "do_ping",
                        lambda dbapi: pings.append(1) or real(dbapi))
    ping_when_idle(pg_engine, idle=3600)
    for _ in range(3):  # new, then given back moments ago: no ping
        with pg_engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    assert pings == []
    eager = sa.create_engine(pg_engine.url, pool_size=1, max_overflow=0)
    monkeypatch.setattr(eager.dialect, "do_ping", lambda dbapi: pings.append(2) or real(dbapi))
    try:
        ping_when_idle(eager, idle=0)  # every checkout finds it idle long enough
        for _ in range(3):
            with eager.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
    finally:
        eager.dispose()
    assert pings == [2, 2]  # not the new connection: the two that came back


def test_a_lost_idle_connection_is_replaced_before_use(pg_engine: sa.Engine) -> None:
    """A server that dropped the pooled connection (a restart, an idle timeout): the ping
    finds it, the pool takes a new one, and the caller never sees the loss."""
    from metacrm.platform.database import ping_when_idle

    ping_when_idle(pg_engine, idle=0)
    with pg_engine.connect() as connection:
        lost = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    killer = sa.create_engine(pg_engine.url, poolclass=sa.NullPool)
    try:
        with killer.connect() as other:
            assert other.exec_driver_sql(f"SELECT pg_terminate_backend({lost})").scalar()
    finally:
        killer.dispose()
    with pg_engine.connect() as connection:
        now = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    assert now != lost
