"""The tenant's own catalog: which tables and columns exist for which stable ids, and the
metadata version the tenant's schema is on. It lives in the tenant's database, so a
schema change and the catalog change commit (or roll back) together."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from .specs import TableSpec

STATE_TABLE = "_metacrm_state"
TABLES_TABLE = "_metacrm_tables"


def catalog_metadata() -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    state = sa.Table(STATE_TABLE, metadata,
                     sa.Column("key", sa.String(64), primary_key=True),
                     sa.Column("value", sa.Text, nullable=False))
    tables = sa.Table(TABLES_TABLE, metadata,
                      sa.Column("spec_id", sa.String(255), primary_key=True),
                      sa.Column("table_name", sa.String(63), nullable=False),
                      sa.Column("kind", sa.String(16), nullable=False),
                      sa.Column("spec", sa.Text, nullable=False))
    return metadata, state, tables


# One set of (schema-less) table objects per process: SQLAlchemy's compiled-statement cache
# keys on Table objects, so fresh ones per call would fill it with copies of the same SQL.
_CATALOG_TABLES = catalog_metadata()


class Catalog:
    """Reads and writes the catalog through a connection already bound to the tenant."""

    def __init__(self) -> None:
        self.metadata, self.state, self.tables = _CATALOG_TABLES

    def ensure(self, connection: sa.Connection) -> None:
        self.metadata.create_all(connection, checkfirst=True)

    def exists(self, connection: sa.Connection) -> bool:
        # the inspector ignores schema_translate_map: name the tenant's schema explicitly
        translate = connection.get_execution_options().get("schema_translate_map") or {}
        return sa.inspect(connection).has_table(STATE_TABLE, schema=translate.get(None))

    def version(self, connection: sa.Connection) -> str | None:
        row = connection.execute(sa.select(self.state.c.value)
                                 .where(self.state.c.key == "version")).first()
        return row[0] if row else None

    def set_version(self, connection: sa.Connection, version: str) -> None:
        updated = connection.execute(self.state.update().where(self.state.c.key == "version")
                                     .values(value=version))
        if updated.rowcount == 0:
            connection.execute(self.state.insert().values(key="version", value=version))

    def specs(self, connection: sa.Connection) -> dict[str, TableSpec]:
        """The live tables by stable id (archived ones left out)."""
        rows = connection.execute(sa.select(self.tables.c.spec_id, self.tables.c.spec)
                                  .where(self.tables.c.kind != "archived"))
        return {spec_id: TableSpec.from_json(text) for spec_id, text in rows}

    def archived(self, connection: sa.Connection) -> list[str]:
        rows = connection.execute(sa.select(self.tables.c.table_name)
                                  .where(self.tables.c.kind == "archived"))
        return [name for (name,) in rows]

    def write_specs(self, connection: sa.Connection, specs: Mapping[str, TableSpec],
                    archived: Mapping[str, TableSpec]) -> None:
        """Replace the live entries with `specs`; record newly archived tables."""
        connection.execute(self.tables.delete().where(self.tables.c.kind != "archived"))
        rows = [{"spec_id": k, "table_name": s.name, "kind": s.kind, "spec": s.to_json()}
                for k, s in specs.items()]
        rows += [{"spec_id": f"archived:{s.name}", "table_name": s.name, "kind": "archived",
                  "spec": s.to_json()} for s in archived.values()]
        if rows:
            connection.execute(self.tables.insert(), rows)
