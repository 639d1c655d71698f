"""The condition language: every operator on a real database, every validation error, LIKE
escaping, paths through references, NULL semantics and relative dates at fixed clocks.

Every query is run by both backends: `Crm.ids` asserts that the SQL ids equal the ids of
the records `evaluate()` accepts (records read back from the database), then returns them.
Tests run on SQLite always and on PostgreSQL when METACRM_TEST_PG_URL is set.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conditionworld import BACKENDS, World, compile_world, open_database
from conftest import WriteLibrary, write_files
from sqlalchemy.dialects import postgresql, sqlite

from metacrm.engines.conditions import (
    AllOf,
    AnyOf,
    ConditionError,
    Duration,
    EvalContext,
    Not,
    Operator,
    OperatorRegistry,
    Predicate,
    condition_fields,
    dump_condition,
    evaluate,
    parse_condition,
    to_sql,
)
from metacrm.engines.conditions.values import TEXT_TYPES
from metacrm.hookspecs import hookimpl
from metacrm.metadata.ir import freeze
from metacrm.metadata.library import Library
from metacrm.plugins import make_plugin_manager

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2025, 3, 2, 17, 30, tzinfo=UTC)  # Sunday in UTC, Monday 01:30 in Shanghai
CTX = EvalContext(NOW, ZoneInfo("UTC"))
U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"

LIBRARY = {
    "metadata/modules/crm/module.yaml": """
        module: crm
        version: 1.0.0
        label: CRM
        owner: crm-team
    """,
    "metadata/modules/crm/entities/region.yaml": """
        entity: region
        fields:
          name: {type: string}
          code: {type: enum, options: [north, south]}
    """,
    "metadata/modules/crm/entities/account.yaml": """
        entity: account
        fields:
          name: {type: string}
          region: {type: reference, to: region}
          tags: {type: multi_enum, options: [vip, partner]}
          tier: {type: enum, options: [gold, silver]}
    """,
    "metadata/modules/crm/entities/deal.yaml": """
        entity: deal
        fields:
          title: {type: string, max_length: 100}
          body: {type: text}
          email: {type: email}
          phone: {type: phone}
          site: {type: url}
          amount: {type: decimal, precision: 12, scale: 2}
          probability: {type: integer}
          stage: {type: enum, options: [new, won, lost]}
          closed_on: {type: date}
          due_at: {type: datetime}
          won: {type: boolean}
          labels: {type: multi_enum, options: [hot, cold]}
          account: {type: reference, to: account}
          uid: {type: uuid}
          data: {type: json}
          score: {type: formula, returns: decimal, expression: "amount * 2"}
    """,
    "tenants/acme/tenant.yaml": """
        tenant: acme
        modules: [crm]
        timezone: Asia/Shanghai
    """,
}


# -- the registry, the tables and a database per backend -------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("conditions")
    write_files(root, LIBRARY)
    return compile_world(Library.at(root))


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, world: World) -> Iterator[sa.Connection]:
    with open_database(request.param, world) as connection:
        yield connection


class Crm:
    """Rows in, ids out: SQL and Python must select the same records."""

    def __init__(self, connection: sa.Connection, world: World) -> None:
        self.connection = connection
        self.world = world

    def table(self, entity: str) -> sa.Table:
        return self.world.tables.by_entity[f"crm.{entity}"]

    def insert(self, entity: str, *rows: Mapping[str, Any]) -> None:
        for row in rows:
            values = {k: storable(v) for k, v in row.items()}
            self.connection.execute(self.table(entity).insert().values(**values))

    def parse(self, data: Any, entity: str = "deal") -> Any:
        return parse_condition(data, f"crm.{entity}", self.world.registry, self.world.operators)

    def records(self, entity: str, depth: int = 0) -> dict[int, dict[str, Any]]:
        """Every row of `entity`, references loaded as nested records (soft-deleted ones too)."""
        key = f"crm.{entity}"
        rows = {r.id: dict(r._mapping) for r in self.connection.execute(
            sa.select(self.world.tables.by_entity[key]))}
        if depth > 3:
            return rows
        for field in self.world.registry.entities[key].fields:
            if field.type == "reference" and field.target:
                targets = self.records(field.target.split(".")[1], depth + 1)
                for row in rows.values():
                    if row[field.name] is not None:
                        row[field.name] = targets[row[field.name]]
        return rows

    def ids(self, data: Any, ctx: EvalContext = CTX, entity: str = "deal") -> set[int]:
        node = self.parse(data, entity)
        table = self.table(entity)
        where = to_sql(node, f"crm.{entity}", self.world.tables, self.world.registry, ctx)
        by_sql = set(self.connection.scalars(sa.select(table.c.id).where(where)))
        by_python = {i for i, record in self.records(entity).items()
                     if evaluate(node, record, ctx)}
        assert by_sql == by_python, f"SQL {sorted(by_sql)} != Python {sorted(by_python)}"
        return by_sql


def storable(value: Any) -> Any:
    """Datetimes in UTC (SQLite keeps no offset); JSON null vs SQL NULL kept apart."""
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC)
    if value is SQL_NULL:
        return sa.null()
    return value


SQL_NULL = object()


@pytest.fixture
def crm(database: sa.Connection, world: World) -> Iterator[Crm]:
    transaction = database.begin()
    try:
        yield Crm(database, world)
    finally:
        transaction.rollback()


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


REGIONS = [
    {"id": 1, "name": "North", "code": "north"},
    {"id": 2, "code": "south"},
    {"id": 3, "name": "Gone", "code": "north", "deleted_at": at("2025-01-01T00:00:00Z")},
]
ACCOUNTS = [
    {"id": 1, "name": "Acme", "region": 1, "tags": ["vip"], "tier": "gold"},
    {"id": 2, "name": "Beta", "region": 2, "tags": [], "tier": "silver"},
    {"id": 3, "name": "Cold"},
    {"id": 4, "name": "Dead", "region": 1, "tags": ["vip", "partner"], "tier": "gold",
     "deleted_at": at("2025-01-01T00:00:00Z")},
    {"id": 5, "name": "Orphan", "region": 3, "tags": ["partner"], "tier": "silver"},
]
CREATED = at("2025-03-01T00:00:00Z")
DEALS = [
    {"id": 1, "title": "50% off", "body": "Line one", "email": "ann@x.io", "amount": "100.50",
     "probability": 10, "stage": "new", "closed_on": dt.date(2025, 3, 1),
     "due_at": at("2025-03-02T10:00:00Z"), "won": True, "labels": ["hot"], "account": 1,
     "uid": U1, "owner": 7, "business_unit": "retail", "created_at": CREATED},
    {"id": 2, "title": "500 off", "body": "", "amount": "0", "probability": 50,
     "stage": "won", "closed_on": dt.date(2025, 2, 20), "due_at": at("2025-02-27T08:00:00Z"),
     "won": False, "labels": [], "account": 2, "uid": U2, "owner": 7,
     "created_at": at("2025-01-01T00:00:00Z")},
    {"id": 3, "title": "a_b", "email": "bob@y.io", "amount": "-5.25", "probability": 90,
     "stage": "lost", "account": 3, "owner": 8, "created_at": CREATED},
    {"id": 4, "title": "axb", "body": "x", "email": "", "closed_on": dt.date(2025, 3, 2),
     "due_at": at("2025-03-02T17:00:00Z"), "won": True, "labels": ["hot", "cold"],
     "account": 4, "created_at": CREATED},
    {"id": 5, "title": "back\\slash", "amount": "999999.99", "probability": 0, "stage": "new",
     "closed_on": dt.date(2024, 12, 31), "due_at": at("2025-01-01T00:00:00Z"), "won": False,
     "labels": None, "account": 5, "uid": U1, "created_at": CREATED},
    {"id": 6, "title": "Case", "amount": "100.5", "probability": 100, "stage": "won",
     "closed_on": dt.date(2025, 3, 10), "due_at": at("2025-03-10T00:00:00Z"),
     "labels": ["cold"], "created_at": CREATED},
    {"id": 7, "title": "case", "labels": SQL_NULL, "created_at": CREATED},
    {"id": 8, "created_at": CREATED},
]
ALL = set(range(1, 9))


@pytest.fixture
def deals(crm: Crm) -> Crm:
    crm.insert("region", *REGIONS)
    crm.insert("account", *ACCOUNTS)
    crm.insert("deal", *DEALS)
    return crm


def leaf(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op} if value is None else {"field": field, "op": op,
                                                             "value": value}


# -- every operator ---------------------------------------------------------------------------

OPERATOR_CASES = [
    # eq / ne (NULL: eq is false, ne is true)
    (leaf("title", "eq", "case"), {7}),
    (leaf("amount", "eq", 100.5), {1, 6}),
    (leaf("amount", "eq", "100.50"), {1, 6}),
    (leaf("probability", "eq", 0), {5}),
    (leaf("stage", "eq", "new"), {1, 5}),
    (leaf("closed_on", "eq", "2025-03-02"), {4}),
    (leaf("due_at", "eq", "2025-03-02T10:00:00Z"), {1}),
    (leaf("due_at", "eq", "2025-03-02T18:00:00+08:00"), {1}),
    (leaf("won", "eq", True), {1, 4}),
    (leaf("account", "eq", 2), {2}),
    (leaf("account", "eq", 4), {4}),  # the stored id, though that account is soft-deleted
    (leaf("uid", "eq", U1.upper()), {1, 5}),
    (leaf("id", "eq", 3), {3}),
    (leaf("stage", "ne", "new"), {2, 3, 4, 6, 7, 8}),
    (leaf("won", "ne", True), {2, 3, 5, 6, 7, 8}),
    (leaf("title", "ne", "case"), ALL - {7}),
    (leaf("account", "ne", 1), ALL - {1}),
    # ordering
    (leaf("probability", "lt", 50), {1, 5}),
    (leaf("probability", "lte", 50), {1, 2, 5}),
    (leaf("probability", "gt", 50), {3, 6}),
    (leaf("probability", "gte", 50), {2, 3, 6}),
    (leaf("amount", "gt", "100.49"), {1, 5, 6}),
    (leaf("amount", "lt", 0), {3}),
    (leaf("closed_on", "lt", "2025-03-01"), {2, 5}),
    (leaf("due_at", "gte", "2025-03-02T10:00:00Z"), {1, 4, 6}),
    # in / not_in (not_in holds on NULL)
    (leaf("stage", "in", ["new", "lost"]), {1, 3, 5}),
    (leaf("stage", "not_in", ["new", "lost"]), {2, 4, 6, 7, 8}),
    (leaf("probability", "in", [0, 10, 11]), {1, 5}),
    (leaf("title", "in", []), set()),
    (leaf("title", "not_in", []), ALL),
    (leaf("closed_on", "in", ["2025-03-01", "2025-03-10"]), {1, 6}),
    (leaf("uid", "not_in", [U1]), {2, 3, 4, 6, 7, 8}),
    (leaf("account", "in", [1, 2]), {1, 2}),
    # contains / starts_with: case-sensitive, % _ \ literal
    (leaf("title", "contains", "ase"), {6, 7}),
    (leaf("title", "contains", "C"), {6}),
    (leaf("body", "contains", "one"), {1}),
    (leaf("email", "contains", "@"), {1, 3}),
    (leaf("labels", "contains", "hot"), {1, 4}),
    (leaf("labels", "contains", "cold"), {4, 6}),
    (leaf("title", "starts_with", "50"), {1, 2}),
    (leaf("title", "starts_with", "c"), {7}),
    (leaf("email", "starts_with", "ann"), {1}),
    # is_empty: NULL, empty text, and for multi_enum [] or JSON null
    (leaf("email", "is_empty", True), {2, 4, 5, 6, 7, 8}),
    (leaf("email", "is_empty", False), {1, 3}),
    (leaf("body", "is_empty", True), {2, 3, 5, 6, 7, 8}),
    (leaf("labels", "is_empty", True), {2, 3, 5, 7, 8}),
    (leaf("labels", "is_empty", False), {1, 4, 6}),
    (leaf("amount", "is_empty", True), {4, 7, 8}),
    (leaf("won", "is_empty", False), {1, 2, 4, 5}),
    (leaf("account", "is_empty", True), {6, 7, 8}),
    (leaf("uid", "is_empty", False), {1, 2, 5}),
    # between, both ends included
    (leaf("probability", "between", [10, 50]), {1, 2}),
    (leaf("amount", "between", ["-5.25", 100.5]), {1, 2, 3, 6}),
    (leaf("closed_on", "between", ["2025-02-20", "2025-03-01"]), {1, 2}),
    (leaf("due_at", "between", ["2025-03-02T00:00:00Z", "2025-03-02T17:00:00Z"]), {1, 4}),
    # durations (now: 2025-03-02 17:30 UTC)
    (leaf("due_at", "older_than", "30m"), {1, 2, 5}),  # 17:00 exactly is not older
    (leaf("due_at", "newer_than", "30m"), {4, 6}),
    (leaf("due_at", "older_than", "12h"), {2, 5}),
    (leaf("due_at", "older_than", "3d"), {2, 5}),
    (leaf("due_at", "older_than", "2w"), {5}),
    (leaf("closed_on", "older_than", "1d"), {1, 2, 5}),
    (leaf("closed_on", "newer_than", "1d"), {4, 6}),
    (leaf("created_at", "older_than", "1w"), {2}),
    # relative dates in UTC (Shanghai: see the boundary tests)
    (leaf("closed_on", "today"), {4}),
    (leaf("due_at", "today"), {1, 4}),
    (leaf("closed_on", "this_week"), {1, 4}),
    (leaf("due_at", "this_week"), {1, 2, 4}),
    (leaf("closed_on", "this_month"), {1, 4, 6}),
    (leaf("due_at", "this_month"), {1, 4, 6}),
    # system columns
    (leaf("owner", "eq", 7), {1, 2}),
    (leaf("owner", "ne", 7), ALL - {1, 2}),
    (leaf("business_unit", "eq", "retail"), {1}),
    (leaf("id", "in", [1, 3]), {1, 3}),
    (leaf("row_version", "eq", 1), ALL),
    # groups
    ({"all": []}, ALL),
    ({"any": []}, set()),
    ({"any": [leaf("stage", "eq", "won"), leaf("probability", "lt", 5)]}, {2, 5, 6}),
    ({"all": [leaf("stage", "eq", "new"), {"not": leaf("title", "contains", "%")}]}, {5}),
]


@pytest.mark.parametrize(("data", "expected"), OPERATOR_CASES,
                         ids=[f"{i:02d}-{str(c[0])[:60]}" for i, c in enumerate(OPERATOR_CASES)])
def test_operator(deals: Crm, data: Any, expected: set[int]) -> None:
    assert deals.ids(data) == expected


def test_every_builtin_operator_has_a_case() -> None:
    used = set()
    for data, _ in OPERATOR_CASES:
        stack = [data]
        while stack:
            item = stack.pop()
            stack.extend(item.get("all", []) + item.get("any", []))
            stack.extend([item["not"]] if "not" in item else [])
            if "op" in item:
                used.add(item["op"])
    assert used == set(OperatorRegistry.builtin().names())


# -- NULL semantics -------------------------------------------------------------------------

NULL_CASES = [
    # `not` is the plain complement: SQL's UNKNOWN never leaks
    ({"not": leaf("probability", "eq", 10)}, ALL - {1}),
    ({"not": leaf("probability", "lt", 50)}, ALL - {1, 5}),
    ({"not": leaf("stage", "ne", "new")}, {1, 5}),
    ({"not": leaf("stage", "in", ["new"])}, ALL - {1, 5}),
    ({"not": leaf("title", "contains", "a")}, {1, 2, 8}),
    ({"not": {"not": leaf("won", "eq", False)}}, {2, 5}),
    ({"any": [leaf("won", "eq", True), {"not": leaf("won", "eq", True)}]}, ALL),
    ({"all": [leaf("won", "eq", True), {"not": leaf("won", "eq", True)}]}, set()),
    ({"not": leaf("account.name", "eq", "Acme")}, ALL - {1}),
]


@pytest.mark.parametrize(("data", "expected"), NULL_CASES)
def test_null_semantics(deals: Crm, data: Any, expected: set[int]) -> None:
    assert deals.ids(data) == expected


def test_a_test_and_its_negation_split_every_record(deals: Crm) -> None:
    for data, _ in OPERATOR_CASES:
        assert deals.ids(data) | deals.ids({"not": data}) == ALL
        assert not deals.ids(data) & deals.ids({"not": data})


# -- LIKE escaping and case ---------------------------------------------------------------------

ESCAPING = [
    ("contains", "50%", {1}),  # not "500 off"
    ("contains", "%", {1, 6}),
    ("contains", "_", {2, 6}),
    ("contains", "a_b", {2}),  # not "axb"
    ("contains", "\\", {4, 6}),
    ("contains", "/", {5}),  # the ESCAPE character itself
    ("contains", "100%_\\", {6}),
    ("starts_with", "50%", {1}),
    ("starts_with", "a_", {2}),
    ("starts_with", "%", set()),
    ("starts_with", "_", set()),
    ("starts_with", "\\", set()),
    ("contains", "É", {7}),  # case-sensitive beyond ASCII too
    ("contains", "é", {8}),
    ("contains", "ABC", {9}),
    ("contains", "abc", {10}),
    ("starts_with", "a", {2, 3, 10}),
    ("contains", "", set(range(1, 11))),  # every text contains the empty text (NULL does not)
]


@pytest.mark.parametrize(("op", "value", "expected"), ESCAPING)
def test_like_escaping_and_case(crm: Crm, op: str, value: str, expected: set[int]) -> None:
    titles = ["50% off", "a_b", "axb", "back\\slash", "x/y", "100%_\\ done", "CAFÉ", "café",
              "ABC", "abc"]
    crm.insert("deal", *({"id": i, "title": t} for i, t in enumerate(titles, 1)),
               {"id": 11})
    assert crm.ids(leaf("title", op, value)) == expected


def test_postgresql_uses_an_escaped_like_and_sqlite_instr(world: World) -> None:
    node = parse_condition(leaf("title", "contains", "50%_a/b"), "crm.deal", world.registry,
                           world.operators)
    table = world.tables.by_entity["crm.deal"]
    query = sa.select(table.c.id).where(to_sql(node, "crm.deal", world.tables,
                                                world.registry, CTX))
    pg = query.compile(dialect=postgresql.dialect())
    assert "LIKE '%%' || %(title_1)s || '%%' ESCAPE '/'" in str(pg)
    assert pg.params["title_1"] == "50/%/_a//b"
    lite = query.compile(dialect=sqlite.dialect())
    assert "instr(crm__deal.title, ?)" in str(lite)
    assert "LIKE" not in str(lite)


# -- paths through references ------------------------------------------------------------------

PATH_CASES = [
    (leaf("account.name", "eq", "Acme"), {1}),
    (leaf("account.name", "ne", "Acme"), ALL - {1}),  # d4's account is soft-deleted: no value
    (leaf("account.name", "eq", "Dead"), set()),
    (leaf("account.tier", "eq", "gold"), {1}),
    (leaf("account.tags", "contains", "vip"), {1}),
    (leaf("account.tags", "is_empty", True), {2, 3, 4, 6, 7, 8}),
    (leaf("account.id", "eq", 4), set()),
    (leaf("account.region", "eq", 3), {5}),  # the stored id, though region 3 is deleted
    (leaf("account.region.name", "eq", "North"), {1}),
    (leaf("account.region.name", "is_empty", True), ALL - {1}),
    (leaf("account.region.name", "is_empty", False), {1}),
    (leaf("account.region.code", "in", ["north"]), {1}),
    (leaf("account.region.code", "ne", "north"), ALL - {1}),
    ({"not": leaf("account.region.code", "eq", "north")}, ALL - {1}),
    (leaf("account.region.code", "eq", "south"), {2}),
    ({"all": [leaf("account.region.code", "eq", "south"), leaf("stage", "eq", "won")]}, {2}),
]


@pytest.mark.parametrize(("data", "expected"), PATH_CASES)
def test_paths_through_two_references(deals: Crm, data: Any, expected: set[int]) -> None:
    assert deals.ids(data) == expected


def test_paths_compile_to_subqueries_not_joins(world: World) -> None:
    node = parse_condition(leaf("account.region.name", "eq", "North"), "crm.deal",
                           world.registry, world.operators)
    where = to_sql(node, "crm.deal", world.tables, world.registry, CTX)
    sql = str(sa.select(world.tables.by_entity["crm.deal"].c.id).where(where)
              .compile(dialect=postgresql.dialect()))
    assert "JOIN" not in sql
    assert sql.count("IN (SELECT") == 2
    assert sql.count("deleted_at IS NULL") == 2


def test_one_row_per_record_whatever_the_path(deals: Crm) -> None:
    table = deals.table("deal")
    node = deals.parse({"any": [leaf("account.tags", "contains", "vip"),
                                leaf("account.tags", "contains", "partner")]})
    where = to_sql(node, "crm.deal", deals.world.tables, deals.world.registry, CTX)
    rows = deals.connection.scalars(sa.select(table.c.id).where(where)).all()
    assert sorted(rows) == [1, 5]


# -- relative dates around week and month boundaries ---------------------------------------------

WEEK_NOW = dt.datetime(2025, 3, 2, 17, 30, tzinfo=UTC)  # Sun in UTC; Mon 03-03 01:30 Shanghai
MONTH_NOW = dt.datetime(2025, 3, 31, 16, 30, tzinfo=UTC)  # Mon 03-31 UTC; Tue 04-01 Shanghai
DATES = {1: "2025-02-23", 2: "2025-02-24", 3: "2025-03-02", 4: "2025-03-03", 5: "2025-03-09",
         6: "2025-03-10", 7: "2025-03-31", 8: "2025-04-01", 9: "2025-04-06", 10: "2025-04-07"}
TIMES = {1: "2025-02-23T15:59:59.999999Z", 2: "2025-02-23T16:00:00Z",
         3: "2025-02-24T00:00:00Z", 4: "2025-03-02T15:59:59Z", 5: "2025-03-02T16:00:00Z",
         6: "2025-03-02T23:59:59.999999Z", 7: "2025-03-03T00:00:00Z",
         8: "2025-03-03T15:59:59.999999Z", 9: "2025-03-03T16:00:00Z",
         10: "2025-03-31T15:59:59Z", 11: "2025-03-31T16:00:00Z", 12: "2025-04-01T00:00:00Z"}

RELATIVE_CASES = [
    # now, zone, field, op, expected
    (WEEK_NOW, "UTC", "closed_on", "today", {3}),
    (WEEK_NOW, "Asia/Shanghai", "closed_on", "today", {4}),
    (WEEK_NOW, "UTC", "closed_on", "this_week", {2, 3}),
    (WEEK_NOW, "Asia/Shanghai", "closed_on", "this_week", {4, 5}),
    (WEEK_NOW, "UTC", "closed_on", "this_month", {3, 4, 5, 6, 7}),
    (MONTH_NOW, "UTC", "closed_on", "this_month", {3, 4, 5, 6, 7}),
    (MONTH_NOW, "Asia/Shanghai", "closed_on", "this_month", {8, 9, 10}),
    (MONTH_NOW, "UTC", "closed_on", "this_week", {7, 8, 9}),
    (MONTH_NOW, "Asia/Shanghai", "closed_on", "this_week", {7, 8, 9}),
    (MONTH_NOW, "Asia/Shanghai", "closed_on", "today", {8}),
    (WEEK_NOW, "UTC", "due_at", "today", {4, 5, 6}),
    (WEEK_NOW, "Asia/Shanghai", "due_at", "today", {5, 6, 7, 8}),
    (WEEK_NOW, "UTC", "due_at", "this_week", {3, 4, 5, 6}),
    (WEEK_NOW, "Asia/Shanghai", "due_at", "this_week", {5, 6, 7, 8, 9}),
    (WEEK_NOW, "Asia/Shanghai", "due_at", "this_month", {4, 5, 6, 7, 8, 9, 10}),
    (MONTH_NOW, "UTC", "due_at", "this_month", {4, 5, 6, 7, 8, 9, 10, 11}),
    (MONTH_NOW, "Asia/Shanghai", "due_at", "this_month", {11, 12}),
    (MONTH_NOW, "Asia/Shanghai", "due_at", "today", {11, 12}),
]


@pytest.mark.parametrize(("now", "zone", "field", "op", "expected"), RELATIVE_CASES)
def test_relative_dates_follow_the_tenant_timezone(crm: Crm, now: dt.datetime, zone: str,
                                                   field: str, op: str,
                                                   expected: set[int]) -> None:
    crm.insert("deal", *({"id": i, "closed_on": dt.date.fromisoformat(d)}
                         for i, d in DATES.items()))
    crm.insert("deal", *({"id": 100 + i, "due_at": at(t)} for i, t in TIMES.items()))
    found = crm.ids(leaf(field, op), EvalContext(now, ZoneInfo(zone)))
    assert {i % 100 for i in found} == expected
    assert all((i > 100) == (field == "due_at") for i in found)


DURATION_CASES = [
    # date fields count from their first moment (local midnight)
    (WEEK_NOW, "UTC", "closed_on", "older_than", "1d", {1, 2}),  # before 03-02
    (WEEK_NOW, "Asia/Shanghai", "closed_on", "older_than", "1d", {1, 2, 3}),  # before 03-03
    (WEEK_NOW, "Asia/Shanghai", "closed_on", "newer_than", "1d", {4, 5, 6, 7, 8, 9, 10}),
    (WEEK_NOW, "Asia/Shanghai", "closed_on", "older_than", "2w", set()),
    (WEEK_NOW, "UTC", "closed_on", "older_than", "1w", {1}),  # 02-23 00:00 < 02-23 17:30
    (WEEK_NOW, "UTC", "due_at", "older_than", "90m", {1, 2, 3, 4}),  # before 16:00, 03-02
    (WEEK_NOW, "UTC", "due_at", "newer_than", "90m", {5, 6, 7, 8, 9, 10, 11, 12}),
    (WEEK_NOW, "UTC", "due_at", "older_than", "1w", {1, 2}),
]


@pytest.mark.parametrize(("now", "zone", "field", "op", "value", "expected"), DURATION_CASES)
def test_durations(crm: Crm, now: dt.datetime, zone: str, field: str, op: str, value: str,
                   expected: set[int]) -> None:
    crm.insert("deal", *({"id": i, "closed_on": dt.date.fromisoformat(d)}
                         for i, d in DATES.items()))
    crm.insert("deal", *({"id": 100 + i, "due_at": at(t)} for i, t in TIMES.items()))
    found = crm.ids(leaf(field, op, value), EvalContext(now, ZoneInfo(zone)))
    assert {i % 100 for i in found} == expected


def test_times_without_an_offset_are_tenant_local(crm: Crm) -> None:
    crm.insert("deal", {"id": 1, "due_at": at("2025-03-02T10:00:00Z")})
    data = leaf("due_at", "eq", "2025-03-02T18:00:00")
    assert crm.ids(data, EvalContext(NOW, SHANGHAI)) == {1}
    assert crm.ids(data, EvalContext(NOW, ZoneInfo("UTC"))) == set()
    assert crm.ids(leaf("due_at", "gte", "2025-03-02"), EvalContext(NOW, SHANGHAI)) == {1}
    assert crm.ids(leaf("due_at", "lt", "2025-03-02"), EvalContext(NOW, ZoneInfo(
        "America/Los_Angeles"))) == set()


def test_the_clock_comes_from_the_context_only() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EvalContext(dt.datetime(2025, 1, 1), ZoneInfo("UTC"))
    ctx = EvalContext(WEEK_NOW, SHANGHAI)
    assert ctx.today() == dt.date(2025, 3, 3)
    assert ctx.period("this_week") == (dt.date(2025, 3, 3), dt.date(2025, 3, 10))
    assert ctx.period("this_month") == (dt.date(2025, 3, 1), dt.date(2025, 4, 1))
    assert ctx.instants("today") == (at("2025-03-02T16:00:00Z"), at("2025-03-03T16:00:00Z"))
    december = EvalContext(at("2025-12-31T16:00:00Z"), SHANGHAI)
    assert december.period("this_month") == (dt.date(2026, 1, 1), dt.date(2026, 2, 1))
    assert december.period("this_week") == (dt.date(2025, 12, 29), dt.date(2026, 1, 5))
    assert EvalContext.current("Asia/Shanghai").timezone == SHANGHAI


# -- validation errors ------------------------------------------------------------------------

N = leaf("title", "eq", "x")
ERRORS = [
    ("x", "a condition must be a mapping with `all`, `any`, `not` or `field`, not the text "
     "'x'", ()),
    ({"any": [1]}, "a condition must be a mapping with `all`, `any`, `not` or `field`, not "
     "`1`", ("any", 0)),
    ({"not": [N]}, "a condition must be a mapping with `all`, `any`, `not` or `field`, not a "
     "list", ("not",)),
    ({"all": [N], "field": "title"}, "a condition has exactly one of `all`, `any`, `not` or "
     "`field`; this one has `all`, `field`", ()),
    ({"all": [N], "any": [N]}, "a condition has exactly one of `all`, `any`, `not` or "
     "`field`; this one has `all`, `any`", ()),
    ({"all": {"field": "title"}}, "`all` takes a list of conditions, not a mapping", ("all",)),
    ({"all": [N, {**N, "extra": 1}]}, "unknown key `extra` in a condition", ("all", 1, "extra")),
    ({"any": [{**N, "vaule": 1}]}, "unknown key `vaule` in a condition; did you mean `value`?",
     ("any", 0, "vaule")),
    ({"op": "eq", "value": 1}, "a condition needs `field` (or `all`, `any`, `not`)", ()),
    (leaf(3, "eq", 1), "`field` must be a field name or a dotted path such as "  # type: ignore[arg-type]
     "`customer.city`, not `3`", ("field",)),
    (leaf("", "eq", 1), "`field` must be a field name or a dotted path such as "
     "`customer.city`, not the text ''", ("field",)),
    (leaf("titel", "eq", "x"), "`titel` is not a field of crm.deal; did you mean `title`?",
     ("field",)),
    (leaf("account.nmae", "eq", "x"), "`nmae` is not a field of crm.account; did you mean "
     "`name`?", ("field",)),
    (leaf("account.region.nme", "eq", "x"), "`nme` is not a field of crm.region; did you mean "
     "`name`?", ("field",)),
    (leaf("ownr", "eq", 1), "`ownr` is not a field of crm.deal; did you mean `owner`?",
     ("field",)),
    (leaf("deleted_at", "is_empty", True), "`deleted_at` cannot be tested: conditions see "
     "live records only (the platform leaves out deleted ones)", ("field",)),
    (leaf("title.x", "eq", "x"), "`title` of crm.deal is not a reference, so `title.x` cannot "
     "go through it", ("field",)),
    (leaf("owner.name", "eq", "x"), "`owner` is a system column, not a reference, so "
     "`owner.name` cannot go through it", ("field",)),
    (leaf("score", "eq", 1), "`score` of crm.deal is a formula field: it is not stored, so "
     "conditions cannot test it", ("field",)),
    ({"field": "title"}, "the condition on `title` needs `op`", ()),
    (leaf("title", "eqq", "x"), "unknown operator `eqq`; did you mean `eq`?", ("op",)),
    (leaf("title", 3, "x"), "`op` must be an operator name, not `3`", ("op",)),
    (leaf("title", "gt", "x"), "operator `gt` does not apply to `title` (string); use one of "
     "eq, ne, in, not_in, contains, starts_with, is_empty", ("op",)),
    (leaf("won", "in", [True]), "operator `in` does not apply to `won` (boolean); use one of "
     "eq, ne, is_empty", ("op",)),
    (leaf("data", "eq", 1), "operator `eq` does not apply to `data` (json); no operator "
     "applies to json fields", ("op",)),
    (leaf("account.region.code", "contains", "n"), "operator `contains` does not apply to "
     "`account.region.code` (enum); use one of eq, ne, in, not_in, is_empty", ("op",)),
    ({"field": "title", "op": "eq"}, "operator `eq` needs a `value`", ()),
    (leaf("title", "eq", None) | {"value": None}, "`value` is null; to test for no value use "
     "`op: is_empty, value: true`", ("value",)),
    (leaf("due_at", "today", "yes"), "operator `today` takes no value", ("value",)),
    (leaf("stage", "eq", ["new"]), "operator `eq` takes one value, not a list; use `in` for "
     "several", ("value",)),
    (leaf("stage", "ne", ["new"]), "operator `ne` takes one value, not a list; use `not_in` for "
     "several", ("value",)),
    (leaf("stage", "in", "new"), "operator `in` takes a list of values, not the text 'new'",
     ("value",)),
    (leaf("stage", "in", ["new"] * 1001), "operator `in` takes at most 1000 values; got 1001",
     ("value",)),
    (leaf("stage", "in", ["new", "maybe"]), "'maybe' is not one of the options: new, won, lost",
     ("value", 1)),
    (leaf("stage", "in", [["new"]]), "expected one value, not a list", ("value", 0)),
    (leaf("stage", "in", [None]), "null is not a value to compare with; to test for no value "
     "use `op: is_empty, value: true`", ("value", 0)),
    (leaf("probability", "between", [1, 2, 3]), "operator `between` takes two values "
     "[low, high]; got 3", ("value",)),
    (leaf("probability", "between", 5), "operator `between` takes two values [low, high], not "
     "`5`", ("value",)),
    (leaf("probability", "between", [50, 10]), "the low value (50) is above the high value "
     "(10)", ("value",)),
    (leaf("closed_on", "between", ["2025-01-02", "2025-01-01"]), "the low value (2025-01-02) "
     "is above the high value (2025-01-01)", ("value",)),
    (leaf("due_at", "older_than", "3x"), "'3x' is not a duration like 30m, 12h, 3d or 2w",
     ("value",)),
    (leaf("due_at", "older_than", 3), "3 is not a duration like 30m, 12h, 3d or 2w",
     ("value",)),
    (leaf("due_at", "older_than", "0d"), "'0d' is not a duration like 30m, 12h, 3d or 2w",
     ("value",)),
    (leaf("due_at", "newer_than", "6000w"), "'6000w' is longer than 100 years", ("value",)),
    (leaf("email", "is_empty", "yes"), "operator `is_empty` takes true or false, not the text "
     "'yes'", ("value",)),
    (leaf("probability", "eq", "ten"), "expected a whole number, got 'ten'", ("value",)),
    (leaf("probability", "eq", True), "expected a whole number, got true", ("value",)),
    (leaf("probability", "eq", 1.5), "expected a whole number, got 1.5", ("value",)),
    (leaf("probability", "eq", 2**63), "9223372036854775808 is outside the range of whole "
     "numbers (64 bits)", ("value",)),
    (leaf("amount", "eq", "abc"), "expected a number, got 'abc'", ("value",)),
    (leaf("amount", "eq", "NaN"), "expected a finite number, got 'NaN'", ("value",)),
    (leaf("amount", "eq", False), "expected a number, got false", ("value",)),
    (leaf("won", "eq", "true"), "expected true or false, got 'true'", ("value",)),
    (leaf("closed_on", "eq", "2025-02-30"), "'2025-02-30' is not a date like 2025-01-31",
     ("value",)),
    (leaf("closed_on", "eq", 20250101), "expected a date like 2025-01-31, got 20250101",
     ("value",)),
    (leaf("due_at", "eq", "yesterday"), "'yesterday' is not a timestamp like "
     "2025-01-31T09:00:00+08:00", ("value",)),
    (leaf("stage", "eq", "open"), "'open' is not one of the options: new, won, lost",
     ("value",)),
    (leaf("labels", "contains", "warm"), "'warm' is not one of the options: hot, cold",
     ("value",)),
    (leaf("uid", "eq", "nope"), "'nope' is not a UUID", ("value",)),
    (leaf("account", "eq", 0), "expected a record id (a positive whole number), got 0",
     ("value",)),
    (leaf("title", "eq", 5), "expected text, got 5", ("value",)),
    (leaf("title", "contains", "a\x00b"), "text may not contain the NUL character", ("value",)),
    ({"all": [N, {"any": [N, leaf("probability", "gte", "x")]}]},
     "expected a whole number, got 'x'", ("all", 1, "any", 1, "value")),
]


@pytest.mark.parametrize(("data", "message", "path"), ERRORS,
                         ids=[f"{i:02d}" for i in range(len(ERRORS))])
def test_validation_errors(world: World, data: Any, message: str,
                           path: tuple[str | int, ...]) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(data, "crm.deal", world.registry, world.operators)
    assert (caught.value.message, caught.value.path) == (message, path)


def test_nesting_depth_limit(world: World) -> None:
    def nested(levels: int) -> Any:
        data: Any = N
        for _ in range(levels):
            data = {"not": data}
        return data

    parse_condition(nested(19), "crm.deal", world.registry, world.operators)  # 20 levels
    with pytest.raises(ConditionError) as caught:
        parse_condition(nested(20), "crm.deal", world.registry, world.operators)
    assert caught.value.message == "a condition may nest at most 20 levels deep"
    assert caught.value.path == ("not",) * 20


def test_size_limit(world: World) -> None:
    parse_condition({"all": [N] * 199}, "crm.deal", world.registry, world.operators)
    with pytest.raises(ConditionError) as caught:
        parse_condition({"all": [N] * 200}, "crm.deal", world.registry, world.operators)
    assert caught.value.message == ("a condition may have at most 200 parts "
                                    "(all/any/not groups and field tests)")
    assert caught.value.path == ("all", 199)


def test_in_list_limit(world: World) -> None:
    parse_condition(leaf("id", "in", list(range(1, 1001))), "crm.deal", world.registry,
                    world.operators)


def test_unknown_entity(world: World) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(N, "crm.dael", world.registry, world.operators)
    assert caught.value.message == "`crm.dael` is not an entity; did you mean `crm.deal`?"


def test_condition_error_locations() -> None:
    error = ConditionError("bad", ("all", 1, "value"))
    assert error.pointer == "/all/1/value"
    assert str(error) == "bad (at /all/1/value)"
    assert str(ConditionError("bad")) == "bad (at /)"
    assert pickle.loads(pickle.dumps(error)).path == ("all", 1, "value")
    assert isinstance(error, ValueError)


# -- values are coerced once, when parsed -------------------------------------------------------

def test_values_are_coerced_from_json(world: World) -> None:
    def value(data: dict[str, Any]) -> Any:
        node = parse_condition(data, "crm.deal", world.registry, world.operators)
        assert isinstance(node, Predicate)
        return node.value

    from decimal import Decimal
    assert value(leaf("amount", "eq", 1.1)) == Decimal("1.1")
    assert value(leaf("amount", "eq", "  2.50 ")) == Decimal("2.50")
    assert value(leaf("amount", "in", [1, "2"])) == (Decimal(1), Decimal(2))
    assert value(leaf("probability", "eq", 3.0)) == 3
    assert value(leaf("probability", "eq", "-7")) == -7
    assert value(leaf("closed_on", "eq", "2025-01-31")) == dt.date(2025, 1, 31)
    assert value(leaf("due_at", "eq", "2025-01-31T09:00:00Z")) == at("2025-01-31T09:00:00Z")
    assert value(leaf("due_at", "eq", "2025-01-31")) == dt.datetime(2025, 1, 31)
    assert value(leaf("uid", "eq", U1.upper().replace("-", ""))) == U1
    assert value(leaf("due_at", "older_than", "3d")) == Duration(3, "d")
    assert Duration(3, "d").delta == dt.timedelta(days=3)
    assert Duration.parse("2w").delta == dt.timedelta(weeks=2)
    assert value(leaf("due_at", "this_week")) is None
    assert value({"field": "due_at", "op": "today", "value": None}) is None


# -- the AST ------------------------------------------------------------------------------------

def test_nodes_are_frozen_hashable_and_picklable(world: World) -> None:
    data = {"all": [leaf("stage", "in", ["new", "won"]), {"not": leaf("account.name", "eq",
                                                                       "Acme")},
                    {"any": [leaf("due_at", "older_than", "3d"), leaf("due_at", "today")]},
                    leaf("amount", "between", ["1.5", 2]), leaf("due_at", "gte",
                                                                 "2025-01-01T00:00:00+08:00")]}
    node = parse_condition(data, "crm.deal", world.registry, world.operators)
    again = parse_condition(data, "crm.deal", world.registry, world.operators)
    assert node == again and hash(node) == hash(again)
    assert pickle.loads(pickle.dumps(node)) == node
    assert isinstance(node, AllOf) and isinstance(node.children[1], Not)
    assert isinstance(node.children[2], AnyOf)
    with pytest.raises(AttributeError):
        node.children = ()  # type: ignore[misc]
    assert condition_fields(node) == {"stage", "account.name", "due_at", "amount"}
    assert parse_condition(dump_condition(node), "crm.deal", world.registry,
                           world.operators) == node


def test_frozen_definitions_parse_like_plain_json(world: World) -> None:
    data = {"all": [leaf("stage", "in", ["new", "won"]), {"not": leaf("won", "eq", True)}]}
    frozen = freeze(data)  # how a view's `filter` sits in the Registry
    assert parse_condition(frozen, "crm.deal", world.registry, world.operators) == \
        parse_condition(data, "crm.deal", world.registry, world.operators)


def test_evaluate_needs_loaded_references(world: World) -> None:
    node = parse_condition(leaf("account.name", "eq", "Acme"), "crm.deal", world.registry,
                           world.operators)
    assert evaluate(node, {"account": {"name": "Acme"}}, CTX)
    assert not evaluate(node, {"account": None}, CTX)
    assert not evaluate(node, {}, CTX)
    assert not evaluate(node, {"account": {"name": "Acme", "deleted_at": NOW}}, CTX)
    with pytest.raises(TypeError, match="load it as a nested mapping"):
        evaluate(node, {"account": 5}, CTX)


def test_evaluate_accepts_json_records(world: World) -> None:
    def check(data: dict[str, Any], record: dict[str, Any]) -> bool:
        node = parse_condition(data, "crm.deal", world.registry, world.operators)
        return evaluate(node, record, CTX)

    assert check(leaf("due_at", "today"), {"due_at": "2025-03-02T01:00:00+00:00"})
    assert check(leaf("due_at", "today"), {"due_at": dt.datetime(2025, 3, 2, 1)})
    assert check(leaf("closed_on", "eq", "2025-03-02"), {"closed_on": "2025-03-02"})
    assert check(leaf("amount", "gt", 1), {"amount": 1.5})
    assert check(leaf("account", "eq", 3), {"account": {"id": 3, "deleted_at": NOW}})
    assert check(leaf("uid", "eq", U1), {"uid": U1.upper()})


# -- operators are plugins -----------------------------------------------------------------------

def divisible_sql(column: Any, value: Any, ctx: Any) -> Any:
    return column % value == 0


def divisible_python(field_value: Any, value: Any, ctx: Any) -> bool:
    return field_value % value == 0


class DivisiblePlugin:
    @hookimpl
    def register_condition_operators(self) -> list[Operator]:
        return [Operator("divisible_by", frozenset({"integer"}), "scalar", divisible_sql,
                         divisible_python, description="The number divides by the value.")]


class DuplicatePlugin:
    @hookimpl
    def register_condition_operators(self) -> list[Operator]:
        return [Operator("eq", frozenset(TEXT_TYPES), "scalar", divisible_sql,
                         divisible_python)]


def test_operators_come_from_the_plugin_hook(crm: Crm) -> None:
    manager = make_plugin_manager([DivisiblePlugin()], load_entrypoints=False)
    operators = OperatorRegistry.from_plugins(manager)
    assert "divisible_by" in operators and "eq" in operators
    assert "divisible_by" in [o.name for o in operators.for_type("integer")]
    assert "divisible_by" not in [o.name for o in operators.for_type("string")]
    crm.insert("deal", *({"id": i, "probability": i * 5} for i in range(1, 7)), {"id": 7})
    node = parse_condition(leaf("probability", "divisible_by", 10), "crm.deal",
                           crm.world.registry, operators)
    table = crm.table("deal")
    where = to_sql(node, "crm.deal", crm.world.tables, crm.world.registry, CTX)
    assert set(crm.connection.scalars(sa.select(table.c.id).where(where))) == {2, 4, 6}
    records = crm.records("deal")
    assert {i for i, r in records.items() if evaluate(node, r, CTX)} == {2, 4, 6}
    with pytest.raises(ConditionError, match="unknown operator `divisible_by`"):
        crm.parse(leaf("probability", "divisible_by", 10))


def test_duplicate_operator_names_raise() -> None:
    manager = make_plugin_manager([DuplicatePlugin()], load_entrypoints=False)
    with pytest.raises(ValueError, match="condition operator 'eq' is registered twice"):
        OperatorRegistry.from_plugins(manager)
    with pytest.raises(ValueError, match="shape must be one of"):
        Operator("odd", frozenset(), "triple", divisible_sql, divisible_python)


def test_builtin_operators_are_the_documented_ones() -> None:
    from metacrm.metadata.checks import CONDITION_OPERATORS

    assert set(OperatorRegistry.builtin().names()) == CONDITION_OPERATORS
    docs = (Path(__file__).resolve().parent.parent / "docs" / "conditions.md").read_text("utf-8")
    missing = [name for name in CONDITION_OPERATORS if f"### `{name}`" not in docs]
    assert not missing, f"docs/conditions.md has no heading for operator(s) {missing}"


# -- business units see their own fields -----------------------------------------------------------

def test_a_unit_sees_its_own_fields(write_library: WriteLibrary) -> None:
    library = write_library({
        **LIBRARY,
        "tenants/acme/tenant.yaml": """
            tenant: acme
            modules: [crm]
            business_units:
              retail: {label: Retail, overlays: [overlays/retail]}
              education: {label: Education}
        """,
        "tenants/acme/overlays/retail/account.yaml": """
            extend: crm.account
            fields:
              store_code: {type: string}
        """,
    })
    built = compile_world(library)
    data = leaf("account.store_code", "starts_with", "S-")
    node = parse_condition(data, "crm.deal", built.registry, built.operators, unit="retail")
    assert evaluate(node, {"account": {"store_code": "S-01"}}, CTX)
    # the tenant as a whole stores the union of every unit's fields
    parse_condition(data, "crm.deal", built.registry, built.operators)
    with pytest.raises(ConditionError) as caught:
        parse_condition(data, "crm.deal", built.registry, built.operators, unit="education")
    assert caught.value.message.startswith("`store_code` is not a field of crm.account")
    assert caught.value.path == ("field",)
    with pytest.raises(ConditionError, match="is not an entity of business unit `retail`"):
        parse_condition(data, "crm.nope", built.registry, built.operators, unit="retail")
