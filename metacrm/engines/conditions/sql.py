"""The SQL backend: a condition → one boolean SQLAlchemy expression over an entity's table.

The expression is two-valued: every field test is wrapped so that a NULL column gives the
operator's ``null`` result, so SQL's UNKNOWN never reaches `not`, `all` or `any`. Paths
through references become ``ref IN (SELECT id FROM target WHERE ...)`` subqueries over
live (not soft-deleted) targets: no joins, so no row is repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from ...metadata.ir import Entity, Registry
from .context import EvalContext, OperandContext
from .nodes import AllOf, AnyOf, Node, Not, Predicate
from .values import resolve_literal

WHOLE_NUMBERS = frozenset({"integer", "reference", "user"})


Restrict = Callable[[str, Any], "ColumnElement[bool] | None"]


def to_sql(node: Node, entity_key: str, tables: Mapping[str, sa.Table] | Any,
           registry: Registry, ctx: EvalContext, *,
           restrict: Restrict | None = None) -> ColumnElement[bool]:
    """The condition as a WHERE clause over the table of `entity_key`.

    `tables` maps entity keys to tables (``TenantTables.by_entity``; a TenantTables is
    accepted too). Relative dates are bound from `ctx`, never from the database clock.
    `restrict(entity_key, table)`, when given, limits the targets a path through a
    reference may reach (a permission scope): a target outside it counts as missing.
    """
    by_entity = getattr(tables, "by_entity", tables)
    return _Compiler(by_entity, registry, ctx, restrict).node(
        node, registry.entities[entity_key], by_entity[entity_key])


class _Compiler:
    def __init__(self, tables: Mapping[str, sa.Table], registry: Registry,
                 ctx: EvalContext, restrict: Restrict | None = None) -> None:
        self.tables = tables
        self.registry = registry
        self.ctx = ctx
        self.restrict = restrict

    def node(self, node: Node, entity: Entity, table: Any) -> ColumnElement[bool]:
        if isinstance(node, AllOf):
            if not node.children:
                return sa.true()
            return sa.and_(*(self.node(c, entity, table) for c in node.children))
        if isinstance(node, AnyOf):
            if not node.children:
                return sa.false()
            return sa.or_(*(self.node(c, entity, table) for c in node.children))
        if isinstance(node, Not):
            return sa.not_(self.node(node.child, entity, table))
        return self.predicate(node, entity, table)

    def predicate(self, node: Predicate, entity: Entity, table: Any) -> ColumnElement[bool]:
        value = resolve_literal(node.value, self.ctx)
        on_null = node.op.when_null(value)
        octx = OperandContext(self.ctx, node.type)

        def test(column: ColumnElement[Any]) -> ColumnElement[bool]:
            expression = node.op.sql(_widened(column, node.type), value, octx)
            if on_null:
                return sa.or_(column.is_(None), expression)
            return sa.and_(column.is_not(None), expression)

        return self.path(node.path, entity, table, test, on_null)

    def path(self, parts: tuple[str, ...], entity: Entity, table: Any, test: Any,
             on_null: bool) -> ColumnElement[bool]:
        column = table.c[parts[0]]
        if len(parts) == 1:
            return test(column)
        target = self.registry.entities[entity.field(parts[0]).target or ""]
        alias = self.tables[target.key].alias()
        inner = self.path(parts[1:], target, alias, test, on_null)
        live = alias.c.deleted_at.is_(None)
        if self.restrict is not None:
            scoped = self.restrict(target.key, alias)
            if scoped is not None:
                live = sa.and_(live, scoped)
        if on_null:  # holds unless a live target exists on which the test fails
            failing = sa.select(alias.c.id).where(live, sa.not_(inner))
            return sa.or_(column.is_(None), column.not_in(failing))
        passing = sa.select(alias.c.id).where(live, inner)
        return sa.and_(column.is_not(None), column.in_(passing))


def _widened(column: ColumnElement[Any], field_type: str) -> ColumnElement[Any]:
    """Whole numbers bind as BIGINT: PostgreSQL casts a literal to the column's type, so a
    64-bit literal against a 32-bit column (row_version) would fail instead of comparing."""
    if field_type in WHOLE_NUMBERS and not isinstance(column.type, sa.BigInteger):
        return sa.type_coerce(column, sa.BigInteger())
    return column
