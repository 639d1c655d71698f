"""The condition language: one AST for filters, segments, scopes, guards and rules.

    node = parse_condition(data, "crm.lead", registry, operators)   # checks everything
    where = to_sql(node, "crm.lead", tables.by_entity, registry, ctx)  # a set of records
    evaluate(node, record, ctx)                                      # one record

The two backends agree (tests/test_conditions_agreement.py); see docs/conditions.md.
"""

from __future__ import annotations

from .context import Duration, EvalContext, OperandContext
from .errors import ConditionError, ConditionPath
from .evaluate import evaluate
from .nodes import AllOf, AnyOf, Node, Not, Predicate, condition_fields, dump_condition
from .operators import Operator, OperatorRegistry, builtin_operators
from .parse import MAX_DEPTH, MAX_LIST, MAX_NODES, parse_condition
from .sql import to_sql
from .values import SYSTEM_FIELD_TYPES

__all__ = [
    "MAX_DEPTH",
    "MAX_LIST",
    "MAX_NODES",
    "SYSTEM_FIELD_TYPES",
    "AllOf",
    "AnyOf",
    "ConditionError",
    "ConditionPath",
    "Duration",
    "EvalContext",
    "Node",
    "Not",
    "OperandContext",
    "Operator",
    "OperatorRegistry",
    "Predicate",
    "builtin_operators",
    "condition_fields",
    "dump_condition",
    "evaluate",
    "parse_condition",
    "to_sql",
]
