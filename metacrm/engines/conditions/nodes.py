"""The condition AST: frozen, hashable, picklable nodes shared by both backends."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from .context import Duration

if TYPE_CHECKING:
    from .operators import Operator


@dataclass(frozen=True, slots=True)
class AllOf:
    """`all`: every child holds (true when there are none)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """`any`: at least one child holds (false when there are none)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """`not`: the child does not hold."""

    child: Node


@dataclass(frozen=True, slots=True)
class Predicate:
    """`{field, op, value}`: one test on the field at a dotted `field` path.

    `type` is the field type at the end of the path; `value` is already coerced to it
    (tuples for lists and pairs, :class:`Duration` for durations, None for no value).
    """

    field: str
    op: Operator
    value: Any
    type: str

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.field.split("."))


Node: TypeAlias = AllOf | AnyOf | Not | Predicate


def walk(node: Node):
    """Every node below `node` (itself included), depth first."""
    yield node
    if isinstance(node, AllOf | AnyOf):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)


def condition_fields(node: Node) -> frozenset[str]:
    """The field paths a condition reads (`status`, `customer.city`, ...)."""
    return frozenset(n.field for n in walk(node) if isinstance(n, Predicate))


def dump_condition(node: Node) -> dict[str, Any]:
    """The plain JSON form of a parsed condition; parsing it again gives an equal node."""
    if isinstance(node, AllOf):
        return {"all": [dump_condition(c) for c in node.children]}
    if isinstance(node, AnyOf):
        return {"any": [dump_condition(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": dump_condition(node.child)}
    data: dict[str, Any] = {"field": node.field, "op": node.op.name}
    if node.op.shape != "none":
        data["value"] = _dump_value(node.value)
    return data


def _dump_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_dump_value(v) for v in value]
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Duration):
        return str(value)
    return value
