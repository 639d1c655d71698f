"""Applying a migration plan to one tenant: atomically, under a lock, recording the version.

PostgreSQL runs every step in one transaction holding an advisory lock. SQLite runs
them in one ``BEGIN IMMEDIATE`` transaction (the write lock) with foreign keys off,
so table rebuilds cannot cascade, and ``PRAGMA foreign_key_check`` before commit.
Either way an interrupted migration leaves the tenant wholly on one version.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from ..generators import names
from ..generators.catalog import Catalog
from ..generators.planner import Plan, Step, archived_spec, final_specs, plan
from ..generators.specs import ColumnSpec, TableSpec
from ..generators.tables import (
    ON_DELETE,
    build_table,
    check_sql,
    server_default,
    sql_type,
)
from .database import TenantDatabase

SQLITE_REBUILD = frozenset({"alter_type", "set_not_null", "drop_not_null", "replace_check",
                            "replace_foreign_key", "alter_default", "archive_column"})


class MigrationRefused(Exception):
    """The plan would lose data (or cannot be applied); nothing was changed."""

    def __init__(self, plan: Plan, refusals: tuple[Step, ...]) -> None:
        self.plan = plan
        self.refusals = refusals
        lines = [f"{s.description}: {s.reason}" for s in refusals]
        super().__init__("migration refused:\n  " + "\n  ".join(lines))


@dataclass(frozen=True, slots=True)
class MigrationResult:
    plan: Plan
    applied: bool
    seconds: float


class SqlRowCounter:
    """Counts rows with SQL on the tenant's connection, for the planner."""

    def __init__(self, connection: sa.Connection, live: Mapping[str, TableSpec]) -> None:
        self.connection = connection
        self.live = live
        # lightweight tables ignore schema_translate_map: name the tenant's schema (PostgreSQL)
        translate = connection.get_execution_options().get("schema_translate_map") or {}
        self.schema: str | None = translate.get(None)

    def _table(self, spec: TableSpec) -> sa.TableClause:
        columns = [sa.column(c.name) for c in spec.columns]
        if spec.kind == "entity":
            columns.append(sa.column("deleted_at"))
        return sa.table(spec.name, *columns, schema=self.schema)

    def _count(self, query: sa.Select) -> int:
        return int(self.connection.execute(query).scalar() or 0)

    def rows(self, table: TableSpec) -> int:
        return self._count(sa.select(sa.func.count()).select_from(self._table(table)))

    def nulls(self, table: TableSpec, column: ColumnSpec) -> int:
        t = self._table(table)
        return self._count(sa.select(sa.func.count()).select_from(t)
                           .where(t.c[column.name].is_(None)))

    def non_null(self, table: TableSpec, column: ColumnSpec) -> int:
        t = self._table(table)
        return self._count(sa.select(sa.func.count()).select_from(t)
                           .where(t.c[column.name].is_not(None)))

    def too_long(self, table: TableSpec, column: ColumnSpec, length: int) -> int:
        t = self._table(table)
        return self._count(sa.select(sa.func.count()).select_from(t)
                           .where(sa.func.length(t.c[column.name]) > length))

    def outside(self, table: TableSpec, column: ColumnSpec, options: tuple[str, ...]) -> int:
        t = self._table(table)
        return self._count(sa.select(sa.func.count()).select_from(t).where(
            t.c[column.name].is_not(None), t.c[column.name].not_in(list(options))))

    def duplicates(self, table: TableSpec, columns: tuple[ColumnSpec, ...]) -> int:
        t = self._table(table)
        cols = [t.c[c.name] for c in columns]
        groups = (sa.select(*cols).select_from(t)
                  .where(*(c.is_not(None) for c in cols))
                  .group_by(*cols).having(sa.func.count() > 1))
        if table.kind == "entity":
            groups = groups.where(t.c.deleted_at.is_(None))
        return self._count(sa.select(sa.func.count()).select_from(groups.subquery()))

    def not_castable(self, table: TableSpec, column: ColumnSpec, new: ColumnSpec) -> int:
        t = self._table(table)
        value = t.c[column.name]
        dialect = self.connection.dialect.name
        if new.storage in ("integer", "decimal") and column.storage in ("string", "text"):
            pattern = r"^-?[0-9]+$" if new.storage == "integer" else r"^-?[0-9]+(\.[0-9]+)?$"
            if dialect == "postgresql":
                bad = sa.not_(value.op("~")(pattern))
            else:
                bad = sa.or_(value.op("GLOB")("*[^0-9.-]*"), value == "")
            return self._count(sa.select(sa.func.count()).select_from(t)
                               .where(value.is_not(None), bad))
        if new.storage == "integer" and column.storage == "decimal":
            return self._count(sa.select(sa.func.count()).select_from(t)
                               .where(value.is_not(None), value != sa.func.round(value)))
        return self.non_null(table, column)


