"""The record service: the one way the API, admin UI, CLI, workflows and rules write.

It validates with the generated marshmallow schemas, fills defaults and autonumbers,
computes formulas on read, enforces optimistic concurrency with the row version,
writes an audit entry for every change in the same transaction, and emits a
RecordEvent after commit.
"""

from __future__ import annotations

import base64
import dataclasses
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
from .permissions import Guard, Principal
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


class Forbidden(RecordError):
    status, title = 403, "Forbidden"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a user id (None for the system) and their business unit.

    With a `principal`, every operation obeys that user's roles; without one (the
    system: migrations, seeding, an operator's CLI command) nothing is restricted.
    """

    user_id: int | None = None
    unit: str | None = None
    depth: int = 0
    principal: Principal | None = None

    @classmethod
    def of(cls, principal: Principal, depth: int = 0) -> Actor:
        return cls(principal.user_id, principal.business_unit, depth, principal)


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
    """Per entity, scope and field visibility: table, schemas and the row → JSON
    conversion (built once).

    `entity` is the entity as the caller sees it (fields their roles hide are left
    out); `full` has every field of the business unit's view, for defaults and checks.
    """

    def __init__(self, entity: Entity, table: sa.Table, schemas: EntitySchemas,
                 full: Entity | None = None, read_only: frozenset[str] = frozenset()):
        self.entity = entity
        self.full = full or entity
        self.table = table
        self.schemas = schemas
        self.read_only = read_only
        self.columns = [c for c in table.c if c.name in SYSTEM_OUTPUT or
                        entity.get_field(c.name) is not None]
        self.row_columns = [c for c in table.c if c.name in SYSTEM_OUTPUT or
                            self.full.get_field(c.name) is not None]
        self.column_names = frozenset(c.name for c in self.columns)
        self.converters = [(c.name, _jsonable if _needs_conversion(
            c.name, entity.get_field(c.name)) else None) for c in self.columns]
        self.formulas = [f for f in entity.fields if f.formula is not None]
        self.references = {f.name: f for f in entity.fields if f.type == "reference"}
        self.users = {f.name for f in entity.fields if f.type == "user"}
        record_id = sa.bindparam("record_id")
        select = sa.select(*self.row_columns).where(table.c.id == record_id)
        # Built once: a statement object memoizes its cache key, so reuse skips recompiling.
        self.get_live = select.where(table.c.deleted_at.is_(None))
        self.get_any = select
        self.insert = table.insert().returning(*self.row_columns)
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
                 emit: Callable[[RecordEvent], None] | None = None,
                 operators: Any = None) -> None:
        self.runtime = runtime
        self.actor = actor or Actor()
        self.emit = emit
        self.registry = runtime.registry
        self.scope = self.registry.scope(self.actor.unit)
        self.system: SystemTables = runtime_system_tables(runtime)
        self.operators = operators
        self.guard: Guard | None = None
        if self.actor.principal is not None:
            self.guard = Guard(runtime, self.actor.principal, self._operators())
        self._access: dict[str, EntityAccess] = {}

    def _operators(self) -> Any:
        if self.operators is None:
            from ..engines.conditions import OperatorRegistry, builtin_operators

            self.operators = OperatorRegistry(builtin_operators())
        return self.operators

    # -- metadata and permissions -------------------------------------------------------------

    def access(self, entity_key: str) -> EntityAccess:
        """The entity as the actor sees it; NotFound when their roles hide it entirely."""
        found = self._access.get(entity_key)
        if found is None:
            if self.guard is not None and entity_key in self.scope.entities and \
                    not self.guard.visible(entity_key):
                raise NotFound(f"there is no entity {entity_key}")
            found = _access_for(self.runtime, entity_key, self.actor.unit, self.guard)
            self._access[entity_key] = found
        return found

    def visible_entities(self) -> list[str]:
        """The entity keys the actor may see, in the scope's order."""
        if self.guard is None:
            return list(self.scope.entities)
        return [k for k in self.scope.entities if self.guard.visible(k)]

    def require(self, entity_key: str, action: str) -> None:
        """Refuse (403) an action the actor's roles never grant on `entity_key`."""
        self.access(entity_key)
        if self.guard is not None and not self.guard.can(entity_key, action):
            raise Forbidden(f"your roles do not allow `{action}` on {entity_key}",
                            action=action)

    def scope_where(self, entity_key: str, action: str,
                    table: Any = None) -> sa.ColumnElement[bool] | None:
        """The SQL limiting `action` to the actor's records (None: no limit)."""
        if self.guard is None:
            return None
        return self.guard.where(entity_key, action,
                                table if table is not None else self.access(entity_key).table)

    def _check_record(self, connection: sa.Connection, entity_key: str, action: str,
                      row: Mapping[str, Any]) -> None:
        """One record, checked in Python: 404 if the actor may not even read it, 403 if
        they may read it but not perform `action`."""
        if self.guard is None or self.guard.allows(connection, entity_key, action, row):
            return
        if action != "read" and self.guard.allows(connection, entity_key, "read", row):
            raise Forbidden(f"your roles do not allow `{action}` on {entity_key} "
                            f"{row['id']}", action=action)
        raise NotFound(f"{entity_key} {row['id']} does not exist")

    def _live_row(self, connection: sa.Connection, access: EntityAccess, entity_key: str,
                  record_id: int, action: str) -> Mapping[str, Any]:
        """The live record (all its columns), checked for `action`; NotFound if gone."""
        current = connection.execute(access.get_live,
                                     {"record_id": record_id}).mappings().first()
        if current is None:
            raise NotFound(f"{entity_key} {record_id} does not exist")
        self._check_record(connection, entity_key, action, current)
        return current

    def _check_writable(self, access: EntityAccess, data: Any,
                        before: Mapping[str, Any] | None = None) -> None:
        """Refuse (403) a change to a field the actor may read but not write."""
        if not access.read_only or not isinstance(data, Mapping):
            return
        refused = sorted(name for name in data if name in access.read_only and (
            before is None or not _same(_input_value(access, name, data[name]),
                                        before.get(name))))
        if refused:
            raise Forbidden("your roles may read but not change " + ", ".join(
                f"`{n}`" for n in refused), {n: ["your roles may read this field but not "
                                                 "change it"] for n in refused})

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
            self._check_record(connection, entity_key, "read", row)
            item = access.to_json(row)
            self._expand(connection, access, [item], expand)
        return item

    def links(self, entity_key: str, record_id: int,
              names: Iterable[str] | None = None) -> dict[str, list[int]]:
        """The ids each many_to_many field (all, or `names`) of a readable record links to."""
        record = self.get(entity_key, record_id)  # NotFound unless the actor may read it
        access = self.access(entity_key)
        wanted = list(access.many) if names is None else [n for n in names if n in access.many]
        with self.runtime.connect() as connection:
            return self._read_links(connection, access, record["id"], wanted)

    def parse_filter(self, entity_key: str, document: Any) -> sa.ColumnElement[bool]:
        """A condition document (API `filter=`, a view) as SQL, checked against the fields
        the actor sees; paths through references see only the targets they may read."""
        from ..engines.conditions import ConditionError, EvalContext, parse_condition, to_sql

        access = self.access(entity_key)
        try:
            node = parse_condition(document, access.entity, self.registry, self._operators(),
                                   unit=self.actor.unit, visible=self._visible_entity)
        except ConditionError as exc:
            raise ValidationFailed(f"the filter is not valid: {exc.message}",
                                   {"filter": [exc.message]}, path=list(exc.path)) from exc
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(self.runtime.config.timezone)
        restrict = None
        if self.guard is not None:
            guard = self.guard

            def restrict(key: str, table: Any) -> sa.ColumnElement[bool] | None:
                return guard.where(key, "read", table)

        return to_sql(node, entity_key, self.runtime.tables.by_entity, self.registry,
                      EvalContext(dt.datetime.now(tz), tz), restrict=restrict)

    def _visible_entity(self, entity_key: str) -> Entity | None:
        try:
            return self.access(entity_key).entity
        except NotFound:
            return None

    def list(self, entity_key: str, query: ListQuery, *,
             where: sa.ColumnElement[bool] | None = None, action: str = "read") -> Page:
        """A page of the records the actor may `action` (read, or export)."""
        self.require(entity_key, action)
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
        if query.filter is not None:
            conditions.append(self.parse_filter(entity_key, query.filter))
        scoped = self.scope_where(entity_key, action, table)
        if scoped is not None:
            conditions.append(scoped)
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
            try:
                target = self.access(ref.target)  # type: ignore[arg-type]
            except NotFound:  # the actor's roles hide the whole target entity
                for item in items:
                    if item.get(name) is not None:
                        item[name] = {"id": item[name]}
                continue
            ids = {item[name] for item in items if item.get(name) is not None}
            found: dict[int, dict[str, Any]] = {}
            if ids:
                conditions = [target.table.c.id.in_(sorted(ids)),
                              target.table.c.deleted_at.is_(None)]
                scoped = self.scope_where(target.full.key, "read", target.table)
                if scoped is not None:
                    conditions.append(scoped)
                rows = connection.execute(sa.select(*target.columns).where(
                    *conditions)).mappings()
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
        for f in access.full.fields:  # hidden fields get their defaults too
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
        for f in access.full.fields:
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
        self.require(entity_key, "create")
        access = self.access(entity_key)
        self._check_writable(access, data)
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
            self._check_record(connection, entity_key, "create", row)
            self._write_links(connection, access, record_id, links, replace=False)
            record = access.to_json(row)
            changes = {k: (None, record.get(k)) for k in values}
            changes.update({k: (None, sorted(set(v))) for k, v in links.items()})
            self._audit(connection, entity_key, record_id, "created", changes, now)
            event = self._event(entity_key, record_id, "created", record, changes, now)
            self._writing(connection, event)
        self._emit(event)
        return record

    def update(self, entity_key: str, record_id: int, data: Any, *,
               expected_version: int | None = None,
               transition: str | None = None) -> dict[str, Any]:
        """Change a record. `transition` names the workflow transition making the change
        (only the workflow engine passes it; a workflow refuses state changes without)."""
        self.require(entity_key, "update")
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        values = self._validate(access.schemas.update, data)
        body_version = values.pop("row_version", None)
        expected = expected_version if expected_version is not None else body_version
        links = {k: values.pop(k) for k in list(values) if k in access.many}
        table = access.table
        now = dt.datetime.now(dt.UTC)
        with self.runtime.begin() as connection:
            current = self._live_row(connection, access, entity_key, record_id, "update")
            version = current["row_version"]
            if expected is not None and expected != version:
                raise PreconditionFailed(
                    f"{entity_key} {record_id} was changed by someone else (version {version}, "
                    f"you sent {expected}); reload it and apply your change again",
                    current_version=version)
            before = access.to_json(current)
            self._check_writable(access, data, before)
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
            row = connection.execute(access.get_any, {"record_id": record_id}).mappings().one()
            record = access.to_json(row)
            changes = {k: (before.get(k), record.get(k)) for k in changed}
            changes.update({k: (old_links[k], v) for k, v in links.items()})
            event = self._event(entity_key, record_id, "updated", record, changes, now,
                                transition)
            if changes:
                self._audit(connection, entity_key, record_id, "updated", changes, now)
                self._writing(connection, event)
        if changes:
            self._emit(event)
        return record

    def delete(self, entity_key: str, record_id: int, *,
               expected_version: int | None = None) -> None:
        self._soft(entity_key, record_id, expected_version, deleting=True)

    def restore(self, entity_key: str, record_id: int) -> dict[str, Any]:
        return self._soft(entity_key, record_id, None, deleting=False)

    def _soft(self, entity_key: str, record_id: int, expected: int | None,
              deleting: bool) -> dict[str, Any]:
        action = "delete" if deleting else "restore"
        self.require(entity_key, action)
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        table = access.table
        now = dt.datetime.now(dt.UTC)
        state = table.c.deleted_at.is_(None) if deleting else table.c.deleted_at.is_not(None)
        with self.runtime.begin() as connection:
            current = connection.execute(access.get_any,
                                         {"record_id": record_id}).mappings().first()
            if current is not None:
                self._check_record(connection, entity_key, action, current)
            if current is None or (current["deleted_at"] is None) != deleting:
                what = "does not exist" if current is None else (
                    "is already deleted" if deleting else "is not deleted")
                raise NotFound(f"{entity_key} {record_id} {what}")
            current = _Versioned(current["row_version"], current["deleted_at"])
            if expected is not None and expected != current.row_version:
                raise PreconditionFailed(f"{entity_key} {record_id} was changed by someone else",
                                         current_version=current.row_version)
            try:
                connection.execute(table.update().where(table.c.id == record_id, state).values(
                    deleted_at=now if deleting else None, updated_at=now,
                    updated_by=self.actor.user_id, row_version=current.row_version + 1))
            except sa.exc.IntegrityError as exc:
                raise _integrity(exc, access) from exc
            row = connection.execute(access.get_any, {"record_id": record_id}).mappings().one()
            record = access.to_json(row)
            kind = "deleted" if deleting else "restored"
            changes = {"deleted_at": (None if deleting else _jsonable(current.deleted_at),
                                      record["deleted_at"])}
            self._audit(connection, entity_key, record_id, kind, changes, now)
            event = self._event(entity_key, record_id, kind, record, changes, now)
            self._writing(connection, event)
        self._emit(event)
        return record

    def bulk_upsert(self, entity_key: str, rows: Sequence[Any], *,
                    key: str | None = None) -> BulkResult:
        """Create rows, or update those whose `key` field matches an existing record.

        An import: the actor needs the `import` action, and `create` or `update` (with
        its scope) for each row."""
        self.require(entity_key, "import")
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
                    match = [access.table.c[key] == value, access.table.c.deleted_at.is_(None)]
                    scoped = self.scope_where(entity_key, "read")
                    if scoped is not None:  # a record the actor cannot see is not matched
                        match.append(scoped)
                    with self.runtime.connect() as connection:
                        existing = connection.execute(sa.select(access.table.c.id).where(
                            *match)).scalar()
                if existing is None:
                    result.created.append(self.create(entity_key, data)["id"])
                else:
                    self.update(entity_key, existing, data)
                    result.updated.append(existing)
            except RecordError as exc:
                result.errors[index] = {"status": exc.status, "detail": exc.detail,
                                        "errors": exc.errors}
        return result

    # -- export, assignment and sharing ------------------------------------------------------

    def export_columns(self, entity_key: str) -> list[str]:
        """The columns of an export: id, the fields the actor may read, then system ones."""
        access = self.access(entity_key)
        names = ["id", *(f.name for f in access.entity.fields
                         if f.stored or f.formula is not None)]
        return names + [n for n in SYSTEM_OUTPUT if n not in names]

    def export(self, entity_key: str, query: ListQuery) -> Iterable[dict[str, Any]]:
        """Every record the actor may export (page by page, never all in memory)."""
        page_query = dataclasses.replace(query, limit=MAX_PAGE, count=False, cursor=None)
        while True:
            page = self.list(entity_key, page_query, action="export")
            yield from page.items
            if page.next_cursor is None:
                return
            page_query = dataclasses.replace(page_query, cursor=page.next_cursor)

    def assign(self, entity_key: str, record_id: int, owner: int, *,
               expected_version: int | None = None) -> dict[str, Any]:
        """Give a record to another owner (the `assign` action, within its scope)."""
        self.require(entity_key, "assign")
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        if isinstance(owner, bool) or not isinstance(owner, int) or not 1 <= owner <= ID_MAX:
            raise ValidationFailed("`owner` is the id of an active user",
                                   {"owner": ["not an active user"]})
        table, users = access.table, self.system.users
        now = dt.datetime.now(dt.UTC)
        with self.runtime.begin() as connection:
            current = self._live_row(connection, access, entity_key, record_id, "assign")
            if expected_version is not None and expected_version != current["row_version"]:
                raise PreconditionFailed(f"{entity_key} {record_id} was changed by someone else",
                                         current_version=current["row_version"])
            if connection.execute(sa.select(users.c.id).where(
                    users.c.id == owner, users.c.active.is_(True))).first() is None:
                raise ValidationFailed(f"there is no active user with id {owner}",
                                       {"owner": ["not an active user"]})
            connection.execute(table.update().where(table.c.id == record_id).values(
                owner=owner, updated_at=now, updated_by=self.actor.user_id,
                row_version=current["row_version"] + 1))
            row = connection.execute(access.get_any, {"record_id": record_id}).mappings().one()
            record = access.to_json(row)
            changes = {"owner": (current["owner"], owner)}
            self._audit(connection, entity_key, record_id, "assigned", changes, now)
            event = self._event(entity_key, record_id, "assigned", record, changes, now)
            self._writing(connection, event)
        self._emit(event)
        return record

    def share(self, entity_key: str, record_id: int, *, user_id: Any = None, unit: Any = None,
              access: Any = "read") -> dict[str, Any]:
        """Share one record with a user or an org unit (and its subtree): `read` or `edit`.

        Sharing is part of the `assign` action: whoever may reassign a record may share it.
        """
        self.require(entity_key, "assign")
        _existing_id(entity_key, record_id)
        if (user_id is None) == (unit is None):
            raise ValidationFailed("share with exactly one of `user` (an id) or `unit` (an org "
                                   "unit's name)", {"user": ["give `user` or `unit`"]})
        if access not in ("read", "edit"):
            raise ValidationFailed("`access` is `read` or `edit`", {"access": ["read or edit"]})
        if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, int)
                                    or not 1 <= user_id <= ID_MAX):
            raise ValidationFailed("`user` is a user id", {"user": ["a user id"]})
        if unit is not None and not isinstance(unit, str):
            raise ValidationFailed("`unit` is an org unit's name", {"unit": ["a unit name"]})
        entity_access = self.access(entity_key)
        shares, users, units = self.system.shares, self.system.users, self.system.org_units
        now = dt.datetime.now(dt.UTC)
        with self.runtime.begin() as connection:
            self._live_row(connection, entity_access, entity_key, record_id, "assign")
            unit_id = None
            if user_id is not None and connection.execute(sa.select(users.c.id).where(
                    users.c.id == user_id, users.c.active.is_(True))).first() is None:
                raise ValidationFailed(f"there is no active user with id {user_id}",
                                       {"user": ["not an active user"]})
            if unit is not None:
                unit_id = connection.execute(sa.select(units.c.id).where(
                    units.c.name == unit)).scalar()
                if unit_id is None:
                    raise ValidationFailed(f"there is no org unit {unit!r}",
                                           {"unit": ["not an org unit"]})
            share_id = connection.execute(shares.insert().values(
                entity=entity_key, record_id=record_id, user_id=user_id, unit_id=unit_id,
                access=access, created_by=self.actor.user_id, created_at=now)
                .returning(shares.c.id)).scalar_one()
            self._audit(connection, entity_key, record_id, "shared",
                        {"share": (None, {"user": user_id, "unit": unit, "access": access})},
                        now)
        return {"id": share_id, "user": user_id, "unit": unit, "access": access,
                "created_at": _jsonable(now)}

    def shares(self, entity_key: str, record_id: int) -> list[dict[str, Any]]:
        self.get(entity_key, record_id)  # only someone who may read the record sees them
        shares, units = self.system.shares, self.system.org_units
        with self.runtime.connect() as connection:
            rows = connection.execute(sa.select(
                shares.c.id, shares.c.user_id, units.c.name, shares.c.access,
                shares.c.created_at).select_from(shares.outerjoin(
                    units, units.c.id == shares.c.unit_id)).where(
                shares.c.entity == entity_key, shares.c.record_id == record_id)
                .order_by(shares.c.id)).all()
        return [{"id": r.id, "user": r.user_id, "unit": r.name, "access": r.access,
                 "created_at": _jsonable(r.created_at)} for r in rows]

    def unshare(self, entity_key: str, record_id: int, share_id: int) -> None:
        self.require(entity_key, "assign")
        access = self.access(entity_key)
        _existing_id(entity_key, record_id)
        shares = self.system.shares
        now = dt.datetime.now(dt.UTC)
        with self.runtime.begin() as connection:
            self._live_row(connection, access, entity_key, record_id, "assign")
            if not 1 <= share_id <= ID_MAX:
                raise NotFound(f"{entity_key} {record_id} has no share {share_id}")
            deleted = connection.execute(shares.delete().where(
                shares.c.id == share_id, shares.c.entity == entity_key,
                shares.c.record_id == record_id))
            if deleted.rowcount != 1:
                raise NotFound(f"{entity_key} {record_id} has no share {share_id}")
            self._audit(connection, entity_key, record_id, "unshared",
                        {"share": (share_id, None)}, now)

    # -- helpers ------------------------------------------------------------------------------

    def _check_references(self, connection: sa.Connection, access: EntityAccess,
                          values: Mapping[str, Any]) -> None:
        errors = {}
        for name, ref in access.references.items():
            value = values.get(name)
            if value is None:
                continue
            if not self._readable(connection, ref.target, [value]):  # type: ignore[arg-type]
                errors[name] = [f"there is no {ref.target} with id {value}"]
        for name, field_def in access.many.items():
            ids = values.get(name) or []
            if not ids:
                continue
            found = self._readable(connection, field_def.target, ids)  # type: ignore[arg-type]
            missing = sorted(set(ids) - found)
            if missing:
                listed = ", ".join(map(str, missing))
                errors[name] = [f"there is no {field_def.target} with id {listed}"]
        for name in access.users:
            value = values.get(name)
            if value is None:
                continue
            users = self.system.users
            if connection.execute(sa.select(users.c.id).where(
                    users.c.id == value, users.c.active.is_(True))).first() is None:
                errors[name] = [f"there is no active user with id {value}"]
        if errors:
            raise ValidationFailed("some references point to records that do not exist", errors)

    def _readable(self, connection: sa.Connection, entity_key: str,
                  ids: Sequence[int]) -> set[int]:
        """Which of `ids` are live records of `entity_key` the actor may read (a record
        outside their scope is, to them, a record that does not exist)."""
        try:
            target = self.access(entity_key)
        except NotFound:
            return set()
        conditions = [target.table.c.id.in_(list(ids)), target.table.c.deleted_at.is_(None)]
        scoped = self.scope_where(entity_key, "read", target.table)
        if scoped is not None:
            conditions.append(scoped)
        return {r for (r,) in connection.execute(sa.select(target.table.c.id).where(
            *conditions))}

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
        write_audit(connection, self.system, entity_key, record_id, action, self.actor.user_id,
                    changes, at)

    def history(self, entity_key: str, record_id: int) -> list[dict[str, Any]]:
        audit = self.system.audit
        if not 1 <= record_id <= ID_MAX:
            return []
        with self.runtime.connect() as connection:
            rows = connection.execute(sa.select(audit).where(
                audit.c.entity == entity_key, audit.c.record_id == record_id)
                .order_by(audit.c.id)).mappings()
            entries = [{**dict(r), "at": _jsonable(r["at"])} for r in rows]
        if self.guard is not None:
            hidden = self.guard.hidden(entity_key)
            for entry in entries:
                entry["changes"] = {k: v for k, v in entry["changes"].items()
                                    if k not in hidden}
        return entries

    def _event(self, entity_key: str, record_id: int, kind: str, record: dict[str, Any],
               changes: dict[str, tuple[Any, Any]], at: dt.datetime,
               transition: str | None = None) -> RecordEvent:
        return RecordEvent(self.runtime.slug, entity_key, record_id, kind, self.actor.user_id,
                           at, self.registry.version, record,
                           {k: (_jsonable(b), _jsonable(a)) for k, (b, a) in changes.items()},
                           self.actor.depth, transition, self.actor.unit)

    def _writing(self, connection: sa.Connection, event: RecordEvent) -> None:
        """Let plugins act inside the write's transaction (`record_writing`): a workflow
        refuses a state change made around it, the rules engine records its work; a
        RecordError raised here rolls the whole change back."""
        hooks = getattr(self.runtime, "hooks", None)
        if hooks is not None:
            hooks.record_writing(event=event, connection=connection, service=self)

    def _emit(self, event: RecordEvent) -> None:
        if self.emit is None:
            return
        try:
            self.emit(event)
        except Exception:  # the change is committed: a failing listener must not undo the
            # answer (a client seeing an error would retry and write it twice)
            log.exception("a record_event listener failed for %s %s %s", event.kind,
                          event.entity, event.record_id)


