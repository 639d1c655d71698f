"""Table specs → SQLAlchemy Core tables, one fresh MetaData per Registry version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import names
from .specs import ColumnSpec, TableSpec

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ON_DELETE = MappingProxyType({"restrict": "RESTRICT", "cascade": "CASCADE",
                              "set_null": "SET NULL"})

SYSTEM_COLUMN_NAMES = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner",
                       "business_unit", "row_version", "deleted_at")


def sql_type(column: ColumnSpec) -> sa.types.TypeEngine:
    """The SQLAlchemy type of a column spec."""
    storage = column.storage
    if storage == "string":
        return sa.String(column.length)
    if storage == "text":
        return sa.Text()
    if storage == "integer":
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    if storage == "decimal":
        return sa.Numeric(column.precision, column.scale, asdecimal=True)
    if storage == "boolean":
        return sa.Boolean(create_constraint=False)
    if storage == "date":
        return sa.Date()
    if storage == "datetime":
        return sa.DateTime(timezone=True)
    if storage == "json":
        return JSON_TYPE
    if storage == "uuid":
        return sa.Uuid(as_uuid=False)
    if storage == "id":
        return ID_TYPE
    raise ValueError(f"unknown storage kind {storage!r}")


def server_default(column: ColumnSpec) -> sa.TextClause | None:
    value = column.default
    if value is None:
        return None
    if isinstance(value, bool):
        return sa.text("true" if value else "false")
    if isinstance(value, int | float):
        return sa.text(str(value))
    return sa.text("'" + str(value).replace("'", "''") + "'")


def check_sql(column_name: str, options: tuple[str, ...]) -> str:
    quoted = ", ".join("'" + o.replace("'", "''") + "'" for o in options)
    return f'"{column_name}" IN ({quoted})'


def enum_check(table: TableSpec, column: ColumnSpec) -> sa.CheckConstraint | None:
    if not column.options:
        return None
    return sa.CheckConstraint(check_sql(column.name, column.options),
                              name=names.check_name(table.entity_id, column.field_id))


def system_columns() -> list[sa.Column]:
    now = sa.text("CURRENT_TIMESTAMP")
    return [
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("created_by", ID_TYPE, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_by", ID_TYPE, nullable=True),
        sa.Column("owner", ID_TYPE, nullable=True, index=False),
        sa.Column("business_unit", sa.String(64), nullable=True),
        sa.Column("row_version", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    ]


def data_column(table: TableSpec, column: ColumnSpec,
                table_names: Mapping[str, str]) -> sa.Column:
    """The SQLAlchemy column for one field (foreign key and enum check included)."""
    args: list[sa.SchemaItem] = []
    if column.references and column.references in table_names:
        args.append(sa.ForeignKey(f"{table_names[column.references]}.id",
                                  ondelete=ON_DELETE.get(column.on_delete or "restrict"),
                                  name=names.foreign_key_name(table.entity_id, column.field_id)))
    check = enum_check(table, column)
    if check is not None:
        args.append(check)
    return sa.Column(column.name, sql_type(column), *args, nullable=column.nullable,
                     server_default=server_default(column))


def column_indexes(table: sa.Table, spec: TableSpec) -> list[sa.Index]:
    """Single-column and declared indexes; unique ones ignore soft-deleted rows."""
    indexes = []
    live = table.c.deleted_at.is_(None) if "deleted_at" in table.c else None
    for column in spec.columns:
        if column.unique:
            where = {"postgresql_where": live, "sqlite_where": live} if live is not None else {}
            indexes.append(sa.Index(names.index_name(spec.entity_id, column.field_id, True),
                                    table.c[column.name], unique=True, **where))
        elif column.index:
            indexes.append(sa.Index(names.index_name(spec.entity_id, column.field_id),
                                    table.c[column.name]))
    by_id = {c.field_id: c.name for c in spec.columns}
    for declared in spec.indexes:
        cols = [table.c[by_id[f]] for f in declared.columns if f in by_id]
        if cols:
            where = {"postgresql_where": live, "sqlite_where": live} \
                if declared.unique and live is not None else {}
            indexes.append(sa.Index(declared.name, *cols, unique=declared.unique, **where))
    return indexes


def build_table(metadata: sa.MetaData, spec: TableSpec,
                table_names: Mapping[str, str]) -> sa.Table:
    """A SQLAlchemy table (with its indexes) for one spec."""
    if spec.kind == "link":
        columns = [data_column(spec, c, table_names) for c in spec.columns]
        table = sa.Table(spec.name, metadata, *columns,
                         sa.PrimaryKeyConstraint("source_id", "target_id"))
    else:
        columns = system_columns() + [data_column(spec, c, table_names) for c in spec.columns]
        table = sa.Table(spec.name, metadata, *columns)
    column_indexes(table, spec)  # sa.Index attaches itself to the table's columns
    return table


@dataclass(frozen=True, slots=True)
class TenantTables:
    """The SQLAlchemy tables of one Registry version (schema-less: tenancy maps it)."""

    metadata: sa.MetaData
    by_entity: Mapping[str, sa.Table]  # entity key -> table
    by_id: Mapping[str, sa.Table]  # table spec id (entity id or link field id) -> table
    specs: Mapping[str, TableSpec]


def build_tables(specs: Mapping[str, TableSpec], entity_keys: Mapping[str, str]) -> TenantTables:
    """Tables for every spec; `entity_keys` maps entity id to `module.entity`."""
    metadata = sa.MetaData()
    table_names = {spec_id: spec.name for spec_id, spec in specs.items()}
    by_id: dict[str, sa.Table] = {}
    for spec_id, spec in specs.items():
        by_id[spec_id] = build_table(metadata, spec, table_names)
    by_entity = {key: by_id[entity_id] for entity_id, key in entity_keys.items()
                 if entity_id in by_id}
    return TenantTables(metadata, by_entity, by_id, specs)
