"""Registry → table specs: plain, comparable descriptions of the tables a tenant needs.

Specs are what the migration planner diffs (desired against the ones stored in the
tenant's catalog) and what SQLAlchemy tables are built from, so the two never drift.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ..metadata.fieldtypes import FieldTypeRegistry
from ..metadata.ir import Entity, Field, Registry
from . import names

# Field type -> storage kind; plugin field types name one through FieldType.storage.
STORAGE_OF = MappingProxyType({
    "string": "string", "email": "string", "phone": "string", "url": "string",
    "autonumber": "string", "text": "text", "integer": "integer", "decimal": "decimal",
    "money": "decimal", "boolean": "boolean", "date": "date", "datetime": "datetime",
    "enum": "string", "multi_enum": "json", "json": "json", "uuid": "uuid",
    "reference": "id", "user": "id",
})
DEFAULT_LENGTHS = MappingProxyType({"email": 254, "phone": 32, "url": 2048, "autonumber": 64})
WIDENINGS = frozenset({("string", "text"), ("integer", "decimal"), ("date", "datetime"),
                       ("integer", "text"), ("decimal", "text")})


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One stored column, keyed by its field's stable id."""

    field_id: str
    name: str
    storage: str
    nullable: bool = True
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    options: tuple[str, ...] | None = None
    unique: bool = False
    index: bool = False
    default: Any = None
    references: str | None = None  # entity id of the target
    on_delete: str | None = None

    def same_type(self, other: ColumnSpec) -> bool:
        return (self.storage, self.length, self.precision, self.scale) == (
            other.storage, other.length, other.precision, other.scale)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    columns: tuple[str, ...]  # field ids
    unique: bool = False


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: an entity's, or the link table of a many_to_many field."""

    entity_id: str
    name: str
    kind: str  # entity | link
    columns: tuple[ColumnSpec, ...]
    indexes: tuple[IndexSpec, ...] = ()
    archived: tuple[ColumnSpec, ...] = ()  # kept columns of removed fields, renamed

    def column(self, field_id: str) -> ColumnSpec | None:
        return next((c for c in self.columns if c.field_id == field_id), None)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> TableSpec:
        data = json.loads(text)
        columns = tuple(ColumnSpec(**{**c, "options": tuple(c["options"])
                                      if c["options"] is not None else None})
                        for c in data["columns"])
        indexes = tuple(IndexSpec(i["name"], tuple(i["columns"]), i["unique"])
                        for i in data["indexes"])
        archived = tuple(ColumnSpec(**{**c, "options": None}) for c in data.get("archived", ()))
        return cls(data["entity_id"], data["name"], data["kind"], columns, indexes, archived)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def _storage(field: Field, types: FieldTypeRegistry) -> str:
    field_type = types.get(field.type)
    declared = field_type.storage if field_type is not None else None
    return declared or STORAGE_OF.get(field.type, "text")


def _constant_default(field: Field) -> Any:
    value = field.default
    if value is None or isinstance(value, tuple) or value in ("today", "now"):
        return None
    if field.type in ("enum", "multi_enum", "json"):
        return value if field.type == "enum" else None
    return value


def column_spec(field: Field, registry: Registry, types: FieldTypeRegistry) -> ColumnSpec:
    storage = _storage(field, types)
    length = None
    if storage == "string":
        if field.type == "enum":
            length = max([len(v) for v in field.option_values] + [32])
        else:
            length = field.max_length or DEFAULT_LENGTHS.get(field.type, 255)
    target = registry.entities.get(field.target or "") if storage == "id" else None
    return ColumnSpec(
        field_id=field.id, name=field.name, storage=storage,
        nullable=not field.required or (storage == "id" and field.on_delete == "set_null"),
        length=length,
        precision=field.precision if storage == "decimal" else None,
        scale=field.scale if storage == "decimal" else None,
        options=field.option_values if field.type == "enum" else None,
        unique=field.unique or field.type == "autonumber",
        index=field.index or storage == "id",
        default=_constant_default(field),
        references=target.id if target is not None else None,
        on_delete=field.on_delete if storage == "id" else None)


def entity_spec(entity: Entity, registry: Registry, types: FieldTypeRegistry) -> TableSpec:
    table = names.entity_table(entity.module, entity.name)
    columns = tuple(column_spec(f, registry, types) for f in entity.fields if f.stored)
    by_name = {f.name: f.id for f in entity.fields}
    indexes = tuple(
        IndexSpec(names.bounded(ix.name), tuple(by_name[n] for n in ix.fields if n in by_name),
                  ix.unique)
        for ix in entity.indexes)
    return TableSpec(entity.id, table, "entity", columns, indexes)


def link_specs(entity: Entity, registry: Registry) -> list[TableSpec]:
    specs = []
    table = names.entity_table(entity.module, entity.name)
    for field in entity.fields:
        if field.type != "many_to_many" or field.target not in registry.entities:
            continue
        target = registry.entities[field.target]
        columns = (
            ColumnSpec(f"{field.id}#source", "source_id", "id", False, references=entity.id,
                       on_delete="cascade"),
            ColumnSpec(f"{field.id}#target", "target_id", "id", False, index=True,
                       references=target.id, on_delete="cascade"),
        )
        specs.append(TableSpec(field.id, names.link_table(table, field.name), "link", columns))
    return specs


def registry_specs(registry: Registry, types: FieldTypeRegistry) -> dict[str, TableSpec]:
    """Every table the Registry needs, by stable id, referenced tables first."""
    specs: dict[str, TableSpec] = {}
    for entity in registry.entities.values():
        specs[entity.id] = entity_spec(entity, registry, types)
    for entity in registry.entities.values():
        for spec in link_specs(entity, registry):
            specs[spec.entity_id] = spec
    memo: dict[str, int] = {}
    return dict(sorted(specs.items(), key=lambda item: _depth(item[1], specs, memo)))


def _depth(spec: TableSpec, specs: dict[str, TableSpec], memo: dict[str, int] | None = None,
           active: frozenset[str] = frozenset()) -> int:
    """How many tables this one's foreign keys reach through (memoized; cycles cut)."""
    memo = {} if memo is None else memo
    if spec.entity_id in memo:
        return memo[spec.entity_id]
    targets = {c.references for c in spec.columns
               if c.references and c.references != spec.entity_id}
    active = active | {spec.entity_id}
    deeper = [_depth(specs[t], specs, memo, active) for t in targets
              if t in specs and t not in active]
    memo[spec.entity_id] = 1 + max(deeper, default=0)
    return memo[spec.entity_id]
