"""Field values between JSON (the record service's form), WTForms and query strings."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any
from zoneinfo import ZoneInfo

from ..metadata.ir import Entity, Field, thaw

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def to_json(found: Field, data: Any, zone: ZoneInfo) -> Any:
    """A WTForms value as the API's JSON value for the field (ValueError: unreadable)."""
    kind = found.type
    if isinstance(data, str) and kind not in ("json", "text"):
        data = data.strip()  # one-line inputs: stray spaces are not meant
    if data is None or data == "":
        return None
    if kind == "json":
        return json.loads(data) if data.strip() else None
    if kind in ("decimal", "money"):
        return str(data)
    if kind == "date":
        return data.isoformat()
    if kind == "datetime":  # local time in the tenant's timezone, sent as UTC
        return data.replace(tzinfo=zone).astimezone(dt.UTC).isoformat()
    if kind == "user":
        if not str(data).isdecimal():
            raise ValueError("not a user id")
        return int(data)
    if kind in ("multi_enum", "many_to_many"):
        return list(data)
    return data


def from_json(found: Field, value: Any, zone: ZoneInfo) -> Any:
    """A record's JSON value as the Python value the field's WTForms input takes."""
    if value is None:
        return [] if found.type in ("multi_enum", "many_to_many") else None
    kind = found.type
    try:
        if kind in ("decimal", "money"):
            return decimal.Decimal(str(value))
        if kind == "date":
            return dt.date.fromisoformat(str(value))
        if kind == "datetime":
            moment = dt.datetime.fromisoformat(str(value))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
            return moment.astimezone(zone).replace(tzinfo=None)
    except (ValueError, decimal.InvalidOperation):
        return None
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, indent=2)
    if kind == "user":
        return str(value)
    if kind in ("multi_enum", "many_to_many"):
        return list(value)
    return value


def defaults(entity: Entity, zone: ZoneInfo) -> dict[str, Any]:
    """The JSON values a new record starts with (the fields' defaults)."""
    now = dt.datetime.now(zone)
    out: dict[str, Any] = {}
    for found in entity.fields:
        if found.default is None:
            continue
        if found.default == "today" and found.type == "date":
            out[found.name] = now.date().isoformat()
        elif found.default == "now" and found.type == "datetime":
            out[found.name] = now.isoformat()
        else:
            out[found.name] = thaw(found.default)
    return out


def from_text(found: Field, raw: str) -> Any:
    """A query-string value (`?customer=5` on a new record) as the field's JSON value."""
    if found.type in ("integer", "reference", "user"):
        try:
            return int(raw)
        except ValueError:
            return None
    if found.type == "boolean":
        return raw.lower() in TRUE_WORDS
    if found.type == "many_to_many":
        ids = [part for part in raw.split(",") if part.strip().isdecimal()]
        return [int(i) for i in ids]
    return raw
