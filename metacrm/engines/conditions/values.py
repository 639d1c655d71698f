"""Values: condition literals coerced from JSON, record values normalised, both by field type.

Literals are checked once, when a condition is parsed; record values are normalised every
time one record is evaluated, so a record read from SQLite (naive UTC datetimes), from
PostgreSQL (aware ones) or from a JSON payload (ISO strings) all compare the same way.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .context import UTC, EvalContext

TEXT_TYPES = frozenset({"string", "text", "email", "phone", "url", "autonumber"})
NUMBER_TYPES = frozenset({"integer", "decimal", "money"})
DATE_TYPES = frozenset({"date", "datetime"})
ID_TYPES = frozenset({"reference", "user"})

SYSTEM_FIELD_TYPES: Mapping[str, str] = {
    "id": "integer", "created_at": "datetime", "created_by": "integer",
    "updated_at": "datetime", "updated_by": "integer", "owner": "integer",
    "business_unit": "string", "row_version": "integer",
}
"""System columns usable in conditions (``deleted_at`` is not: deleted records are
filtered by the platform, never by a condition)."""

INT64 = (-(2**63), 2**63 - 1)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected a whole number, got {_show(value)}")
    if isinstance(value, float | Decimal):
        whole = Decimal(str(value)) if isinstance(value, float) else value
        if not whole.is_finite() or whole != whole.to_integral_value():
            raise ValueError(f"expected a whole number, got {_show(value)}")
        value = int(whole)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {_show(value)}") from None
    if not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {_show(value)}")
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{value} is outside the range of whole numbers (64 bits)")
    return value


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TypeError(f"expected a number, got {_show(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"expected a number, got {_show(value)}") from None
    if not number.is_finite():
        raise ValueError(f"expected a finite number, got {_show(value)}")
    if abs(number.adjusted()) > 38:
        raise ValueError(f"{value} is outside the range of numbers (38 digits)")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {_show(value)}")
    if "\x00" in value:
        raise ValueError("text may not contain the NUL character")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_show(value)}")
    return value


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise TypeError(f"expected a date like 2025-01-31, got the timestamp {value.isoformat()}")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected a date like 2025-01-31, got {_show(value)}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{_show(value)} is not a date like 2025-01-31") from None


def _datetime(value: Any) -> dt.datetime:
    """An ISO timestamp (offset optional: without one it is tenant-local, resolved when the
    condition runs) or a date (its local midnight)."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp like 2025-01-31T09:00:00+08:00, got "
                        f"{_show(value)}")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{_show(value)} is not a timestamp like 2025-01-31T09:00:00+08:00"
                         ) from None


def _uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{_show(value)} is not a UUID") from None


def _reference(value: Any) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError(f"expected a record id (a positive whole number), got {number}")
    return number


LITERALS = {
    "integer": _integer, "decimal": _decimal, "money": _decimal, "boolean": _boolean,
    "date": _date, "datetime": _datetime, "uuid": _uuid, "reference": _reference,
    "user": _reference,
    **{name: _text for name in TEXT_TYPES},
}


def coerce_literal(value: Any, field_type: str, options: tuple[str, ...] = ()) -> Any:
    """`value` (from JSON or Python) as the field type's Python value.

    Raises TypeError or ValueError with a message meant for the condition's author.
    """
    if field_type in ("enum", "multi_enum"):
        text = _text(value)
        if text not in options:
            raise ValueError(f"{_show(text)} is not one of the options: {', '.join(options)}")
        return text
    convert = LITERALS.get(field_type, _passthrough)
    return convert(value)


def _passthrough(value: Any) -> Any:
    return value


def resolve_literal(value: Any, ctx: EvalContext) -> Any:
    """A parsed literal ready for a backend: local datetimes made aware, all in UTC."""
    if isinstance(value, dt.datetime):
        return ctx.local(value).astimezone(UTC)
    if isinstance(value, tuple):
        return tuple(resolve_literal(item, ctx) for item in value)
    return value


def normalise_record_value(value: Any, field_type: str) -> Any:
    """A value read from a record, in the form literals of `field_type` have.

    Naive datetimes are UTC (how the platform stores them); a nested record given for a
    reference field stands for its id.
    """
    if value is None:
        return None
    if field_type == "datetime":
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value
        if isinstance(value, dt.date):
            return dt.datetime.combine(value, dt.time(), tzinfo=UTC)
        return value
    if field_type == "date":
        if isinstance(value, str):
            return dt.date.fromisoformat(value)
        return value.date() if isinstance(value, dt.datetime) else value
    if field_type in ("decimal", "money"):
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if field_type == "reference":  # the stored id, even when that record is soft-deleted
        return value.get("id") if isinstance(value, Mapping) else value
    if field_type == "uuid":
        return str(uuid.UUID(str(value)))
    if field_type == "integer" and isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    return value


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 60 else text[:57] + "..."
