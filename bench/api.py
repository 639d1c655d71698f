"""Benchmark: the generated REST API beside a hand-written Flask + SQLAlchemy Core API.

Over 100,000 contacts (and 1,000 accounts) on SQLite, it times per request: get by id,
a list of 50 with a 3-condition filter and one expand, create, and patch — through the
generated API (tenant dispatch, bearer token, record service, audit) and through a
hand-written endpoint doing the same work (token lookup, validation, the same SQL, an
audit row), interleaved in the same run. Both in-process (Flask test client) and under
a real threaded WSGI server with concurrent clients on loopback. It also times the
filter's SQL alone (ours as generated vs the hand-written statement) and counts the
queries one list makes. Last line: one JSON object with the figures (ratios are ours ÷
hand-written, lower is better).

    .venv/bin/python bench/api.py [--records 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, request
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import machine, median, print_json_line, print_table

from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, hash_token, issue_token, set_roles
from metacrm.platform.records import ListQuery, RecordService
from metacrm.platform.settings import Settings
from metacrm.platform.systables import system_tables

LIBRARY = {
    "metadata/modules/bench/module.yaml": "module: bench\nowner: bench-team\n",
    "metadata/modules/bench/entities/account.yaml": """\
entity: account
fields:
  name: {type: string, max_length: 200, required: true}
  city: {type: string, max_length: 100}
""",
    "metadata/modules/bench/entities/contact.yaml": """\
entity: contact
fields:
  first_name: {type: string, max_length: 100, required: true}
  last_name: {type: string, max_length: 100}
  email: {type: email, index: true}
  status: {type: enum, options: [new, active, lost], default: new, index: true}
  score: {type: integer, min: 0, max: 100, index: true}
  city: {type: string, max_length: 100, index: true}
  account: {type: reference, to: account}
