"""Importing a CSV file into any entity, a batch at a time (see docs/import.md).

Two stages run side by side, joined by a short queue of batches:

1. **read** (the calling thread, no database): each row's cells are read as their fields'
   types and validated with the fields of the entity's own write schema (the same checks
   as the API; results of repeated cells such as cities or flags are remembered), required
   fields are checked, defaults filled and the row's match keys computed.
2. **write** (a worker thread, in batch order): what needs the database — unique values
   already taken, references to records that do not exist or that the caller cannot read,
   `block` duplicate rules — then **one transaction per batch**: the records (PostgreSQL:
   COPY with ids from the table's sequence; SQLite: one multi-row INSERT), their
   many_to_many links, one audit row per record (action `imported`, naming the import and
   the row), their match keys and review pairs, and the `records_imported` hook, still
   inside the transaction.

While the database works on one batch the next one is being read, so PostgreSQL's time
and Python's overlap. Rows that fail are written to the error report (in row order) and
the others go in. With a `key`, rows matching an existing record update it through the
record service, one write each (validation, audit, hooks and events as for any update).
A dry run does every check and writes nothing.
"""

from __future__ import annotations

import contextvars
import csv
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import marshmallow as ma
import sqlalchemy as sa

from ...metadata.fieldtypes import AUTONUMBER_TOKEN
from ..records import (
    Forbidden,
    RecordError,
    RecordService,
    ValidationFailed,
)
from .bulk import RawJSON, insert_records, one_of, reserve_counter, row_writer
from .columns import CellError, HeaderError, HeaderMap, map_header
from .log import IMPORTS

DEFAULT_BATCH = 2000
MEMO_LIMIT = 4096
"""Distinct values per field whose validation is remembered (cities, kinds, flags...)."""
QUEUE_DEPTH = 2
"""Batches read ahead of the one being written."""
REPORT_COLUMNS = ("row", "field", "message", "value")
SYSTEM_VALUES = ("created_at", "updated_at", "created_by", "updated_by", "owner",
                 "business_unit", "row_version", "deleted_at")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class RowError:
    """Why a row was not imported: its number (1 = the first row after the header), the
    field (empty: the whole row) and the message."""

    row: int
    field: str
    message: str
    value: str = ""


@dataclass(slots=True)
class ImportResult:
    entity: str
    dry_run: bool
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    pairs: int = 0  # duplicate pairs queued for review
    errors: int = 0  # error lines written to the report
    skipped_columns: tuple[str, ...] = ()
    import_id: int | None = None
    seconds: float = 0.0
    report: Path | None = None
    first_errors: list[RowError] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        verb = "would create" if self.dry_run else "created"
        done = "would update" if self.dry_run else "updated"
        text = (f"{self.rows} rows: {verb} {self.created}, {done} {self.updated}, "
                f"rejected {self.rejected}")
        if self.pairs:
            text += f"; {self.pairs} possible duplicate pairs queued for review"
        return text + f" ({self.seconds:.1f} s)"


class ImportFailed(RecordError):
    """The file cannot be imported at all (its header, or the caller's rights)."""

    status, title = 422, "Import refused"


class _BatchRefused(Exception):
    """A batch the caller's rights refuse as a whole (rolled back, its rows reported)."""


class ReportWriter:
    """The error report: a CSV of (row, field, message, value), opened at the first error."""

    def __init__(self, target: Path | TextIO | None, keep: int = 100) -> None:
        self.target = target
        self.keep = keep
        self.first: list[RowError] = []
        self.count = 0
        self._handle: TextIO | None = None
        self._writer: Any = None

    def write_all(self, errors: Iterable[RowError]) -> None:
        """Write errors (one batch's), in row order."""
        for error in sorted(errors, key=lambda e: e.row):
            self._write(error)

    def _write(self, error: RowError) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(error)
        if self.target is None:
            return
        if self._writer is None:
            if isinstance(self.target, Path):
                self._handle = self.target.open("w", newline="", encoding="utf-8")
                handle: TextIO = self._handle
            else:
                handle = self.target
            self._writer = csv.writer(handle)
            self._writer.writerow(REPORT_COLUMNS)
        self._writer.writerow((error.row, error.field, error.message, error.value))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass(slots=True)
