"""Benchmark: a list limited to the caller's org subtree beside the same list unlimited.

Over 1,000,000 `bench.deal` records owned by about 4,000 users placed in an org tree
of 2,000 units (group → business units → regions → branches → teams), it times
``RecordService.list("bench.deal", ListQuery(limit=50))`` for two principals in the
same run, interleaved, on SQLite and on PostgreSQL:

- **scoped**: a regional manager with the role ``branch_rep`` (``read: subtree``),
  placed on a region whose subtree owns about 4% of the records;
- **unscoped**: a user with the role ``viewer_all`` (``read: all``), placed on the
  same region, so both do the same principal work and differ only in the scope.

Each timed call loads the principal (``load_principal``: roles, org units and the
org tree's version) and then lists, as a request does. The target pair is the default
order (id); two more pairs, for information: ``-amount`` (an indexed, required field)
and a branch manager (a subtree ten times smaller). It prints the plans (EXPLAIN),
times the list's SQL alone, the Guard's query for the subtree's people alone (it runs
once per org-tree version), and two what-ifs that add an index to the deal table
(3: ``(amount, owner)`` on SQLite; 4: ``(owner)``). Last line: one JSON object; ratios
are scoped ÷ unscoped (lower is better, target ≤ 1.5 for the order by id).

    .venv/bin/python bench/permissions.py [--records 1000000] [--units 2000] [--no-pg]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import (
    ScratchPostgres,
    fmt_seconds,
    machine,
    median,
    print_json_line,
    print_table,
    spread,
)

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
            lines = [squeeze_array(row[0]) for row in cursor.fetchall()]
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
        res.figures[f"subtree_share_{label}"] = round(share, 4)

        requests: dict[str, tuple[Request, Request]] = {}
        for sort_label, sort in SORTS.items():
            scoped = Request(platform, runtime, fixture.scoped_user, sort)
            unscoped = Request(platform, runtime, fixture.unscoped_user, sort)
            requests[sort_label] = (scoped, unscoped)
            check_pages(label, sort_label, scoped, unscoped, fixture.subtree_users, res)
            pair = time_pair(scoped, unscoped, args.runs, args.warmup)
            suffix = "" if sort_label == "id" else "_amount"
            # the target is the default order; -amount is information (see COVERING_NOTE)
            ratio = report_pair(res, label, f"order {sort_label}", pair, suffix,
                                target=sort_label == "id")
            print(f"  {label}: list of 50 by {sort_label}: scoped (branch_rep, read: subtree) "
                  f"{fmt_seconds(median(pair.scoped))}, unscoped (viewer_all, read: all) "
                  f"{fmt_seconds(median(pair.unscoped))}, ratio {ratio:.2f}")
            statement_rows(runtime, label, sort_label, scoped, unscoped, suffix, args, res)

        # info: the Guard's parts alone, and a smaller subtree (a branch manager)
        where_s = where_seconds(platform, runtime, fixture.scoped_user, args.runs * 10)
        res.figures[f"guard_where_ms_{label}"] = where_s * 1e3
        res.rows.append([f"  {label}: Guard(...).where() alone (kept per principal and "
                         "org version)", fmt_seconds(where_s), "", "", "(info)", ""])
        people_rows(platform, runtime, label, fixture, args, res)
        branch = Fixture(fixture.users, fixture.branch, fixture.branch_path, 0, set())
        with runtime.begin() as connection:
            branch_user = create_user(connection, "branch_manager")
            set_roles(connection, branch_user, ["branch_rep"])
            OrgTree(connection, runtime_system_tables(runtime)).place(branch_user, branch.region)
        branch.subtree_users = subtree_users(runtime, branch.region_path)
        describe(runtime, label, args.records, branch.region, branch)
        small = Request(platform, runtime, "branch_manager", ())
        check_pages(label, "id (branch)", small, requests["id"][1], branch.subtree_users, res)
        pair = time_pair(small, requests["id"][1], max(10, args.runs // 2), args.warmup)
        report_pair(res, label, f"order id, branch {branch.region} "
                    f"({branch.subtree_records / max(1, args.records):.2%})", pair,
                    "_branch", target=False)
        # what-ifs that change the deal table's indexes: last
        if label == "sqlite":
            index_amount_owner(runtime, label, requests["-amount"], fixture, args, res)
        index_owner(runtime, label, requests, args, res)
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
    res.figures[f"scoped_ratio_cpu{suffix}_{label}"] = s_cpu / u_cpu if u_cpu else None
    if not suffix:  # the target pair's times too
        res.figures[f"scoped_ms_{label}"] = s * 1e3
        res.figures[f"unscoped_ms_{label}"] = u * 1e3
    res.rows.append([f"{label}, {what}: scoped (subtree)", fmt_seconds(s), fmt_seconds(s_cpu),
                     spread(pair.scoped), "", ""])
    res.rows.append([f"{label}, {what}: unscoped (all)", fmt_seconds(u), fmt_seconds(u_cpu),
                     spread(pair.unscoped), "baseline", ""])
    res.rows.append([f"{label}, {what}: scoped ÷ unscoped", f"{ratio:.2f}x",
                     f"{s_cpu / u_cpu:.2f}x" if u_cpu else "", "",
                     f"≤ {TARGET_RATIO:g}x" if target else "(info)",
                     ("met" if ratio <= TARGET_RATIO else "MISSED") if target else ""])
    return ratio


def squeeze(sql: str) -> str:
    """The statement on one line, a long bound list shown by its length."""
    sql = " ".join(sql.split())
    return re.sub(r"\((?:\?, ){4,}\?\)", lambda m: f"(?, ... {m.group(0).count('?')} ids)", sql)


def squeeze_array(line: str) -> str:
    """A plan line with a long bound array shown by its length."""
    return re.sub(r"'\{(?:\d+,){4,}\d+\}'",
                  lambda m: f"'{{... {m.group(0).count(',') + 1} ids}}'", line)


def statement_rows(runtime: Any, label: str, sort_label: str, scoped: Request,
                   unscoped: Request, suffix: str, args: argparse.Namespace,
                   res: Results) -> None:
    """The list's statement alone through the driver, and its plan."""
    sql_s, params_s = list_statement(runtime, scoped)
    sql_u, params_u = list_statement(runtime, unscoped)
    if "_metacrm_org_units" in sql_s:
        res.notes.append(f"{label}, order {sort_label}: the scoped statement reads the org "
                         "tables (a subquery), not the subtree's people bound")
    alone_s = raw_seconds(runtime, label, sql_s, params_s, args.raw_runs)
    alone_u = raw_seconds(runtime, label, sql_u, params_u, args.raw_runs)
    if not suffix:
        res.figures[f"sql_scoped_ms_{label}"] = alone_s * 1e3
        res.figures[f"sql_unscoped_ms_{label}"] = alone_u * 1e3
    res.rows.append([f"  {label}, order {sort_label}: the list's SQL alone, scoped / unscoped",
                     f"{fmt_seconds(alone_s)} / {fmt_seconds(alone_u)}", "",
                     f"{alone_s / alone_u:.2f}x", "(info)", ""])
    res.plans.append(f"[{label}, order {sort_label}] scoped statement:\n    " + squeeze(sql_s))
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