def write_audit(connection: sa.Connection, system: SystemTables, entity: str, record_id: int,
                action: str, actor: int | None, changes: Mapping[str, tuple[Any, Any]],
                at: dt.datetime) -> None:
    """One audit entry: each changed key with its value before and after (as JSON)."""
    payload = {k: {"before": _jsonable(b), "after": _jsonable(a)}
               for k, (b, a) in changes.items()}
    connection.execute(system.statement("audit_insert", system.audit.insert), {
        "entity": entity, "record_id": record_id, "action": action, "actor": actor,
        "at": at, "changes": json.loads(json.dumps(payload, default=str))})


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


def _access_for(runtime: Any, entity_key: str, unit: str | None,
                guard: Guard | None = None) -> EntityAccess:
    """Built once per version, unit and set of hidden and read-only fields."""
    cache = runtime.extras.setdefault("access", {})
    hidden = guard.hidden(entity_key) if guard is not None else frozenset()
    read_only = guard.read_only(entity_key) if guard is not None else frozenset()
    key = (entity_key, unit, hidden, read_only)
    found = cache.get(key)
    if found is None:
        registry = runtime.registry
        scope = registry.scope(unit)
        if entity_key not in scope.entities:
            raise NotFound(f"there is no entity {entity_key}")
        full = scope.entities[entity_key]
        entity = guard.policy(entity_key).entity if hidden else full
        schemas = build_entity_schemas(entity, runtime.types, registry.version, unit)
        found = EntityAccess(entity, runtime.tables.by_entity[entity_key], schemas, full,
                             read_only)
        cache[key] = found
    return found


@dataclass(frozen=True, slots=True)
class _Versioned:
    row_version: int
    deleted_at: Any


def _input_value(access: EntityAccess, name: str, value: Any) -> Any:
    """A request value as the field's Python value (for comparing with the current one)."""
    field_schema = access.schemas.update.fields.get(name)
    if field_schema is None:
        return value
    try:
        return field_schema.deserialize(value)
    except ma.ValidationError:
        return value
