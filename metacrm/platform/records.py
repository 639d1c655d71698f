"""The record service: the one way the API, admin UI, CLI, workflows and rules write.

It validates with the generated marshmallow schemas, fills defaults and autonumbers,
computes formulas on read, enforces optimistic concurrency with the row version,
writes an audit entry for every change in the same transaction, and emits a
RecordEvent after commit.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..generators.schemas import EntitySchemas, build_entity_schemas
from ..metadata.fieldtypes import AUTONUMBER_TOKEN
from ..metadata.ir import Entity, Field, thaw
from .events import RecordEvent
from .systables import SystemTables, runtime_system_tables

SYSTEM_OUTPUT = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner",
                 "business_unit", "row_version", "deleted_at")
MAX_PAGE = 500
log = logging.getLogger(__name__)
COUNT_CAP = 10_000
ID_MAX = 2**63 - 1


class RecordError(Exception):
    """A request the record service refuses; the API turns it into problem+json."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, errors: Mapping[str, Any] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.errors = dict(errors or {})
        self.extra = extra


class NotFound(RecordError):
    status, title = 404, "Not found"


class ValidationFailed(RecordError):
    status, title = 422, "Validation failed"


class Conflict(RecordError):
    status, title = 409, "Conflict"


class PreconditionFailed(RecordError):
    status, title = 412, "Precondition failed"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a user id (None for the system) and their business unit."""

    user_id: int | None = None
    unit: str | None = None
    depth: int = 0


@dataclass(frozen=True, slots=True)
class ListQuery:
    filter: Any = None  # a parsed condition node
    sort: tuple[tuple[str, bool], ...] = ()  # (field, descending)
    limit: int = 50
    cursor: str | None = None
    fields: tuple[str, ...] | None = None
    expand: tuple[str, ...] = ()
    count: bool = False
    include_deleted: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    count: int | None = None
    count_exact: bool = True


@dataclass(slots=True)
class BulkResult:
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _same(value: Any, before: Any) -> bool:
    """Whether a validated input value equals a field's current (JSON) value."""
    if value is None or before is None:
        return value is None and before is None
    if isinstance(value, bool) or isinstance(before, bool):
        return value is before
    try:
        if isinstance(value, decimal.Decimal):
            return value == decimal.Decimal(str(before))
        if isinstance(value, dt.datetime):
            old = dt.datetime.fromisoformat(before)
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value == (old if old.tzinfo else old.replace(tzinfo=dt.UTC))
    except (ValueError, TypeError, decimal.InvalidOperation):
        return False
    return _jsonable(value) == before


CONVERTED_TYPES = frozenset({"decimal", "money", "date", "datetime", "uuid"})
CONVERTED_SYSTEM = frozenset({"created_at", "updated_at", "deleted_at"})


def _needs_conversion(name: str, field: Field | None) -> bool:
    """Whether a column's values need `_jsonable` on the way out (JSON has no such type)."""
    return field.type in CONVERTED_TYPES if field is not None else name in CONVERTED_SYSTEM


class EntityAccess:
    """Per entity and scope: table, schemas and the row → JSON conversion (built once)."""

    def __init__(self, entity: Entity, table: sa.Table, schemas: EntitySchemas):
        self.entity = entity
        self.table = table
        self.schemas = schemas
        self.columns = [c for c in table.c if c.name in SYSTEM_OUTPUT or
                        entity.get_field(c.name) is not None]
        self.column_names = frozenset(c.name for c in self.columns)
        self.converters = [(c.name, _jsonable if _needs_conversion(
            c.name, entity.get_field(c.name)) else None) for c in self.columns]
        self.formulas = [f for f in entity.fields if f.formula is not None]
        self.references = {f.name: f for f in entity.fields if f.type == "reference"}
        record_id = sa.bindparam("record_id")
        select = sa.select(*self.columns).where(table.c.id == record_id)
        # Built once: a statement object memoizes its cache key, so reuse skips recompiling.
        self.get_live = select.where(table.c.deleted_at.is_(None))
        self.get_any = select
        self.insert = table.insert().returning(*self.columns)
        self.exists = sa.select(table.c.id).where(table.c.id == record_id,
                                                  table.c.deleted_at.is_(None))
        self.many = {f.name: f for f in entity.fields if f.type == "many_to_many"}

    def to_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, convert in self.converters:
            value = row[name]
            out[name] = convert(value) if convert is not None and value is not None else value
        for formula_field in self.formulas:
            out[formula_field.name] = _evaluate_formula(formula_field, row)
        return out


