"""Benchmark: a list limited to the caller's org subtree beside the same list unlimited.

Over 1,000,000 `bench.deal` records owned by about 4,000 users placed in an org tree
of 2,000 units (group → business units → regions → branches → teams), it times
``RecordService.list("bench.deal", ListQuery(limit=50))`` for two principals in the
same run, interleaved, on SQLite and on PostgreSQL:

- **scoped**: a regional manager with the role ``branch_rep`` (``read: subtree``),
  placed on a region whose subtree owns about 4% of the records;
- **unscoped**: a user with the role ``viewer_all`` (``read: all``), placed on the
  same region, so both do the same principal work and differ only in the scope.

Each timed call loads the principal (``load_principal``: roles and org units) and
then lists, as a request does. Two pairs: the default order (id) and ``-amount``
(an indexed, required field); one more, for information, with a branch manager
(a subtree ten times smaller). It prints the plans (EXPLAIN), times the list's SQL
alone, and times what-ifs: hand-built variants of the scoped statement, and whole
requests with ``Guard`` patched inside this process only (see ``guard_patched``).
Last line: one JSON object; ratios are scoped ÷ unscoped (lower is better, target
≤ 1.5).

    .venv/bin/python bench/permissions.py [--records 1000000] [--units 2000] [--no-pg]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import fmt_seconds, machine, median, print_json_line, print_table, spread

from metacrm.platform.auth import create_user, set_roles, user_by_name
from metacrm.platform.database import tenant_schema
from metacrm.platform.orgtree import OrgTree
from metacrm.platform.permissions import load_principal
from metacrm.platform.records import Actor, ListQuery, RecordService
from metacrm.platform.runtime import Platform
from metacrm.platform.settings import Settings
from metacrm.platform.systables import runtime_system_tables

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "metacrm_bench_permissions"
SLUG = "bench"
SEED = 20241125
TARGET_RATIO = 1.5
STAGES = ("lead", "qualified", "proposal", "won", "lost")

LIBRARY = {
    "metadata/modules/bench/module.yaml": "module: bench\nowner: bench-team\n",
    "metadata/modules/bench/entities/deal.yaml": """\
entity: deal
fields:
  title: {type: string, max_length: 200, required: true}
  amount: {type: money, currency: CNY, required: true, index: true}
  stage: {type: enum, options: [lead, qualified, proposal, won, lost], default: lead}
""",
    "metadata/modules/bench/roles/branch_rep.yaml": """\
role: branch_rep
label: {en: Branch rep}
grants:
  bench.deal: {read: subtree}
""",
    "metadata/modules/bench/roles/viewer_all.yaml": """\
role: viewer_all
label: {en: Viewer (all records)}
grants:
  bench.deal: {read: all}