def people_rows(platform: Platform, runtime: Any, label: str, fixture: Fixture,
                args: argparse.Namespace, res: Results) -> None:
    """The subtree's people query alone: the Guard's (run once per org-tree version, and
    per request as the subquery beyond MEMBER_LIST_MAX people), beside a path range."""
    from metacrm.platform.permissions import Guard

    tables = runtime_system_tables(runtime)
    units, members = tables.org_units, tables.org_members
    with runtime.connect() as connection:
        principal = load_principal(connection, tables,
                                   user_by_name(connection, fixture.scoped_user),
                                   runtime.registry.units)
    generated = Guard(runtime, principal, platform.operators)._people_select("subtree")
    path = fixture.region_path
    upper = path[:-1] + chr(ord(path[-1]) + 1)  # '/1/2/7/' → '/1/2/70': the prefix's range
    by_range = sa.select(members.c.user_id).where(members.c.unit_id.in_(
        sa.select(units.c.id).where(units.c.path >= path, units.c.path < upper)))
    times = [statement_seconds(runtime, label, q, args.raw_runs) for q in (generated, by_range)]
    res.figures[f"people_query_ms_{label}"] = times[0] * 1e3
    res.rows.append([f"  {label}: the subtree's people query alone: Guard's (LIKE) / "
                     "path range", f"{fmt_seconds(times[0])} / {fmt_seconds(times[1])}", "",
                     "SQL alone", "(info)", ""])


def statement_seconds(runtime: Any, label: str, statement: Any, runs: int) -> float:
    """A statement alone through the driver."""
    with captured(runtime.db.engine) as statements, runtime.connect() as connection:
        connection.execute(statement).all()
    sql, params = statements[-1]
    return raw_seconds(runtime, label, sql, params, runs)


# -- what-ifs: an index added to the deal table, then the generated statement ------------------

WHAT_IFS = (
    "what-if 3 (SQLite, order -amount): CREATE INDEX on (amount, owner), so the walk down "
    "amount tests owner in the index instead of reading each visited row from the table",
    "what-if 4: CREATE INDEX on (owner) (on SQLite after what-if 3's index too); the "
    "statement alone",
)
COVERING_NOTE = (
    "by -amount each entry of the amount index that SQLite visits needs its table row read "
    "to test owner (about 50 / {share:.1%} ≈ {rows:,} rows for a page); an index on "
    "(amount, owner) tests owner in the index (what-if 3: {ratio}), not adopted: changing "
    "the shape of existing single-field indexes needs a planner step for index-shape changes"
)


def covering_note(res: Results) -> str:
    """COVERING_NOTE with this run's SQLite figures."""
    share = res.figures.get("subtree_share_sqlite") or 0.04
    before = res.figures.get("scoped_ratio_amount_sqlite")
    after = res.figures.get("scoped_ratio_whatif3_amount_sqlite")
    ratio = (f"{before:.2f}x → {after:.2f}x" if before and after else "not measured")
    return COVERING_NOTE.format(share=share, rows=round(50 / share), ratio=ratio)


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
    """What-if 3 (SQLite): an index on (amount, owner); the statement alone and requests."""
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
    check_pages(label, "-amount (what-if 3)", scoped, unscoped, fixture.subtree_users, res)
    pair = time_pair(scoped, unscoped, args.runs, args.warmup)
    report_pair(res, label, "order -amount, what-if 3", pair, "_whatif3_amount", target=False)


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
    pg = ScratchPostgres(os.environ.get("METACRM_BENCH_PG_URL", DEFAULT_PG_URL), BENCH_DB)
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
    for line in WHAT_IFS:
        print(line)
    print(f"note: {covering_note(res)}")
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
