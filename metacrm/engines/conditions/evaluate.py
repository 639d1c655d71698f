"""The Python backend: does one record meet a condition?

A record is a mapping of field values; a referenced record is a nested mapping
(``record["customer"] == {"city": ...}``) or None. A missing key is no value. A path
through a reference (``customer.city``) has no value when the link is None or the
referenced record is soft-deleted (its ``deleted_at`` is set), exactly as the SQL
backend sees it; the reference field itself (``customer``) is the stored id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .context import EvalContext, OperandContext
from .nodes import AllOf, AnyOf, Node, Not, Predicate
from .values import normalise_record_value, resolve_literal


def evaluate(node: Node, record: Mapping[str, Any], ctx: EvalContext) -> bool:
    """Whether `record` meets the condition, at `ctx`'s clock and timezone."""
    if isinstance(node, AllOf):
        return all(evaluate(c, record, ctx) for c in node.children)
    if isinstance(node, AnyOf):
        return any(evaluate(c, record, ctx) for c in node.children)
    if isinstance(node, Not):
        return not evaluate(node.child, record, ctx)
    return _predicate(node, record, ctx)


def _predicate(node: Predicate, record: Mapping[str, Any], ctx: EvalContext) -> bool:
    value = resolve_literal(node.value, ctx)
    found = normalise_record_value(lookup(record, node.path), node.type)
    if found is None:
        return node.op.when_null(value)
    return bool(node.op.python(found, value, OperandContext(ctx, node.type)))


def lookup(record: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    """The value at a path through nested records; None when a link is missing."""
    current: Any = record
    for depth, part in enumerate(path):
        if current is None:
            return None
        if not isinstance(current, Mapping):
            link = ".".join(path[:depth])
            raise TypeError(f"cannot follow `{'.'.join(path)}`: `{link}` holds {current!r}, not "
                            "the referenced record; load it as a nested mapping")
        if depth and current.get("deleted_at") is not None:
            return None
        current = current.get(part)
    return current
