"""Schema validation of documents: kind detection plus JSON Schema, as readable diagnostics."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError

from .diagnostics import Diagnostic, did_you_mean
from .fieldtypes import FieldTypeRegistry
from .kinds import DefinitionKind, KindRegistry
from .loader import Document
from .schemas import build_schema

_JSON_TYPES = MappingProxyType({
    "string": "text", "object": "a mapping (key: value)", "array": "a list",
    "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "null": "nothing"})
_YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})
_NAME_HINT = "use lower-case letters, digits and underscores, starting with a letter"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"`{value}`"


def _expected(types: str | list[str]) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_JSON_TYPES.get(t, t) for t in names)


@lru_cache(maxsize=256)
def _fast_validator(schema_json: str) -> Callable[[Any], Any] | None:
    """fastjsonschema's check for one schema (given as JSON text), generated once per process.

    Generating the code is the slow part of building a SchemaValidator (tens of milliseconds
    per schema); the generated function is pure, so every Compiler can share it.
    """
    schema = json.loads(schema_json)
    try:
        return fastjsonschema.compile(
            dict(schema, **{"$schema": "http://json-schema.org/draft-07/schema#"}))
    except (fastjsonschema.JsonSchemaDefinitionException, ValueError):
        return None


class _Pair:
    """A schema compiled twice: a fast yes/no check and a validator that lists every error."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.full = Draft202012Validator(schema)
        try:
            text = json.dumps(schema, sort_keys=True)
        except (TypeError, ValueError):  # a plugin schema that is not plain JSON
            text = None
        self.fast = _fast_validator(text) if text is not None else None

    def passes(self, data: Any) -> bool:
        if self.fast is None:
            return False
        try:
            self.fast(data)
        except Exception:
            return False
        return True