""",
    "tenants/bench/tenant.yaml": "tenant: bench\nmodules: [bench]\n",
}
CITIES = ["Taipei", "Tainan", "Shanghai", "Beijing", "Hsinchu", "Kaohsiung", "Taichung",
          "Suzhou"]
FILTER_QS = "status=active&score__gte=50&city=Taipei&expand=account&limit=50"


def write_library(root: Path) -> None:
    for relative, text in LIBRARY.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def load_rows(runtime: Any, records: int) -> None:
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    accounts = runtime.tables.by_entity["bench.account"]
    contacts = runtime.tables.by_entity["bench.contact"]
    system = {"created_at": now, "updated_at": now, "row_version": 1}
    with runtime.begin() as connection:
        connection.execute(accounts.insert(), [
            {"name": f"Account {i}", "city": rng.choice(CITIES), **system}
            for i in range(1, 1001)])
        batch = []
        for i in range(records):
            batch.append({"first_name": f"First{i}", "last_name": f"Last{i}",
                          "email": f"c{i}@example.com",
                          "status": rng.choice(["new", "active", "lost"]),
                          "score": rng.randint(0, 100), "city": rng.choice(CITIES),
                          "account": rng.randint(1, 1000), **system})
            if len(batch) == 10_000:
                connection.execute(contacts.insert(), batch)
                batch = []
        if batch:
            connection.execute(contacts.insert(), batch)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    return value


def handwritten_app(runtime: Any) -> Flask:
    """The baseline: the same work written by hand with Flask and SQLAlchemy Core."""
    app = Flask("handwritten")
    contacts = runtime.tables.by_entity["bench.contact"]
    accounts = runtime.tables.by_entity["bench.account"]
    tables = system_tables()
    tokens, users, audit = tables.tokens, tables.users, tables.audit
    columns = list(contacts.c)
    writable = {"first_name": str, "last_name": str, "email": str, "status": str,
                "score": int, "city": str, "account": int}

    def user_id() -> int | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with runtime.connect() as connection:
            return connection.execute(
                sa.select(users.c.id).select_from(tokens.join(users))
                .where(tokens.c.token_hash == hash_token(token),
                       tokens.c.revoked_at.is_(None))).scalar()

    def row_json(row: Any) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in row.items()}

    def valid(data: Any, partial: bool) -> dict[str, Any] | None:
        if not isinstance(data, dict) or any(k not in writable for k in data):
            return None
        for key, kind in writable.items():
            if key in data and data[key] is not None and not isinstance(data[key], kind):
                return None
        if data.get("status") not in (None, "new", "active", "lost"):
            return None
        if not partial and not data.get("first_name"):
            return None
        return data

    def respond(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body, default=str), status=status,
                        content_type="application/json")

    @app.get("/h/contact/<int:record_id>")
    def get(record_id: int) -> Response:
        if user_id() is None:
            return respond({"title": "Unauthorized"}, 401)
        with runtime.connect() as connection:
            row = connection.execute(sa.select(*columns).where(
                contacts.c.id == record_id, contacts.c.deleted_at.is_(None))).mappings().first()
        return respond(row_json(row)) if row else respond({"title": "Not found"}, 404)

    @app.get("/h/contact")
    def listing() -> Response:
        if user_id() is None:
            return respond({"title": "Unauthorized"}, 401)
        args = request.args
        with runtime.connect() as connection:
            rows = connection.execute(sa.select(*columns).where(
                contacts.c.deleted_at.is_(None), contacts.c.status == args["status"],
                contacts.c.score >= int(args["score__gte"]), contacts.c.city == args["city"])
                .order_by(contacts.c.id).limit(51)).mappings().all()
            items = [row_json(r) for r in rows[:50]]
            ids = sorted({i["account"] for i in items if i["account"]})
            found = {r["id"]: row_json(r) for r in connection.execute(
                sa.select(*accounts.c).where(accounts.c.id.in_(ids))).mappings()}
        for item in items:
            item["account"] = found.get(item["account"], item["account"])
        return respond({"items": items, "next_cursor": None})

    @app.post("/h/contact")
    def create() -> Response:
        actor = user_id()
        data = valid(request.get_json(silent=True), partial=False)
        if data is None:
            return respond({"title": "Validation failed"}, 422)
        now = dt.datetime.now(dt.UTC)
        with runtime.begin() as connection:
            new_id = connection.execute(contacts.insert().values(
                **data, created_at=now, updated_at=now, created_by=actor, updated_by=actor,
                owner=actor, row_version=1).returning(contacts.c.id)).scalar_one()
            connection.execute(audit.insert().values(
                entity="bench.contact", record_id=new_id, action="created", actor=actor, at=now,
                changes={k: {"before": None, "after": v} for k, v in data.items()}))
            row = connection.execute(sa.select(*columns).where(contacts.c.id == new_id)
                                     ).mappings().one()
        return respond(row_json(row), 201)

    @app.patch("/h/contact/<int:record_id>")
    def patch(record_id: int) -> Response:
        actor = user_id()
        data = valid(request.get_json(silent=True), partial=True)
        if data is None:
            return respond({"title": "Validation failed"}, 422)
        now = dt.datetime.now(dt.UTC)
        with runtime.begin() as connection:
            current = connection.execute(sa.select(*columns).where(
                contacts.c.id == record_id, contacts.c.deleted_at.is_(None))).mappings().first()
            if current is None:
                return respond({"title": "Not found"}, 404)
            changed = {k: v for k, v in data.items() if current[k] != v}
            connection.execute(contacts.update().where(
                contacts.c.id == record_id, contacts.c.row_version == current["row_version"])
                .values(**changed, updated_at=now, updated_by=actor,
                        row_version=current["row_version"] + 1))
            connection.execute(audit.insert().values(
                entity="bench.contact", record_id=record_id, action="updated", actor=actor,
                at=now, changes={k: {"before": current[k], "after": v}
                                 for k, v in changed.items()}))
            row = connection.execute(sa.select(*columns).where(contacts.c.id == record_id)
                                     ).mappings().one()
        return respond(row_json(row))

    return app


class Workload:
    """The four request kinds, against either API (paths differ only by prefix)."""

    def __init__(self, prefix: str, records: int) -> None:
        self.prefix = prefix
        self.records = records
        self.rng = random.Random(11)
        self.counter = 0

    def requests(self, kind: str) -> tuple[str, str, dict[str, Any] | None]:
        self.counter += 1
        if kind == "get":
            return "GET", f"{self.prefix}/{self.rng.randint(1, self.records)}", None
        if kind == "list":
            return "GET", f"{self.prefix}?{FILTER_QS}", None
        if kind == "create":
            return "POST", self.prefix, {"first_name": f"New{self.counter}", "status": "new",
                                         "score": 10, "city": "Taipei", "account": 5}
        record_id = self.rng.randint(1, self.records)
        return "PATCH", f"{self.prefix}/{record_id}", {"score": self.counter % 100}


def in_process(client: Any, workload: Workload, kind: str, count: int,
               headers: dict[str, str]) -> float:
    start = time.perf_counter()
    for _ in range(count):
        method, path, body = workload.requests(kind)
        response = client.open(path, method=method, json=body, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.data[:300]}")
    return (time.perf_counter() - start) / count


def over_http(port: int, workload: Workload, kind: str, count: int, clients: int,
              headers: dict[str, str]) -> float:
    lock = threading.Lock()
    errors: list[str] = []

    def client_loop(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            with lock:
                method, path, body = workload.requests(kind)
            payload = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=payload, headers={
                **headers, "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status >= 400:
                errors.append(f"{method} {path}: {response.status}")
        connection.close()

    threads = [threading.Thread(target=client_loop, args=(count // clients,))
               for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return (time.perf_counter() - start) / (count // clients * clients)


def serve(app: Any) -> tuple[Any, int]:
    from werkzeug.serving import WSGIRequestHandler

    WSGIRequestHandler.protocol_version = "HTTP/1.1"
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_port


def filter_sql(runtime: Any, platform: Any, rounds: int) -> tuple[float, float]:
    """Our generated list statement vs the hand-written one, executed alone."""
    from metacrm.engines.conditions import EvalContext, parse_condition, to_sql

    registry = runtime.registry
    condition = {"all": [{"field": "status", "op": "eq", "value": "active"},
                         {"field": "score", "op": "gte", "value": 50},
                         {"field": "city", "op": "eq", "value": "Taipei"}]}
    node = parse_condition(condition, "bench.contact", registry, platform.operators)
    now = dt.datetime.now(dt.UTC)
    where = to_sql(node, "bench.contact", runtime.tables.by_entity, registry,
                   EvalContext(now, dt.UTC))
    captured: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    engine = runtime.db.engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        RecordService(runtime).list("bench.contact", ListQuery(limit=50), where=where)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    ours_sql, ours_params = captured[-1]
    contacts = runtime.tables.by_entity["bench.contact"]
    hand = sa.select(*contacts.c).where(
        contacts.c.deleted_at.is_(None), contacts.c.status == "active", contacts.c.score >= 50,
        contacts.c.city == "Taipei").order_by(contacts.c.id).limit(51)
    ours_times, hand_times = [], []
    with runtime.connect() as connection:
        raw = connection.connection.dbapi_connection
        hand_compiled = hand.compile(dialect=engine.dialect)
        hand_sql = str(hand_compiled)
        hand_params = tuple(hand_compiled.params[k] for k in hand_compiled.positiontup)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(50):
                raw.execute(ours_sql, ours_params).fetchall()
            ours_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(50):
                raw.execute(hand_sql, hand_params).fetchall()
            hand_times.append(time.perf_counter() - start)
    return median(ours_times) / 50, median(hand_times) / 50


def queries_per_list(runtime: Any, client: Any, headers: dict[str, str]) -> int:
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "bench__" in statement:  # entity tables only: not the token or version checks
            statements.append(statement)

    engine = runtime.db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        client.get(f"/t/bench/api/v1/bench/contact?{FILTER_QS}", headers=headers)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(statements)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="metacrm-bench-api-"))
    try:
        write_library(root)
        settings = Settings(root, root / "var", None)
        app = create_app(settings)
        platform = app.extensions["metacrm.platform"]
        report = platform.create_tenant("bench")
        if not report.ok:
            print(report.format())
            return 1
        runtime = platform.runtime("bench")
        started = time.perf_counter()
        load_rows(runtime, args.records)
        print(f"loaded {args.records:,} contacts in {time.perf_counter() - started:.1f} s")
        with runtime.begin() as connection:
            user_id = create_user(connection, "bench")
            set_roles(connection, user_id, ["administrator"])  # scopes: bench/permissions.py
            token = issue_token(connection, user_id)
        headers = {"Authorization": f"Bearer {token}"}
        baseline = handwritten_app(runtime)
        ours_client, hand_client = app.test_client(), baseline.test_client()
        ours_load = Workload("/t/bench/api/v1/bench/contact", args.records)
        hand_load = Workload("/h/contact", args.records)
        kinds = ("get", "list", "create", "patch")
        for kind in kinds:  # warm both: statement caches, schemas, sub-app
            in_process(ours_client, ours_load, kind, 20, headers)
            in_process(hand_client, hand_load, kind, 20, headers)
        results: dict[str, dict[str, list[float]]] = {k: {"ours": [], "hand": []} for k in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                results[kind]["ours"].append(
                    in_process(ours_client, ours_load, kind, args.requests, headers))
                results[kind]["hand"].append(
                    in_process(hand_client, hand_load, kind, args.requests, headers))
        ours_server, ours_port = serve(app)
        hand_server, hand_port = serve(baseline)
        http_results: dict[str, dict[str, list[float]]] = {k: {"ours": [], "hand": []}
                                                           for k in kinds}
        try:
            for _ in range(max(2, args.rounds // 2)):
                for kind in kinds:
                    http_results[kind]["ours"].append(over_http(
                        ours_port, ours_load, kind, args.requests, 4, headers))
                    http_results[kind]["hand"].append(over_http(
                        hand_port, hand_load, kind, args.requests, 4, headers))
        finally:
            ours_server.shutdown()
            hand_server.shutdown()
        ours_sql, hand_sql = filter_sql(runtime, platform, args.rounds)
        queries = queries_per_list(runtime, ours_client, headers)
        rows = []
        figures: dict[str, Any] = {}
        for kind in kinds:
            ours, hand = median(results[kind]["ours"]), median(results[kind]["hand"])
            h_ours, h_hand = median(http_results[kind]["ours"]), median(http_results[kind]["hand"])
            figures[f"{kind}_ratio"] = round(ours / hand, 3)
            figures[f"{kind}_http_ratio"] = round(h_ours / h_hand, 3)
            rows.append([kind, f"{ours * 1e3:.2f}", f"{hand * 1e3:.2f}", f"{ours / hand:.2f}",
                         f"{h_ours * 1e3:.2f}", f"{h_hand * 1e3:.2f}", f"{h_ours / h_hand:.2f}",
                         "≤ 1.25"])
        rows.append(["filter SQL", f"{ours_sql * 1e3:.3f}", f"{hand_sql * 1e3:.3f}",
                     f"{ours_sql / hand_sql:.2f}", "", "", "", "≤ 1.10"])
        print(machine())
        print(f"{args.records:,} records, {args.rounds} rounds x {args.requests} requests, "
              f"medians; HTTP: threaded WSGI server, 4 concurrent clients on loopback")
        print_table(["request", "ours ms", "hand ms", "ratio", "http ours ms", "http hand ms",
                     "http ratio", "target"], rows)
        print(f"queries per list with one expand (entity tables; the token lookup is one "
              f"more): {queries} (target: 1 + expands = 2)")
        figures["filter_sql_ratio"] = round(ours_sql / hand_sql, 3)
        figures["queries_per_list"] = queries
        print_json_line({k: figures[k] for k in (
            "get_ratio", "list_ratio", "create_ratio", "patch_ratio", "filter_sql_ratio",
            "queries_per_list")} | {k: v for k, v in figures.items() if "http" in k})
        platform.close()
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
