"""parse_condition: a JSON/YAML condition document → a checked, typed AST.

Everything a backend relies on is checked here, once: the shape of the document, that
every field path exists and is stored, that the operator exists and applies to the field's
type, that the value has the operator's shape and the field's type, and the size limits.
The first problem raises :class:`ConditionError` with its location in the document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...metadata.diagnostics import did_you_mean
from ...metadata.ir import Entity, Field, Registry
from .context import Duration
from .errors import ConditionError, ConditionPath
from .nodes import AllOf, AnyOf, Node, Not, Predicate
from .operators import Operator, OperatorRegistry
from .values import SYSTEM_FIELD_TYPES, coerce_literal

MAX_DEPTH = 20
MAX_NODES = 200
MAX_LIST = 1000
GROUP_KEYS = ("all", "any", "not")
LEAF_KEYS = ("field", "op", "value")


def parse_condition(data: Any, entity: Entity | str, registry: Registry,
                    operators: OperatorRegistry, *, unit: str | None = None,
                    visible: Callable[[str], Entity | None] | None = None) -> Node:
    """Check condition `data` against `entity` and return its AST.

    `entity` is an Entity or its key (`module.entity`); with `unit`, fields and the
    targets of references are those the business unit sees. `visible`, when given,
    returns an entity as the caller may see it (None: not at all), so that a path
    through a reference cannot test a field the caller's roles hide.
    """
    if isinstance(entity, str):
        known = registry.entities if unit is None else registry.scope(unit).entities
        if entity not in known:
            raise ConditionError(f"`{entity}` is not an entity"
                                 + (f" of business unit `{unit}`" if unit else "")
                                 + _hint(entity, known), ())
        entity = known[entity]
    return _Parser(registry, operators, unit, visible).node(data, entity, (), 1)


class _Parser:
    def __init__(self, registry: Registry, operators: OperatorRegistry,
                 unit: str | None, visible: Callable[[str], Entity | None] | None = None
                 ) -> None:
        self.registry = registry
        self.operators = operators
        self.unit = unit
        self.visible = visible
        self.count = 0

    def node(self, data: Any, entity: Entity, path: ConditionPath, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ConditionError(f"a condition may nest at most {MAX_DEPTH} levels deep", path)
        self.count += 1
        if self.count > MAX_NODES:
            raise ConditionError(f"a condition may have at most {MAX_NODES} parts "
                                 "(all/any/not groups and field tests)", path)
        if not isinstance(data, Mapping):
            raise ConditionError("a condition must be a mapping with `all`, `any`, `not` or "
                                 f"`field`, not {_kind(data)}", path)
        keys = [k for k in data if k in GROUP_KEYS]
        if len(keys) > 1 or (keys and any(k in data for k in LEAF_KEYS)):
            found = ", ".join(f"`{k}`" for k in data if k in GROUP_KEYS + LEAF_KEYS)
            raise ConditionError(f"a condition has exactly one of `all`, `any`, `not` or "
                                 f"`field`; this one has {found}", path)
        allowed = (keys[0],) if keys else LEAF_KEYS
        for key in data:
            if key not in allowed:
                raise ConditionError(f"unknown key `{key}` in a condition"
                                     + _hint(str(key), GROUP_KEYS + LEAF_KEYS), (*path, key))
        if keys and keys[0] == "not":
            return Not(self.node(data["not"], entity, (*path, "not"), depth + 1))
        if keys:
            key = keys[0]
            items = data[key]
            if not isinstance(items, list | tuple):
                raise ConditionError(f"`{key}` takes a list of conditions, not {_kind(items)}",
                                     (*path, key))
            children = tuple(self.node(item, entity, (*path, key, index), depth + 1)
                             for index, item in enumerate(items))
            return AllOf(children) if key == "all" else AnyOf(children)
        return self.predicate(data, entity, path)

    # -- one field test ---------------------------------------------------------------------

    def predicate(self, data: Mapping[str, Any], entity: Entity,
                  path: ConditionPath) -> Predicate:
        if "field" not in data:
            raise ConditionError("a condition needs `field` (or `all`, `any`, `not`)", path)
        field_path = data["field"]
        if not isinstance(field_path, str) or not field_path:
            raise ConditionError("`field` must be a field name or a dotted path such as "
                                 f"`customer.city`, not {_kind(field_path)}", (*path, "field"))
        field_type, options = self.resolve(entity, field_path, (*path, "field"))
        if "op" not in data:
            raise ConditionError(f"the condition on `{field_path}` needs `op`", path)
        operator = self.operator(data["op"], field_path, field_type, (*path, "op"))
        value = self.value(data, operator, field_path, field_type, options, path)
        return Predicate(field_path, operator, value, field_type)

    def resolve(self, entity: Entity, field_path: str,
                path: ConditionPath) -> tuple[str, tuple[str, ...]]:
        """The field type (and enum options) at the end of a dotted path."""
        current = entity
        parts = field_path.split(".")
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            found = current.get_field(part)
            if found is None and part in SYSTEM_FIELD_TYPES:
                if last:
                    return SYSTEM_FIELD_TYPES[part], ()
                raise ConditionError(f"`{part}` is a system column, not a reference, so "
                                     f"`{field_path}` cannot go through it", path)
            if found is None and part == "deleted_at":
                raise ConditionError("`deleted_at` cannot be tested: conditions see live "
                                     "records only (the platform leaves out deleted ones)", path)
            if found is None:
                names = (*current.field_names, *SYSTEM_FIELD_TYPES)
                raise ConditionError(f"`{part}` is not a field of {current.key}"
                                     + _hint(part, names), path)
            if not found.stored:
                raise ConditionError(f"`{part}` of {current.key} is a {found.type} field: it is "
                                     "not stored, so conditions cannot test it", path)
            if last:
                return found.type, found.option_values
            current = self.target(current, found, field_path, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def target(self, entity: Entity, found: Field, field_path: str,
               path: ConditionPath) -> Entity:
        if found.type != "reference" or found.target not in self.registry.entities:
            raise ConditionError(f"`{found.name}` of {entity.key} is not a reference, so "
                                 f"`{field_path}` cannot go through it", path)
        known = self.registry.scope(self.unit).entities if self.unit else self.registry.entities
        if found.target not in known:
            raise ConditionError(f"`{found.name}` of {entity.key} refers to {found.target}, "
                                 f"which business unit `{self.unit}` does not have", path)
        if self.visible is not None:
            seen = self.visible(found.target)
            if seen is None:
                raise ConditionError(f"`{found.name}` of {entity.key} refers to "
                                     f"{found.target}, whose fields you cannot test", path)
            return seen
        return known[found.target]

    def operator(self, name: Any, field_path: str, field_type: str,
                 path: ConditionPath) -> Operator:
        if not isinstance(name, str):
            raise ConditionError(f"`op` must be an operator name, not {_kind(name)}", path)
        found = self.operators.get(name)
        if found is None:
            raise ConditionError(f"unknown operator `{name}`"
                                 + _hint(name, self.operators.names()), path)
        if not found.applies_to(field_type):
            usable = [o.name for o in self.operators.for_type(field_type)]
            raise ConditionError(
                f"operator `{name}` does not apply to `{field_path}` ({field_type}); "
                + (f"use one of {', '.join(usable)}" if usable
                   else f"no operator applies to {field_type} fields"), path)
        return found

    def value(self, data: Mapping[str, Any], operator: Operator, field_path: str,
              field_type: str, options: tuple[str, ...], path: ConditionPath) -> Any:
        shape, where = operator.shape, (*path, "value")
        if shape == "none":
            if data.get("value") is not None:
                raise ConditionError(f"operator `{operator.name}` takes no value", where)
            return None
        if "value" not in data:
            raise ConditionError(f"operator `{operator.name}` needs a `value`", path)
        value = data["value"]
        if value is None:
            raise ConditionError("`value` is null; to test for no value use "
                                 "`op: is_empty, value: true`", where)
        if shape == "bool":
            if not isinstance(value, bool):
                raise ConditionError(f"operator `{operator.name}` takes true or false, not "
                                     f"{_kind(value)}", where)
            return value
        if shape == "duration":
            try:
                return Duration.parse(value)
            except ValueError as exc:
                raise ConditionError(str(exc), where) from None
        if shape == "scalar":
            if isinstance(value, list | tuple):
                instead = {"eq": "in", "ne": "not_in"}.get(operator.name)
                raise ConditionError(f"operator `{operator.name}` takes one value, not a list"
                                     + (f"; use `{instead}` for several"
                                        if instead in self.operators else ""), where)
            return self.literal(value, operator, field_type, options, where)
        if not isinstance(value, list | tuple):
            wanted = "two values [low, high]" if shape == "pair" else "a list of values"
            raise ConditionError(f"operator `{operator.name}` takes {wanted}, not "
                                 f"{_kind(value)}", where)
        if shape == "pair" and len(value) != 2:
            raise ConditionError(f"operator `{operator.name}` takes two values [low, high]; "
                                 f"got {len(value)}", where)
        if len(value) > MAX_LIST:
            raise ConditionError(f"operator `{operator.name}` takes at most {MAX_LIST} values; "
                                 f"got {len(value)}", where)
        items = tuple(self.literal(item, operator, field_type, options, (*where, index))
                      for index, item in enumerate(value))
        if shape == "pair" and _above(items[0], items[1]):
            raise ConditionError(f"the low value ({data['value'][0]}) is above the high value "
                                 f"({data['value'][1]})", where)
        return items

    @staticmethod
    def literal(value: Any, operator: Operator, field_type: str, options: tuple[str, ...],
                where: ConditionPath) -> Any:
        if value is None:
            raise ConditionError("null is not a value to compare with; to test for no value "
                                 "use `op: is_empty, value: true`", where)
        if isinstance(value, list | tuple | Mapping):
            raise ConditionError(f"expected one value, not {_kind(value)}", where)
        try:
            if operator.coerce is not None:
                return operator.coerce(value, field_type, options)
            return coerce_literal(value, field_type, options)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise ConditionError(str(exc), where) from None


def _above(low: Any, high: Any) -> bool:
    try:
        return bool(low > high)
    except TypeError:  # a timestamp with an offset and one without: decided when run
        return False


def _hint(word: str, candidates: Any) -> str:
    hint = did_you_mean(word, candidates)
    return f"; {hint}" if hint else ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 40 else "a text"
    return f"`{value!r}`"
