"""System tables kept in every tenant's database beside its entity tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..generators.tables import ID_TYPE


@dataclass(frozen=True, slots=True)
class SystemTables:
    metadata: sa.MetaData
    audit: sa.Table
    counters: sa.Table
    users: sa.Table
    tokens: sa.Table
    statements: dict[str, Any] = field(default_factory=dict, compare=False)


def system_tables() -> SystemTables:
    """Fresh table objects (schema-less; tenancy maps them to the tenant)."""
    metadata = sa.MetaData()
    audit = sa.Table(
        "_metacrm_audit", metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", ID_TYPE, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", ID_TYPE),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Index("ix__metacrm_audit_record", "entity", "record_id"))
    counters = sa.Table(
        "_metacrm_counters", metadata,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False))
    users = sa.Table(
        "_metacrm_users", metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(150), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("business_unit", sa.String(64)),
        sa.Column("locale", sa.String(16)),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))
    tokens = sa.Table(
        "_metacrm_tokens", metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("user_id", ID_TYPE, sa.ForeignKey("_metacrm_users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)))
    return SystemTables(metadata, audit, counters, users, tokens)


def ensure_system_tables(connection: sa.Connection) -> SystemTables:
    tables = system_tables()
    tables.metadata.create_all(connection, checkfirst=True)
    return tables


def runtime_system_tables(runtime: Any) -> SystemTables:
    """The system tables of one runtime version, built once (statements then hit the
    version's compiled cache instead of compiling against new Table objects)."""
    tables = runtime.extras.get("system_tables")
    if tables is None:
        tables = system_tables()
        runtime.extras["system_tables"] = tables
    return tables
