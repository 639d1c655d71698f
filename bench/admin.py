"""Benchmark: the generated admin UI beside a bare flask-admin ModelView on the same table.

A throw-away project with one entity, `bench.contact` (9 fields: strings, e-mail, phone,
an enum, a date, money, an integer, a boolean), a YAML list view (9 columns, sorted by
`last_name`, 50 a page) and a YAML form (3 sections), provisioned on SQLite (and on
PostgreSQL when one answers), with 100,000 rows. In the same run and interleaved it times,
per request, through Flask's test client (in-process):

- ours: the real app (`create_app`) signed in through the login form (password + CSRF)
  as a user with the administrator role; GET of the list page (50 rows) and GET of the
  edit page of a random record;
- the baseline: a bare Flask app with `flask_admin.Admin` and
  `flask_admin.contrib.sqla.ModelView` over the same table (reflected with SQLAlchemy's
  automap, Flask-SQLAlchemy's session), page_size 50, the same columns, sort, search
  fields, enum choices and form fields, and its edit page for the same record ids. It has
  no sign-in at all: ours loads the session's user and principal on every request, which
  is reported on its own (the visitor load alone, and each side's index page).

Like ours, the baseline leaves out soft-deleted rows (`deleted_at IS NULL`: get_query,
get_count_query and get_one, as flask-admin's docs advise for a persistent filter) and
counts at most 10,001 rows (ours shows "10,000+"; flask-admin's default would count all
100,000, reported as an info row).

Ratios are ours ÷ baseline (lower is better), medians over every request. Last line: one
JSON object starting with "list_ratio", "edit_ratio".

    .venv/bin/python bench/admin.py [--records 100000] [--rounds 12] [--requests 20] [--no-pg]
    .venv/bin/python bench/admin.py --profile       # plus where our pages spend their time
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import html
import io
import os
import pstats
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PassTimer, ScratchPostgres, machine, median, print_json_line, print_table

from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, set_roles
from metacrm.platform.passwords import hash_password
from metacrm.platform.settings import Settings

SLUG = "bench"
PASSWORD = "bench-admin-password"
COUNT_CAP = 10_000  # RecordService.list counts at most this many (+1) rows
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "metacrm_bench_admin"
TARGET = 1.3

COLUMNS = ["first_name", "last_name", "email", "phone", "status", "birthday", "balance",
           "score", "vip"]
SEARCH = ["first_name", "last_name", "email"]
STATUSES = [("new", "New"), ("active", "Active"), ("lost", "Lost")]
LIBRARY = {
    "metadata/modules/bench/module.yaml": "module: bench\nowner: bench-team\n",
    "metadata/modules/bench/entities/contact.yaml": """\
entity: contact
label: {en: Contact}
plural_label: {en: Contacts}
title: "{first_name} {last_name}"
search: [first_name, last_name, email]
fields:
  first_name: {type: string, max_length: 100, required: true, label: {en: First name}}
  last_name: {type: string, max_length: 100, required: true, index: true, label: {en: Last name}}
  email: {type: email, max_length: 254, index: true, label: {en: E-mail}}
  phone: {type: phone, max_length: 32, label: {en: Phone}}
  status:
    type: enum
    required: true
    default: new
    label: {en: Status}
    options:
      - {value: new, label: {en: New}}
      - {value: active, label: {en: Active}}
      - {value: lost, label: {en: Lost}}
  birthday: {type: date, label: {en: Birthday}}
  balance: {type: money, currency: CNY, min: 0, default: 0, label: {en: Balance}}
  score: {type: integer, min: 0, max: 100, label: {en: Score}}
  vip: {type: boolean, default: false, label: {en: VIP}}
""",
    "metadata/modules/bench/views/contact_all.yaml": """\
view: contact_all
entity: contact
default: true
label: {en: All contacts}
columns: [first_name, last_name, email, phone, status, birthday, balance, score, vip]
sort: [last_name]
page_size: 50
""",
    "metadata/modules/bench/forms/contact_default.yaml": """\