def _lock_key(slug: str) -> int:
    return zlib.crc32(f"metacrm:{slug}".encode()) & 0x7FFFFFFF


def ensure_schema(connection: sa.Connection, schema: str) -> None:
    """Create `schema` unless it exists; call it holding a lock that serializes creators.

    Asked with a query, not ``CREATE SCHEMA IF NOT EXISTS``: that one may judge by the
    catalog snapshot of the statement that waited for the lock, miss the schema another
    process committed meanwhile, and fail on the duplicate.
    """
    found = connection.execute(sa.text("SELECT 1 FROM pg_catalog.pg_namespace "
                                       "WHERE nspname = :schema"), {"schema": schema}).first()
    if found is None:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')


@contextmanager
def migration_transaction(db: TenantDatabase) -> Iterator[sa.Connection]:
    """One transaction holding the tenant's migration lock."""
    if db.dialect == "sqlite":
        with db.engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            raw.execute("PRAGMA foreign_keys=OFF")
            try:
                connection = connection.execution_options(sqlite_begin="IMMEDIATE")
                with connection.begin():
                    yield connection
                    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise RuntimeError(f"foreign key check failed: {problems[:5]}")
            finally:
                raw.execute("PRAGMA foreign_keys=ON")
        return
    with db.engine.connect() as connection:
        connection = connection.execution_options(**db.options())
        with connection.begin():
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _lock_key(db.slug)})
            ensure_schema(connection, db.schema)
            connection.exec_driver_sql(f'SET LOCAL search_path TO "{db.schema}"')
            yield connection


def migrate(db: TenantDatabase, desired: Mapping[str, TableSpec], version: str, *,
            allow_destructive: bool = False, dry_run: bool = False,
            before_step: Callable[[Step], None] | None = None) -> MigrationResult:
    """Plan (inside the lock) and apply; raise MigrationRefused for lossy plans."""
    started = time.perf_counter()
    catalog = Catalog()
    with migration_transaction(db) as connection:
        catalog.ensure(connection)
        current = catalog.version(connection)
        if current == version and not dry_run:
            empty = Plan(db.slug, current, version, (), dict(desired))
            return MigrationResult(empty, False, time.perf_counter() - started)
        live = catalog.specs(connection)
        stamp = time.strftime("%Y%m%d%H%M%S")
        the_plan = plan(db.slug, live, desired, current, version,
                        SqlRowCounter(connection, live), stamp, catalog.archived(connection))
        refusals = the_plan.refusals(allow_destructive)
        if refusals:
            raise MigrationRefused(the_plan, refusals)
        if dry_run:
            connection.rollback()
            return MigrationResult(the_plan, False, time.perf_counter() - started)
        Applier(connection, live, the_plan).run(before_step)
        archived_tables = {s.spec_id: live[s.spec_id] for s in the_plan.steps
                           if s.action == "archive_table"}
        archived_tables = {k: _renamed(v, s.new) for s in the_plan.steps
                           for k, v in archived_tables.items() if s.spec_id == k}
        catalog.write_specs(connection, final_specs(the_plan, live), archived_tables)
        catalog.set_version(connection, version)
    return MigrationResult(the_plan, True, time.perf_counter() - started)


def _renamed(spec: TableSpec, name: str) -> TableSpec:
    return TableSpec(spec.entity_id, name, "archived", spec.columns, spec.indexes, spec.archived)


def plan_only(db: TenantDatabase, desired: Mapping[str, TableSpec], version: str) -> Plan:
    """The plan `migrate` would apply now (read-only; no lock taken)."""
    catalog = Catalog()
    with db.connect() as connection:
        if not catalog.exists(connection):
            return plan(db.slug, {}, desired, None, version, None)
        current = catalog.version(connection)
        if current == version:
            return Plan(db.slug, current, version, (), dict(desired))
        live = catalog.specs(connection)
        return plan(db.slug, live, desired, current, version, SqlRowCounter(connection, live),
                    time.strftime("%Y%m%d%H%M%S"), catalog.archived(connection))


