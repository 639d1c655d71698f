"""Condition operators: a registry that plugins extend through ``register_condition_operators``.

An operator is written twice, once for each backend, and the two must agree:

- ``sql(column, value, ctx)`` returns a boolean SQL expression. It is only asked about
  rows where the column has a value: the engine wraps it so a NULL column gives the
  operator's ``null`` result, never SQL's UNKNOWN. Given a non-NULL column it must not
  yield NULL itself.
- ``python(field_value, value, ctx)`` returns a bool; it is never called with None.

``value`` is the literal as parsed (see ``shape``), with datetimes made aware (UTC);
``ctx`` is an :class:`OperandContext` (the clock, the tenant's timezone, the field type).
Built-in operators use module-level functions so parsed conditions stay picklable.
"""

from __future__ import annotations

import datetime as dt
import operator as op
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from ...hookspecs import hookimpl
from .context import Duration, OperandContext
from .values import DATE_TYPES, NUMBER_TYPES, TEXT_TYPES

SHAPES = ("none", "scalar", "list", "pair", "duration", "bool")
"""Value shapes: none (no `value`), scalar (one value of the field's type), list (of them),
pair (`[low, high]`), duration (`3d`), bool (`true` / `false`)."""

SqlBuilder = Callable[[ColumnElement[Any], Any, OperandContext], ColumnElement[bool]]
PythonTest = Callable[[Any, Any, OperandContext], bool]


@dataclass(frozen=True, slots=True)
class Operator:
    """One condition operator: where it applies, what value it takes, its two backends."""

    name: str
    types: frozenset[str]
    shape: str
    sql: SqlBuilder
    python: PythonTest
    null: bool | Callable[[Any], bool] = False
    """The result on a field with no value (NULL, or a missing referenced record): a bool,
    or a function of the parsed value."""
    coerce: Callable[[Any, str, tuple[str, ...]], Any] | None = None
    """Optional: turns one JSON value into the operator's value (value, field type,
    enum options), raising TypeError/ValueError; default: the field type's coercion."""
    description: str = ""
    example: str = ""

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"operator {self.name!r}: shape must be one of "
                             f"{', '.join(SHAPES)}, not {self.shape!r}")

    def when_null(self, value: Any) -> bool:
        """What the operator gives on a field that has no value."""
        return bool(self.null(value) if callable(self.null) else self.null)

    def applies_to(self, field_type: str) -> bool:
        return field_type in self.types or "*" in self.types

    def __repr__(self) -> str:
        return f"Operator({self.name!r})"


class OperatorRegistry:
    """The operators known to one plugin manager, by name."""

    def __init__(self, operators: Iterable[Operator]) -> None:
        self._operators: dict[str, Operator] = {}
        for found in operators:
            if found.name in self._operators:
                raise ValueError(f"condition operator {found.name!r} is registered twice")
            self._operators[found.name] = found

    @classmethod
    def from_plugins(cls, plugin_manager: Any) -> OperatorRegistry:
        return cls(o for batch in plugin_manager.hook.register_condition_operators()
                   for o in batch)

    @classmethod
    def builtin(cls) -> OperatorRegistry:
        """Only the built-in operators (no plugins): for tools and tests."""
        return cls(builtin_operators())

    def __getitem__(self, name: str) -> Operator:
        return self._operators[name]

    def __contains__(self, name: object) -> bool:
        return name in self._operators

    def get(self, name: str) -> Operator | None:
        return self._operators.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._operators)

    def for_type(self, field_type: str) -> tuple[Operator, ...]:
        """The operators that apply to fields of `field_type`."""
        return tuple(o for o in self._operators.values() if o.applies_to(field_type))

    def __iter__(self) -> Iterator[Operator]:
        return iter(self._operators.values())

    def __len__(self) -> int:
        return len(self._operators)


# -- SQL helpers ----------------------------------------------------------------------------

class ByDialect(ColumnElement[bool]):
    """A boolean expression written once for SQLite and once for every other database."""

    __visit_name__ = "metacrm_by_dialect"
    inherit_cache = True
    type = sa.Boolean()
    _traverse_internals = [("default", InternalTraversal.dp_clauseelement),
                           ("sqlite", InternalTraversal.dp_clauseelement)]

    def __init__(self, default: ColumnElement[Any], sqlite: ColumnElement[Any]) -> None:
        self.default = default
        self.sqlite = sqlite

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.default._from_objects)


@compiles(ByDialect)
def _compile_by_dialect(element: ByDialect, compiler: Any, **kw: Any) -> str:
    chosen = element.sqlite if compiler.dialect.name == "sqlite" else element.default
    return "(" + compiler.process(chosen, **kw) + ")"