def _field_slot(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `fields` property's schema when the kind declares fields by name."""
    fields = schema.get("properties", {}).get("fields")
    if isinstance(fields, dict) and isinstance(fields.get("additionalProperties"), dict):
        ref = fields["additionalProperties"].get("$ref", "")
        if ref in ("#/$defs/field", "#/$defs/overlay_field"):
            return fields
    return None


class SchemaValidator:
    """Validates documents of every kind; compiled once per plugin set."""

    def __init__(self, kinds: KindRegistry, types: FieldTypeRegistry) -> None:
        self.kinds = kinds
        self.types = types
        self._field_kinds = set()
        self._properties: dict[str, frozenset[str]] = {}
        self._shell: dict[str, _Pair] = {}
        self._fields: dict[str, _Pair] = {}
        for kind in kinds:
            schema = build_schema(kind, types)
            field_slot = _field_slot(schema)
            if field_slot is not None:
                field_slot["additionalProperties"] = {"type": "object"}
                self._field_kinds.add(kind.name)
                for name in [*(f"field_{t}" for t in types.names()), "field", "field_patch"]:
                    if name not in self._fields:
                        self._fields[name] = _Pair({"$schema": schema["$schema"],
                                                    "$defs": schema["$defs"],
                                                    "$ref": f"#/$defs/{name}"})
            self._shell[kind.name] = _Pair(schema)
            self._properties[kind.name] = frozenset(schema.get("properties", {}))

    _field_kinds: set[str]

    def detect(self, doc: Document) -> tuple[DefinitionKind | None, list[Diagnostic]]:
        """The kind of `doc`, or None with a diagnostic saying why not."""
        if not isinstance(doc.data, Mapping):
            return None, [doc.diagnostic(
                "kind.not-mapping", f"a definition file must be a mapping of keys; found "
                f"{_describe(doc.data)}", ())]
        found = self.kinds.detect(doc.data)
        if len(found) > 1:
            found = [k for k in found if not any(
                k.key in self._properties[other.name] for other in found if other is not k)]
        if len(found) == 1:
            return found[0], []
        keys = ", ".join(f"`{k}`" for k in self.kinds.keys())  # noqa: SIM118
        if not found:
            hint = None
            for key in doc.data:
                hint = did_you_mean(str(key), self.kinds.keys())
                if hint:
                    break
            return None, [doc.diagnostic(
                "kind.unknown", f"cannot tell what this file defines: it needs one of the keys "
                f"{keys}", (), hint=hint)]
        names = " and ".join(f"`{k.key}`" for k in found)
        return None, [doc.diagnostic("kind.ambiguous", f"this file has both {names}; a file "
                                     "defines one thing", (found[1].key,), key=True)]

    def validate(self, doc: Document, kind: DefinitionKind) -> list[Diagnostic]:
        """Every schema problem in `doc`, or an empty list."""
        problems = self._run(doc, self._shell[kind.name], doc.data, ())
        fields = doc.data.get("fields") if isinstance(doc.data, Mapping) else None
        if kind.name in self._field_kinds and isinstance(fields, Mapping):
            overlay = kind.name == "overlay"
            for name, spec in fields.items():
                if not isinstance(spec, Mapping):
                    continue
                field_type = spec.get("type")
                if isinstance(field_type, str) and field_type in self.types:
                    pair = self._fields[f"field_{field_type}"]
                elif overlay and "type" not in spec:
                    pair = self._fields["field_patch"]
                else:
                    pair = self._fields["field"]
                problems.extend(self._run(doc, pair, spec, ("fields", name)))
        return problems

    def _run(self, doc: Document, pair: _Pair, data: Any, prefix: tuple) -> list[Diagnostic]:
        if pair.passes(data):
            return []
        return [d for error in pair.full.iter_errors(data)
                for d in self._translate(doc, error, prefix)]

    def _translate(self, doc: Document, error: ValidationError,
                   prefix: tuple = ()) -> Iterator[Diagnostic]:
        if error.validator in ("allOf", "anyOf", "oneOf", "if", "then") and error.context:
            for sub in error.context:
                yield from self._translate(doc, sub, prefix)
            return
        path = (*prefix, *error.absolute_path)
        value = error.instance
        rule = error.validator
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        if rule == "additionalProperties" and isinstance(value, Mapping):
            allowed = list(schema.get("properties", {}))
            for key in value:
                if key not in allowed and not any(
                        re.search(p, key) for p in schema.get("patternProperties", {})):
                    yield doc.diagnostic("schema.unknown-key", self._unknown_key(key, path),
                                         (*path, key), key=True, hint=did_you_mean(key, allowed)
                                         or f"allowed here: {', '.join(allowed)}")
        elif rule == "required":
            missing = error.message.split("'")[1] if "'" in error.message else "?"
            what = self._what(path)
            yield doc.diagnostic("schema.missing-key", f"{what} needs `{missing}`", path,
                                 hint=self._missing_hint(missing, value))
        elif rule == "enum":
            options = [str(o) for o in error.validator_value]
            yield doc.diagnostic(
                "schema.not-allowed", f"{_describe(value)} is not allowed for "
                f"`{self._name(path)}`; choose one of: {', '.join(options)}", path,
                hint=did_you_mean(str(value), options))
        elif rule == "const":
            yield doc.diagnostic("schema.not-allowed", f"expected `{error.validator_value}`, "
                                 f"found {_describe(value)}", path)
        elif rule == "type":
            yield doc.diagnostic("schema.type", f"`{self._name(path)}` must be "
                                 f"{_expected(error.validator_value)}, not {_describe(value)}",
                                 path, hint=self._type_hint(value, error.validator_value))
        elif rule == "pattern" and "propertyNames" in error.relative_schema_path:
            if str(error.validator_value).startswith("^[a-z]{2,3}"):
                yield doc.diagnostic("schema.bad-locale", f"`{value}` is not a locale code",
                                     (*path, value), key=True,
                                     hint="use codes like en, zh-Hant, zh-Hans; put text with "
                                     "commas or colons in quotes")
            else:
                yield doc.diagnostic("schema.bad-name", f"`{value}` is not a valid name",
                                     (*path, value), key=True, hint=_NAME_HINT)
        elif rule == "pattern" and value == "":
            yield doc.diagnostic("schema.empty", f"`{self._name(path)}` must not be empty", path)
        elif rule == "pattern":
            yield from self._pattern(doc, path, value, error)
        elif rule == "propertyNames":
            yield from self._property_names(doc, path, error)
        elif rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            word = "at least" if "inimum" in rule else "at most"
            yield doc.diagnostic("schema.range", f"`{self._name(path)}` must be {word} "
                                 f"{error.validator_value}; found {value}", path)
        elif rule in ("minItems", "minProperties", "minLength"):
            yield doc.diagnostic("schema.empty", f"`{self._name(path)}` must not be empty", path)
        elif rule in ("maxLength", "maxItems"):
            yield doc.diagnostic("schema.too-long", f"`{self._name(path)}` is too long (at most "
                                 f"{error.validator_value})", path)
        elif rule == "uniqueItems":
            yield doc.diagnostic("schema.duplicates", f"`{self._name(path)}` lists a value twice",
                                 path)
        else:
            yield doc.diagnostic(f"schema.{rule}", error.message, path)

    @staticmethod
    def _name(path: tuple) -> str:
        for part in reversed(path):
            if isinstance(part, str):
                return part
        return "value"

    def _what(self, path: tuple) -> str:
        if len(path) >= 2 and path[-2] == "fields":
            return f"field `{path[-1]}`"
        if not path:
            return "this definition"
        return f"`{self._name(path)}`"

    def _missing_hint(self, key: str, spec: Any) -> str | None:
        if key == "type":
            return f"field types: {', '.join(self.types.names())}"
        field_type = spec.get("type") if isinstance(spec, Mapping) else None
        if isinstance(field_type, str) and field_type in self.types:
            example = self.types[field_type].example
            return f"for example: {example}" if example else None
        return None

    @staticmethod
    def _type_hint(value: Any, expected: Any) -> str | None:
        expected = [expected] if isinstance(expected, str) else list(expected)
        if "string" in expected:
            if isinstance(value, bool):
                return "quote it (\"yes\") if it is meant as text"
            if isinstance(value, int | float):
                return f"quote it (\"{value}\") if it is meant as text"
        if "boolean" in expected and isinstance(value, str):
            if value.lower() in _YAML11_BOOLEANS:
                return f"write true or false; `{value}` is text in YAML 1.2"
            return "write true or false"
        if expected[:1] in (["integer"], ["number"]) and isinstance(value, str) and \
                re.fullmatch(r"\s*[-+]?[0-9]+(\.[0-9]+)?\s*", value):
            return "write the number without quotes"
        return None

    def _unknown_key(self, key: str, path: tuple) -> str:
        if len(path) >= 2 and path[-2] == "fields":
            return f"`{key}` is not an option of field `{path[-1]}`"
        where = f"`{self._name(path)}`" if path else "this definition"
        return f"unknown key `{key}` in {where}"

    def _pattern(self, doc: Document, path: tuple, value: Any,
                 error: ValidationError) -> Iterator[Diagnostic]:
        pattern = str(error.validator_value)
        if pattern.startswith("^[a-z][a-z0-9_]*") or pattern.startswith("^([a-z]"):
            yield doc.diagnostic("schema.bad-name", f"`{value}` is not a valid name", path,
                                 hint=_NAME_HINT)
        else:
            yield doc.diagnostic("schema.pattern", f"`{value}` has the wrong form for "
                                 f"`{self._name(path)}`", path,
                                 hint=error.schema.get("description") if isinstance(
                                     error.schema, Mapping) else None)

    def _property_names(self, doc: Document, path: tuple,
                        error: ValidationError) -> Iterator[Diagnostic]:
        for sub in error.context or ():
            name = sub.instance
            yield doc.diagnostic("schema.bad-name", f"`{name}` is not a valid name", (*path, name),
                                 key=True, hint=_NAME_HINT)
