"""Merging two records of one entity: survivorship, re-pointed references, the merge log.

`merge_records` runs in one transaction, as the acting user: it needs `update` on the
winner and `delete` on the loser (each within its scope), and refuses to merge two
records whose identity was verified (a true `identified` field on both) unless forced by
someone who may change that field. The winner takes the chosen values; every record of
every entity that references the loser (and every many_to_many link to it) is pointed at
the winner; the loser is soft-deleted; `_metacrm_merges` keeps the loser's full record,
the choices and the counts moved; audit entries are written for every changed record and
`record_writing` hooks run for each, then `record_event`s go out after commit.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ...platform.events import RecordEvent
from ...platform.records import (
    ID_MAX,
    Conflict,
    Forbidden,
    NotFound,
    RecordService,
    ValidationFailed,
    write_audit,
)
from .rules import IDENTITY_FIELD
from .tables import MERGES, REVIEWS

NOT_MERGED = frozenset({"children", "formula", "autonumber"})
CHOICES = ("winner", "loser")
UNION = "union"


@dataclass(frozen=True, slots=True)
class MergeResult:
    merge_id: int
    winner: dict[str, Any]
    loser_id: int
    fields: dict[str, str]
    moved: dict[str, int]


def jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def merge_records(service: RecordService, entity_key: str, winner_id: Any, loser_id: Any,
                  choices: Any = None, *, force: bool = False) -> MergeResult:
    """Merge `loser_id` into `winner_id` (see the module docstring)."""
    service.require(entity_key, "update")
    service.require(entity_key, "delete")
    for name, value in (("winner", winner_id), ("loser", loser_id)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ID_MAX:
            raise ValidationFailed(f"`{name}` is the id of a {entity_key}",
                                   {name: ["a record id"]})
    if winner_id == loser_id:
        raise ValidationFailed("a record cannot be merged with itself",
                               {"loser": ["the same record as the winner"]})
    access = service.access(entity_key)
    plan = _field_plan(service, entity_key, choices or {})
    runtime = service.runtime
    table = access.table
    now = dt.datetime.now(dt.UTC)
    actor = service.actor.user_id
    events: list[RecordEvent] = []
    with runtime.begin() as connection:
        rows = _locked_rows(connection, table, (winner_id, loser_id))
        winner, loser = rows.get(winner_id), rows.get(loser_id)
        for record_id, row, action in ((winner_id, winner, "update"),
                                       (loser_id, loser, "delete")):
            _check(service, connection, entity_key, record_id, row, action)
        assert winner is not None and loser is not None
        _check_identities(access, entity_key, winner, loser, force)
        flags = {f.name for f in access.entity.fields if f.type == "boolean"}
        chosen = {name: _choice(choice, winner.get(name), loser.get(name), name in flags)
                  for name, choice in plan.items()}
        values = {name: loser[name] for name, choice in chosen.items()
                  if choice == "loser" and name in table.c and loser[name] != winner[name]}
        unique = [n for n in values if table.c[n].unique or _unique_index(table, n)]
        if unique:  # the loser lets go of unique values first, or the winner cannot take them
            connection.execute(table.update().where(table.c.id == loser_id).values(
                dict.fromkeys(unique)))
        links = _merge_links(service, connection, entity_key, winner_id, loser_id, chosen)
        changes: dict[str, tuple[Any, Any]] = {
            n: (jsonable(winner[n]), jsonable(values[n])) for n in values}
        changes.update(links)
        connection.execute(table.update().where(table.c.id == winner_id).values(
            **values, updated_at=now, updated_by=actor, row_version=winner["row_version"] + 1))
        loser_record = {k: jsonable(v) for k, v in loser.items()}
        loser_record.update(_all_links(service, connection, entity_key, loser_id))
        connection.execute(table.update().where(table.c.id == loser_id).values(
            deleted_at=now, updated_at=now, updated_by=actor,
            row_version=loser["row_version"] + 1))
        deleted_changes = {"deleted_at": (None, now.isoformat()), "merged_into": (None, winner_id)}
        write_audit(connection, service.system, entity_key, loser_id, "deleted", actor,
                    deleted_changes, now)
        events.append(_event(service, entity_key, loser_id, "deleted", connection, access,
                             deleted_changes, now))
        moved, moved_events = _repoint(service, connection, entity_key, winner_id, loser_id,
                                       now)
        merged_changes = {**changes, "merged_from": (None, loser_id)}
        write_audit(connection, service.system, entity_key, winner_id, "merged", actor,
                    merged_changes, now)
        events.append(_event(service, entity_key, winner_id, "updated", connection, access,
                             changes, now))
        events.extend(moved_events)
        for event in events:
            hooks = runtime.hooks
            if hooks is not None:
                hooks.record_writing(event=event, connection=connection, service=service)
        _settle_reviews(service, connection, entity_key, winner_id, loser_id, now)
        merges = service.system.table(MERGES)
        merge_id = connection.execute(merges.insert().values(
            entity=entity_key, winner_id=winner_id, loser_id=loser_id, loser=loser_record,
            fields=chosen, moved=moved, actor=actor, at=now).returning(merges.c.id)).scalar_one()
    for event in events:
        _deliver(service, event)
    return MergeResult(merge_id, service.get(entity_key, winner_id), loser_id, chosen, moved)


# -- steps ---------------------------------------------------------------------------------------

def _field_plan(service: RecordService, entity_key: str, choices: Any) -> dict[str, str]:
    """Every field the merge decides: the caller's choices, else the default rule
    (`winner`: the winner's value unless empty; many_to_many: `union`)."""
    if not isinstance(choices, Mapping):
        raise ValidationFailed("`fields` maps field names to \"winner\" or \"loser\"",
                               {"fields": ["an object"]})
    access = service.access(entity_key)
    mergeable = {f.name: f for f in access.entity.fields
                 if f.type not in NOT_MERGED and (f.stored or f.type == "many_to_many")}
    errors: dict[str, list[str]] = {}
    for name, choice in choices.items():
        field = mergeable.get(name)
        if field is None:
            errors[name] = ["not a field the merge can take from either record"]
        elif choice not in CHOICES + ((UNION,) if field.type == "many_to_many" else ()):
            errors[name] = ["\"winner\" or \"loser\"" + (
                " or \"union\"" if field.type == "many_to_many" else "")]
    if errors:
        raise ValidationFailed("some field choices are not valid", errors)
    refused = sorted(n for n, c in choices.items() if c != "winner" and n in access.read_only)
    if refused:
        raise Forbidden("your roles may read but not change " + ", ".join(
            f"`{n}`" for n in refused), {n: ["read-only for your roles"] for n in refused})
    plan = {}
    for name, field in mergeable.items():
        if name in access.read_only:
            plan[name] = "winner"
        else:
            plan[name] = choices.get(name, UNION if field.type == "many_to_many" else "auto")
    return plan


def _choice(choice: str, winner_value: Any, loser_value: Any, flag: bool = False) -> str:
    """The default rule: the winner's value unless it is empty; a flag (boolean) set on
    either record stays set (an opt-out, a verification is never lost by a merge)."""
    if choice != "auto":
        return choice
    if flag:
        return "loser" if loser_value is True and winner_value is not True else "winner"
    return "loser" if _empty(winner_value) and not _empty(loser_value) else "winner"


def _locked_rows(connection: sa.Connection, table: sa.Table,
                 ids: tuple[int, int]) -> dict[int, dict[str, Any]]:
    """Both live rows, locked in id order (two merges of the same records wait, not
    deadlock)."""
    statement = sa.select(table).where(table.c.id.in_(sorted(ids)),
                                       table.c.deleted_at.is_(None)).order_by(table.c.id)
    if connection.dialect.name == "postgresql":
        statement = statement.with_for_update()
    return {row["id"]: dict(row) for row in connection.execute(statement).mappings()}


def _check(service: RecordService, connection: sa.Connection, entity_key: str,
           record_id: int, row: Mapping[str, Any] | None, action: str) -> None:
    if row is None:
        raise NotFound(f"{entity_key} {record_id} does not exist")
    guard = service.guard
    if guard is None or guard.allows(connection, entity_key, action, row):
        return
    if guard.allows(connection, entity_key, "read", row):
        raise Forbidden(f"your roles do not allow `{action}` on {entity_key} {record_id}, "
                        f"which merging needs", action=action)
    raise NotFound(f"{entity_key} {record_id} does not exist")


def _check_identities(access: Any, entity_key: str, winner: Mapping[str, Any],
                      loser: Mapping[str, Any], force: bool) -> None:
    if not (winner.get(IDENTITY_FIELD) is True and loser.get(IDENTITY_FIELD) is True):
        return
    if not force:
        raise Conflict(f"both {entity_key} {winner['id']} and {loser['id']} are identified "
                       f"(`{IDENTITY_FIELD}`): two verified identities are never merged "
                       "unless you check they are one and send `force: true`",
                       {IDENTITY_FIELD: ["both records are identified"]})
    if access.entity.get_field(IDENTITY_FIELD) is None or IDENTITY_FIELD in access.read_only:
        raise Forbidden(f"forcing the merge of two identified records needs write access to "
                        f"`{IDENTITY_FIELD}`, which your roles do not give",
                        action="merge")


def _unique_index(table: sa.Table, name: str) -> bool:
    return any(index.unique and [c.name for c in index.columns] == [name]
               for index in table.indexes)


def _link_table(service: RecordService, entity_key: str, field_name: str) -> sa.Table:
    field = service.registry.entities[entity_key].field(field_name)
    return service.runtime.tables.by_id[field.id]


def _merge_links(service: RecordService, connection: sa.Connection, entity_key: str,
                 winner_id: int, loser_id: int,
                 chosen: Mapping[str, str]) -> dict[str, tuple[Any, Any]]:
    """The winner's many_to_many sets after the merge (union by default)."""
    changes = {}
    for name, choice in chosen.items():
        field = service.registry.entities[entity_key].get_field(name)
        if field is None or field.type != "many_to_many" or choice == "winner":
            continue
        link = _link_table(service, entity_key, name)
        have = _targets(connection, link, winner_id)
        theirs = _targets(connection, link, loser_id)
        wanted = have | theirs if choice == UNION else theirs
        if wanted == have:
            continue
        connection.execute(link.delete().where(link.c.source_id == winner_id,
                                               link.c.target_id.not_in(sorted(wanted))))
        new = sorted(wanted - have)
        if new:
            connection.execute(link.insert(), [{"source_id": winner_id, "target_id": t}
                                               for t in new])
        changes[name] = (sorted(have), sorted(wanted))
    return changes


def _targets(connection: sa.Connection, link: sa.Table, source_id: int) -> set[int]:
    return {t for (t,) in connection.execute(sa.select(link.c.target_id).where(
        link.c.source_id == source_id))}


def _all_links(service: RecordService, connection: sa.Connection, entity_key: str,
               record_id: int) -> dict[str, list[int]]:
    entity = service.registry.entities[entity_key]
    return {f.name: sorted(_targets(connection, _link_table(service, entity_key, f.name),
                                    record_id))
            for f in entity.fields if f.type == "many_to_many"}


def _repoint(service: RecordService, connection: sa.Connection, entity_key: str,
             winner_id: int, loser_id: int,
             now: dt.datetime) -> tuple[dict[str, int], list[RecordEvent]]:
    """Point every reference and link to the loser at the winner (deleted records too, so
    a restored one points at the surviving record). Returns counts and their events."""
    moved: dict[str, int] = {}
    events: list[RecordEvent] = []
    runtime = service.runtime
    for relation in service.registry.incoming(entity_key):
        source = runtime.tables.by_entity.get(relation.source)
        if source is None:
            continue
        label = f"{relation.source}.{relation.field}"
        if relation.kind == "reference":
            column = source.c[relation.field]
            ids = sorted(r for (r,) in connection.execute(sa.select(source.c.id).where(
                column == loser_id)))
            for start in range(0, len(ids), 1000):
                connection.execute(source.update().where(
                    source.c.id.in_(ids[start:start + 1000])).values(
                    {column.name: winner_id, "updated_at": now,
                     "updated_by": service.actor.user_id,
                     "row_version": source.c.row_version + 1}))
            for record_id in ids:
                change = {relation.field: (loser_id, winner_id)}
                write_audit(connection, service.system, relation.source, record_id,
                            "updated", service.actor.user_id, change, now)
                events.append(_event(service, relation.source, record_id, "updated",
                                     connection, None, change, now))
        else:
            link = _link_table(service, relation.source, relation.field)
            sources = sorted(s for (s,) in connection.execute(sa.select(
                link.c.source_id).where(link.c.target_id == loser_id)))
            both = {s for (s,) in connection.execute(sa.select(link.c.source_id).where(
                link.c.target_id == winner_id))} & set(sources)
            if both:
                connection.execute(link.delete().where(link.c.target_id == loser_id,
                                                       link.c.source_id.in_(sorted(both))))
            connection.execute(link.update().where(link.c.target_id == loser_id).values(
                target_id=winner_id))
            ids = sources
            for record_id in ids:
                change = {relation.field: ([loser_id], [winner_id])}
                write_audit(connection, service.system, relation.source, record_id,
                            "updated", service.actor.user_id, change, now)
        if ids:
            moved[label] = len(ids)
    return moved, events


def _settle_reviews(service: RecordService, connection: sa.Connection, entity_key: str,
                    winner_id: int, loser_id: int, now: dt.datetime) -> None:
    """The merged pair is closed as `merged`; the loser's other open pairs now concern the
    winner (or go, when the winner already has that pair)."""
    reviews = service.system.table(REVIEWS)
    low, high = sorted((winner_id, loser_id))
    connection.execute(reviews.update().where(
        reviews.c.entity == entity_key, reviews.c.record_a == low,
        reviews.c.record_b == high).values(status="merged", resolved_at=now,
                                            resolved_by=service.actor.user_id))
    involving = sa.or_(reviews.c.record_a == loser_id, reviews.c.record_b == loser_id)
    rows = connection.execute(sa.select(reviews).where(
        reviews.c.entity == entity_key, reviews.c.status == "open", involving)).mappings().all()
    for row in rows:
        other = row["record_b"] if row["record_a"] == loser_id else row["record_a"]
        connection.execute(reviews.delete().where(reviews.c.id == row["id"]))
        if other == winner_id:
            continue
        a, b = sorted((winner_id, other))
        exists = connection.execute(sa.select(reviews.c.id).where(
            reviews.c.entity == entity_key, reviews.c.record_a == a,
            reviews.c.record_b == b)).first()
        if exists is None:
            connection.execute(reviews.insert().values(
                entity=entity_key, record_a=a, record_b=b, rule=row["rule"], status="open",
                created_at=row["created_at"]))


def _event(service: RecordService, entity_key: str, record_id: int, kind: str,
           connection: sa.Connection, access: Any, changes: Mapping[str, tuple[Any, Any]],
           now: dt.datetime) -> RecordEvent:
    """The event of one changed record, with its record as stored after the change."""
    table = service.runtime.tables.by_entity[entity_key]
    row = connection.execute(sa.select(table).where(table.c.id == record_id)).mappings().one()
    record = {k: jsonable(v) for k, v in row.items()}
    return RecordEvent(service.runtime.slug, entity_key, record_id, kind,
                       service.actor.user_id, now, service.registry.version, record,
                       {k: (jsonable(b), jsonable(a)) for k, (b, a) in changes.items()},
                       service.actor.depth, None, service.actor.unit)


def _deliver(service: RecordService, event: RecordEvent) -> None:
    if service.emit is None:
        return
    try:
        service.emit(event)
    except Exception:  # committed: a failing listener must not turn the answer into an error
        import logging

        logging.getLogger(__name__).exception("a record_event listener failed after a merge")
