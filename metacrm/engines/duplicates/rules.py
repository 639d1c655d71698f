"""An entity's match rules, ready to compute keys: normalisers looked up, conditions parsed,
the tenant's phone region known. Built once per Registry version (runtime.extras)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from ...metadata.ir import MatchRule, thaw
from ..conditions import EvalContext, evaluate
from .normalise import NORMALISERS, Normaliser, phone_region

SEPARATOR = "\x1f"
CACHE_KEY = "duplicates.rules"
IDENTITY_FIELD = "identified"
"""A boolean field of this name marks records whose identity was verified: two such records
are never merged unless the merge is forced (see docs/modules/customer.md)."""


def key_of(salt: str, parts: list[str]) -> int:
    """The stored key of a rule's normalised values: a signed 64-bit BLAKE2b hash of the
    rule's `salt` (entity and rule name) and the values."""
    digest = hashlib.blake2b((salt + SEPARATOR.join(parts)).encode("utf-8"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One match rule: its fields with their normalisers and its parsed `when`."""

    rule: MatchRule
    fields: tuple[str, ...]
    normalisers: tuple[Normaliser, ...]
    when: Any  # a parsed condition node, or None
    salt: str = ""  # "entity␟rule␟": keys of different rules never meet

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def blocks(self) -> bool:
        return self.rule.action == "block"

    def key(self, record: Mapping[str, Any], region: str | None) -> int | None:
        """The record's key under this rule; None when a field gives no value."""
        parts = []
        for name, normalise in zip(self.fields, self.normalisers, strict=True):
            value = normalise(record.get(name), region)
            if value is None:
                return None
            parts.append(value)
        return key_of(self.salt, parts)


@dataclass(frozen=True, slots=True)
class EntityRules:
    """Every match rule of one entity, with what they read."""

    entity: str
    rules: tuple[CompiledRule, ...]
    fields: frozenset[str]  # every field the keys and conditions read
    region: str | None
    timezone: Any

    def rule(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.name == name), None)

    def keys(self, record: Mapping[str, Any], now: dt.datetime | None = None) -> dict[str, int]:
        """{rule: key} for every rule that applies to `record` and gives a key."""
        return self.keys_many((record,), now)[0]

    def keys_many(self, records: Sequence[Mapping[str, Any]],
                  now: dt.datetime | None = None) -> list[dict[str, int]]:
        """`keys` of many records (an import's batch): one clock, one loop."""
        ctx = None
        if any(r.when is not None for r in self.rules):
            ctx = EvalContext(now or dt.datetime.now(dt.UTC), self.timezone)
        plan = [(r.name, r.salt, tuple(zip(r.fields, r.normalisers, strict=True)), r.when)
                for r in self.rules]
        region = self.region
        out = []
        for record in records:
            found = {}
            get = record.get
            for name, salt, pairs, when in plan:
                if when is not None and not _holds(when, record, ctx):
                    continue
                parts = []
                for field_name, normalise in pairs:
                    value = get(field_name)
                    if value is None:
                        break
                    value = normalise(value, region)
                    if value is None:
                        break
                    parts.append(value)
                else:
                    found[name] = key_of(salt, parts)
            out.append(found)
        return out


def _holds(node: Any, record: Mapping[str, Any], ctx: Any) -> bool:
    try:
        return evaluate(node, record, ctx)
    except (TypeError, ValueError):
        return False


def entity_rules(runtime: Any, entity_key: str) -> EntityRules | None:
    """The match rules of `entity_key` in `runtime`'s version (None: it has none)."""
    cache = runtime.extras.setdefault(CACHE_KEY, {})
    if entity_key in cache:
        return cache[entity_key]
    compiled = _compile(runtime, entity_key)
    cache[entity_key] = compiled
    return compiled


def _compile(runtime: Any, entity_key: str) -> EntityRules | None:
    registry = runtime.registry
    entity = registry.scope(None).entities.get(entity_key) or registry.entities.get(entity_key)
    if entity is None or not entity.duplicates:
        return None
    operators = _operators(runtime)
    rules, fields = [], set()
    for rule in entity.duplicates:
        names = tuple(k.field for k in rule.keys)
        when = None
        if rule.when is not None:
            from ..conditions import condition_fields, parse_condition

            when = parse_condition(thaw(rule.when), entity, registry, operators)
            fields.update(path.split(".")[0] for path in condition_fields(when))
        rules.append(CompiledRule(rule, names, tuple(NORMALISERS[k.normalise]
                                                     for k in rule.keys), when,
                                  f"{entity_key}{SEPARATOR}{rule.name}{SEPARATOR}"))
        fields.update(names)
    config = runtime.config
    return EntityRules(entity_key, tuple(rules), frozenset(fields),
                       phone_region(config.settings, config.locale, config.timezone),
                       ZoneInfo(config.timezone))


def _operators(runtime: Any) -> Any:
    platform = getattr(runtime, "platform", None)
    if platform is not None:
        return platform.operators
    from ..conditions import OperatorRegistry, builtin_operators

    return OperatorRegistry(builtin_operators())
