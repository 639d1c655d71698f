"""Field types: a registry that plugins extend through ``register_field_types``.

A field type names its type-specific options (as JSON Schema), which common
options it accepts, how its values and defaults are checked, and which types it
may be widened to by a later definition. Generators add storage and API shapes.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ..hookspecs import hookimpl

SpecProblem = tuple[tuple[str | int, ...], str, str | None]
"""A problem in one field's spec: (path below the field, message, hint)."""

COMMON_OPTIONS: tuple[str, ...] = (
    "type", "label", "help", "description", "required", "unique", "index", "default",
    "read_only", "hidden", "renamed_from",
)
VALUE_OPTIONS = frozenset({"required", "unique", "index", "default"})


@dataclass(frozen=True, slots=True)
class FieldType:
    """One kind of field that entities may declare."""

    name: str
    description: str
    options_schema: Mapping[str, Any] = field(default_factory=dict)
    required_options: tuple[str, ...] = ()
    excluded_common: frozenset[str] = frozenset()
    stored: bool = True
    widens_to: frozenset[str] = frozenset()
    coerce: Callable[[Any, Mapping[str, Any]], Any] | None = None
    check_spec: Callable[[Mapping[str, Any]], Iterable[SpecProblem]] | None = None
    example: str = ""
    storage: str | None = None
    """The built-in storage this type uses (default: its own name); plugin types name one."""

    @property
    def accepted_options(self) -> tuple[str, ...]:
        common = tuple(o for o in COMMON_OPTIONS if o not in self.excluded_common)
        return common + tuple(self.options_schema)

    def check_value(self, value: Any, spec: Mapping[str, Any]) -> str | None:
        """Return why `value` is not valid for a field with `spec`, or None."""
        if value is None or self.coerce is None:
            return None
        try:
            self.coerce(value, spec)
        except (ValueError, TypeError, ArithmeticError) as exc:
            return str(exc)
        return None


class FieldTypeRegistry:
    """The field types known to one plugin manager, by name."""

    def __init__(self, types: Iterable[FieldType]) -> None:
        self._types: dict[str, FieldType] = {}
        for field_type in types:
            if field_type.name in self._types:
                raise ValueError(f"field type {field_type.name!r} is registered twice")
            self._types[field_type.name] = field_type

    @classmethod
    def from_plugins(cls, plugin_manager: Any) -> FieldTypeRegistry:
        return cls(t for batch in plugin_manager.hook.register_field_types() for t in batch)

    def __getitem__(self, name: str) -> FieldType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def get(self, name: str) -> FieldType | None:
        return self._types.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._types)

    def __iter__(self):
        return iter(self._types.values())


# -- value coercion -------------------------------------------------------------------------

def _number_bounds(value: Any, spec: Mapping[str, Any]) -> None:
    low, high = spec.get("min"), spec.get("max")
    if low is not None and value < Decimal(str(low)):
        raise ValueError(f"{value} is below the minimum {low}")
    if high is not None and value > Decimal(str(high)):
        raise ValueError(f"{value} is above the maximum {high}")


def coerce_string(value: Any, spec: Mapping[str, Any]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    limit = spec.get("max_length")
    if limit is not None and len(value) > limit:
        raise ValueError(f"{len(value)} characters exceeds max_length {limit}")
    pattern = spec.get("pattern")
    if pattern and not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} does not match the pattern {pattern!r}")
    return value