def _evaluate_formula(field: Field, row: Mapping[str, Any]) -> Any:
    from ..metadata.formula import FormulaError

    try:
        value = field.formula.evaluate(row)  # type: ignore[union-attr]
    except FormulaError:
        return None
    return _jsonable(value)


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_jsonable(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError("the cursor is not valid; start again without it") from exc
    if not isinstance(values, list):
        raise RecordError("the cursor is not valid; start again without it")
    return values


class RecordService:
    """Record operations for one tenant runtime, acting as one actor."""

    def __init__(self, runtime: Any, actor: Actor | None = None,
                 emit: Callable[[RecordEvent], None] | None = None) -> None:
        self.runtime = runtime
        self.actor = actor or Actor()
        self.emit = emit
        self.registry = runtime.registry
        self.scope = self.registry.scope(self.actor.unit)
        self.system: SystemTables = runtime_system_tables(runtime)
        self._access: dict[str, EntityAccess] = {}

    # -- metadata -----------------------------------------------------------------------------

    def access(self, entity_key: str) -> EntityAccess:
        found = self._access.get(entity_key)
        if found is None:
            found = _access_for(self.runtime, entity_key, self.actor.unit)
            self._access[entity_key] = found
        return found

    # -- reads --------------------------------------------------------------------------------

    def get(self, entity_key: str, record_id: int, *, include_deleted: bool = False,
            expand: Sequence[str] = ()) -> dict[str, Any]:
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        query = access.get_any if include_deleted else access.get_live
        with self.runtime.connect() as connection:
            row = connection.execute(query, {"record_id": record_id}).mappings().first()
            if row is None:
                raise NotFound(f"{entity_key} {record_id} does not exist")
            item = access.to_json(row)
            self._expand(connection, access, [item], expand)
        return item

    def list(self, entity_key: str, query: ListQuery, *,
             where: sa.ColumnElement[bool] | None = None) -> Page:
        access = self.access(entity_key)
        table = access.table
        limit = max(1, min(query.limit, MAX_PAGE))
        keys = self._sort_keys(access, query.sort)
        statement = sa.select(*access.columns)
        conditions = []
        if not query.include_deleted:
            conditions.append(table.c.deleted_at.is_(None))
        if where is not None:
            conditions.append(where)
        base_conditions = list(conditions)
        if query.cursor:
            conditions.append(_after(keys, decode_cursor(query.cursor)))
        statement = statement.where(*conditions).order_by(
            *[(expr.desc() if desc else expr.asc()) for expr, desc, _ in keys]).limit(limit + 1)
        with self.runtime.connect() as connection:
            rows = connection.execute(statement).mappings().all()
            more = len(rows) > limit
            rows = rows[:limit]
            items = [access.to_json(r) for r in rows]
            self._expand(connection, access, items, query.expand)
            count, exact = None, True
            if query.count:
                capped = sa.select(sa.literal(1)).select_from(table).where(
                    *base_conditions).limit(COUNT_CAP + 1).subquery()
                count = connection.execute(sa.select(sa.func.count()).select_from(capped)).scalar()
                exact = count <= COUNT_CAP
                count = min(count, COUNT_CAP)
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = encode_cursor([getter(last) for _, _, getter in keys])
        if query.fields is not None:
            # id and row_version always: a client needs both to write the record back
            wanted = set(query.fields) | {"id", "row_version"} | set(query.expand)
            items = [{k: v for k, v in item.items() if k in wanted} for item in items]
        return Page(items, next_cursor, count, exact)

    def _sort_keys(self, access: EntityAccess, sort: Sequence[tuple[str, bool]]):
        table = access.table
        keys = []
        for name, desc in sort:
            if name == "id":  # unique: it ends the order, in the direction asked
                keys.append((table.c.id, desc, lambda row: row["id"]))
                return keys
            field_def = access.entity.get_field(name)
            if name not in access.column_names or (
                    field_def is not None and field_def.type in ("json", "multi_enum")):
                raise RecordError(f"cannot sort by `{name}`: not a sortable field",
                                  {"sort": [f"`{name}` is not a sortable field"]})
            column = table.c[name]
            if column.nullable:  # NULLs last in either direction: the flag always ascends
                flag = sa.case((column.is_(None), 1), else_=0)
                keys.append((flag, False, lambda row, n=name: 1 if row[n] is None else 0))
            keys.append((column, desc, lambda row, n=name: row[n]))
        keys.append((table.c.id, False, lambda row: row["id"]))  # ties: oldest first
        return keys

    def _expand(self, connection: sa.Connection, access: EntityAccess,
                items: list[dict[str, Any]], expand: Sequence[str]) -> None:
        for name in expand:
            ref = access.references.get(name)
            if ref is None:
                raise ValidationFailed(f"cannot expand `{name}`: it is not a reference field",
                                       {"expand": [f"unknown reference `{name}`"]})
            target = self.access(ref.target)  # type: ignore[arg-type]
            ids = {item[name] for item in items if item.get(name) is not None}
            found: dict[int, dict[str, Any]] = {}
            if ids:
                rows = connection.execute(sa.select(*target.columns).where(
                    target.table.c.id.in_(sorted(ids)),
                    target.table.c.deleted_at.is_(None))).mappings()
                found = {r["id"]: target.to_json(r) for r in rows}
            for item in items:
                if item.get(name) is not None:
                    item[name] = found.get(item[name], {"id": item[name]})

    # -- writes -------------------------------------------------------------------------------

    def _validate(self, schema: ma.Schema, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise ValidationFailed("the body must be a JSON object of field values")
        try:
            return schema.load(data)
        except ma.ValidationError as exc:
            errors = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
            for key, messages in list(errors.items()):
                if messages == ["Unknown field."]:
                    errors[key] = ["is not a writable field of this entity"]
            raise ValidationFailed("some fields are not valid", errors) from exc

    def _defaults(self, access: EntityAccess, values: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC)
        for f in access.entity.fields:
            if f.name in values or f.default is None or not f.stored:
                continue
            if f.default == "today":
                values[f.name] = now.date()
            elif f.default == "now":
                values[f.name] = now
            elif f.type in ("decimal", "money"):
                values[f.name] = decimal.Decimal(str(f.default))
            elif f.type in ("date",) and isinstance(f.default, str):
                values[f.name] = dt.date.fromisoformat(f.default)
            else:
                values[f.name] = thaw(f.default)

    def _autonumbers(self, connection: sa.Connection, access: EntityAccess,
                     values: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC)
        for f in access.entity.fields:
            if f.type != "autonumber" or not f.autonumber or values.get(f.name):
                continue
            tokens = AUTONUMBER_TOKEN.findall(f.autonumber)
            period = "".join(now.strftime({"YYYY": "%Y", "YY": "%y", "MM": "%m",
                                           "DD": "%d"}[t]) for t in tokens
                             if t in ("YYYY", "YY", "MM", "DD"))
            number = self._next_counter(connection, f"{f.id}:{period}")
            values[f.name] = _format_autonumber(f.autonumber, now, number)

    def _next_counter(self, connection: sa.Connection, key: str) -> int:
        counters = self.system.counters
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(counters).values(key=key, value=1)
        statement = statement.on_conflict_do_update(
            index_elements=[counters.c.key], set_={"value": counters.c.value + 1}
        ).returning(counters.c.value)
        return int(connection.execute(statement).scalar_one())

    def create(self, entity_key: str, data: Any) -> dict[str, Any]:
        access = self.access(entity_key)
        values = self._validate(access.schemas.create, data)
        links = {k: values.pop(k) for k in list(values) if k in access.many}
        self._defaults(access, values)
        now = dt.datetime.now(dt.UTC)
        system = {"created_at": now, "updated_at": now, "created_by": self.actor.user_id,
                  "updated_by": self.actor.user_id, "owner": self.actor.user_id,
                  "business_unit": self.actor.unit, "row_version": 1}
        with self.runtime.begin() as connection:
            self._autonumbers(connection, access, values)
            self._check_references(connection, access, {**values, **links})
            try:
                row = connection.execute(access.insert, {**values, **system}).mappings().one()
            except sa.exc.IntegrityError as exc:
                raise _integrity(exc, access) from exc
            record_id = row["id"]
            self._write_links(connection, access, record_id, links, replace=False)
            record = access.to_json(row)
            changes = {k: (None, record.get(k)) for k in values}
            changes.update({k: (None, sorted(set(v))) for k, v in links.items()})
            self._audit(connection, entity_key, record_id, "created", changes, now)
        self._emit(entity_key, record_id, "created", record, changes, now)
        return record

    def update(self, entity_key: str, record_id: int, data: Any, *,
               expected_version: int | None = None) -> dict[str, Any]:
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        values = self._validate(access.schemas.update, data)
        body_version = values.pop("row_version", None)
        expected = expected_version if expected_version is not None else body_version
        links = {k: values.pop(k) for k in list(values) if k in access.many}
        table = access.table
        now = dt.datetime.now(dt.UTC)
        with self.runtime.begin() as connection:
            current = connection.execute(sa.select(*access.columns).where(
                table.c.id == record_id, table.c.deleted_at.is_(None))).mappings().first()
            if current is None:
                raise NotFound(f"{entity_key} {record_id} does not exist")
            version = current["row_version"]
            if expected is not None and expected != version:
                raise PreconditionFailed(
                    f"{entity_key} {record_id} was changed by someone else (version {version}, "
                    f"you sent {expected}); reload it and apply your change again",
                    current_version=version)
            before = access.to_json(current)
            self._check_references(connection, access, {**values, **links})
            changed = {k: v for k, v in values.items() if not _same(v, before.get(k))}
            old_links = self._read_links(connection, access, record_id, links)
            links = {k: sorted(set(v)) for k, v in links.items()
                     if sorted(set(v)) != old_links[k]}  # only the sets that change
            if changed or links:
                try:
                    result = connection.execute(table.update().where(
                        table.c.id == record_id, table.c.row_version == version).values(
                        **changed, updated_at=now, updated_by=self.actor.user_id,
                        row_version=version + 1))
                except sa.exc.IntegrityError as exc:
                    raise _integrity(exc, access) from exc
                if result.rowcount != 1:
                    raise PreconditionFailed(f"{entity_key} {record_id} was changed by someone "
                                             "else; reload it and apply your change again")
                self._write_links(connection, access, record_id, links, replace=True)
            row = connection.execute(sa.select(*access.columns).where(
                table.c.id == record_id)).mappings().one()
            record = access.to_json(row)
            changes = {k: (before.get(k), record.get(k)) for k in changed}
            changes.update({k: (old_links[k], v) for k, v in links.items()})
            if changes:
                self._audit(connection, entity_key, record_id, "updated", changes, now)
        if changes:
            self._emit(entity_key, record_id, "updated", record, changes, now)
        return record

    def delete(self, entity_key: str, record_id: int, *,
               expected_version: int | None = None) -> None:
        self._soft(entity_key, record_id, expected_version, deleting=True)

    def restore(self, entity_key: str, record_id: int) -> dict[str, Any]:
        return self._soft(entity_key, record_id, None, deleting=False)

    def _soft(self, entity_key: str, record_id: int, expected: int | None,
              deleting: bool) -> dict[str, Any]:
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        table = access.table
        now = dt.datetime.now(dt.UTC)
        state = table.c.deleted_at.is_(None) if deleting else table.c.deleted_at.is_not(None)
        with self.runtime.begin() as connection:
            current = connection.execute(sa.select(table.c.row_version, table.c.deleted_at)
                                         .where(table.c.id == record_id)).first()
            if current is None or (current.deleted_at is None) != deleting:
                what = "does not exist" if current is None else (
                    "is already deleted" if deleting else "is not deleted")
                raise NotFound(f"{entity_key} {record_id} {what}")
            if expected is not None and expected != current.row_version:
                raise PreconditionFailed(f"{entity_key} {record_id} was changed by someone else",
                                         current_version=current.row_version)
            try:
                connection.execute(table.update().where(table.c.id == record_id, state).values(
                    deleted_at=now if deleting else None, updated_at=now,
                    updated_by=self.actor.user_id, row_version=current.row_version + 1))
            except sa.exc.IntegrityError as exc:
                raise _integrity(exc, access) from exc
            row = connection.execute(sa.select(*access.columns).where(
                table.c.id == record_id)).mappings().one()
            record = access.to_json(row)
            kind = "deleted" if deleting else "restored"
            changes = {"deleted_at": (None if deleting else _jsonable(current.deleted_at),
                                      record["deleted_at"])}
            self._audit(connection, entity_key, record_id, kind, changes, now)
        self._emit(entity_key, record_id, kind, record, changes, now)
        return record

    def bulk_upsert(self, entity_key: str, rows: Sequence[Any], *,
                    key: str | None = None) -> BulkResult:
        """Create rows, or update those whose `key` field matches an existing record."""
        access = self.access(entity_key)
        result = BulkResult()
        if key is not None:
            key_field = access.entity.get_field(key)
            if key_field is None or not key_field.unique or \
                    key not in access.schemas.update.fields:
                raise ValidationFailed(f"`{key}` is not a unique field of {entity_key}, so it "
                                       "cannot match records", {"key": ["not a unique field"]})
        for index, data in enumerate(rows):
            try:
                existing = None
                if key is not None and isinstance(data, Mapping) and data.get(key) is not None:
                    try:  # the key's value is checked before it reaches SQL
                        value = access.schemas.update.fields[key].deserialize(data[key])
                    except ma.ValidationError as exc:
                        raise ValidationFailed("some fields are not valid",
                                               {key: exc.messages}) from exc
                    with self.runtime.connect() as connection:
                        existing = connection.execute(sa.select(access.table.c.id).where(
                            access.table.c[key] == value,
                            access.table.c.deleted_at.is_(None))).scalar()
                if existing is None:
                    result.created.append(self.create(entity_key, data)["id"])
                else:
                    self.update(entity_key, existing, data)
                    result.updated.append(existing)
            except RecordError as exc:
                result.errors[index] = {"status": exc.status, "detail": exc.detail,
                                        "errors": exc.errors}
        return result

    # -- helpers ------------------------------------------------------------------------------

    def _check_references(self, connection: sa.Connection, access: EntityAccess,
                          values: Mapping[str, Any]) -> None:
        errors = {}
        for name, ref in access.references.items():
            value = values.get(name)
            if value is None:
                continue
            target = self.access(ref.target)  # type: ignore[arg-type]
            exists = connection.execute(target.exists, {"record_id": value}).first()
            if exists is None:
                errors[name] = [f"there is no {ref.target} with id {value}"]
        for name, field_def in access.many.items():
            ids = values.get(name) or []
            if not ids:
                continue
            target = self.access(field_def.target)  # type: ignore[arg-type]
            found = {r for (r,) in connection.execute(sa.select(target.table.c.id).where(
                target.table.c.id.in_(ids), target.table.c.deleted_at.is_(None)))}
            missing = sorted(set(ids) - found)
            if missing:
                listed = ", ".join(map(str, missing))
                errors[name] = [f"there is no {field_def.target} with id {listed}"]
        if errors:
            raise ValidationFailed("some references point to records that do not exist", errors)

    def _read_links(self, connection: sa.Connection, access: EntityAccess, record_id: int,
                    names: Iterable[str]) -> dict[str, list[int]]:
        """The linked ids of each many_to_many field in `names`, sorted."""
        found: dict[str, list[int]] = {}
        for name in names:
            link = self.runtime.tables.by_id[access.many[name].id]
            found[name] = sorted(r for (r,) in connection.execute(sa.select(
                link.c.target_id).where(link.c.source_id == record_id)))
        return found

    def _write_links(self, connection: sa.Connection, access: EntityAccess, record_id: int,
                     links: Mapping[str, list[int]], *, replace: bool) -> None:
        for name, ids in links.items():
            link = self.runtime.tables.by_id[access.many[name].id]
            if replace:
                connection.execute(link.delete().where(link.c.source_id == record_id))
            unique = sorted(set(ids))
            if unique:
                connection.execute(link.insert(), [{"source_id": record_id, "target_id": t}
                                                   for t in unique])

    def _audit(self, connection: sa.Connection, entity_key: str, record_id: int, action: str,
               changes: Mapping[str, tuple[Any, Any]], at: dt.datetime) -> None:
        payload = {k: {"before": _jsonable(b), "after": _jsonable(a)}
                   for k, (b, a) in changes.items()}
        statement = self.system.statements.get("audit_insert")
        if statement is None:
            statement = self.system.statements["audit_insert"] = self.system.audit.insert()
        connection.execute(statement, {
            "entity": entity_key, "record_id": record_id, "action": action,
            "actor": self.actor.user_id, "at": at,
            "changes": json.loads(json.dumps(payload, default=str))})

    def history(self, entity_key: str, record_id: int) -> list[dict[str, Any]]:
        audit = self.system.audit
        if not 1 <= record_id <= ID_MAX:
            return []
        with self.runtime.connect() as connection:
            rows = connection.execute(sa.select(audit).where(
                audit.c.entity == entity_key, audit.c.record_id == record_id)
                .order_by(audit.c.id)).mappings()
            return [{**dict(r), "at": _jsonable(r["at"])} for r in rows]

    def _emit(self, entity_key: str, record_id: int, kind: str, record: dict[str, Any],
              changes: dict[str, tuple[Any, Any]], at: dt.datetime) -> None:
        if self.emit is None:
            return
        event = RecordEvent(self.runtime.slug, entity_key, record_id, kind, self.actor.user_id,
                            at, self.registry.version, record,
                            {k: (_jsonable(b), _jsonable(a)) for k, (b, a) in changes.items()},
                            self.actor.depth)
        try:
            self.emit(event)
        except Exception:  # the change is committed: a failing listener must not undo the
            # answer (a client seeing an error would retry and write it twice)
            log.exception("a record_event listener failed for %s %s %s", kind, entity_key,
                          record_id)


def _existing_id(entity_key: str, record_id: int) -> None:
    """Ids beyond the 64-bit range cannot exist (and cannot be sent to the database)."""
    if not 1 <= record_id <= ID_MAX:
        raise NotFound(f"{entity_key} {record_id} does not exist")


def _after(keys: list[tuple[Any, bool, Any]], values: list[Any]) -> sa.ColumnElement[bool]:
    """Keyset condition: rows strictly after `values` in the order of `keys`."""
    if len(values) != len(keys):
        raise RecordError("the cursor does not match this sort; start again without it")
    values = [_cursor_value(expr, value) for (expr, _, _), value in zip(keys, values,
                                                                        strict=True)]
    clauses = []
    for index, (expr, desc, _) in enumerate(keys):
        value = values[index]
        equal = [keys[i][0] == values[i] if values[i] is not None else keys[i][0].is_(None)
                 for i in range(index)]
        if value is None:
            continue
        bound = sa.literal(value, expr.type)  # a bound value, booleans included
        beyond = expr < bound if desc else expr > bound
        clauses.append(sa.and_(*equal, beyond))
    return sa.or_(*clauses) if clauses else sa.false()


def _cursor_value(expr: Any, value: Any) -> Any:
    """A cursor value (JSON) as the Python value of its sort key's column type."""
    if value is None:
        return None
    kind = expr.type
    try:
        if isinstance(kind, sa.Boolean):
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if isinstance(kind, sa.Integer):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(value)
            return value
        if isinstance(kind, sa.Numeric):
            number = decimal.Decimal(str(value))
            if not number.is_finite() or isinstance(value, bool):
                raise ValueError(value)
            return number
        if isinstance(kind, sa.DateTime):
            return dt.datetime.fromisoformat(value)
        if isinstance(kind, sa.Date):
            return dt.date.fromisoformat(value)
        if isinstance(kind, sa.String):
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError(value)
            value.encode("utf-8")  # no lone surrogates
        elif not isinstance(value, str | int | float):  # JSON columns are not sortable
            raise ValueError(value)
    except (ValueError, TypeError, decimal.InvalidOperation) as exc:
        raise RecordError("the cursor is not valid; start again without it") from exc
    return value


_UNIQUE_COLUMN = re.compile(r"(?:UNIQUE constraint failed: [\w.]+\.(\w+)|Key \((\w+)\)=)")


def _integrity(exc: sa.exc.IntegrityError, access: EntityAccess) -> RecordError:
    message = str(exc.orig)
    match = _UNIQUE_COLUMN.search(message)
    if "unique" in message.lower() or "duplicate key" in message.lower():
        column = (match.group(1) or match.group(2)) if match else None
        errors = {column: ["another record already has this value"]} if column else {}
        return Conflict("another record already has this value", errors)
    if "foreign key" in message.lower():
        return Conflict("the record is still referenced by other records, or refers to one "
                        "that does not exist")
    if "check constraint" in message.lower():
        return ValidationFailed("a value is not one of the allowed options")
    return Conflict("the change conflicts with existing data")


def _format_autonumber(pattern: str, now: dt.datetime, number: int) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.startswith("#"):
            return str(number).zfill(len(token))
        return now.strftime({"YYYY": "%Y", "YY": "%y", "MM": "%m", "DD": "%d"}[token])

    return AUTONUMBER_TOKEN.sub(replace, pattern)


def _access_for(runtime: Any, entity_key: str, unit: str | None) -> EntityAccess:
    cache = runtime.extras.setdefault("access", {})
    key = (entity_key, unit)
    found = cache.get(key)
    if found is None:
        registry = runtime.registry
        scope = registry.scope(unit)
        if entity_key not in scope.entities:
            raise NotFound(f"there is no entity {entity_key}")
        entity = scope.entities[entity_key]
        schemas = build_entity_schemas(entity, runtime.types, registry.version, unit)
        found = EntityAccess(entity, runtime.tables.by_entity[entity_key], schemas)
        cache[key] = found
    return found
