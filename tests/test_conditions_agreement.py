"""Property: the SQL and Python backends of the condition language select the same records.

Hypothesis draws a clock and tenant timezone, a small database (regions ← accounts ← deals,
with NULLs, JSON null, soft-deleted targets, unicode and LIKE metacharacters, extreme numbers,
dates on day/week/month boundaries) and random trees of all/any/not over every field path
(through two references), operator and type-appropriate value. For each condition the ids
SQL selects must equal the ids whose record (read back from the database, references
nested) `evaluate()` accepts. SQLite always; PostgreSQL when METACRM_TEST_PG_URL is set, in a
throw-away schema per run (safe under pytest-xdist).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conditionworld import BACKENDS, World, compile_world, open_database
from conftest import write_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metacrm.engines.conditions import (
    SYSTEM_FIELD_TYPES,
    EvalContext,
    dump_condition,
    evaluate,
    parse_condition,
    to_sql,
)
from metacrm.engines.conditions.values import TEXT_TYPES, coerce_literal, resolve_literal
from metacrm.metadata.library import Library

EXAMPLES = int(os.environ.get("METACRM_CONDITION_EXAMPLES", "200"))
UTC = dt.UTC

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
          code: {type: enum, options: [north, south, east west]}
          rank: {type: integer}
          since: {type: date}
    """,
    "metadata/modules/crm/entities/account.yaml": """
        entity: account
        fields:
          name: {type: string}
          notes: {type: text}
          region: {type: reference, to: region}
          tier: {type: enum, options: [gold, silver]}
          revenue: {type: money}
          founded: {type: date}
          active: {type: boolean}
          tags: {type: multi_enum, options: [vip, partner, 中文]}
          seen_at: {type: datetime}
          uid: {type: uuid}
    """,
    "metadata/modules/crm/entities/deal.yaml": """
        entity: deal
        fields:
          title: {type: string}
          body: {type: text}
          email: {type: email}
          phone: {type: phone}
          site: {type: url}
          amount: {type: decimal, precision: 18, scale: 2}
          probability: {type: integer}
          stage: {type: enum, options: [new, won, lost]}
          closed_on: {type: date}
          due_at: {type: datetime}
          won: {type: boolean}
          labels: {type: multi_enum, options: [hot, cold]}
          account: {type: reference, to: account}
          uid: {type: uuid}
    """,
    "tenants/acme/tenant.yaml": """
        tenant: acme
        modules: [crm]
    """,
}
ENTITIES = ("region", "account", "deal")  # referenced first


