"""Registry → marshmallow schemas that validate writes (create and partial update).

Every generated class is made with ``Meta.register = False`` and a name unique to its
Registry version, so marshmallow's global class registry never resolves a stale one.
Validation reuses each field type's own value check, so the API accepts exactly what
definitions accept.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
from marshmallow import fields as mf
from marshmallow import validate as mv

from ..metadata.fieldtypes import FieldTypeRegistry
from ..metadata.ir import Entity, Field

WRITE_ONLY_SYSTEM = ("row_version",)


class StrictDecimal(mf.Decimal):
    """A decimal from a JSON number or numeric string; never NaN or infinity."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> decimal.Decimal:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        number = super()._deserialize(value, attr, data, **kwargs)
        if not number.is_finite():
            raise self.make_error("special")
        return number


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class StrictInteger(mf.Integer):
    """A whole number that fits the database's 64-bit integers."""

    default_error_messages = {"range": "must be between -2^63 and 2^63-1 (a 64-bit integer)"}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.make_error("invalid")
        number = super()._deserialize(value, attr, data, **kwargs)
        if not INT64_MIN <= number <= INT64_MAX:
            raise self.make_error("range")
        return number


def storable_text(value: str) -> str | None:
    """Why the database cannot store `value` (NUL, lone surrogates), or None."""
    if "\x00" in value:
        return "may not contain the NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _storable(value: Any) -> None:
    problem = storable_text(value) if isinstance(value, str) else None
    if problem:
        raise ma.ValidationError(problem)


class Text(mf.String):
    """A string the database can store (no NUL characters, valid Unicode)."""

    def __init__(self, **kwargs: Any) -> None:
        check = kwargs.pop("validate", None)
        checks = [_storable] + ([check] if check is not None else [])
        super().__init__(validate=checks, **kwargs)


class UuidText(mf.UUID):
    """A UUID, kept as its canonical text (the column stores text)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs))


class JsonValue(mf.Raw):
    """Any JSON value the database can store: storable text, finite numbers only."""

    default_error_messages = {"number": "numbers must be finite"}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        self._check(value, 0)
        return value

    def _check(self, value: Any, depth: int) -> None:
        if depth > 64:
            raise ma.ValidationError("nested more than 64 levels deep")
        if isinstance(value, str):
            problem = storable_text(value)
            if problem:
                raise ma.ValidationError(problem)
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise self.make_error("number")
        elif isinstance(value, dict):
            for key, item in value.items():
                self._check(key, depth + 1)
                self._check(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                self._check(item, depth + 1)


class AwareDateTime(mf.AwareDateTime):
    """ISO timestamps; a naive one is taken as UTC; every value comes out in UTC (SQLite
    keeps no offset, so 10:30+08:00 must be stored as 02:30, never as 10:30)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=dt.UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return super()._deserialize(value, attr, data, **kwargs).astimezone(dt.UTC)


def _type_check(field: Field, types: FieldTypeRegistry):
    field_type = types.get(field.type)
    spec = {"max_length": field.max_length, "pattern": field.pattern, "min": field.min,
            "max": field.max, "options": list(field.option_values), "precision": field.precision,
            "scale": field.scale}

    def check(value: Any) -> None:
        if field_type is None:
            return
        if isinstance(value, dt.date | dt.datetime):
            value = value.isoformat()
        elif isinstance(value, decimal.Decimal):
            value = str(value)
        problem = field_type.check_value(value, spec)
        if problem:
            raise ma.ValidationError(problem)

    return check


def marshmallow_field(field: Field, types: FieldTypeRegistry) -> mf.Field | None:
    """The input field for one definition field, or None when it is not writable."""
    if field.read_only or field.type in ("children", "formula", "autonumber"):
        return None
    kwargs: dict[str, Any] = {"required": False, "allow_none": not field.required}
    check = _type_check(field, types)
    storage = field.type
    if storage in ("string", "text", "email", "phone", "url"):
        return Text(validate=check, **kwargs)
    if storage == "integer":
        return StrictInteger(strict=True, validate=check, **kwargs)
    if storage in ("decimal", "money"):
        return StrictDecimal(validate=check, **kwargs)
    if storage == "boolean":
        return mf.Boolean(truthy={True}, falsy={False}, **kwargs)
    if storage == "date":
        return mf.Date(validate=check, **kwargs)
    if storage == "datetime":
        return AwareDateTime(**kwargs)
    if storage == "enum":
        return Text(validate=mv.OneOf(field.option_values), **kwargs)
    if storage == "multi_enum":
        return mf.List(Text(validate=mv.OneOf(field.option_values)), **kwargs)
    if storage == "json":
        return JsonValue(**kwargs)
    if storage == "uuid":
        return UuidText(**kwargs)
    if storage in ("reference", "user"):
        return StrictInteger(strict=True, validate=mv.Range(min=1), **kwargs)
    if storage == "many_to_many":
        return mf.List(StrictInteger(strict=True, validate=mv.Range(min=1)),
                       **{**kwargs, "allow_none": False})
    return mf.Raw(validate=check, **kwargs)


@dataclass(frozen=True, slots=True)
class EntitySchemas:
    """The write schemas of one entity as one scope sees it."""

    entity: Entity
    create: ma.Schema
    update: ma.Schema
    writable: frozenset[str]


def _schema_class(name: str, fields: Mapping[str, mf.Field]) -> type[ma.Schema]:
    meta = type("Meta", (), {"register": False, "unknown": ma.RAISE})
    return type(name, (ma.Schema,), {**fields, "Meta": meta})


def build_entity_schemas(entity: Entity, types: FieldTypeRegistry, version: str,
                         unit: str | None = None) -> EntitySchemas:
    """Create and update schemas for `entity` (names unique per version and unit)."""
    fields: dict[str, mf.Field] = {}
    for field in entity.fields:
        made = marshmallow_field(field, types)
        if made is not None:
            fields[field.name] = made
    base = f"{entity.module}_{entity.name}_{version}_{unit or 'all'}"
    create_fields = dict(fields)
    for field in entity.fields:
        if field.required and field.name in create_fields and field.default is None:
            create_fields[field.name].required = True
    create_class = _schema_class(f"Create_{base}", create_fields)
    update_fields = {name: _copy(f) for name, f in fields.items()}
    update_fields["row_version"] = StrictInteger(strict=True, required=False)
    update_class = _schema_class(f"Update_{base}", update_fields)
    return EntitySchemas(entity, create_class(), update_class(partial=True), frozenset(fields))


def _copy(field: mf.Field) -> mf.Field:
    import copy

    made = copy.copy(field)
    made.required = False
    return made