class Applier:
    """Runs a plan's steps on a connection inside the migration transaction."""

    def __init__(self, connection: sa.Connection, live: Mapping[str, TableSpec],
                 the_plan: Plan) -> None:
        self.connection = connection
        self.live = live
        self.plan = the_plan
        self.sqlite = connection.dialect.name == "sqlite"
        self.ops = Operations(MigrationContext.configure(connection))
        self.table_names = {k: s.name for k, s in the_plan.desired.items()}
        self.finals = final_specs(the_plan, live)
        self._built: tuple[sa.MetaData, dict[str, sa.Table]] | None = None
        # PostgreSQL refuses a foreign key to a table that does not exist yet (references in
        # a cycle, or to a table created later in the plan): those are added after the steps
        self.ready = set(live)
        self.deferred: list[tuple[TableSpec, ColumnSpec]] = []

    def _later(self, spec_id: str, column: ColumnSpec) -> bool:
        """True when `column`'s foreign key must wait for its target table (PostgreSQL)."""
        return (not self.sqlite and column.references in self.table_names
                and column.references != spec_id and column.references not in self.ready)

    def _tables(self) -> tuple[sa.MetaData, dict[str, sa.Table]]:
        """Every desired table in one MetaData, so foreign keys resolve (built once a plan:
        building them per step made a 300-entity create quadratic)."""
        if self._built is None:
            metadata = sa.MetaData()
            tables = {k: build_table(metadata, s, self.table_names)
                      for k, s in self.plan.desired.items()}
            self._built = (metadata, tables)
        return self._built

    def run(self, before_step: Callable[[Step], None] | None) -> None:
        # SQLite adds NOT NULL columns in place only with a default; without one (an empty
        # table) the table is rebuilt.
        rebuild = {s.spec_id for s in self.plan.steps
                   if self.sqlite and (s.action in SQLITE_REBUILD or (
                       s.action == "add_column" and not s.new.nullable
                       and s.new.default is None))}
        for step in self.plan.steps:
            if before_step is not None:
                before_step(step)
            if step.spec_id in rebuild and step.action not in ("rename_table", "create_table"):
                continue
            getattr(self, f"do_{step.action}")(step)
        for spec_id in rebuild:
            self.rebuild_sqlite(spec_id)
        for spec, column in self.deferred:
            self.ops.create_foreign_key(
                names.foreign_key_name(spec.entity_id, column.field_id), spec.name,
                self.table_names[column.references], [column.name], ["id"],
                ondelete=ON_DELETE.get(column.on_delete or "restrict"))

    # -- steps ------------------------------------------------------------------------------

    def do_create_table(self, step: Step) -> None:
        spec = self.plan.desired[step.spec_id]
        metadata, tables = self._tables()
        waiting = [c for c in spec.columns if self._later(step.spec_id, c)]
        if waiting:
            targets = {c.references for c in waiting}
            metadata.remove(tables[step.spec_id])
            tables[step.spec_id] = build_table(
                metadata, spec, {k: v for k, v in self.table_names.items() if k not in targets})
            self.deferred += [(spec, c) for c in waiting]
        tables[step.spec_id].create(self.connection)
        self.ready.add(step.spec_id)

    def do_rename_table(self, step: Step) -> None:
        self.ops.rename_table(step.old, step.new)

    def do_archive_table(self, step: Step) -> None:
        """Keep the rows under a new name, without the foreign keys and indexes: deleting a
        live record must not cascade into (or be refused by) archived rows, and the index
        names stay free for an entity defined again under the same name."""
        quote = self.connection.dialect.identifier_preparer.quote
        if self.sqlite:  # SQLite cannot drop a foreign key: copy the rows into a plain table
            self.connection.exec_driver_sql(f"CREATE TABLE {quote(step.new)} AS "
                                            f"SELECT * FROM {quote(step.table)}")
            self.connection.exec_driver_sql(f"DROP TABLE {quote(step.table)}")
            return
        inspector = sa.inspect(self.connection)
        schema = self.connection.get_execution_options().get("schema_translate_map", {}).get(None)
        for fk in inspector.get_foreign_keys(step.table, schema=schema):
            if fk["name"]:
                self.ops.drop_constraint(fk["name"], step.table, type_="foreignkey")
        for index in inspector.get_indexes(step.table, schema=schema):
            self.connection.exec_driver_sql(f"DROP INDEX {quote(index['name'])}")
        self.ops.rename_table(step.table, step.new)

    def _column_sql(self, table: TableSpec, column: ColumnSpec, foreign_key: bool = True) -> str:
        dialect = self.connection.dialect
        quote = dialect.identifier_preparer.quote
        parts = [quote(column.name), sql_type(column).compile(dialect=dialect)]
        default = server_default(column)
        if default is not None:
            parts.append(f"DEFAULT {default.text}")
        if not column.nullable:
            parts.append("NOT NULL")
        if foreign_key and column.references and column.references in self.table_names:
            fk_name = quote(names.foreign_key_name(table.entity_id, column.field_id))
            parts.append(f"CONSTRAINT {fk_name} REFERENCES "
                         f"{quote(self.table_names[column.references])} (id) ON DELETE "
                         f"{ON_DELETE.get(column.on_delete or 'restrict')}")
        if column.options:
            ck_name = quote(names.check_name(table.entity_id, column.field_id))
            parts.append(f"CONSTRAINT {ck_name} CHECK ({check_sql(column.name, column.options)})")
        return " ".join(parts)

    def do_add_column(self, step: Step) -> None:
        spec = self.plan.desired[step.spec_id]
        quote = self.connection.dialect.identifier_preparer.quote
        later = self._later(step.spec_id, step.new)
        self.connection.exec_driver_sql(f"ALTER TABLE {quote(step.table)} ADD COLUMN "
                                        f"{self._column_sql(spec, step.new, not later)}")
        if later:
            self.deferred.append((spec, step.new))
        self._create_column_indexes(spec, step.new)

    def _create_column_indexes(self, spec: TableSpec, column: ColumnSpec) -> None:
        if not (column.unique or column.index):
            return
        table = self._tables()[1][spec.entity_id]
        for index in list(table.indexes):
            if [c.name for c in index.columns] == [column.name]:
                index.create(self.connection)

    def do_rename_column(self, step: Step) -> None:
        quote = self.connection.dialect.identifier_preparer.quote
        self.connection.exec_driver_sql(f"ALTER TABLE {quote(step.table)} RENAME COLUMN "
                                        f"{quote(step.old.name)} TO {quote(step.new.name)}")

    def do_alter_type(self, step: Step) -> None:
        new_type = sql_type(step.new)
        using = f'"{step.new.name}"::{new_type.compile(dialect=self.connection.dialect)}'
        self.ops.alter_column(step.table, step.new.name, type_=new_type,
                              existing_type=sql_type(step.old), postgresql_using=using)

    def do_set_not_null(self, step: Step) -> None:
        self.ops.alter_column(step.table, step.new.name, nullable=False,
                              existing_type=sql_type(step.new))

    def do_drop_not_null(self, step: Step) -> None:
        self.ops.alter_column(step.table, step.new.name, nullable=True,
                              existing_type=sql_type(step.new))

    def do_backfill_default(self, step: Step) -> None:
        table = sa.table(step.table, sa.column(step.new.name))
        self.connection.execute(table.update().where(table.c[step.new.name].is_(None))
                                .values({step.new.name: step.new.default}))

    def do_alter_default(self, step: Step) -> None:
        self.ops.alter_column(step.table, step.new.name, server_default=server_default(step.new),
                              existing_type=sql_type(step.new))

    def do_replace_check(self, step: Step) -> None:
        name = names.check_name(step.spec_id, step.new.field_id)
        if step.old.options:
            self.ops.drop_constraint(name, step.table, type_="check")
        if step.new.options:
            self.ops.create_check_constraint(name, step.table,
                                             sa.text(check_sql(step.new.name, step.new.options)))

    def do_replace_foreign_key(self, step: Step) -> None:
        name = names.foreign_key_name(step.spec_id, step.new.field_id)
        if step.old.references:
            self.ops.drop_constraint(name, step.table, type_="foreignkey")
        if self._later(step.spec_id, step.new):
            self.deferred.append((self.plan.desired[step.spec_id], step.new))
        elif step.new.references and step.new.references in self.table_names:
            self.ops.create_foreign_key(name, step.table, self.table_names[step.new.references],
                                        [step.new.name], ["id"],
                                        ondelete=ON_DELETE.get(step.new.on_delete or "restrict"))

    def do_drop_index(self, step: Step) -> None:
        self.ops.drop_index(names.index_name(step.spec_id, step.old.field_id, step.old.unique),
                            table_name=step.table)

    def do_add_index(self, step: Step) -> None:
        self._create_column_indexes(self.plan.desired[step.spec_id], step.new)

    def do_drop_declared_index(self, step: Step) -> None:
        self.ops.drop_index(step.old.name, table_name=step.table)

    def do_add_declared_index(self, step: Step) -> None:
        table = self._tables()[1][step.spec_id]
        for index in table.indexes:
            if index.name == step.new.name:
                index.create(self.connection)

    def do_archive_column(self, step: Step) -> None:
        old: ColumnSpec = step.old
        spec_id = step.spec_id
        if old.unique or old.index:
            self.ops.drop_index(names.index_name(spec_id, old.field_id, old.unique),
                                table_name=step.table)
        if old.options:
            self.ops.drop_constraint(names.check_name(spec_id, old.field_id), step.table,
                                     type_="check")
        if old.references:
            self.ops.drop_constraint(names.foreign_key_name(spec_id, old.field_id), step.table,
                                     type_="foreignkey")
        self.do_rename_column(Step("rename_column", step.table, spec_id, "", old=old,
                                   new=archived_spec(old, step.new)))
        if not old.nullable:
            self.ops.alter_column(step.table, step.new, nullable=True,
                                  existing_type=sql_type(old))

    # -- SQLite table rebuild -----------------------------------------------------------------

    def rebuild_sqlite(self, spec_id: str) -> None:
        """Copy the table into its new shape in one pass (SQLite cannot alter in place)."""
        have = self.live[spec_id]
        want = self.finals[spec_id]
        quote = self.connection.dialect.identifier_preparer.quote
        temp = names.bounded(f"_metacrm_new_{want.name}")
        metadata, _ = self._tables()
        target = build_table(metadata, TableSpec(want.entity_id, temp, want.kind,
                                                 want.columns, (), ()), self.table_names)
        for column in want.archived:
            target.append_column(sa.Column(column.name, sql_type(column), nullable=True))
        for index in list(target.indexes):
            target.indexes.discard(index)
        target.create(self.connection)
        old_by_id = {c.field_id: c for c in have.columns}
        old_archived = {c.name for c in have.archived}
        newly_archived = {s.new: s.old.name for s in self.plan.steps
                          if s.spec_id == spec_id and s.action == "archive_column"}
        sources: list[tuple[str, str]] = []
        if want.kind == "entity":
            sources += [(c, quote(c)) for c in ("id", "created_at", "created_by", "updated_at",
                                                  "updated_by", "owner", "business_unit",
                                                  "row_version", "deleted_at")]
        for column in want.columns:
            old = old_by_id.get(column.field_id)
            if old is None:
                if column.default is not None:
                    sources.append((column.name, server_default(column).text))
                continue
            expression = quote(old.name)
            if not old.same_type(column):
                type_sql = sql_type(column).compile(dialect=self.connection.dialect)
                expression = f"CAST({expression} AS {type_sql})"
            if not column.nullable and column.default is not None:
                expression = f"COALESCE({expression}, {server_default(column).text})"
            sources.append((column.name, expression))
        for column in want.archived:
            if column.name in old_archived:
                sources.append((column.name, quote(column.name)))
            elif column.name in newly_archived:
                sources.append((column.name, quote(newly_archived[column.name])))
        columns = ", ".join(quote(name) for name, _ in sources)
        values = ", ".join(expr for _, expr in sources)
        current_name = want.name
        self.connection.exec_driver_sql(f"INSERT INTO {quote(temp)} ({columns}) "
                                        f"SELECT {values} FROM {quote(current_name)}")
        self.connection.exec_driver_sql(f"DROP TABLE {quote(current_name)}")
        self.connection.exec_driver_sql(f"ALTER TABLE {quote(temp)} RENAME TO "
                                        f"{quote(current_name)}")
        final = self._tables()[1][spec_id]
        for index in final.indexes:
            index.create(self.connection)