class AgreementWorld(World):
    """The shared World plus the field paths this library's conditions are drawn from."""

    @functools.cached_property
    def paths(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(path, field type, options) of every testable field, from deal, through account
        and on through region."""
        found = []
        for prefix, entity in (("", "deal"), ("account.", "account"),
                               ("account.region.", "region")):
            fields = self.registry.entities[f"crm.{entity}"].stored_fields
            found += [(prefix + f.name, f.type, f.option_values) for f in fields]
            found += [(prefix + name, kind, ()) for name, kind in SYSTEM_FIELD_TYPES.items()]
        return [p for p in found if self.operators.for_type(p[1])]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AgreementWorld:
    root = tmp_path_factory.mktemp("agreement")
    write_files(root, LIBRARY)
    built = compile_world(Library.at(root))
    return AgreementWorld(built.registry, built.tables, built.operators)


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, world: World) -> Iterator[sa.Connection]:
    with open_database(request.param, world) as connection:
        yield connection


# -- values -----------------------------------------------------------------------------------
#
# Strategies are built once per World (building them per example is slow); values that depend
# on the drawn clock are drawn as descriptors (Instant, Day, Stamp, Ordered) and realised
# against the EvalContext afterwards.

SQL_NULL = "<SQL NULL>"  # a JSON column's SQL NULL, apart from JSON null (None)
ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Pacific/Kiritimati", "America/St_Johns",
         "Australia/Lord_Howe", "Europe/London")
NOWS = tuple(dt.datetime.fromisoformat(t) for t in (
    "2025-03-02T17:30:00+00:00",  # Sunday in UTC, Monday in Shanghai
    "2025-03-31T16:30:00+00:00",  # month end in UTC, next month in Shanghai
    "2024-12-31T16:00:00+00:00",  # new year in Shanghai
    "2025-03-09T07:00:00+00:00",  # New York springs forward
    "2025-11-02T05:30:00+00:00",  # New York falls back
    "2024-02-29T23:59:59.999999+00:00",
    "2025-10-04T15:30:00+00:00",  # Lord Howe's half-hour DST change
))
UUIDS = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222",
         "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
ALPHABET = st.sampled_from(list("aA_%\\/é"))  # LIKE's metacharacters, case, non-ASCII
UNITS = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(days=1),
         "w": dt.timedelta(weeks=1)}
PERIODS = ("today", "this_week", "this_month")
INT64 = 2**63


@dataclass(frozen=True)
class Instant:
    """A point in time relative to the drawn clock (or absolute), realised in UTC."""

    base: str  # abs | now | midnight | bound | ago
    arg: Any
    micros: int = 0

    def at(self, ctx: EvalContext) -> dt.datetime:
        if self.base == "abs":
            found = self.arg
        elif self.base == "now":
            found = ctx.now + dt.timedelta(seconds=self.arg)
        elif self.base == "midnight":
            found = ctx.day_start(ctx.today() + dt.timedelta(days=self.arg))
        elif self.base == "bound":
            found = ctx.instants(PERIODS[self.arg // 2])[self.arg % 2]
        else:
            found = ctx.now - self.arg[0] * UNITS[self.arg[1]]
        return (found + dt.timedelta(microseconds=self.micros)).astimezone(UTC)


@dataclass(frozen=True)
class Day:
    """A date relative to the tenant's today (or absolute)."""

    base: str  # abs | today | bound
    arg: Any

    def at(self, ctx: EvalContext) -> dt.date:
        if self.base == "abs":
            return self.arg
        if self.base == "today":
            return ctx.today() + dt.timedelta(days=self.arg)
        first, after = ctx.period(PERIODS[self.arg // 2])
        return first if self.arg % 2 == 0 else after - dt.timedelta(days=1)


@dataclass(frozen=True)
class Stamp:
    """A datetime literal as an author writes it: with an offset, local time or a date."""

    when: Instant | Day
    form: str  # a zone name | local | date

    def text(self, ctx: EvalContext) -> str:
        if isinstance(self.when, Day):
            return self.when.at(ctx).isoformat()
        instant = self.when.at(ctx)
        if self.form == "local":
            return instant.astimezone(ctx.timezone).replace(tzinfo=None).isoformat()
        return instant.astimezone(ZoneInfo(self.form)).isoformat()


@dataclass(frozen=True)
class Ordered:
    """The two values of `between`, put in order once the clock is known."""

    kind: str
    options: tuple[str, ...]
    items: tuple[Any, Any]


def realise(value: Any, ctx: EvalContext) -> Any:
    if isinstance(value, Instant | Day):
        return value.at(ctx)
    if isinstance(value, Stamp):
        return value.text(ctx)
    if isinstance(value, Ordered):
        items = [realise(v, ctx) for v in value.items]
        return sorted(items, key=lambda v: resolve_literal(
            coerce_literal(v, value.kind, value.options), ctx))
    if isinstance(value, dict):
        return {k: realise(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [realise(v, ctx) for v in value]
    return value


def mostly(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`strategy`, or None (NULL) one time in four."""
    return st.tuples(st.integers(0, 3), strategy).map(lambda t: None if t[0] == 0 else t[1])


# Small pools make conditions hit records; wide ones bring unicode and extremes.
texts = st.one_of(st.text(ALPHABET, max_size=4), st.text(
    st.characters(exclude_categories=("Cs", "Cc")), max_size=6))
patterns = st.one_of(st.text(ALPHABET, min_size=1, max_size=2), texts)
integers = st.one_of(st.integers(-2, 2), st.sampled_from([-INT64, INT64 - 1]),
                     st.integers(-INT64, INT64 - 1))
# SQLite compares decimals as doubles: 15 significant digits keep order and equality exact
decimals = st.one_of(
    st.sampled_from([Decimal(v) for v in ("-1.5", "0", "0.5", "1", "2.25", "0.01")]),
    st.decimals(min_value=Decimal("-9999999999999.99"), max_value=Decimal("9999999999999.99"),
                places=2))
literal_decimals = st.one_of(decimals, st.decimals(
    min_value=Decimal("-999999999999.999"), max_value=Decimal("999999999999.999"), places=3))
durations = st.tuples(st.integers(1, 3), st.sampled_from(sorted(UNITS)))
micros = st.sampled_from([0, 1, -1])
instants = st.one_of(
    st.builds(Instant, st.just("midnight"), st.integers(-8, 8), micros),
    st.builds(Instant, st.just("bound"), st.integers(0, 5), micros),
    st.builds(Instant, st.just("ago"), durations, micros),
    st.integers(-3 * 86400, 3 * 86400).map(lambda s: Instant("now", s)),
    st.datetimes(dt.datetime(1900, 1, 2), dt.datetime(2100, 12, 30),
                 timezones=st.just(UTC)).map(lambda t: Instant("abs", t)))
days = st.one_of(
    st.integers(-10, 10).map(lambda k: Day("today", k)),
    st.integers(0, 5).map(lambda k: Day("bound", k)),
    st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)).map(lambda d: Day("abs", d)))
stamps = st.one_of(
    st.builds(Stamp, instants, st.sampled_from(["UTC", "Asia/Kolkata", "America/Denver"])),
    st.builds(Stamp, instants, st.just("local")),
    st.builds(Stamp, days, st.just("date")))
uuids = st.one_of(st.sampled_from(UUIDS), st.uuids().map(str))
contexts = st.builds(
    lambda now, zone: EvalContext(now.astimezone(UTC), ZoneInfo(zone)),
    st.one_of(st.sampled_from(NOWS), st.datetimes(
        dt.datetime(2000, 1, 1), dt.datetime(2040, 12, 31), timezones=st.just(UTC))),
    st.sampled_from(ZONES))


def stored_values(kind: str, options: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Values a record may hold in a field of `kind` (None for NULL)."""
    if kind == "multi_enum":
        return st.one_of(st.just(SQL_NULL), st.none(), st.lists(
            st.sampled_from(options), unique=True, max_size=len(options)))
    if kind == "enum":
        return mostly(st.sampled_from(options))
    if kind in TEXT_TYPES:
        return mostly(texts)
    return mostly({"integer": integers, "decimal": decimals, "money": decimals,
                   "boolean": st.booleans(), "date": days, "datetime": instants,
                   "uuid": uuids}[kind])


def literals(kind: str, options: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Condition values as a YAML/JSON author writes them."""
    if kind in TEXT_TYPES:
        return patterns
    if kind in ("enum", "multi_enum"):
        return st.sampled_from(options)
    return {
        "integer": st.one_of(integers, st.integers(-2, 2).map(str)),
        "decimal": st.one_of(literal_decimals.map(str), st.integers(-2, 2),
                             st.sampled_from([0.5, -1.5, 2.25])),
        "boolean": st.booleans(),
        "date": days.map(lambda d: Stamp(d, "date")),
        "datetime": stamps,
        "uuid": st.one_of(uuids, st.sampled_from(UUIDS).map(str.upper)),
        "reference": st.integers(1, 5),
    }[kind if kind != "money" else "decimal"]


def leaves(world: World) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """Per operator, field tests with it: a path it applies to (deal's own fields three times
    as likely as paths through references) and a value of the operator's shape and the
    field's type."""
    by_operator: dict[str, list[st.SearchStrategy[dict[str, Any]]]] = {}
    for path, kind, options in world.paths:
        values = literals(kind, options)
        for operator in world.operators.for_type(kind):
            base = {"field": path, "op": operator.name}
            value: st.SearchStrategy[Any] | None = {
                "scalar": values, "list": st.lists(values, max_size=4),
                "pair": st.lists(values, min_size=2, max_size=2).map(
                    lambda pair, k=kind, o=options: Ordered(k, o, tuple(pair))),
                "duration": durations.map(lambda d: f"{d[0]}{d[1]}"),
                "bool": st.booleans(), "none": None}[operator.shape]
            strategy = st.just(base) if value is None else value.map(
                lambda v, b=base: {**b, "value": v})
            by_operator.setdefault(operator.name, []).extend(
                [strategy] * (1 if "." in path else 3))
    return {name: st.sampled_from(found).flatmap(lambda strategy: strategy)
            for name, found in sorted(by_operator.items())}


def rows(world: World, entity: str) -> st.SearchStrategy[dict[str, Any]]:
    """One record of `entity`; a reference holds a row number, resolved when inserted."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in world.registry.entities[f"crm.{entity}"].stored_fields:
        fields[field.name] = (mostly(st.integers(1, 4)) if field.type == "reference"
                              else stored_values(field.type, field.option_values))
    fields.update(
        created_at=instants, updated_at=instants, row_version=st.integers(1, 3),
        owner=mostly(st.integers(1, 3)), created_by=mostly(st.integers(1, 3)),
        business_unit=mostly(st.sampled_from(["retail", "", "é"])),
        deleted_at=st.tuples(st.integers(0, 3), instants).map(
            lambda t: t[1] if t[0] == 0 else None))
    return st.fixed_dictionaries(fields)


@functools.cache
def scenarios(world: World) -> st.SearchStrategy[Any]:
    """(clock, {entity: rows}, conditions: one field test per operator, then all/any/not
    trees), still holding clock-relative descriptors."""
    by_operator = leaves(world)
    conditions = st.recursive(st.one_of(*by_operator.values()), lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: {"all": items}),
        st.lists(inner, max_size=3).map(lambda items: {"any": items}),
        inner.map(lambda item: {"not": item})), max_leaves=5)
    return st.tuples(
        contexts,
        st.fixed_dictionaries({
            "region": st.lists(rows(world, "region"), min_size=1, max_size=3),
            "account": st.lists(rows(world, "account"), min_size=1, max_size=4),
            "deal": st.lists(rows(world, "deal"), min_size=3, max_size=8)}),
        st.tuples(st.tuples(*by_operator.values()),
                  st.lists(conditions, min_size=1, max_size=3)).map(lambda t: [*t[0], *t[1]]))


# -- the property -------------------------------------------------------------------------------

def load(connection: sa.Connection, world: World, entity: str) -> dict[int, dict[str, Any]]:
    """Every row read back, references nested (soft-deleted targets included)."""
    key = f"crm.{entity}"
    table = world.tables.by_entity[key]
    found = {r.id: dict(r._mapping) for r in connection.execute(sa.select(table))}
    for field in world.registry.entities[key].fields:
        if field.type == "reference" and field.target:
            targets = load(connection, world, field.target.split(".")[1])
            for row in found.values():
                if row[field.name] is not None:
                    row[field.name] = targets[row[field.name]]
    return found


def insert(connection: sa.Connection, world: World, entity: str,
           data: dict[str, list[dict[str, Any]]]) -> None:
    """Insert `entity`'s rows (ids 1..n) in one statement; SQL NULLs of JSON columns after."""
    if not data[entity]:
        return
    table = world.tables.by_entity[f"crm.{entity}"]
    fields = world.registry.entities[f"crm.{entity}"]
    rows, sql_nulls = [], []
    for number, row in enumerate(data[entity], 1):
        values: dict[str, Any] = {"id": number}
        for name, value in row.items():
            field = fields.get_field(name)
            if field is not None and field.type == "reference":
                count = len(data[(field.target or "").split(".")[1]])
                value = value if value is not None and value <= count else None
            if value == SQL_NULL:
                sql_nulls.append((name, number))
                value = None
            values[name] = value
        rows.append(values)
    connection.execute(table.insert(), rows)
    for name, number in sql_nulls:
        connection.execute(table.update().where(table.c.id == number).values({name: sa.null()}))


def check(connection: sa.Connection, world: World, scenario: Any) -> None:
    ctx, data, found = scenario
    data, found = realise(data, ctx), realise(found, ctx)
    transaction = connection.begin()
    try:
        for entity in ENTITIES:
            insert(connection, world, entity, data)
        records = load(connection, world, "deal")
        table = world.tables.by_entity["crm.deal"]
        for condition in found:
            node = parse_condition(condition, "crm.deal", world.registry, world.operators)
            where = to_sql(node, "crm.deal", world.tables, world.registry, ctx)
            by_sql = set(connection.scalars(sa.select(table.c.id).where(where)))
            by_python = {i for i, record in records.items() if evaluate(node, record, ctx)}
            differ = by_sql ^ by_python
            assert by_sql == by_python, (
                f"condition {condition}\nSQL {sorted(by_sql)} != Python {sorted(by_python)}\n"
                + "\n".join(f"record {i}: {records[i]}" for i in sorted(differ)))
            assert parse_condition(dump_condition(node), "crm.deal", world.registry,
                                   world.operators) == node
    finally:
        transaction.rollback()


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_sql_and_python_select_the_same_records(database: sa.Connection, world: World,
                                                data: st.DataObject) -> None:
    check(database, world, data.draw(scenarios(world)))


def test_every_path_operator_and_type_is_drawn(world: World) -> None:
    kinds = {kind for _, kind, _ in world.paths}
    assert {"string", "text", "email", "phone", "url", "integer", "decimal", "money",
            "boolean", "date", "datetime", "enum", "multi_enum", "uuid", "reference"} <= kinds
    assert {p for p, _, _ in world.paths} >= {"title", "account.tags", "account.region.since",
                                              "account.region.created_at", "owner"}
    used = {o.name for _, kind, _ in world.paths for o in world.operators.for_type(kind)}
    assert used == set(world.operators.names())