class _Row:
    number: int
    cells: list[str]
    values: dict[str, Any]  # validated Python values, defaults filled
    keys: dict[str, int] = field(default_factory=dict)  # match keys by rule
    existing: int | None = None


@dataclass(slots=True)
class _Batch:
    size: int  # rows read (blank lines left out)
    rows: list[_Row]  # rows that passed the read stage
    errors: list[RowError] = field(default_factory=list)
    rejected: int = 0  # rows refused so far


class _Reader(NamedTuple):
    """How one mapped column is read: position, field, cell reader (None: text as it is),
    the schema field's deserialize and a memo of results (None: values not hashable)."""

    position: int
    name: str
    read: Callable[[str], Any] | None
    deserialize: Callable[..., Any]
    memo: dict[Any, Any] | None


class Importer:
    """One import of CSV rows into `entity_key`, acting as `service`'s actor."""

    def __init__(self, service: RecordService, entity_key: str, *, dry_run: bool = False,
                 key: str | None = None, batch_size: int = DEFAULT_BATCH,
                 report: Path | TextIO | None = None,
                 progress: Callable[[int], None] | None = None,
                 source: str = "upload", pipeline: bool = True) -> None:
        self.service = service
        self.entity_key = entity_key
        self.dry_run = dry_run
        self.key = key
        self.batch_size = max(1, min(batch_size, 50_000))
        self.report = ReportWriter(report)
        self.progress = progress
        self.source = source
        self.pipeline = pipeline
        self.runtime = service.runtime
        self.access = service.access(entity_key)
        self.table = self.access.table
        self.schema = self.runtime.db.schema
        self.write_rows = row_writer(self.schema, self.runtime.db.dialect)
        self._seen_unique: dict[str, set[Any]] = {}
        self._unique = [f.name for f in self.access.full.fields
                        if f.unique and f.stored and f.type not in ("autonumber",)]
        self._required = [name for name, f in self.access.schemas.create.fields.items()
                          if f.required]
        from ...engines.duplicates import BatchMatcher

        self.matcher = BatchMatcher.for_entity(self.runtime, service.system, entity_key)
        self.header: HeaderMap | None = None
        self._readers: list[_Reader] = []
        self._positions: dict[str, int] = {}
        self.result = ImportResult(entity_key, dry_run)

    # -- the whole file -------------------------------------------------------------------------

    def run(self, lines: Iterable[str]) -> ImportResult:
        """Import every row of `lines` (a text file or any iterable of CSV lines)."""
        started = time.perf_counter()
        self._check_rights()
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportFailed("the file is empty: the first line names the columns") from None
        except csv.Error as exc:
            raise ImportFailed(f"the header is not valid CSV: {exc}") from exc
        self.header = self._map(header)
        self._plan()
        self.result.skipped_columns = self.header.skipped
        if not self.dry_run:
            self.result.import_id = self._log_start()
        status = "failed"
        try:
            batches = (self._read_batch(raw) for raw in self._batches(reader))
            if self.pipeline:
                self._pipelined(batches)
            else:
                for batch in batches:
                    self._write_batch(batch)
            status = "done"
        finally:
            self.report.close()
            self.result.errors = self.report.count
            self.result.first_errors = self.report.first
            self.result.seconds = time.perf_counter() - started
            if isinstance(self.report.target, Path) and self.report.count:
                self.result.report = self.report.target
            if self.result.import_id is not None:
                self._log_end(status)
        return self.result

    def _pipelined(self, batches: Iterator[_Batch]) -> None:
        """Read batches here while a worker thread writes them, in order."""
        waiting: queue.Queue[_Batch | None] = queue.Queue(QUEUE_DEPTH)
        failure: list[BaseException] = []

        def write() -> None:
            while True:
                batch = waiting.get()
                if batch is None:
                    return
                if failure:
                    continue  # drain after a failure
                try:
                    self._write_batch(batch)
                except BaseException as exc:  # re-raised in the reading thread
                    failure.append(exc)

        # the writer runs in the caller's context (context variables such as the workflow
        # engine's bypass hold there too)
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(write,),
                                  name="metacrm-import-writer", daemon=True)
        worker.start()
        try:
            for batch in batches:
                if failure:
                    break
                waiting.put(batch)
        finally:
            waiting.put(None)
            worker.join()
        if failure:
            raise failure[0]

    def _check_rights(self) -> None:
        service = self.service
        try:
            service.require(self.entity_key, "import")
            if self.key is None:
                service.require(self.entity_key, "create")
        except Forbidden as exc:
            raise ImportFailed(exc.detail, action=exc.extra.get("action")) from exc
        if self.key is not None and self.key != "id":
            field_def = self.access.entity.get_field(self.key)
            if field_def is None or not field_def.unique:
                raise ImportFailed(f"`{self.key}` is not a unique field of {self.entity_key}, "
                                   "so it cannot match records; use `id` or a unique field",
                                   {"key": ["not a unique field"]})

    def _map(self, header: Sequence[str]) -> HeaderMap:
        access = self.access
        try:
            return map_header(header, access.entity, access.schemas.writable,
                              access.read_only, key=self.key, all_fields=access.full)
        except HeaderError as exc:
            raise ImportFailed(str(exc), {"header": [str(exc)]}) from exc

    def _plan(self) -> None:
        from .columns import _text

        assert self.header is not None
        fields = self.access.schemas.create.fields
        for column in self.header.columns:
            name = column.field.name
            hashable = column.field.type not in ("many_to_many", "multi_enum", "json")
            self._readers.append(_Reader(
                column.position, name, None if column.read is _text else column.read,
                fields[name].deserialize, {} if hashable else None))
            self._positions[name] = column.position

    def _batches(self, reader: Iterator[list[str]]) -> Iterator[list[tuple[int, Any]]]:
        """(row number, cells) in batches; a line that is not CSV is (number, error)."""
        batch: list[tuple[int, Any]] = []
        number = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                number += 1
                batch.append((number, exc))
                continue
            number += 1
            if not any(cells) or all(not cell or cell.isspace() for cell in cells):
                continue  # a blank line
            batch.append((number, cells))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- stage 1: reading (no database) -----------------------------------------------------------

    def _read_batch(self, raw: list[tuple[int, Any]]) -> _Batch:
        batch = _Batch(len(raw), [])
        defaults = self._defaults()
        for number, cells in raw:
            if isinstance(cells, csv.Error):
                self._reject(batch, number, "", f"not valid CSV: {cells}")
                continue
            row = self._read(batch, number, cells, defaults)
            if row is not None:
                batch.rows.append(row)
        if self.matcher is not None and batch.rows and self.key is None:
            for row, found in zip(batch.rows, self.matcher.keys([r.values
                                                                 for r in batch.rows]),
                                  strict=True):
                row.keys = found
        return batch

    def _reject(self, batch: _Batch, number: int, field_name: str, message: str,
                value: Any = "") -> None:
        batch.errors.append(RowError(number, field_name, message,
                                     "" if value is None else str(value)[:200]))

    def _read(self, batch: _Batch, number: int, cells: list[str],
              defaults: dict[str, Any]) -> _Row | None:
        """A row's cells read and validated; None (and report lines) when it fails."""
        errors: list[tuple[str, str, str]] | None = None
        values: dict[str, Any] = {}
        size = len(cells)
        for position, name, read, deserialize, memo in self._readers:
            if position >= size:
                continue
            text = cells[position]
            if not text or text.isspace():
                continue
            value: Any = text
            if read is not None:
                try:
                    value = read(text)
                except CellError as exc:
                    errors = (errors or []) + [(name, str(exc), text)]
                    continue
            if memo is not None:
                found = memo.get(value, _MISSING)
                if found is not _MISSING:
                    if found.__class__ is ma.ValidationError:
                        errors = (errors or []) + [(name, _message(found), text)]
                    else:
                        values[name] = found
                    continue
            try:
                result = deserialize(value, name, None)
            except ma.ValidationError as exc:
                if memo is not None and len(memo) < MEMO_LIMIT:
                    memo[value] = exc
                errors = (errors or []) + [(name, _message(exc), text)]
                continue
            if memo is not None and len(memo) < MEMO_LIMIT:
                memo[value] = result
            values[name] = result
        existing = None
        header = self.header
        assert header is not None
        if header.key_position is not None:
            text = cells[header.key_position] if header.key_position < size else ""
            if text.strip():
                try:
                    existing = int(text)
                    if existing < 1:
                        raise ValueError(text)
                except ValueError:
                    errors = (errors or []) + [("id", "not a record id", text)]
        if self.key is None:  # a new record: required fields, then the defaults
            missing = [n for n in self._required if values.get(n) is None]
            if missing:
                errors = (errors or []) + [(n, "a value is required", "") for n in missing]
            for name, value in defaults.items():
                values.setdefault(name, value)
        if errors:
            for name, message, text in errors:
                self._reject(batch, number, name, message, text)
            batch.rejected += 1
            return None
        return _Row(number, cells, values, existing=existing)

    def _cell(self, row: _Row, name: str) -> str:
        position = self._positions.get(name)
        return row.cells[position] if position is not None and position < len(row.cells) \
            else ""

    def _raw(self, row: _Row) -> dict[str, Any]:
        """The row's cells as JSON-like values (for an update through the record service)."""
        raw = {}
        for position, name, read, _, _ in self._readers:
            text = row.cells[position] if position < len(row.cells) else ""
            if text and not text.isspace():
                raw[name] = read(text) if read is not None else text
        return raw

    def _defaults(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        self.service._defaults(self.access, defaults)
        return defaults

    # -- stage 2: writing (in batch order) --------------------------------------------------------

    def _write_batch(self, batch: _Batch) -> None:
        rows = batch.rows
        if self.key is not None:
            self._match_existing(rows)
            creating = self._required_for_new(batch, [r for r in rows if r.existing is None])
            updating = [r for r in rows if r.existing is not None]
        else:
            creating, updating = rows, []
        if creating:
            self._create(batch, creating)
        for row in updating:
            self._update(batch, row)
        result = self.result
        result.rows += batch.size
        result.rejected += batch.rejected
        self.report.write_all(batch.errors)
        if self.progress is not None:
            self.progress(batch.size)

    def _required_for_new(self, batch: _Batch, rows: list[_Row]) -> list[_Row]:
        """With a key, rows that turn out to be new need their required fields and defaults
        (known only once matched)."""
        kept = []
        defaults = self._defaults()
        for row in rows:
            missing = [n for n in self._required if row.values.get(n) is None]
            if missing:
                for name in missing:
                    self._reject(batch, row.number, name, "a value is required")
                batch.rejected += 1
                continue
            for name, value in defaults.items():
                row.values.setdefault(name, value)
            if self.matcher is not None:
                row.keys = self.matcher.keys([row.values])[0]
            kept.append(row)
        return kept

    def _match_existing(self, rows: list[_Row]) -> None:
        """Which rows name an existing record (by `key`) the caller may read."""
        table = self.table
        if self.key == "id":
            wanted = {r.existing for r in rows if r.existing is not None}
            column = table.c.id
        else:
            wanted = {r.values[self.key] for r in rows if r.values.get(self.key) is not None}
            column = table.c[self.key]  # type: ignore[index]
        found: dict[Any, int] = {}
        if wanted:
            conditions = [table.c.deleted_at.is_(None)]
            scoped = self.service.scope_where(self.entity_key, "read", table)
            if scoped is not None:
                conditions.append(scoped)
            with self.runtime.connect() as connection:
                conditions.append(one_of(connection, column, sorted(wanted, key=str)))
                found = {value: record_id for value, record_id in connection.execute(
                    sa.select(column, table.c.id).where(*conditions))}
        for row in rows:
            if self.key == "id":
                row.existing = row.existing if row.existing in found else None
            else:
                row.existing = found.get(row.values.get(self.key))

    def _create(self, batch: _Batch, rows: list[_Row]) -> None:
        with self.runtime.connect() as connection:
            rows = self._check_unique(connection, batch, rows)
            rows = self._check_references(connection, batch, rows)
            if self.matcher is not None and rows:
                refused = self.matcher.check(connection, [r.keys for r in rows],
                                             [r.number for r in rows])
                if refused:
                    for position, (rule, message) in sorted(refused.items()):
                        fields = self.matcher.rules.rule(rule).fields  # type: ignore[union-attr]
                        self._reject(batch, rows[position].number, ",".join(fields), message)
                    batch.rejected += len(refused)
                    rows = [row for i, row in enumerate(rows) if i not in refused]
        if not rows:
            return
        if self.dry_run:
            self.result.created += len(rows)
            return
        try:
            with self.runtime.begin() as connection:
                ids = self._write(connection, rows)
        except (sa.exc.DBAPIError, _BatchRefused, RecordError) as exc:
            detail = str(exc.orig) if isinstance(exc, sa.exc.DBAPIError) else (
                exc.detail if isinstance(exc, RecordError) else str(exc))
            message = f"the batch could not be written: {detail.splitlines()[0]}"
            for row in rows:
                self._reject(batch, row.number, "", message)
            batch.rejected += len(rows)
            return
        self.result.created += len(ids)

    def _check_unique(self, connection: sa.Connection, batch: _Batch,
                      rows: list[_Row]) -> list[_Row]:
        """Rows whose unique values another record (or an earlier row) already has."""
        bad: dict[int, tuple[str, Any]] = {}
        for name in self._unique:
            values = [r.values[name] for r in rows if r.values.get(name) is not None]
            if not values:
                continue
            column = self.table.c[name]
            taken: set[Any] = set()
            for start in range(0, len(values), 5000):
                taken.update(v for (v,) in connection.execute(sa.select(column).where(
                    one_of(connection, column, values[start:start + 5000]))))
            seen = self._seen_unique.setdefault(name, set()) if self.dry_run else set()
            for position, row in enumerate(rows):
                value = row.values.get(name)
                if value is None or position in bad:
                    continue
                if value in taken or value in seen:
                    bad[position] = (name, value)
                else:
                    seen.add(value)
        if not bad:
            return rows
        for position, (name, value) in bad.items():
            self._reject(batch, rows[position].number, name,
                         "another record already has this value", value)
        batch.rejected += len(bad)
        return [row for i, row in enumerate(rows) if i not in bad]

    def _check_references(self, connection: sa.Connection, batch: _Batch,
                          rows: list[_Row]) -> list[_Row]:
        """Rows pointing at records that do not exist (or that the caller cannot read)."""
        access, service = self.access, self.service
        bad: dict[int, list[tuple[str, str]]] = {}
        checks = [(name, f.target, False) for name, f in access.references.items()]
        checks += [(name, f.target, True) for name, f in access.many.items()]
        for name, target, many in checks:
            wanted: set[int] = set()
            for row in rows:
                value = row.values.get(name)
                if value is not None:
                    wanted.update(value if many else (value,))
            if not wanted:
                continue
            found = self._readable(connection, target, sorted(wanted))
            for position, row in enumerate(rows):
                value = row.values.get(name)
                if value is None:
                    continue
                missing = sorted(set(value if many else (value,)) - found)
                if missing:
                    bad.setdefault(position, []).append(
                        (name, f"there is no {target} with id {', '.join(map(str, missing))}"))
        for name in access.users:
            wanted = {row.values[name] for row in rows if row.values.get(name) is not None}
            if not wanted:
                continue
            table = service.system.users
            found = {r for (r,) in connection.execute(sa.select(table.c.id).where(
                one_of(connection, table.c.id, sorted(wanted)), table.c.active.is_(True)))}
            for position, row in enumerate(rows):
                value = row.values.get(name)
                if value is not None and value not in found:
                    bad.setdefault(position, []).append(
                        (name, f"there is no active user with id {value}"))
        if not bad:
            return rows
        for position, problems in bad.items():
            for name, message in problems:
                self._reject(batch, rows[position].number, name, message,
                             self._cell(rows[position], name))
        batch.rejected += len(bad)
        return [row for i, row in enumerate(rows) if i not in bad]

    def _readable(self, connection: sa.Connection, entity_key: str | None,
                  ids: list[int]) -> set[int]:
        service = self.service
        try:
            target = service.access(entity_key)  # type: ignore[arg-type]
        except RecordError:
            return set()
        found: set[int] = set()
        scoped = service.scope_where(entity_key, "read", target.table)  # type: ignore[arg-type]
        for start in range(0, len(ids), 5000):
            conditions = [one_of(connection, target.table.c.id, ids[start:start + 5000]),
                          target.table.c.deleted_at.is_(None)]
            if scoped is not None:
                conditions.append(scoped)
            found.update(r for (r,) in connection.execute(sa.select(target.table.c.id).where(
                *conditions)))
        return found

    def _write(self, connection: sa.Connection, rows: list[_Row]) -> list[int]:
        """Insert one batch: records, links, audit, keys, the plugins' hook."""
        service, access, table = self.service, self.access, self.table
        now = dt.datetime.now(dt.UTC)
        actor = service.actor.user_id
        numbers = self._autonumbers(connection, len(rows), now)
        system = {"created_at": now, "updated_at": now, "created_by": actor,
                  "updated_by": actor, "owner": actor, "business_unit": service.actor.unit,
                  "row_version": 1, "deleted_at": None}
        fixed = tuple(system[name] for name in SYSTEM_VALUES)
        fields = [c.name for c in table.c if c.name != "id" and c.name not in system]
        for name, texts in numbers.items():
            for row, text in zip(rows, texts, strict=True):
                row.values.setdefault(name, text)
        records = [fixed + tuple(map(row.values.get, fields)) for row in rows]
        ids = insert_records(connection, table, (*SYSTEM_VALUES, *fields), records,
                             self.schema)
        self._check_scope(connection, ids, rows)
        for name, link_field in access.many.items():
            link = self.runtime.tables.by_id[link_field.id]
            pairs = [(record_id, target) for record_id, row in zip(ids, rows, strict=True)
                     for target in sorted(set(row.values.get(name) or ()))]
            if pairs:
                self.write_rows(connection, link, ("source_id", "target_id"), pairs,
                                plain=True)
        import_id = "null" if self.result.import_id is None else str(self.result.import_id)
        prefix = '{"import": {"before": null, "after": ' + import_id + \
            '}, "row": {"before": null, "after": '
        entity = self.entity_key
        self.write_rows(connection, service.system.audit, (
            "entity", "record_id", "action", "actor", "at", "changes"),
            [(entity, record_id, "imported", actor, now, RawJSON(f"{prefix}{row.number}}}}}"))
             for record_id, row in zip(ids, rows, strict=True)], plain=True)
        if self.matcher is not None:
            self.result.pairs += self.matcher.commit(connection, ids, [r.keys for r in rows],
                                                     now, self.write_rows)
        hooks = self.runtime.hooks
        if hooks is not None:
            hooks.records_imported(entity=self.entity_key, record_ids=list(ids),
                                   connection=connection, service=service)
        return ids

    def _autonumbers(self, connection: sa.Connection, count: int,
                     now: dt.datetime) -> dict[str, list[str]]:
        """Numbers for every autonumber field, reserved for the whole batch at once."""
        out = {}
        for f in self.access.full.fields:
            if f.type != "autonumber" or not f.autonumber:
                continue
            tokens = AUTONUMBER_TOKEN.findall(f.autonumber)
            period = "".join(now.strftime(DATE_FORMATS[t]) for t in tokens
                             if t in DATE_FORMATS)
            first = reserve_counter(connection, self.service.system.counters,
                                    f"{f.id}:{period}", count)
            number = number_format(f.autonumber, now)
            out[f.name] = [number(first + i) for i in range(count)]
        return out

    def _check_scope(self, connection: sa.Connection, ids: list[int],
                     rows: list[_Row]) -> None:
        """Refuse the batch when the caller's `create` scope would not cover a record."""
        scoped = self.service.scope_where(self.entity_key, "create", self.table)
        if scoped is None or not ids:
            return
        table = self.table
        outside = [r for (r,) in connection.execute(sa.select(table.c.id).where(
            one_of(connection, table.c.id, ids), sa.not_(scoped)))]
        if outside:
            number = rows[ids.index(outside[0])].number
            raise _BatchRefused(f"row {number}: your roles do not allow `create` on such a "
                                f"{self.entity_key}")

    def _update(self, batch: _Batch, row: _Row) -> None:
        """An update through the record service (one write: audit, hooks, events)."""
        data = {k: v for k, v in self._raw(row).items() if k != "id"}
        if self.dry_run:
            try:
                self.service._validate(self.access.schemas.update, data)
            except ValidationFailed as exc:
                self._reject_errors(batch, row, exc)
                return
            self.result.updated += 1
            return
        try:
            self.service.update(self.entity_key, row.existing, data)  # type: ignore[arg-type]
        except RecordError as exc:
            self._reject_errors(batch, row, exc)
            return
        self.result.updated += 1

    def _reject_errors(self, batch: _Batch, row: _Row, exc: RecordError) -> None:
        if exc.errors:
            for name, messages in exc.errors.items():
                text = "; ".join(map(str, messages)) if isinstance(messages, list) \
                    else str(messages)
                self._reject(batch, row.number, name, text, self._cell(row, name))
        else:
            self._reject(batch, row.number, "", exc.detail)
        batch.rejected += 1

    # -- the import log -------------------------------------------------------------------------

    def _log_start(self) -> int:
        table = self.service.system.table(IMPORTS)
        with self.runtime.begin() as connection:
            return connection.execute(table.insert().values(
                entity=self.entity_key, file=self.source[:255],
                actor=self.service.actor.user_id, started_at=dt.datetime.now(dt.UTC),
                status="running").returning(table.c.id)).scalar_one()

    def _log_end(self, status: str) -> None:
        table = self.service.system.table(IMPORTS)
        result = self.result
        with self.runtime.begin() as connection:
            connection.execute(table.update().where(table.c.id == result.import_id).values(
                finished_at=dt.datetime.now(dt.UTC), status=status, rows=result.rows,
                created=result.created, updated=result.updated, rejected=result.rejected,
                pairs=result.pairs))


DATE_FORMATS = {"YYYY": "%Y", "YY": "%y", "MM": "%m", "DD": "%d"}


def number_format(pattern: str, now: dt.datetime) -> Callable[[int], str]:
    """`pattern`'s numbers at `now` (as the record service writes them, `C-{YYYY}-{####}`
    → C-2026-0042), the date parts worked out once."""
    pieces: list[str | int] = []
    last = 0
    for match in AUTONUMBER_TOKEN.finditer(pattern):
        pieces.append(pattern[last:match.start()])
        token = match.group(1)
        pieces.append(len(token) if token.startswith("#") else now.strftime(
            DATE_FORMATS[token]))
        last = match.end()
    pieces.append(pattern[last:])
    if sum(isinstance(p, int) for p in pieces) == 1:
        at = next(i for i, p in enumerate(pieces) if isinstance(p, int))
        prefix, suffix = "".join(pieces[:at]), "".join(pieces[at + 1:])  # type: ignore[arg-type]
        width = pieces[at]
        return lambda n: f"{prefix}{str(n).zfill(width)}{suffix}"  # type: ignore[arg-type]
    return lambda n: "".join(str(n).zfill(p) if isinstance(p, int) else p for p in pieces)


def _message(exc: ma.ValidationError) -> str:
    messages = exc.messages
    if isinstance(messages, dict):
        messages = [m for ms in messages.values() for m in (ms if isinstance(ms, list)
                                                             else [ms])]
    if isinstance(messages, list):
        return "; ".join(map(str, messages))
    return str(messages)


def import_csv(service: RecordService, entity_key: str, path: Path, **options: Any) -> \
        ImportResult:
    """Import the CSV file at `path` (UTF-8, with or without a byte-order mark)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return Importer(service, entity_key, source=path.name, **options).run(handle)


def data_rows(path: Path) -> int:
    """Lines after the header (quick count for a progress bar; a cell holding a line
    break makes it a little high)."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        count += 1
    return max(count - 1, 0)