def text_contains(column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    """Case-sensitive substring test; `%`, `_` and `\\` in `text` are literal.

    PostgreSQL: ``LIKE '%…%' ESCAPE '/'`` (autoescaped; case-sensitive, can use a trigram
    index). SQLite: ``instr()``, because SQLite's LIKE ignores ASCII case unless the
    deprecated, connection-wide ``PRAGMA case_sensitive_like`` is set.
    """
    return ByDialect(column.contains(text, autoescape=True),
                     sa.func.instr(column, sa.literal(text, sa.Text())) > 0)


def text_starts_with(column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    """Case-sensitive prefix test (LIKE 'x%' on PostgreSQL, instr() = 1 on SQLite)."""
    return ByDialect(column.startswith(text, autoescape=True),
                     sa.func.instr(column, sa.literal(text, sa.Text())) == 1)


def json_array_holds(column: ColumnElement[Any], item: str) -> ColumnElement[bool]:
    """A JSON array column holds the string `item`."""
    each = sa.func.json_each(column).table_valued("value")
    sqlite = sa.select(sa.literal(1)).select_from(each).where(each.c.value == item).exists()
    default = sa.type_coerce(column, postgresql.JSONB).contains(
        sa.type_coerce([item], postgresql.JSONB))
    return ByDialect(default, sqlite)


def json_array_is_empty(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """A JSON column holds no array items (`[]`, JSON null or any non-array)."""
    sqlite = sa.func.coalesce(sa.func.json_array_length(column), 0) == 0
    coerced = sa.type_coerce(column, postgresql.JSONB)
    default = sa.case((sa.func.jsonb_typeof(coerced) == "array",
                       sa.func.jsonb_array_length(coerced)), else_=0) == 0
    return ByDialect(default, sqlite)


# -- built-in operators ---------------------------------------------------------------------

EQUATABLE = TEXT_TYPES | NUMBER_TYPES | DATE_TYPES | {"enum", "boolean", "reference", "user",
                                                        "uuid"}
LISTABLE = TEXT_TYPES | NUMBER_TYPES | DATE_TYPES | {"enum", "reference", "user", "uuid"}
ORDERED = NUMBER_TYPES | DATE_TYPES
EMPTIABLE = EQUATABLE | {"multi_enum"}

COMPARISONS = {"eq": (op.eq, "equals"), "ne": (op.ne, "does not equal"),
               "lt": (op.lt, "is less than"), "lte": (op.le, "is at most"),
               "gt": (op.gt, "is greater than"), "gte": (op.ge, "is at least")}


def _compare_sql(name: str) -> SqlBuilder:
    compare = COMPARISONS[name][0]

    def sql(column: ColumnElement[Any], value: Any, ctx: OperandContext) -> ColumnElement[bool]:
        return compare(column, value)
    sql.__name__ = sql.__qualname__ = f"{name}_sql"
    return sql


def _compare_python(name: str) -> PythonTest:
    compare = COMPARISONS[name][0]

    def python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
        return bool(compare(field_value, value))
    python.__name__ = python.__qualname__ = f"{name}_python"
    return python


# Module-level names so the closures pickle by reference (see builtin_operators).
eq_sql, ne_sql, lt_sql = _compare_sql("eq"), _compare_sql("ne"), _compare_sql("lt")
lte_sql, gt_sql, gte_sql = _compare_sql("lte"), _compare_sql("gt"), _compare_sql("gte")
eq_python, ne_python = _compare_python("eq"), _compare_python("ne")
lt_python, lte_python = _compare_python("lt"), _compare_python("lte")
gt_python, gte_python = _compare_python("gt"), _compare_python("gte")


def in_sql(column: ColumnElement[Any], value: Any, ctx: OperandContext) -> ColumnElement[bool]:
    return column.in_(list(value)) if value else sa.false()


def in_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    return field_value in value


def not_in_sql(column: ColumnElement[Any], value: Any,
               ctx: OperandContext) -> ColumnElement[bool]:
    return column.not_in(list(value)) if value else sa.true()


def not_in_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    return field_value not in value


def contains_sql(column: ColumnElement[Any], value: Any,
                 ctx: OperandContext) -> ColumnElement[bool]:
    if ctx.type == "multi_enum":
        return json_array_holds(column, value)
    return text_contains(column, value)


def contains_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    if ctx.type == "multi_enum":
        return isinstance(field_value, list | tuple) and value in field_value
    return value in field_value


def starts_with_sql(column: ColumnElement[Any], value: Any,
                    ctx: OperandContext) -> ColumnElement[bool]:
    return text_starts_with(column, value)


def starts_with_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    return field_value.startswith(value)


def _blank_sql(column: ColumnElement[Any], field_type: str) -> ColumnElement[bool]:
    if field_type in TEXT_TYPES:
        return column == ""
    if field_type == "multi_enum":
        return json_array_is_empty(column)
    return sa.false()


def is_empty_sql(column: ColumnElement[Any], value: Any,
                 ctx: OperandContext) -> ColumnElement[bool]:
    blank = _blank_sql(column, ctx.type)
    return blank if value else sa.not_(blank)


def is_empty_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    if ctx.type in TEXT_TYPES:
        blank = field_value == ""
    elif ctx.type == "multi_enum":
        blank = not isinstance(field_value, list | tuple) or len(field_value) == 0
    else:
        blank = False
    return blank == value


def is_empty_null(value: Any) -> bool:
    return bool(value)


def between_sql(column: ColumnElement[Any], value: Any,
                ctx: OperandContext) -> ColumnElement[bool]:
    return column.between(value[0], value[1])


def between_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    return bool(value[0] <= field_value <= value[1])


def _duration_bound(value: Duration, ctx: OperandContext) -> dt.date | dt.datetime:
    """Where "older than `value`" ends: an instant, or for a date field the first date
    whose local midnight is not older."""
    cutoff = ctx.eval.cutoff(value)
    return ctx.eval.first_day_from(cutoff) if ctx.type == "date" else cutoff


def older_than_sql(column: ColumnElement[Any], value: Any,
                   ctx: OperandContext) -> ColumnElement[bool]:
    return column < _duration_bound(value, ctx)


def older_than_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    return bool(field_value < _duration_bound(value, ctx))


def newer_than_sql(column: ColumnElement[Any], value: Any,
                   ctx: OperandContext) -> ColumnElement[bool]:
    return column >= _duration_bound(value, ctx)


def newer_than_python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
    return bool(field_value >= _duration_bound(value, ctx))


def _period_bounds(name: str, ctx: OperandContext) -> tuple[Any, Any]:
    return ctx.eval.period(name) if ctx.type == "date" else ctx.eval.instants(name)


def _period_sql(name: str) -> SqlBuilder:
    def sql(column: ColumnElement[Any], value: Any, ctx: OperandContext) -> ColumnElement[bool]:
        start, end = _period_bounds(name, ctx)
        return sa.and_(column >= start, column < end)
    sql.__name__ = sql.__qualname__ = f"{name}_sql"
    return sql


def _period_python(name: str) -> PythonTest:
    def python(field_value: Any, value: Any, ctx: OperandContext) -> bool:
        start, end = _period_bounds(name, ctx)
        return bool(start <= field_value < end)
    python.__name__ = python.__qualname__ = f"{name}_python"
    return python


today_sql, today_python = _period_sql("today"), _period_python("today")
this_week_sql, this_week_python = _period_sql("this_week"), _period_python("this_week")
this_month_sql, this_month_python = _period_sql("this_month"), _period_python("this_month")


def builtin_operators() -> list[Operator]:
    """The operators every installation has."""
    fns = globals()
    found = []
    for name, (_, meaning) in COMPARISONS.items():
        found.append(Operator(
            name, frozenset(EQUATABLE if name in ("eq", "ne") else ORDERED), "scalar",
            fns[f"{name}_sql"], fns[f"{name}_python"], null=name == "ne",
            description=f"The field {meaning} the value.",
            example=f"{{field: score, op: {name}, value: 60}}"))
    return [
        *found,
        Operator("in", frozenset(LISTABLE), "list", in_sql, in_python,
                 description="The field equals one of the values.",
                 example="{field: source, op: in, value: [web, event]}"),
        Operator("not_in", frozenset(LISTABLE), "list", not_in_sql, not_in_python, null=True,
                 description="The field equals none of the values.",
                 example="{field: source, op: not_in, value: [cold_call]}"),
        Operator("contains", frozenset(TEXT_TYPES | {"multi_enum"}), "scalar", contains_sql,
                 contains_python,
                 description="Text contains the value (case-sensitive); a multi_enum holds it.",
                 example="{field: company, op: contains, value: Ltd}"),
        Operator("starts_with", frozenset(TEXT_TYPES), "scalar", starts_with_sql,
                 starts_with_python, description="Text starts with the value (case-sensitive).",
                 example="{field: phone, op: starts_with, value: '+886'}"),
        Operator("is_empty", frozenset(EMPTIABLE), "bool", is_empty_sql, is_empty_python,
                 null=is_empty_null,
                 description="true: the field has no value (or empty text / no options); "
                             "false: it has one.",
                 example="{field: email, op: is_empty, value: true}"),
        Operator("between", frozenset(ORDERED), "pair", between_sql, between_python,
                 description="low <= field <= high (both included).",
                 example="{field: score, op: between, value: [40, 60]}"),
        Operator("older_than", frozenset(DATE_TYPES), "duration", older_than_sql,
                 older_than_python, description="The date or time is more than the duration "
                 "before now.", example="{field: created_at, op: older_than, value: 3d}"),
        Operator("newer_than", frozenset(DATE_TYPES), "duration", newer_than_sql,
                 newer_than_python, description="The date or time is at most the duration "
                 "before now (or in the future).",
                 example="{field: created_at, op: newer_than, value: 12h}"),
        Operator("today", frozenset(DATE_TYPES), "none", today_sql, today_python,
                 description="The date or time falls on today, in the tenant's timezone.",
                 example="{field: due_on, op: today}"),
        Operator("this_week", frozenset(DATE_TYPES), "none", this_week_sql, this_week_python,
                 description="The date or time falls in this ISO week (Monday to Sunday).",
                 example="{field: due_on, op: this_week}"),
        Operator("this_month", frozenset(DATE_TYPES), "none", this_month_sql,
                 this_month_python, description="The date or time falls in this calendar month.",
                 example="{field: created_at, op: this_month}"),
    ]


@hookimpl
def register_condition_operators() -> list[Operator]:
    return builtin_operators()
