"""JSON Schemas (Draft 2020-12) for every definition kind, assembled with the field types.

The static parts ship as JSON files beside this module; the field definitions are
built from the field-type registry so that plugin types get schemas too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from .fieldtypes import FieldTypeRegistry
from .kinds import DefinitionKind, KindRegistry

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_COMMON_FIELD_PROPERTIES: dict[str, Any] = {
    "label": {"$ref": "#/$defs/label"},
    "help": {"$ref": "#/$defs/label", "description": "Help text shown beside the input."},
    "description": {"$ref": "#/$defs/label"},
    "required": {"type": "boolean", "description": "A value must be given."},
    "unique": {"type": "boolean", "description": "No two records may share a value."},
    "index": {"type": "boolean", "description": "Index the column for fast filtering."},
    "default": {"description": "Value used when none is given."},
    "read_only": {"type": "boolean", "description": "Shown but not editable by people."},
    "hidden": {"type": "boolean", "description": "Kept out of forms and lists."},
    "renamed_from": {"$ref": "#/$defs/renamed_from"},
    "insert_after": {"$ref": "#/$defs/identifier",
                     "description": "In an overlay: place the field after this one."},
}

PATCHABLE = ("label", "help", "description", "default", "required", "unique", "index",
             "read_only", "hidden", "insert_after", "options", "max_length", "min", "max",
             "pattern", "precision", "scale", "currency", "on_delete")


@cache
def static_schema(name: str) -> Mapping[str, Any]:
    """A JSON file shipped in ``metacrm/metadata/schemas``."""
    text = resources.files(__package__).joinpath("schemas", name).read_text("utf-8")
    return json.loads(text)


def field_defs(types: FieldTypeRegistry) -> dict[str, Any]:
    """`$defs` entries for fields: one per field type, the dispatcher and the overlay forms."""
    defs: dict[str, Any] = {}
    names = list(types.names())
    dispatch = []
    for field_type in types:
        properties = {"type": {"const": field_type.name}}
        for option in field_type.accepted_options:
            if option in _COMMON_FIELD_PROPERTIES:
                properties[option] = _COMMON_FIELD_PROPERTIES[option]
        properties["insert_after"] = _COMMON_FIELD_PROPERTIES["insert_after"]
        properties.update(copy.deepcopy(dict(field_type.options_schema)))
        defs[f"field_{field_type.name}"] = {
            "type": "object",
            "description": field_type.description,
            "required": ["type", *field_type.required_options],
            "properties": properties,
            "additionalProperties": False,
        }
        dispatch.append({"if": {"required": ["type"],
                                "properties": {"type": {"const": field_type.name}}},
                         "then": {"$ref": f"#/$defs/field_{field_type.name}"}})
    defs["field"] = {
        "type": "object",
        "description": "A field: {type: ..., and that type's options}.",
        "required": ["type"],
        "properties": {"type": {"enum": names, "description": "The field's type."}},
        "allOf": dispatch,
    }
    patch_properties: dict[str, Any] = {}
    for option in PATCHABLE:
        if option in _COMMON_FIELD_PROPERTIES:
            patch_properties[option] = _COMMON_FIELD_PROPERTIES[option]
    for field_type in types:
        for option, schema in field_type.options_schema.items():
            if option in PATCHABLE and option not in patch_properties:
                patch_properties[option] = copy.deepcopy(schema)
    defs["field_patch"] = {
        "type": "object",
        "description": "Changes to an existing field (labels, help, default, options, hiding).",
        "properties": patch_properties,
        "additionalProperties": False,
        "minProperties": 1,
    }
    defs["overlay_field"] = {
        "description": "A new field (with `type`) or changes to an existing one (without).",
        "type": "object",
        "if": {"required": ["type"]},
        "then": {"$ref": "#/$defs/field"},
        "else": {"$ref": "#/$defs/field_patch"},
    }
    return defs


def build_schema(kind: DefinitionKind, types: FieldTypeRegistry) -> dict[str, Any]:
    """The complete, self-contained schema of one definition kind."""
    base = static_schema(kind.schema) if isinstance(kind.schema, str) else kind.schema
    schema = copy.deepcopy(dict(base))
    schema.setdefault("$schema", DRAFT)
    defs = copy.deepcopy(dict(static_schema("common.json")["$defs"]))
    text = json.dumps(schema)
    if '"#/$defs/field' in text or '"#/$defs/overlay_field' in text:
        defs.update(field_defs(types))
    defs.update(schema.get("$defs", {}))
    schema["$defs"] = defs
    return schema


def build_all(kinds: KindRegistry, types: FieldTypeRegistry) -> dict[str, dict[str, Any]]:
    """Every kind's schema, by kind name."""
    return {kind.name: build_schema(kind, types) for kind in kinds}