""",
    "tenants/bench/tenant.yaml": "tenant: bench\nmodules: [bench]\n",
}

# the two lists timed: label → sort (the default order is id)
SORTS: dict[str, tuple[tuple[str, bool], ...]] = {"id": (), "-amount": (("amount", True),)}


def write_library(root: Path) -> None:
    for relative, text in LIBRARY.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


# -- PostgreSQL: a throw-away database ----------------------------------------------------------

@dataclass
class Postgres:
    """The benchmark's own database, or why there is none."""

    admin_url: str
    url: str | None = None
    note: str | None = None

    def _dsn(self, url: str) -> str:
        return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def create(self) -> bool:
        try:
            import psycopg

            with psycopg.connect(self._dsn(self.admin_url), autocommit=True,
                                 connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        except Exception as exc:  # unreachable, no driver, no rights: skip the PG figures
            self.note = f"PostgreSQL skipped: {type(exc).__name__}: {exc}".strip()
            return False
        self.url = make_url(self.admin_url).set(database=BENCH_DB).render_as_string(
            hide_password=False)
        return True

    def drop(self) -> None:
        if self.url is None:
            return
        import psycopg

        try:
            with psycopg.connect(self._dsn(self.admin_url), autocommit=True,
                                 connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        except Exception as exc:
            print(f"warning: could not drop database {BENCH_DB}: {exc}", file=sys.stderr)
        self.url = None


# -- the fixture: org tree, users, records --------------------------------------------------------

@dataclass
class Shape:
    """How many units per level; teams go round-robin under the branches."""

    business_units: int
    regions: int
    branches: int
    teams: int

    @classmethod
    def for_units(cls, units: int) -> Shape:
        # 2,000 units: 1 group, 5 business units, 25 regions, 250 branches, 1,719 teams
        bus = 5
        regions = max(bus, round(units * 0.0125))
        branches = max(regions, round(units * 0.125))
        teams = units - 1 - bus - regions - branches
        if teams < 0:
            raise SystemExit(f"--units {units} is too small for the tree (at least "
                             f"{1 + bus + regions + branches})")
        return cls(bus, regions, branches, teams)


@dataclass
class Fixture:
    users: list[int]  # ids of the users owning records
    region: str  # the unit both principals sit on
    region_path: str
    subtree_units: int
    subtree_users: set[int]
    branch: str = ""  # a smaller subtree, for an info figure
    branch_path: str = ""
    scoped_user: str = "regional_manager"
    unscoped_user: str = "all_viewer"
    subtree_records: int = 0


def build_org(connection: sa.Connection, tables: Any, shape: Shape, users_per_leaf: float,
              rng: random.Random) -> Fixture:
    """The org tree (through OrgTree) and the owners, placed in the leaf units."""
    tree = OrgTree(connection, tables)
    tree.add("group", "Group", "group")
    bus = [f"bu{i}" for i in range(shape.business_units)]
    for name in bus:
        tree.add(name, name.upper(), "business_unit", "group")
    regions = [f"region{i}" for i in range(shape.regions)]
    for i, name in enumerate(regions):
        tree.add(name, name.title(), "region", bus[i % len(bus)])
    branches = [f"branch{i}" for i in range(shape.branches)]
    for i, name in enumerate(branches):
        tree.add(name, name.title(), "branch", regions[i % len(regions)])
    teams = [f"team{i}" for i in range(shape.teams)]
    for i, name in enumerate(teams):
        tree.add(name, name.title(), "team", branches[i % len(branches)])
    has_teams = {branches[i % len(branches)] for i in range(len(teams))}
    leaves = teams + [b for b in branches if b not in has_teams]
    units = tree.units
    ids = dict(connection.execute(sa.select(units.c.name, units.c.id)).all())
    paths = dict(connection.execute(sa.select(units.c.name, units.c.path)).all())
    count = max(len(leaves), round(len(leaves) * users_per_leaf))
    now = dt.datetime.now(dt.UTC)
    connection.execute(tables.users.insert(), [
        {"username": f"rep{i:05d}", "display_name": f"Rep {i}", "active": True,
         "created_at": now} for i in range(count)])
    user_rows = connection.execute(sa.select(tables.users.c.id, tables.users.c.username).where(
        tables.users.c.username.like("rep%")).order_by(tables.users.c.id)).all()
    placed = [(row.id, leaves[i % len(leaves)]) for i, row in enumerate(user_rows)]
    connection.execute(tables.org_members.insert(), [
        {"user_id": uid, "unit_id": ids[leaf], "is_primary": True} for uid, leaf in placed])
    region = regions[0]
    prefix = paths[region]
    in_subtree = {uid for uid, leaf in placed if paths[leaf].startswith(prefix)}
    subtree_units = sum(1 for p in paths.values() if p.startswith(prefix))
    # the two principals: same unit, different role
    fixture = Fixture([uid for uid, _ in placed], region, prefix, subtree_units, in_subtree,
                      branches[0], paths[branches[0]])
    for username, role in ((fixture.scoped_user, "branch_rep"),
                           (fixture.unscoped_user, "viewer_all")):
        user_id = create_user(connection, username)
        set_roles(connection, user_id, [role])
        tree.place(user_id, region)
    rng.shuffle(fixture.users)
    return fixture


def deal_rows(count: int, owners: list[int], rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Rows (title, amount, stage, owner, created_at, updated_at, row_version)."""
    start = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(seconds=60)  # created in id order, one a minute
    for i in range(count):
        created = start + step * i
        yield (f"Deal {i}", Decimal(rng.randint(100, 10_000_000)) / 100,
               STAGES[rng.randrange(len(STAGES))], owners[rng.randrange(len(owners))],
               created, created, 1)


COLUMNS = ("title", "amount", "stage", "owner", "created_at", "updated_at", "row_version")


def load_records(runtime: Any, label: str, count: int, owners: list[int]) -> None:
    """1,000,000 deals: COPY on PostgreSQL, chunked executemany on SQLite (not timed)."""
    rng = random.Random(SEED + 1)
    table = runtime.tables.by_entity["bench.deal"]
    rows = deal_rows(count, owners, rng)
    if label == "pg":
        schema = tenant_schema(SLUG)
        with runtime.begin() as connection:
            raw = connection.connection.dbapi_connection
            with raw.cursor() as cursor:
                columns = ", ".join(f'"{c}"' for c in COLUMNS)
                with cursor.copy(f'COPY "{schema}"."{table.name}" ({columns}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row(row)
        with runtime.db.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql(f'VACUUM ANALYZE "{schema}"."{table.name}"')
            connection.exec_driver_sql(f'ANALYZE "{schema}"."_metacrm_org_units"')
            connection.exec_driver_sql(f'ANALYZE "{schema}"."_metacrm_org_members"')
            connection.exec_driver_sql(f'ANALYZE "{schema}"."_metacrm_users"')
            connection.exec_driver_sql(f'ANALYZE "{schema}"."_metacrm_user_roles"')
            connection.exec_driver_sql(f'ANALYZE "{schema}"."_metacrm_shares"')
        return
    with runtime.begin() as connection:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(dict(zip(COLUMNS, row, strict=True)))
            if len(chunk) == 50_000:
                connection.execute(table.insert(), chunk)
                chunk = []
        if chunk:
            connection.execute(table.insert(), chunk)
    with runtime.db.engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")


# -- timing ---------------------------------------------------------------------------------

class Request:
    """One list request as the API makes it: load the principal, then list."""

    def __init__(self, platform: Platform, runtime: Any, username: str,
                 sort: tuple[tuple[str, bool], ...]) -> None:
        self.runtime = runtime
        self.operators = platform.operators
        self.tables = runtime_system_tables(runtime)
        self.units = runtime.registry.units
        self.query = ListQuery(limit=50, sort=sort)
        with runtime.connect() as connection:
            self.user = user_by_name(connection, username)

    def __call__(self) -> Any:
        with self.runtime.connect() as connection:
            principal = load_principal(connection, self.tables, self.user, self.units)
        service = RecordService(self.runtime, Actor.of(principal), operators=self.operators)
        return service.list("bench.deal", self.query)


@dataclass
class Pair:
    scoped: list[float] = field(default_factory=list)
    unscoped: list[float] = field(default_factory=list)
    scoped_cpu: list[float] = field(default_factory=list)
    unscoped_cpu: list[float] = field(default_factory=list)


def time_pair(scoped: Callable[[], Any], unscoped: Callable[[], Any], runs: int,
              warmup: int) -> Pair:
    """Interleaved, alternating which leg goes first."""
    for _ in range(warmup):
        scoped()
        unscoped()
    pair = Pair()
    legs = ((scoped, pair.scoped, pair.scoped_cpu), (unscoped, pair.unscoped, pair.unscoped_cpu))
    for i in range(runs):
        for fn, wall, cpu in (legs if i % 2 == 0 else legs[::-1]):
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return pair


@contextmanager
def captured(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)


def list_statement(runtime: Any, request: Request) -> tuple[str, Any]:
    """The SQL and parameters of the list itself (the statement on the deal table)."""
    name = runtime.tables.by_entity["bench.deal"].name
    with captured(runtime.db.engine) as statements:
        request()
    return next((s, p) for s, p in statements if name in s)


def explain(runtime: Any, label: str, sql: str, params: Any) -> list[str]:
    with runtime.connect() as connection:
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()
        if label == "pg":
            cursor.execute(f'SET search_path TO "{tenant_schema(SLUG)}"')
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            lines = [row[0] for row in cursor.fetchall()]
            raw.rollback()
            return lines
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [f"{row[-1]} (id {row[0]}, parent {row[1]})" for row in cursor.fetchall()]


def raw_seconds(runtime: Any, label: str, sql: str, params: Any, runs: int) -> float:
    """The statement alone through the driver (median of `runs`)."""
    with runtime.connect() as connection:
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()
        if label == "pg":
            cursor.execute(f'SET search_path TO "{tenant_schema(SLUG)}"')
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchall()
            times.append(time.perf_counter() - t0)
        if label == "pg":
            raw.rollback()
    return median(times)


# -- driver ---------------------------------------------------------------------------------

@dataclass
class Results:
    rows: list[list[Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    whatifs: tuple[str, ...] = ()
    failures: list[str] = field(default_factory=list)


def run_backend(root: Path, label: str, url: str | None, args: argparse.Namespace,
                res: Results) -> None:
    var = root / f"var-{label}"
    platform = Platform(Settings(root, var, url))
    try:
        report = platform.create_tenant(SLUG)
        if not report.ok:
            raise RuntimeError(f"create_tenant failed: {report.format()}")
        runtime = platform.runtime(SLUG)
        roles = sorted(runtime.registry.scope(None).roles)
        if not {"branch_rep", "viewer_all"} <= set(roles):
            raise RuntimeError(f"the library's roles did not compile (found {roles}); "
                               "does this metacrm compile `role` files yet?")
        rng = random.Random(SEED)
        shape = Shape.for_units(args.units)
        leaves = shape.teams + max(0, shape.branches - shape.teams)
        t0 = time.perf_counter()
        with runtime.begin() as connection:
            fixture = build_org(connection, runtime_system_tables(runtime), shape,
                                args.users / leaves, rng)
        org_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_records(runtime, label, args.records, fixture.users)
        load_s = time.perf_counter() - t0
        print(f"  {label}: org tree {args.units:,} units ({shape.business_units} business "
              f"units, {shape.regions} regions, {shape.branches} branches, {shape.teams} "
              f"teams), {len(fixture.users):,} owners, built in {org_s:.1f} s; "
              f"{args.records:,} deals loaded in {load_s:.1f} s")
        share = describe(runtime, label, args.records, fixture.region, fixture)
        res.figures[f"subtree_share_{label}"] = share

        unscoped_by_sort: dict[str, Request] = {}
        for sort_label, sort in SORTS.items():
            scoped = Request(platform, runtime, fixture.scoped_user, sort)
            unscoped = unscoped_by_sort[sort_label] = Request(
                platform, runtime, fixture.unscoped_user, sort)
            check_pages(label, sort_label, scoped, unscoped, fixture.subtree_users, res)
            pair = time_pair(scoped, unscoped, args.runs, args.warmup)
            suffix = "" if sort_label == "id" else "_amount"
            ratio = report_pair(res, label, f"order {sort_label}", pair, suffix, target=True)
            print(f"  {label}: list of 50 by {sort_label}: scoped (branch_rep, read: subtree) "
                  f"{fmt_seconds(median(pair.scoped))}, unscoped (viewer_all, read: all) "
                  f"{fmt_seconds(median(pair.unscoped))}, ratio {ratio:.2f}")
            statement_rows(runtime, label, sort_label, scoped, unscoped, suffix, args, res)

        # info: where building alone, and a smaller subtree (a branch manager)
        where_s = where_seconds(platform, runtime, fixture.scoped_user, args.runs * 10)
        res.figures[f"guard_where_ms_{label}"] = where_s * 1e3
        res.rows.append([f"  {label}: Guard(...).where() alone (Python, per request)",
                         fmt_seconds(where_s), "", "", "(info)", ""])
        branch = Fixture(fixture.users, fixture.branch, fixture.branch_path, 0, set())
        with runtime.begin() as connection:
            branch_user = create_user(connection, "branch_manager")
            set_roles(connection, branch_user, ["branch_rep"])
            OrgTree(connection, runtime_system_tables(runtime)).place(branch_user, branch.region)
        branch.subtree_users = subtree_users(runtime, branch.region_path)
        describe(runtime, label, args.records, branch.region, branch)
        small = Request(platform, runtime, "branch_manager", ())
        check_pages(label, "id (branch)", small, unscoped_by_sort["id"], branch.subtree_users,
                    res)
        pair = time_pair(small, unscoped_by_sort["id"], max(10, args.runs // 2), args.warmup)
        report_pair(res, label, f"order id, branch {branch.region} "
                    f"({branch.subtree_records / max(1, args.records):.2%})", pair,
                    "_branch", target=False)
        what_ifs(platform, runtime, label, fixture, args, res)
    finally:
        platform.close()


def subtree_users(runtime: Any, path: str) -> set[int]:
    tables = runtime_system_tables(runtime)
    units, members = tables.org_units, tables.org_members
    with runtime.connect() as connection:
        return {r for (r,) in connection.execute(sa.select(members.c.user_id).select_from(
            members.join(units, units.c.id == members.c.unit_id)).where(
            units.c.path.startswith(path)))}


def describe(runtime: Any, label: str, records: int, unit: str, fixture: Fixture) -> float:
    deals = runtime.tables.by_entity["bench.deal"]
    units = runtime_system_tables(runtime).org_units
    with runtime.connect() as connection:
        fixture.subtree_records = connection.execute(
            sa.select(sa.func.count()).select_from(deals).where(
                deals.c.owner.in_(sorted(fixture.subtree_users)))).scalar()
        fixture.subtree_units = connection.execute(sa.select(sa.func.count()).where(
            units.c.path.startswith(fixture.region_path))).scalar()
    share = fixture.subtree_records / max(1, records)
    print(f"  {label}: a principal on {unit} ({fixture.region_path}) sees "
          f"{fixture.subtree_units} units, {len(fixture.subtree_users)} owners, "
          f"{fixture.subtree_records:,} records ({share:.2%})")
    return share


def check_pages(label: str, what: str, scoped: Request, unscoped: Request,
                allowed: set[int], res: Results) -> None:
    page_s, page_u = scoped(), unscoped()
    owners = {item["owner"] for item in page_s.items}
    if len(page_s.items) != 50 or len(page_u.items) != 50 or not owners <= allowed:
        res.failures.append(f"{label} {what}: wrong pages (scoped {len(page_s.items)} items, "
                            f"{len(owners - allowed)} owners outside the subtree; unscoped "
                            f"{len(page_u.items)} items)")


def report_pair(res: Results, label: str, what: str, pair: Pair, suffix: str, *,
                target: bool) -> float:
    s, u = median(pair.scoped), median(pair.unscoped)
    s_cpu, u_cpu = median(pair.scoped_cpu), median(pair.unscoped_cpu)
    ratio = s / u
    res.figures[f"scoped_ratio{suffix}_{label}"] = ratio
    res.figures[f"scoped_ms{suffix}_{label}"] = s * 1e3
    res.figures[f"unscoped_ms{suffix}_{label}"] = u * 1e3
    res.figures[f"scoped_ratio_cpu{suffix}_{label}"] = s_cpu / u_cpu if u_cpu else None
    res.rows.append([f"{label}, {what}: scoped (subtree)", fmt_seconds(s), fmt_seconds(s_cpu),
                     spread(pair.scoped), "", ""])
    res.rows.append([f"{label}, {what}: unscoped (all)", fmt_seconds(u), fmt_seconds(u_cpu),
                     spread(pair.unscoped), "baseline", ""])
    res.rows.append([f"{label}, {what}: scoped ÷ unscoped", f"{ratio:.2f}x",
                     f"{s_cpu / u_cpu:.2f}x" if u_cpu else "", "",
                     f"≤ {TARGET_RATIO:g}x" if target else "(info)",
                     ("met" if ratio <= TARGET_RATIO else "MISSED") if target else ""])
    return ratio


def statement_rows(runtime: Any, label: str, sort_label: str, scoped: Request,
                   unscoped: Request, suffix: str, args: argparse.Namespace,
                   res: Results) -> None:
    """The list's statement alone through the driver, and its plan."""
    sql_s, params_s = list_statement(runtime, scoped)
    sql_u, params_u = list_statement(runtime, unscoped)
    alone_s = raw_seconds(runtime, label, sql_s, params_s, args.raw_runs)
    alone_u = raw_seconds(runtime, label, sql_u, params_u, args.raw_runs)
    res.figures[f"sql_scoped_ms{suffix}_{label}"] = alone_s * 1e3
    res.figures[f"sql_unscoped_ms{suffix}_{label}"] = alone_u * 1e3
    res.rows.append([f"  {label}, order {sort_label}: the list's SQL alone, scoped / unscoped",
                     f"{fmt_seconds(alone_s)} / {fmt_seconds(alone_u)}", "",
                     f"{alone_s / alone_u:.2f}x", "(info)", ""])
    res.plans.append(f"[{label}, order {sort_label}] scoped statement:\n    "
                     + " ".join(sql_s.split()))
    res.plans.extend("    " + line for line in explain(runtime, label, sql_s, params_s))
    res.plans.append(f"[{label}, order {sort_label}] unscoped statement plan:")
    res.plans.extend("    " + line for line in explain(runtime, label, sql_u, params_u))


def where_seconds(platform: Platform, runtime: Any, username: str, runs: int) -> float:
    """Guard(...).where(...) alone: the Python cost of the scope's SQL expression."""
    from metacrm.platform.permissions import Guard

    tables = runtime_system_tables(runtime)
    table = runtime.tables.by_entity["bench.deal"]
    with runtime.connect() as connection:
        principal = load_principal(connection, tables, user_by_name(connection, username),
                                   runtime.registry.units)
    operators = platform.operators
    Guard(runtime, principal, operators).where("bench.deal", "read", table)
    start = time.perf_counter()
    for _ in range(runs):
        Guard(runtime, principal, operators).where("bench.deal", "read", table)
    return (time.perf_counter() - start) / runs


# -- what-ifs: hand-built variants of the scoped statement, timed alone ------------------------

WHAT_IFS = (
    "what-if 1, path range: the subtree's users as owner IN (SELECT user_id FROM members "
    "WHERE unit_id IN (SELECT id FROM units WHERE path >= '/1/2/7/' AND path < '/1/2/70')): "
    "units found through the path index first, members through their (unit_id, user_id) "
    "index; on PostgreSQL this needs a code-point collation on path (C here)",
    "what-if 2, ids bound: the subtree's user ids resolved beforehand and bound (PostgreSQL: "
    "owner = ANY(:ids) as one array; SQLite: owner IN (:id_1, ...)); resolving them costs "
    "the path-range user query once",
    "what-if 3 (SQLite, order -amount): the generated statement after CREATE INDEX on "
    "(amount, owner), so the owner test needs no table lookup",
    "what-if 4: the generated statement after CREATE INDEX on (owner) (on SQLite after "
    "what-if 3's index too)",
    "what-if A (whole requests, Guard patched in the bench only): the subtree as in "
    "what-if 1, and Guard.where() kept per version, entity, action and principal",
    "what-if B (whole requests, patched): the subtree's user ids read first (one more "
    "query per request, the path range) and bound as in what-if 2; nothing kept",
    "what-if C (whole requests, patched): as B, with the ids and Guard.where() kept per "
    "version and principal (needs dropping when the org tree or a membership changes)",
)


def what_ifs(platform: Platform, runtime: Any, label: str, fixture: Fixture,
             args: argparse.Namespace, res: Results) -> None:
    """Other shapes of the same scoped list, to tell what a change to the Guard would buy.

    Each is the generated statement's shape (same columns, soft-delete filter, the same
    OR with the user's shares) with only the subtree condition replaced.
    """
    res.whatifs = WHAT_IFS
    tables = runtime_system_tables(runtime)
    units, members, shares = tables.org_units, tables.org_members, tables.shares
    deals = runtime.tables.by_entity["bench.deal"]
    columns = RecordService(runtime).access("bench.deal").columns
    with runtime.connect() as connection:
        manager = user_by_name(connection, fixture.scoped_user)
        principal = load_principal(connection, tables, manager, runtime.registry.units)
    path = fixture.region_path
    upper = path[:-1] + chr(ord(path[-1]) + 1)  # '/1/2/7/' → '/1/2/70': the prefix's range
    share_units = principal.share_unit_ids
    shared = deals.c.id.in_(sa.select(shares.c.record_id).where(
        shares.c.entity == "bench.deal",
        sa.or_(shares.c.user_id == principal.user_id, shares.c.unit_id.in_(share_units)),
        shares.c.access.in_(["read", "edit"])))
    by_range = sa.select(members.c.user_id).where(members.c.unit_id.in_(
        sa.select(units.c.id).where(units.c.path >= path, units.c.path < upper)))
    ids = sorted(fixture.subtree_users)
    if label == "pg":
        from sqlalchemy.dialects import postgresql

        as_list = deals.c.owner == sa.func.any(sa.bindparam(
            "subtree_users", ids, type_=postgresql.ARRAY(sa.BigInteger)))
    else:
        as_list = deals.c.owner.in_(ids)
    orders = {"id": [deals.c.id], "-amount": [deals.c.amount.desc(), deals.c.id]}
    variants = {"path range": sa.or_(deals.c.owner.in_(by_range), shared),
                "ids bound": sa.or_(as_list, shared)}
    for sort_label, order in orders.items():
        suffix = "" if sort_label == "id" else "_amount"
        for n, (what, condition) in enumerate(variants.items(), 1):
            statement = sa.select(*columns).where(deals.c.deleted_at.is_(None), condition
                                                  ).order_by(*order).limit(51)
            seconds, sql, params = statement_seconds(runtime, label, statement,
                                                     args.raw_runs)
            res.figures[f"whatif{n}_sql_ms{suffix}_{label}"] = seconds * 1e3
            res.plans.append(f"[{label}, order {sort_label}] what-if {n} ({what}) plan:")
            res.plans.extend("    " + line for line in explain(runtime, label, sql, params))
            res.rows.append([f"  what-if {n} ({label}, order {sort_label}): {what}",
                             fmt_seconds(seconds), "", "SQL alone", "(info)", ""])
    by_like = sa.select(members.c.user_id).select_from(members.join(
        units, units.c.id == members.c.unit_id)).where(units.c.path.startswith(path))
    for key, what, query in (("resolve_like", "the generated LIKE user query", by_like),
                             ("resolve", "the path-range user query", by_range)):
        seconds = statement_seconds(runtime, label, query, args.raw_runs)[0]
        res.figures[f"whatif_{key}_ms_{label}"] = seconds * 1e3
        res.rows.append([f"  {label}: {what} alone", fmt_seconds(seconds), "", "SQL alone",
                         "(info)", ""])
    # the same requests with the Guard patched (bench only), see guard_patched()
    requests = {sort_label: (Request(platform, runtime, fixture.scoped_user, sort),
                             Request(platform, runtime, fixture.unscoped_user, sort))
                for sort_label, sort in SORTS.items()}
    for mode in ("A", "B", "C"):
        with guard_patched(mode):
            for sort_label, (scoped, unscoped) in requests.items():
                check_pages(label, f"{sort_label} (what-if {mode})", scoped, unscoped,
                            fixture.subtree_users, res)
                pair = time_pair(scoped, unscoped, args.runs, args.warmup)
                suffix = "" if sort_label == "id" else "_amount"
                report_pair(res, label, f"order {sort_label}, what-if {mode}", pair,
                            f"_whatif{mode}{suffix}", target=False)
    if label == "sqlite":  # it changes the table's indexes: after the rest
        index_amount_owner(runtime, label, requests["-amount"], fixture, args, res)
    index_owner(runtime, label, requests, args, res)


def index_owner(runtime: Any, label: str, requests: dict[str, tuple[Request, Request]],
                args: argparse.Namespace, res: Results) -> None:
    """What-if 4, last (it changes the table): a plain index on owner."""
    with runtime.begin() as connection:
        connection.exec_driver_sql(f"CREATE INDEX ix_bench_owner ON {qualified(runtime, label)} "
                                   "(owner)")
    analyze(runtime, label)
    for sort_label, (scoped, _) in requests.items():
        sql, params = list_statement(runtime, scoped)
        seconds = raw_seconds(runtime, label, sql, params, args.raw_runs)
        suffix = "" if sort_label == "id" else "_amount"
        res.figures[f"whatif4_sql_ms{suffix}_{label}"] = seconds * 1e3
        res.rows.append([f"  what-if 4 ({label}, order {sort_label}): index (owner)",
                         fmt_seconds(seconds), "", "SQL alone", "(info)", ""])
        res.plans.append(f"[{label}, order {sort_label}] scoped statement, index on owner:")
        res.plans.extend("    " + line for line in explain(runtime, label, sql, params))


def qualified(runtime: Any, label: str) -> str:
    """The deal table's name for raw SQL (which the schema translation does not reach)."""
    name = f'"{runtime.tables.by_entity["bench.deal"].name}"'
    return f'"{tenant_schema(SLUG)}".{name}' if label == "pg" else name


def analyze(runtime: Any, label: str) -> None:
    with runtime.db.engine.connect() as connection:
        if label == "pg":
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql(f"ANALYZE {qualified(runtime, label)}")
        else:
            connection.exec_driver_sql("ANALYZE")


def index_amount_owner(runtime: Any, label: str, requests: tuple[Request, Request],
                       fixture: Fixture, args: argparse.Namespace, res: Results) -> None:
    """What-if 3 (SQLite): an index on (amount, owner), alone and with the patches."""
    scoped, unscoped = requests
    with runtime.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE INDEX ix_bench_amount_owner ON {qualified(runtime, label)} (amount, owner)")
    analyze(runtime, label)
    sql, params = list_statement(runtime, scoped)
    seconds = raw_seconds(runtime, label, sql, params, args.raw_runs)
    res.figures["whatif3_sql_ms_amount_sqlite"] = seconds * 1e3
    res.rows.append(["  what-if 3 (sqlite, order -amount): index (amount, owner)",
                     fmt_seconds(seconds), "", "SQL alone", "(info)", ""])
    res.plans.append("[sqlite, order -amount] scoped statement, index on (amount, owner):")
    res.plans.extend("    " + line for line in explain(runtime, label, sql, params))
    for mode in ("A", "C"):
        with guard_patched(mode):
            check_pages(label, f"-amount (what-if {mode} + 3)", scoped, unscoped,
                        fixture.subtree_users, res)
            pair = time_pair(scoped, unscoped, args.runs, args.warmup)
            report_pair(res, label, f"order -amount, what-if {mode} + 3", pair,
                        f"_whatif{mode}3_amount", target=False)


@contextmanager
def guard_patched(mode: str) -> Iterator[None]:
    """What-ifs A, B, C (bench only, undone on exit): changes to `Guard` to compare.

    A: the subtree scope finds its units by a range on the indexed path (units first,
       then their members through the (unit_id, user_id) index) instead of a LIKE on
       the join; and `Guard.where` is kept per version, entity, action and principal
       (Principal is frozen and hashable; the clause holds no ids, so it stays right
       when people move).
    B: the subtree's user ids are read first (A's query, one more round trip per
       request) and bound: ``owner = ANY(:ids)`` on PostgreSQL, ``owner IN (...)`` on
       SQLite; nothing cached.
    C: as B, but the ids and the clause are kept per version and principal; a real
       change would have to drop them when the org tree or a membership changes.
    """
    from metacrm.platform import permissions as perm

    original_scope, original_where = perm.Guard._scope_sql, perm.Guard.where

    def subtree_query(self: Any) -> Any:
        members, units = self.tables.org_members, self.tables.org_units
        ranges = [sa.and_(units.c.path >= path, units.c.path < path[:-1] + chr(ord(path[-1]) + 1))
                  for path in self.principal.unit_paths]
        return sa.select(members.c.user_id).where(
            members.c.unit_id.in_(sa.select(units.c.id).where(sa.or_(*ranges))))

    def subtree_ids(self: Any) -> list[int]:
        cache = self.runtime.extras.setdefault("bench_subtree_ids", {}) if mode == "C" else {}
        key = self.principal.unit_paths
        if key not in cache:
            with self.runtime.connect() as connection:
                cache[key] = sorted(connection.execute(subtree_query(self)).scalars())
        return cache[key]

    def scope_sql(self: Any, scope: str, entity: Any, table: Any) -> Any:
        if scope != "subtree" or not self.principal.unit_ids:
            return original_scope(self, scope, entity, table)
        if mode == "A":
            return table.c.owner.in_(subtree_query(self))
        ids = subtree_ids(self)
        if self.runtime.db.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return table.c.owner == sa.func.any(sa.bindparam(
                "subtree_users", ids, type_=postgresql.ARRAY(sa.BigInteger)))
        return table.c.owner.in_(ids)

    def where(self: Any, entity_key: str, action: str, table: Any) -> Any:
        if mode == "B":
            return original_where(self, entity_key, action, table)
        cache = self.runtime.extras.setdefault(f"bench_where_{mode}", {})
        key = (entity_key, action, table, self.principal)
        if key not in cache:
            cache[key] = original_where(self, entity_key, action, table)
        return cache[key]

    perm.Guard._scope_sql, perm.Guard.where = scope_sql, where
    try:
        yield
    finally:
        perm.Guard._scope_sql, perm.Guard.where = original_scope, original_where


def statement_seconds(runtime: Any, label: str, statement: Any,
                      runs: int) -> tuple[float, str, Any]:
    """A hand-built statement alone through the driver; also its SQL and parameters."""
    with captured(runtime.db.engine) as statements, runtime.connect() as connection:
        connection.execute(statement).all()
    sql, params = statements[-1]
    return raw_seconds(runtime, label, sql, params, runs), sql, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=None,
                        help="record owners, placed in the leaf units (default: twice the units)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per leg")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--raw-runs", type=int, default=30,
                        help="runs of each list statement alone through the driver")
    parser.add_argument("--no-pg", action="store_true", help="SQLite figures only")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = 2 * args.units
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    res = Results()
    pg = Postgres(os.environ.get("METACRM_BENCH_PG_URL", DEFAULT_PG_URL))
    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if args.no_pg:
        res.notes.append("PostgreSQL skipped (--no-pg)")
    elif pg.create():
        backends.append(("pg", pg.url))
    else:
        res.notes.append(pg.note or "PostgreSQL skipped")
    if args.keep:
        root = Path(args.keep).resolve()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        temp = None
    else:
        temp = tempfile.TemporaryDirectory(prefix="metacrm-bench-permissions-")
        root = Path(temp.name)
    print(f"machine: {machine()}")
    print(f"{args.records:,} records, {args.units:,} org units, {args.users:,} owners; "
          f"median of {args.runs} interleaved runs per leg after {args.warmup} warm-up")
    started = time.perf_counter()
    try:
        write_library(root)
        for label, url in backends:
            try:
                run_backend(root, label, url, args, res)
            except Exception as exc:
                import traceback

                traceback.print_exc()
                res.failures.append(f"{label}: {type(exc).__name__}: {exc}")
            if label == "pg":
                pg.drop()
    finally:
        pg.drop()
        if temp is not None:
            temp.cleanup()
    print()
    print("plans (PostgreSQL: EXPLAIN ANALYZE; SQLite: EXPLAIN QUERY PLAN):")
    for line in res.plans:
        print(line)
    print()
    print_table(["figure", "median", "CPU", "min .. max", "target", "status"], res.rows)
    print("scoped: role branch_rep (read: subtree); unscoped: role viewer_all (read: all); "
          "each call loads the principal and lists 50. CPU: this process only (on SQLite "
          "that includes the query; on PostgreSQL the server's share is not in it), steadier "
          "than wall time on a busy machine.")
    for line in res.whatifs:
        print(line)
    for note in res.notes:
        print(f"note: {note}")
    for failure in res.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"total time {time.perf_counter() - started:.0f} s")
    figures = {k: res.figures.get(k) for k in ("scoped_ratio_pg", "scoped_ratio_sqlite")}
    figures.update({k: v for k, v in res.figures.items() if k not in figures})
    print_json_line(figures)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
