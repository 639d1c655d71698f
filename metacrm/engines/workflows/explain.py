"""Guards in words: which part of a `when` condition fails for one record, and the
referenced records a condition's paths need (a path like `customer.tier` reads them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...platform.records import NotFound
from ..conditions import AllOf, AnyOf, EvalContext, Node, Not, Predicate, evaluate
from ..conditions.evaluate import lookup
from ..conditions.nodes import condition_fields, dump_condition


def describe(node: Node) -> str:
    """A short text of a condition (`score gte 50`, else its JSON)."""
    if isinstance(node, Predicate):
        data = dump_condition(node)
        if "value" not in data:
            return f"{node.field} {node.op.name}"
        return f"{node.field} {node.op.name} {json.dumps(data['value'], ensure_ascii=False)}"
    return json.dumps(dump_condition(node), ensure_ascii=False)


def failing_conditions(node: Node, record: Mapping[str, Any], ctx: EvalContext) -> list[str]:
    """The parts of `node` that do not hold for `record` (empty when it holds): the failing
    children of an `all`, the whole of an `any` or `not`, each with the values it saw."""
    if evaluate(node, record, ctx):
        return []
    if isinstance(node, AllOf):
        return [text for child in node.children
                for text in failing_conditions(child, record, ctx)]
    if isinstance(node, AnyOf):
        return ["none of: " + " | ".join(describe(c) for c in node.children)]
    if isinstance(node, Not):
        return [f"not ({describe(node.child)})"]
    assert isinstance(node, Predicate)
    value = lookup(record, node.path)
    seen = "empty" if value is None else json.dumps(value, ensure_ascii=False, default=str)
    return [f"{describe(node)} ({node.field} is {seen})"]


def nest_references(reader: Any, entity: str, record: Mapping[str, Any],
                    node: Node) -> dict[str, Any]:
    """`record` with each reference a path of `node` goes through replaced by the
    referenced record (read with `reader`, every field), as the Python backend expects."""
    paths = [tuple(p.split(".")) for p in condition_fields(node) if "." in p]
    return _nest(reader, entity, record, paths)


def _nest(reader: Any, entity: str, record: Mapping[str, Any],
          paths: list[tuple[str, ...]]) -> dict[str, Any]:
    out = dict(record)
    by_link: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        by_link.setdefault(path[0], []).append(path[1:])
    for link, rests in by_link.items():
        field = reader.registry.entities[entity].get_field(link)
        value = out.get(link)
        if field is None or field.target is None or value is None or isinstance(value, Mapping):
            continue
        try:
            target = reader.get(field.target, int(value))
        except (NotFound, TypeError, ValueError):
            out[link] = None
            continue
        out[link] = _nest(reader, field.target, target, [r for r in rests if len(r) > 1])
    return out
