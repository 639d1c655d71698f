"""Record values as people read them: option labels, local times, user names, titles."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..metadata.ir import Entity, Field
from ..platform.systables import runtime_system_tables
from .i18n import Translator

SYSTEM_COLUMNS = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner",
                  "business_unit", "row_version", "deleted_at")
USER_COLUMNS = frozenset({"created_by", "updated_by", "owner"})
TIME_COLUMNS = frozenset({"created_at", "updated_at", "deleted_at"})
TITLE_PART = re.compile(r"\{(\w+)\}")
RecordUrl = Callable[[str, int], str]
USER_CHOICES_MAX = 1000


@dataclass(frozen=True, slots=True)
class Cell:
    """A value to show: its text and, for a link to a record, the record's URL."""

    text: str
    url: str | None = None


def user_names(runtime: Any, ids: Iterable[Any]) -> dict[int, str]:
    """Display names of users by id (one query)."""
    wanted = sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool)})
    if not wanted:
        return {}
    users = runtime_system_tables(runtime).users
    with runtime.connect() as connection:
        rows = connection.execute(sa.select(users.c.id, users.c.display_name).where(
            users.c.id.in_(wanted))).all()
    return {r.id: r.display_name for r in rows}


def active_users(runtime: Any) -> list[tuple[int, str]]:
    """Active users (id, display name) for `user` fields, by name."""
    users = runtime_system_tables(runtime).users
    with runtime.connect() as connection:
        rows = connection.execute(sa.select(users.c.id, users.c.display_name).where(
            users.c.active.is_(True)).order_by(users.c.display_name, users.c.id).limit(
            USER_CHOICES_MAX)).all()
    return [(r.id, r.display_name) for r in rows]

def user_ids_in(entity: Entity, records: Iterable[Mapping[str, Any]],
                shown: Iterable[str] | None = None) -> set[int]:
    """The user ids the records' user fields and system user columns hold (only those of
    the `shown` fields and of the entity's title, when given: a list needs no others)."""
    names = [f.name for f in entity.fields if f.type == "user"] + sorted(USER_COLUMNS)
    if shown is not None:
        wanted = set(shown) | set(TITLE_PART.findall(entity.title or ""))
        names = [n for n in names if n in wanted]
    return {r.get(n) for r in records for n in names if isinstance(r.get(n), int)}


class Display:
    """Formats values for one visitor: their locale, the tenant's timezone, user names."""

    def __init__(self, t: Translator, timezone: str, users: Mapping[int, str] | None = None,
                 record_url: RecordUrl | None = None,
                 entity_of: Callable[[str], Entity | None] | None = None) -> None:
        self.t = t
        self.zone = ZoneInfo(timezone)
        self.users = dict(users or {})
        self.record_url = record_url
        self.entity_of = entity_of

    def label(self, field: Field | None, name: str) -> str:
        """A field's label, or a system column's."""
        if field is not None:
            return self.t.text(field.label, name)
        if name in SYSTEM_COLUMNS:
            return self.t(f"col_{name}")
        return name.replace("_", " ").capitalize()

    def cell(self, field: Field | None, name: str, value: Any) -> Cell:
        """One value, formatted; references link to their record."""
        if isinstance(value, Mapping) and field is not None and field.type == "reference":
            ident = value.get("id")
            if len(value) > 1 and field.target:
                return Cell(self.title_of(field.target, value), self._url(field.target, ident))
            return Cell(f"#{ident}")  # expanded to its id only: the visitor may not read it
        if value is None or value == "" or value == []:
            return Cell("")
        if field is None:
            return Cell(self._system(name, value))
        if field.type == "reference":
            return Cell(f"#{value}", self._url(field.target, value))
        return Cell(self.text(field, value))

    def text(self, field: Field, value: Any) -> str:
        kind = field.type if field.formula is None else (field.returns or "decimal")
        if value is None:
            return ""
        if kind == "boolean":
            return self.t("yes") if value else self.t("no")
        if kind in ("enum", "multi_enum"):
            values = value if isinstance(value, list | tuple) else [value]
            return ", ".join(self._option(field, v) for v in values)
        if kind == "money":
            return f"{value} {field.currency}" if field.currency else str(value)
        if kind == "datetime":
            return self.local_time(value)
        if kind == "user":
            return self.users.get(value, f"#{value}")
        if kind == "json":
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        if kind == "many_to_many" and isinstance(value, list | tuple):
            return ", ".join(f"#{v}" for v in value)
        return str(value)

    def _option(self, field: Field, value: Any) -> str:
        option = field.option(value) if isinstance(value, str) else None
        return self.t.text(option.label, str(value)) if option is not None else str(value)

    def _system(self, name: str, value: Any) -> str:
        if name in USER_COLUMNS:
            return self.users.get(value, f"#{value}")
        if name in TIME_COLUMNS:
            return self.local_time(value)
        return str(value)

    def local_time(self, value: Any) -> str:
        """An ISO timestamp in the tenant's timezone, to the minute."""
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def _url(self, entity_key: str | None, record_id: Any) -> str | None:
        if self.record_url is None or entity_key is None or not isinstance(record_id, int):
            return None
        return self.record_url(entity_key, record_id)

    # -- titles -------------------------------------------------------------------------------

    def title(self, entity: Entity, record: Mapping[str, Any]) -> str:
        """The record's title from the entity's `title` pattern, else "<label> #<id>"."""
        ident = record.get("id")
        if entity.title:
            def part(match: re.Match[str]) -> str:
                found = entity.get_field(match.group(1))
                value = record.get(match.group(1))
                if found is None:
                    return "" if value is None else str(value)
                return self.cell(found, found.name, value).text

            made = TITLE_PART.sub(part, entity.title).strip(" ·:-,")
            if made:
                return made
        return f"{self.t.text(entity.label, entity.name)} #{ident}"

    def title_of(self, entity_key: str, record: Mapping[str, Any]) -> str:
        """The title of a record of `entity_key` (as the visitor sees that entity)."""
        entity = self.entity_of(entity_key) if self.entity_of is not None else None
        if entity is None:
            return f"#{record.get('id')}"
        return self.title(entity, record)