def coerce_integer(value: Any, spec: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {value!r}")
    _number_bounds(Decimal(value), spec)
    return value


def coerce_decimal(value: Any, spec: Mapping[str, Any]) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TypeError(f"expected a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a number") from exc
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    precision, scale = spec.get("precision", 18), spec.get("scale", 2)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > scale:
        raise ValueError(f"{value} has more than {scale} decimal places")
    if len(number.as_tuple().digits) - max(-exponent, 0) > precision - scale:  # type: ignore[operator]
        raise ValueError(f"{value} has more than {precision - scale} digits before the point")
    _number_bounds(number, spec)
    return number


def coerce_boolean(value: Any, spec: Mapping[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def coerce_date(value: Any, spec: Mapping[str, Any]) -> dt.date | str:
    if value == "today":
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected a date like 2025-01-31, got {value!r}")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a date like 2025-01-31") from exc
    for bound, label in ((spec.get("min"), "earliest"), (spec.get("max"), "latest")):
        if bound is not None and bound != "today":
            limit = dt.date.fromisoformat(str(bound))
            if (label == "earliest" and parsed < limit) or (label == "latest" and parsed > limit):
                raise ValueError(f"{value} is outside the allowed range ({label} {bound})")
    return parsed


def coerce_datetime(value: Any, spec: Mapping[str, Any]) -> dt.datetime | str:
    if value == "now":
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp like 2025-01-31T09:00:00Z, got {value!r}")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a timestamp like 2025-01-31T09:00:00Z") from exc


def _option_values(spec: Mapping[str, Any]) -> list[str]:
    values = []
    for option in spec.get("options") or ():
        values.append(option["value"] if isinstance(option, Mapping) else option)
    return values


def coerce_enum(value: Any, spec: Mapping[str, Any]) -> str:
    values = _option_values(spec)
    if value not in values:
        raise ValueError(f"{value!r} is not one of the options {', '.join(map(str, values))}")
    return value


def coerce_multi_enum(value: Any, spec: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of options, got {value!r}")
    for item in value:
        coerce_enum(item, spec)
    return value


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+?[0-9 ()./-]{3,32}$")
_URL_RE = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)


def _matching(regex: re.Pattern[str], what: str) -> Callable[[Any, Mapping[str, Any]], str]:
    def coerce(value: Any, spec: Mapping[str, Any]) -> str:
        coerce_string(value, spec)
        if not regex.match(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value
    return coerce


def coerce_uuid(value: Any, spec: Mapping[str, Any]) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a UUID") from exc


def coerce_json(value: Any, spec: Mapping[str, Any]) -> Any:
    return value


# -- spec checks ----------------------------------------------------------------------------

def check_bounds(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    low, high = spec.get("min"), spec.get("max")
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        yield ("min",), f"min ({low}) is greater than max ({high})", "swap the two values"


def check_date_bounds(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    bounds = {}
    for option in ("min", "max"):
        value = spec.get(option)
        if value is None or value == "today":
            continue
        try:
            bounds[option] = dt.date.fromisoformat(str(value))
        except ValueError:
            yield (option,), f"{option} `{value}` is not a date like 2025-01-31 (or `today`)", None
    if len(bounds) == 2 and bounds["min"] > bounds["max"]:
        yield ("min",), f"min ({bounds['min']}) is after max ({bounds['max']})", None


def check_decimal(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    precision, scale = spec.get("precision", 18), spec.get("scale", 2)
    if isinstance(precision, int) and isinstance(scale, int) and scale > precision:
        yield ("scale",), f"scale ({scale}) cannot exceed precision ({precision})", None
    yield from check_bounds(spec)


def check_string(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    pattern = spec.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            yield ("pattern",), f"pattern is not a valid regular expression: {exc}", None


def check_options(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    seen: set[str] = set()
    for index, value in enumerate(_option_values(spec)):
        if value in seen:
            yield ("options", index), f"option `{value}` is listed twice", None
        seen.add(value)


AUTONUMBER_TOKEN = re.compile(r"\{([^{}]*)\}")
AUTONUMBER_DATE_TOKENS = frozenset({"YYYY", "YY", "MM", "DD"})


def check_autonumber(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    pattern = spec.get("pattern")
    if not isinstance(pattern, str):
        return
    counters = 0
    for token in AUTONUMBER_TOKEN.findall(pattern):
        if re.fullmatch(r"#{1,12}", token):
            counters += 1
        elif token not in AUTONUMBER_DATE_TOKENS:
            yield (("pattern",), f"unknown autonumber token `{{{token}}}`",
                   "use {YYYY}, {YY}, {MM}, {DD} and one counter such as {#####}")
    if counters != 1:
        yield (("pattern",), f"an autonumber pattern needs exactly one counter like {{#####}}; "
               f"found {counters}", None)


def check_formula(spec: Mapping[str, Any]) -> Iterable[SpecProblem]:
    from .formula import FormulaError, parse_formula

    expression = spec.get("expression")
    if isinstance(expression, str):
        try:
            parse_formula(expression)
        except FormulaError as exc:
            yield ("expression",), f"formula error: {exc.message}", None


# -- schema fragments -----------------------------------------------------------------------

NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
POSITIVE = {"type": "integer", "minimum": 1}
MAX_LENGTH = {"type": "integer", "minimum": 1, "maximum": 10_485_760,
              "description": "Longest value allowed, in characters."}
PATTERN = {"type": "string", "description": "A regular expression every value must match."}
OPTIONS = {"$ref": "#/$defs/options"}
DATE_BOUND = {"type": "string", "description": "An ISO date (2025-01-31) or `today`."}
PRECISION = {"type": "integer", "minimum": 1, "maximum": 38,
             "description": "Total significant digits (default 18)."}
SCALE = {"type": "integer", "minimum": 0, "maximum": 38,
         "description": "Digits after the decimal point (default 2)."}
ENTITY_REF = {"type": "string", "pattern": r"^([a-z][a-z0-9_]*\.)?[a-z][a-z0-9_]*$",
              "description": "An entity, as `module.entity` (or `entity` in the same module)."}
NOT_VALUE = frozenset({"required", "unique", "index", "default"})


def builtin_field_types() -> list[FieldType]:
    """The field types every installation has."""
    text_like = {"max_length": MAX_LENGTH}
    return [
        FieldType("string", "Short text on one line (default max_length 255).",
                  {"max_length": MAX_LENGTH, "min_length": {"type": "integer", "minimum": 0},
                   "pattern": PATTERN}, widens_to=frozenset({"text"}), coerce=coerce_string,
                  check_spec=check_string, example="{type: string, max_length: 200}"),
        FieldType("text", "Long text, several lines.", text_like, excluded_common=frozenset(
                  {"unique"}), coerce=coerce_string, example="{type: text}"),
        FieldType("integer", "A whole number.", {"min": NUMBER, "max": NUMBER},
                  widens_to=frozenset({"decimal"}), coerce=coerce_integer,
                  check_spec=check_bounds, example="{type: integer, min: 0, max: 100}"),
        FieldType("decimal", "An exact number with `precision` digits, `scale` after the point.",
                  {"precision": PRECISION, "scale": SCALE, "min": NUMBER, "max": NUMBER},
                  coerce=coerce_decimal, check_spec=check_decimal,
                  example="{type: decimal, precision: 12, scale: 4}"),
        FieldType("money", "An amount of money (decimal 18,2) in a `currency` (ISO 4217).",
                  {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                   "precision": PRECISION, "scale": SCALE, "min": NUMBER, "max": NUMBER},
                  coerce=coerce_decimal, check_spec=check_decimal,
                  example="{type: money, currency: CNY}"),
        FieldType("boolean", "Yes or no.", excluded_common=frozenset({"unique"}),
                  coerce=coerce_boolean, example="{type: boolean, default: false}"),
        FieldType("date", "A calendar date; `default: today` is allowed.",
                  {"min": DATE_BOUND, "max": DATE_BOUND}, widens_to=frozenset({"datetime"}),
                  coerce=coerce_date, check_spec=check_date_bounds,
                  example="{type: date, default: today}"),
        FieldType("datetime", "A point in time with timezone; `default: now` is allowed.",
                  coerce=coerce_datetime, example="{type: datetime}"),
        FieldType("enum", "One value from a list of `options`, each with its own label.",
                  {"options": OPTIONS}, required_options=("options",),
                  widens_to=frozenset({"string"}), coerce=coerce_enum, check_spec=check_options,
                  example="{type: enum, options: [new, won, lost], default: new}"),
        FieldType("multi_enum", "Several values from a list of `options`.", {"options": OPTIONS},
                  required_options=("options",), excluded_common=frozenset({"unique"}),
                  coerce=coerce_multi_enum, check_spec=check_options,
                  example="{type: multi_enum, options: [vip, partner]}"),
        FieldType("email", "An e-mail address (stored lower-cased for matching).", text_like,
                  coerce=_matching(_EMAIL_RE, "e-mail address"), example="{type: email}"),
        FieldType("phone", "A phone number; E.164 (`+886912345678`) is recommended.", text_like,
                  coerce=_matching(_PHONE_RE, "phone number"), example="{type: phone}"),
        FieldType("url", "A web address (http or https).", text_like,
                  coerce=_matching(_URL_RE, "web address"), example="{type: url}"),
        FieldType("json", "Free-form structured data.", excluded_common=frozenset(
                  {"unique", "index"}), coerce=coerce_json, example="{type: json}"),
        FieldType("uuid", "A universally unique identifier.", coerce=coerce_uuid,
                  example="{type: uuid, unique: true}"),
        FieldType("reference", "Many-to-one link to a record of another entity (`to`).",
                  {"to": ENTITY_REF, "on_delete": {"enum": ["restrict", "cascade", "set_null"],
                   "description": "What happens when the referenced record is deleted."}},
                  required_options=("to",), excluded_common=frozenset({"default"}),
                  example="{type: reference, to: customer.customer, on_delete: restrict}"),
        FieldType("user", "A user of the tenant, by id (an assignee, a reviewer); the "
                  "`assigned` permission scope matches records where it is the caller.",
                  excluded_common=frozenset({"default", "unique"}), example="{type: user}"),
        FieldType("children", "The read side of a reference: records of `of` whose `via` "
                  "field points here.", {"of": ENTITY_REF, "via": {"$ref": "#/$defs/identifier"}},
                  required_options=("of", "via"), excluded_common=NOT_VALUE, stored=False,
                  example="{type: children, of: ocrm.activity, via: lead}"),
        FieldType("many_to_many", "Links to many records of `to`, through a link table.",
                  {"to": ENTITY_REF}, required_options=("to",), excluded_common=NOT_VALUE,
                  stored=False, example="{type: many_to_many, to: customer.tag}"),
        FieldType("autonumber", "A number filled in on create from a `pattern` such as "
                  "`L-{YYYY}-{#####}`.", {"pattern": {"type": "string"}},
                  required_options=("pattern",), excluded_common=frozenset(
                      {"default", "required"}), check_spec=check_autonumber,
                  example='{type: autonumber, pattern: "L-{YYYY}-{#####}"}'),
        FieldType("formula", "Read-only value computed from other fields by an `expression` "
                  "(a small sandboxed language, never Python); `returns` names its type.",
                  {"expression": {"type": "string", "maxLength": 2000},
                   "returns": {"enum": ["string", "integer", "decimal", "boolean", "date",
                                        "datetime"]}},
                  required_options=("expression",), excluded_common=NOT_VALUE, stored=False,
                  check_spec=check_formula,
                  example='{type: formula, expression: "amount * probability / 100"}'),
    ]


@hookimpl
def register_field_types() -> list[FieldType]:
    return builtin_field_types()
