"""Around one record: its children, the records referencing it, its links, its history.

Every read goes through the visitor's RecordService, so a related list holds only the
records they may read; a relation they cannot see at all is simply left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..metadata.ir import Entity
from ..platform.records import ListQuery, NotFound, RecordError, RecordService
from .display import Display, user_names
from .i18n import Translator

RELATED_LIMIT = 20
LINKS_MAX = 500
RecordUrl = Callable[[str, int], str]
NewUrl = Callable[[str, Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class RelatedRow:
    id: int
    title: str
    url: str


@dataclass(frozen=True, slots=True)
class RelatedList:
    """Up to RELATED_LIMIT records of `entity` whose `field` points at the record."""

    label: str
    entity: str
    field: str
    rows: tuple[RelatedRow, ...]
    count: int | None
    add_url: str | None


@dataclass(frozen=True, slots=True)
class Change:
    label: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class HistoryRow:
    when: str
    who: str
    kind: str  # created, updated, deleted, ...
    action: str  # the kind in the visitor's words
    changes: tuple[Change, ...]


def related_lists(service: RecordService, display: Display, key: str, record_id: int,
                  t: Translator, record_url: RecordUrl, new_url: NewUrl
                  ) -> tuple[list[RelatedList], list[RelatedList]]:
    """(children, referencing): the entity's `children` fields first, then every other
    reference to the record (Registry.incoming) the visitor may read."""
    entity = service.access(key).entity
    children, seen = [], set()
    for found in entity.fields:
        if found.type != "children" or found.hidden or not found.target or not found.via:
            continue
        seen.add((found.target, found.via))
        made = _related(service, display, found.target, found.via, record_id,
                        t.text(found.label, found.name), record_url, new_url)
        if made is not None:
            children.append(made)
    referencing = []
    for relation in service.registry.incoming(key):
        if relation.kind != "reference" or (relation.source, relation.field) in seen:
            continue
        try:
            source = service.access(relation.source).entity
        except NotFound:
            continue
        via = source.get_field(relation.field)
        if via is None or via.hidden:
            continue
        label = t("referenced_by", entity=t.text(source.label, source.name),
                  field=t.text(via.label, via.name))
        made = _related(service, display, relation.source, relation.field, record_id, label,
                        record_url, new_url)
        if made is not None:
            referencing.append(made)
    return children, referencing


def _related(service: RecordService, display: Display, source: str, via: str,
             record_id: int, label: str, record_url: RecordUrl,
             new_url: NewUrl) -> RelatedList | None:
    try:
        entity = service.access(source).entity
        page = service.list(source, ListQuery(
            filter={"field": via, "op": "eq", "value": record_id}, limit=RELATED_LIMIT,
            count=True))
    except RecordError:  # the visitor may not read them, or not test that field
        return None
    rows = tuple(RelatedRow(item["id"], display.title(entity, item),
                            record_url(source, item["id"])) for item in page.items)
    can_create = service.guard is None or service.guard.can(source, "create")
    return RelatedList(label, source, via, rows, page.count,
                       new_url(source, {via: record_id}) if can_create else None)


def linked_ids(service: RecordService, key: str, record_id: int,
               names: Iterable[str]) -> dict[str, list[int]]:
    """The ids each many_to_many field of a readable record links to."""
    names = list(names)
    if not names:
        return {}
    return service.links(key, record_id, names)


def titles(service: RecordService, display: Display, target: str,
           ids: Iterable[int]) -> dict[int, str]:
    """Titles of the records of `target` among `ids` that the visitor may read."""
    wanted = sorted({i for i in ids if isinstance(i, int)})[:LINKS_MAX]
    if not wanted:
        return {}
    try:
        entity = service.access(target).entity
        page = service.list(target, ListQuery(filter={"field": "id", "op": "in",
                                                      "value": wanted}, limit=LINKS_MAX))
    except RecordError:
        return {}
    return {item["id"]: display.title(entity, item) for item in page.items}


def history(service: RecordService, display: Display, entity: Entity, key: str,
            record_id: int, t: Translator) -> list[HistoryRow]:
    """The record's audit trail, newest first, in the visitor's words."""
    entries = service.history(key, record_id)
    names = user_names(service.runtime, (e.get("actor") for e in entries))
    linked = _linked_titles(service, display, entity, entries)
    rows = []
    for entry in reversed(entries):
        changes = []
        for name, change in (entry.get("changes") or {}).items():
            found = entity.get_field(name)
            if found is not None and found.hidden:
                continue
            before, after = (change.get("before"), change.get("after")) if isinstance(
                change, Mapping) else (None, change)
            if name in linked:
                before, after = (_names(v, linked[name]) for v in (before, after))
                changes.append(Change(display.label(found, name), before, after))
                continue
            changes.append(Change(display.label(found, name), _text(display, found, before),
                                  _text(display, found, after)))
        actor = entry.get("actor")
        rows.append(HistoryRow(display.local_time(entry.get("at")),
                               names.get(actor, f"#{actor}") if actor else t("system"),
                               str(entry.get("action")), t(f"audit_{entry.get('action')}"),
                               tuple(changes)))
    return rows


def _linked_titles(service: RecordService, display: Display, entity: Entity,
                   entries: list[dict[str, Any]]) -> dict[str, dict[int, str]]:
    """Per many_to_many field in the history, the titles of the records it linked."""
    ids: dict[str, set[int]] = {}
    for entry in entries:
        for name, change in (entry.get("changes") or {}).items():
            found = entity.get_field(name)
            if found is None or found.type != "many_to_many" or not isinstance(change, Mapping):
                continue
            for value in (change.get("before"), change.get("after")):
                ids.setdefault(name, set()).update(
                    i for i in value or () if isinstance(i, int))
    return {name: titles(service, display, entity.field(name).target or "", found)
            for name, found in ids.items()}


def _names(value: Any, known: Mapping[int, str]) -> str:
    return ", ".join(known.get(i, f"#{i}") for i in value or ())


def _text(display: Display, found: Any, value: Any) -> str:
    if value is None:
        return ""
    if found is None:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return display.text(found, value)


def workflow_state(registry: Any, key: str, record: Mapping[str, Any]) -> Any:
    """The record's workflow state, once workflows exist (None: the entity has none)."""
    workflows = getattr(registry, "workflows", None) or {}
    return next((w for w in workflows.values() if getattr(w, "entity", None) == key), None)