form: contact_default
entity: contact
default: true
label: {en: Contact}
sections:
  - name: identity
    label: {en: Identity}
    columns: 2
    fields: [first_name, last_name, status, birthday]
  - name: reach
    label: {en: Reach}
    columns: 2
    fields: [email, phone]
  - name: value
    label: {en: Value}
    fields: [balance, score, vip]
""",
    "tenants/bench/tenant.yaml": "tenant: bench\nlabel: {en: Bench}\nlocale: en\n"
                                 "timezone: UTC\nmodules: [bench]\n",
}
FIRST = ["Ada", "Bo", "Chen", "Dana", "Eli", "Fang", "Gus", "Hui", "Ivy", "Jun", "Kai", "Lin"]
CITIES = ["Taipei", "Tainan", "Shanghai", "Hsinchu"]

OURS_LIST = f"/t/{SLUG}/admin/bench/contact/"
OURS_EDIT = f"/t/{SLUG}/admin/bench/contact/{{id}}/edit"
OURS_INDEX = f"/t/{SLUG}/admin/"
BASE_LIST = "/admin/contact/"
BASE_EDIT = "/admin/contact/edit/?id={id}"
BASE_INDEX = "/admin/"
LEAN_LIST = "/admin/contact_lean/"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def write_library(root: Path) -> None:
    for relative, text in LIBRARY.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def load_rows(runtime: Any, records: int, owner: int) -> None:
    """`records` contacts through Core executemany, system columns filled."""
    rng = random.Random(7)
    contacts = runtime.tables.by_entity["bench.contact"]
    now = dt.datetime.now(dt.UTC)
    system = {"created_at": now, "updated_at": now, "created_by": owner, "updated_by": owner,
              "owner": owner, "row_version": 1}
    with runtime.begin() as connection:
        batch = []
        for i in range(records):
            batch.append({
                "first_name": f"{rng.choice(FIRST)}{i}",
                "last_name": f"Last{rng.randrange(5000):04d}",
                "email": f"c{i}@example.com", "phone": f"+8869{i:08d}",
                "status": rng.choice(STATUSES)[0],
                "birthday": dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000)),
                "balance": Decimal(rng.randrange(0, 10_000_000)) / 100,
                "score": rng.randint(0, 100), "vip": rng.random() < 0.1, **system})
            if len(batch) == 10_000:
                connection.execute(contacts.insert(), batch)
                batch = []
        if batch:
            connection.execute(contacts.insert(), batch)


# -- the baseline: a bare flask-admin over the same table -------------------------------------

def baseline_app(url: str, schema: str | None, table_name: str) -> tuple[Flask, Any]:
    """flask_admin.Admin + contrib.sqla.ModelView on the reflected table; no auth."""
    from flask_admin import Admin
    from flask_admin.contrib.sqla import ModelView
    from flask_admin.theme import Bootstrap4Theme
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.ext.automap import automap_base

    app = Flask("baseline")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:  # as ours sets them
                cursor = dbapi_connection.cursor()
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000",
                               "foreign_keys=ON"):
                    cursor.execute(f"PRAGMA {pragma}")
                cursor.close()
        base = automap_base()
        base.prepare(autoload_with=engine, schema=schema,
                     reflection_options={"only": [table_name]})
        contact = getattr(base.classes, table_name)

    class ContactView(ModelView):
        page_size = 50
        can_set_page_size = False
        column_list = COLUMNS
        column_default_sort = [("last_name", False), ("id", False)]
        column_searchable_list = SEARCH
        column_choices = {"status": STATUSES}
        form_columns = COLUMNS
        form_choices = {"status": STATUSES}

        # the persistent filter flask-admin's docs describe: soft-deleted rows are gone
        def get_query(self) -> Any:
            return super().get_query().filter(contact.deleted_at.is_(None))

        def get_count_query(self) -> Any:  # counted like ours: at most COUNT_CAP + 1 rows
            capped = (db.session.query(sa.literal(1)).select_from(contact)
                      .filter(contact.deleted_at.is_(None)).limit(COUNT_CAP + 1).subquery())
            return db.session.query(sa.func.count()).select_from(capped)

        def get_one(self, id: Any) -> Any:
            return self.get_query().filter(contact.id == int(id)).one_or_none()

    class LeanView(ContactView):
        column_display_actions = False  # no edit/delete buttons in every row (info only)

    admin = Admin(app, name="Baseline", theme=Bootstrap4Theme())
    admin.add_view(ContactView(contact, db, name="Contacts", endpoint="contact"))
    admin.add_view(LeanView(contact, db, name="Contacts (lean)", endpoint="contact_lean",
                            url="contact_lean"))
    return app, engine


# -- checks ------------------------------------------------------------------------------------

def expected_first_page(runtime: Any) -> list[int]:
    contacts = runtime.tables.by_entity["bench.contact"]
    with runtime.connect() as connection:
        return list(connection.execute(
            sa.select(contacts.c.id).where(contacts.c.deleted_at.is_(None))
            .order_by(contacts.c.last_name, contacts.c.id).limit(50)).scalars())


def record_values(runtime: Any, record_id: int) -> dict[str, Any]:
    contacts = runtime.tables.by_entity["bench.contact"]
    with runtime.connect() as connection:
        return dict(connection.execute(sa.select(contacts).where(contacts.c.id == record_id)
                                       ).mappings().one())


def text_of(response: Any, path: str) -> str:
    body = response.get_data(as_text=True)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {body[:500]}")
    return body


def check_lists(ours: str, base: str, expected: list[int]) -> None:
    table = ours.split('id="record-list"', 1)[1].split("</table>", 1)[0]
    ours_ids = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', table)]
    base_ids = [int(i) for i in re.findall(r'name="rowid"[^>]*value="(\d+)"', base)]
    assert ours_ids == expected, ("ours: rows", ours_ids[:5], expected[:5])
    assert base_ids == expected, ("baseline: rows", base_ids[:5], expected[:5])
    for name in COLUMNS:
        assert table.count(f'<td data-column="{name}"') == 50, ("ours: column", name)
        assert base.count(f'class="col-{name}"') >= 50, ("baseline: column", name)


def check_edits(ours: str, base: str, values: dict[str, Any]) -> None:
    email = html.escape(values["email"])
    assert f'value="{email}"' in ours, "ours: the e-mail is not filled in"
    assert f'value="{email}"' in base, "baseline: the e-mail is not filled in"
    for name in COLUMNS:
        assert re.search(rf'id="field-{name}"', ours), ("ours: no input for", name)
        assert re.search(rf'<(?:input|select|textarea)[^>]*id="{name}"', base), (
            "baseline: no input for", name)
    assert values["last_name"] in ours and values["last_name"] in base


# -- timing ------------------------------------------------------------------------------------

@dataclass
class Series:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    bytes: int = 0


def hit(client: Any, path: str, series: Series | None) -> Any:
    cpu = time.process_time()
    start = time.perf_counter()
    response = client.get(path)
    body = response.get_data()
    wall = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {body[:300]!r}")
    if series is not None:
        series.wall.append(wall)
        series.cpu.append(time.process_time() - cpu)
        series.bytes = len(body)
    return response


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def sign_in(client: Any) -> None:
    """Through the login form: its CSRF token from the GET, then username + password."""
    page = client.get(f"/t/{SLUG}/admin/login")
    token = CSRF.search(page.get_data(as_text=True))
    assert token is not None, "no CSRF token on the login page"
    response = client.post(f"/t/{SLUG}/admin/login", data={
        "username": "bench", "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.status_code == 302, (response.status_code, response.get_data()[:300])


@dataclass
class Backend:
    label: str
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def time_visitor(app: Flask, runtime: Any, platform: Any, user_id: int, runs: int) -> Series:
    """The per-request sign-in cost alone: load_visitor (user, principal, record service)."""
    from metacrm.admin.auth import load_visitor

    series = Series()
    for _ in range(runs):
        cpu = time.process_time()
        start = time.perf_counter()
        load_visitor(platform, runtime, user_id)
        series.wall.append(time.perf_counter() - start)
        series.cpu.append(time.process_time() - cpu)
    return series


def count_sql(runtime: Any, table: Any, capped: bool, runs: int) -> float:
    where = table.c.deleted_at.is_(None)
    if capped:
        inner = sa.select(sa.literal(1)).select_from(table).where(where).limit(COUNT_CAP + 1)
        statement = sa.select(sa.func.count()).select_from(inner.subquery())
    else:
        statement = sa.select(sa.func.count()).select_from(table).where(where)
    times = []
    with runtime.connect() as connection:
        for _ in range(runs):
            start = time.perf_counter()
            connection.execute(statement).scalar()
            times.append(time.perf_counter() - start)
    return median(times)


def run_backend(root: Path, label: str, url: str | None, args: argparse.Namespace) -> Backend:
    result = Backend(label)
    settings = Settings(root, root / f"var-{label}", url)
    app = create_app(settings)
    platform = app.extensions["metacrm.platform"]
    try:
        report = platform.create_tenant(SLUG)
        if not report.ok:
            raise RuntimeError(report.format())
        runtime = platform.runtime(SLUG)
        with runtime.begin() as connection:
            user_id = create_user(connection, "bench", "Bench Admin",
                                  password_hash=hash_password(PASSWORD))
            set_roles(connection, user_id, ["administrator"])
        started = time.perf_counter()
        load_rows(runtime, args.records, user_id)
        table = runtime.tables.by_entity["bench.contact"]
        if runtime.db.engine.dialect.name == "postgresql":  # as autovacuum would, after a load
            with runtime.begin() as connection:
                connection.exec_driver_sql(f'ANALYZE "{runtime.db.schema}"."{table.name}"')
        result.notes.append(f"{label}: loaded {args.records:,} contacts in "
                            f"{time.perf_counter() - started:.1f} s")
        engine = runtime.db.engine
        base_url = engine.url.render_as_string(hide_password=False)
        baseline, base_engine = baseline_app(base_url, runtime.db.schema, table.name)

        ours, base = app.test_client(), baseline.test_client()
        sign_in(ours)
        expected = expected_first_page(runtime)
        check_lists(text_of(ours.get(OURS_LIST), OURS_LIST),
                    text_of(base.get(BASE_LIST), BASE_LIST), expected)
        check_lists(text_of(ours.get(OURS_LIST), OURS_LIST),
                    text_of(base.get(LEAN_LIST), LEAN_LIST), expected)
        rng = random.Random(11)
        for record_id in (rng.randint(1, args.records) for _ in range(3)):
            check_edits(text_of(ours.get(OURS_EDIT.format(id=record_id)), "ours edit"),
                        text_of(base.get(BASE_EDIT.format(id=record_id)), "baseline edit"),
                        record_values(runtime, record_id))

        pages = {"list": (lambda _: OURS_LIST, lambda _: BASE_LIST),
                 "edit": (lambda i: OURS_EDIT.format(id=i), lambda i: BASE_EDIT.format(id=i)),
                 "index": (lambda _: OURS_INDEX, lambda _: BASE_INDEX),
                 "list, lean base": (lambda _: OURS_LIST, lambda _: LEAN_LIST)}
        series = {name: (Series(), Series()) for name in pages}
        for ours_path, base_path in pages.values():  # warm up both
            for i in range(args.warmup):
                hit(ours, ours_path(i + 1), None)
                hit(base, base_path(i + 1), None)
        for _ in range(args.rounds):
            for name, (ours_path, base_path) in pages.items():
                ids = [rng.randint(1, args.records) for _ in range(args.requests)]
                gc.collect()
                for record_id in ids:
                    hit(ours, ours_path(record_id), series[name][0])
                gc.collect()
                for record_id in ids:
                    hit(base, base_path(record_id), series[name][1])
        visitor = time_visitor(app, runtime, platform, user_id, args.rounds * args.requests)
        count_full = count_sql(runtime, table, False, 30)
        count_capped = count_sql(runtime, table, True, 30)

        figures = result.figures
        for name, (o, b) in series.items():
            ratio = median(o.wall) / median(b.wall)
            cpu_ratio = median(o.cpu) / median(b.cpu) if median(b.cpu) else float("nan")
            key = name.replace(", lean base", "_lean")
            figures[f"{key}_ratio"] = round(ratio, 3)
            figures[f"{key}_cpu_ratio"] = round(cpu_ratio, 3)
            figures[f"{key}_ms"] = median(o.wall) * 1e3
            figures[f"{key}_base_ms"] = median(b.wall) * 1e3
            graded = name in ("list", "edit")
            target = f"≤ {TARGET}" if graded else "info"
            status = ("met" if ratio <= TARGET else "MISSED") if graded else ""
            result.rows.append([
                f"{name} ({label})", ms(median(o.wall)),
                f"{ms(min(o.wall))} .. {ms(max(o.wall))}", ms(median(b.wall)),
                f"{ms(min(b.wall))} .. {ms(max(b.wall))}", f"{ratio:.2f}", f"{cpu_ratio:.2f}",
                f"{len(o.wall)}/{len(b.wall)}", f"{o.bytes // 1024}/{b.bytes // 1024}",
                target, status])
        figures["visitor_ms"] = median(visitor.wall) * 1e3
        figures["visitor_share_list"] = median(visitor.wall) / median(series["list"][0].wall)
        figures["visitor_share_edit"] = median(visitor.wall) / median(series["edit"][0].wall)
        figures["count_capped_ms"] = count_capped * 1e3
        figures["count_full_ms"] = count_full * 1e3
        result.rows.append([f"sign-in per request ({label})", ms(median(visitor.wall)),
                            f"{ms(min(visitor.wall))} .. {ms(max(visitor.wall))}", "-", "", "",
                            "", str(len(visitor.wall)), "", "info", ""])
        result.notes.append(
            f"{label}: sign-in per request (load_visitor: user row, principal, record service) "
            f"{ms(median(visitor.wall))} ms = {figures['visitor_share_list']:.0%} of our list "
            f"page, {figures['visitor_share_edit']:.0%} of our edit page; the baseline has none")
        result.notes.append(
            f"{label}: count SQL alone: capped at {COUNT_CAP + 1:,} rows (both sides) "
            f"{count_capped * 1e3:.2f} ms; flask-admin's default full count(*) of "
            f"{args.records:,} rows would be {count_full * 1e3:.2f} ms")
        if args.profile:
            profile(app, ours, base, runtime, args, result)
        base_engine.dispose()
        return result
    finally:
        platform.close()


# -- where our pages spend their time ----------------------------------------------------------

PASSES: list[tuple[str, str, str]] = [
    # (module, attribute, pass name): exclusive times, nested passes subtracted. Only
    # functions called once or a few times a request: each wrapper costs about 1 µs.
    ("metacrm.admin.base.SecureView", "_handle_view", "sign-in: session, rest of it"),
    ("metacrm.admin.base", "load_visitor", "sign-in: load_visitor (rest)"),
    ("metacrm.admin.auth", "find_account", "sign-in: user row"),
    ("metacrm.admin.auth", "load_principal", "sign-in: principal (roles, units)"),
    ("metacrm.admin.base.SecureView", "_run_view",
     "view's own code (rows, cells, titles, URLs; form glue)"),
    ("metacrm.admin.base", "build_menus", "chrome: menus"),
    ("metacrm.admin.views", "resolve_list", "list: resolve view"),
    ("metacrm.admin.views", "user_names", "list: user names (a connection)"),
    ("metacrm.admin.editing", "plan_form", "edit: plan_form"),
    ("metacrm.admin.editing", "form_class", "edit: form_class"),
    ("metacrm.admin.editing", "bind", "edit: bind"),
    ("metacrm.admin.editing", "initial_values", "edit: initial_values"),
    ("metacrm.admin.editing", "linked_ids", "edit: linked_ids"),
    ("metacrm.admin.editing", "inputs", "edit: inputs"),
    ("metacrm.platform.records.RecordService", "list", "service.list (SQL, rows → JSON)"),
    ("metacrm.platform.records.RecordService", "get", "service.get (SQL, row → JSON)"),
    ("metacrm.platform.records.RecordService", "access", "service.access"),
    ("flask_admin.base.BaseView", "render", "jinja render (flask-admin BaseView.render)"),
]
WHOLE = "rest: test client, WSGI, tenant dispatch, Flask"


def _owner(path: str) -> Any:
    """A module, or a class given as `module.Class`."""
    import importlib

    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def profile(app: Flask, client: Any, base: Any, runtime: Any, args: argparse.Namespace,
            result: Backend) -> None:
    rng = random.Random(5)
    for name, path in (("list", lambda: OURS_LIST),
                       ("edit", lambda: OURS_EDIT.format(id=rng.randint(1, args.records)))):
        timer = PassTimer(clock=time.perf_counter)
        for owner, attr, label in PASSES:
            timer.wrap_if_present(_owner(owner), attr, label)
        sql = {"n": 0, "s": 0.0, "checkouts": 0}

        def before(conn, cursor, statement, parameters, context, executemany):
            conn.info["bench_t"] = time.perf_counter()

        def after(conn, cursor, statement, parameters, context, executemany, sql=sql):
            sql["n"] += 1
            sql["s"] += time.perf_counter() - conn.info.pop("bench_t", time.perf_counter())

        def checkout(*_: Any, sql: dict[str, Any] = sql) -> None:
            sql["checkouts"] += 1

        engine = runtime.db.engine
        sa.event.listen(engine, "before_cursor_execute", before)
        sa.event.listen(engine, "after_cursor_execute", after)
        sa.event.listen(engine.pool, "checkout", checkout)
        runs = args.profile_requests
        try:
            with timer.region(WHOLE):
                for _ in range(runs):
                    hit(client, path(), None)
        finally:
            timer.restore()
            sa.event.remove(engine, "before_cursor_execute", before)
            sa.event.remove(engine, "after_cursor_execute", after)
            sa.event.remove(engine.pool, "checkout", checkout)
        total = timer.inclusive[WHOLE]
        print(f"\n{result.label}: where our {name} page spends its time ({runs} requests, "
              f"{total / runs * 1e3:.2f} ms each with the timers; exclusive per pass, nested "
              f"passes subtracted). Per request: {sql['checkouts'] / runs:.1f} connection "
              f"checkouts, {sql['n'] / runs:.1f} statements (SQLite: BEGIN included), "
              f"{sql['s'] / runs * 1e3:.2f} ms between cursor events")
        rows = sorted(timer.exclusive.items(), key=lambda kv: -kv[1])
        print_table(["pass", "ms / request", "share", "calls / request"], [
            [k, f"{v / runs * 1e3:.3f}", f"{v / total:.1%}", f"{timer.calls[k] / runs:g}"]
            for k, v in rows])
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            hit(client, path(), None)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
        print(f"\ncProfile of our {name} page ({runs} requests):")
        print(_trim_paths(out.getvalue()))
        if runtime.db.engine.dialect.name == "postgresql":
            base_path = BASE_LIST if name == "list" else BASE_EDIT.format(id=1)
            print(f"{result.label}: exchanges with the server per {name} request (statements "
                  f"incl. the pool's pre-ping, BEGIN, ROLLBACK): ours "
                  f"{round_trips(client, path, 50):.1f}, baseline "
                  f"{round_trips(base, lambda p=base_path: p, 50):.1f}")
        try:
            from pyinstrument import Profiler
        except ImportError:
            continue
        sampler = Profiler()
        sampler.start()
        for _ in range(runs):
            hit(client, path(), None)
        sampler.stop()
        print(f"pyinstrument, our {name} page ({runs} requests):")
        print(sampler.output_text(unicode=True, color=False, show_all=False))


def round_trips(client: Any, path: Any, runs: int) -> float:
    """Exchanges with the PostgreSQL server per request: statements psycopg executes (the
    pool's pre-ping `;` among them) and the commands it sends (BEGIN, ROLLBACK)."""
    import psycopg

    count = [0]
    execute, command = psycopg.Cursor.execute, psycopg.Connection._exec_command

    def counted_execute(self: Any, *a: Any, **k: Any) -> Any:
        count[0] += 1
        return execute(self, *a, **k)

    def counted_command(self: Any, *a: Any, **k: Any) -> Any:
        count[0] += 1
        return command(self, *a, **k)

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Connection._exec_command = counted_command  # type: ignore[method-assign]
    try:
        for _ in range(runs):
            hit(client, path(), None)
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Connection._exec_command = command  # type: ignore[method-assign]
    return count[0] / runs


def _trim_paths(text: str) -> str:
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(sa.__file__)))
    return text.replace(prefix + "/", "").replace(str(Path(__file__).resolve().parents[1]) +
                                                    "/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=20, help="per page, side and round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-pg", action="store_true", help="SQLite figures only")
    parser.add_argument("--profile", action="store_true",
                        help="also break our pages down by pass, cProfile and pyinstrument")
    parser.add_argument("--profile-requests", type=int, default=200)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the PG database is dropped
    warnings.filterwarnings("ignore", message=".*Decimal objects natively.*")
    warnings.filterwarnings("ignore", category=sa.exc.SAWarning)

    pg = ScratchPostgres(os.environ.get("METACRM_BENCH_PG_URL", DEFAULT_PG_URL), BENCH_DB)
    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    notes: list[str] = []
    if args.no_pg:
        notes.append("PostgreSQL skipped (--no-pg)")
    elif pg.create():
        backends.append(("pg", pg.url))
    else:
        notes.append(pg.note or "PostgreSQL skipped")
    root = Path(tempfile.mkdtemp(prefix="metacrm-bench-admin-"))
    results: list[Backend] = []
    try:
        write_library(root)
        for label, url in backends:
            results.append(run_backend(root, label, url, args))
    finally:
        pg.drop()
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(machine())
    print(f"{args.records:,} records; {args.rounds} interleaved rounds x {args.requests} "
          f"requests per page and side (after {args.warmup} warm-up); in-process, Flask test "
          f"client; medians over every request")
    rows = [row for r in results for row in r.rows]
    print_table(["page", "ours ms", "ours min .. max", "base ms", "base min .. max", "ratio",
                 "CPU ratio", "requests", "KiB", "target", "status"], rows)
    print("base: flask-admin 2.2.1 ModelView, no sign-in (ours loads the session's user and "
          "principal on each request: see the sign-in row). Both render 50 rows of the same 9 "
          "columns and an edit form of the same 9 fields, filled; both leave out soft-deleted "
          "rows and count at most 10,001.")
    for note in notes + [n for r in results for n in r.notes]:
        print(f"note: {note}")
    figures: dict[str, Any] = {}
    first = results[0].figures
    figures["list_ratio"] = first["list_ratio"]
    figures["edit_ratio"] = first["edit_ratio"]
    for key in ("list_ms", "list_base_ms", "edit_ms", "edit_base_ms", "list_cpu_ratio",
                "edit_cpu_ratio", "index_ratio", "index_ms", "index_base_ms", "list_lean_ratio",
                "list_lean_base_ms", "visitor_ms"):
        if key in first:
            figures[key] = first[key]
    for other in results[1:]:
        for key in ("list_ratio", "edit_ratio", "list_ms", "list_base_ms", "edit_ms",
                    "edit_base_ms", "visitor_ms"):
            if key in other.figures:
                figures[f"{key}_{other.label}"] = other.figures[key]
    print_json_line(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
