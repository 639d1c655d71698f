"""The import log (`_metacrm_imports`): who imported which file into which entity, when,
and what came of it. A built-in plugin registers the table in every tenant database."""

from __future__ import annotations

import sqlalchemy as sa

from ...generators.tables import ID_TYPE
from ...hookspecs import hookimpl

IMPORTS = "_metacrm_imports"


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return [sa.Table(
        IMPORTS, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("file", sa.String(255), nullable=False),
        sa.Column("actor", ID_TYPE),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),  # running | done | failed
        sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rejected", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pairs", sa.BigInteger, nullable=False, server_default="0"),
        sa.Index("ix__metacrm_imports_entity", "entity", "id"))]
