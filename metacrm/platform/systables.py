"""System tables kept in every tenant's database beside its entity tables."""

from __future__ import annotations

from collections.abc import Callable
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
    org_units: sa.Table
    org_members: sa.Table
    user_roles: sa.Table
    shares: sa.Table
    statements: dict[str, Any] = field(default_factory=dict, compare=False)
    extra: dict[str, sa.Table] = field(default_factory=dict, compare=False)
    """Tables that plugins add (`register_system_tables`), by name."""

    def table(self, name: str) -> sa.Table:
        """A plugin's system table, e.g. ``_metacrm_rule_runs``."""
        return self.extra[name]

    def statement(self, name: str, build: Callable[[], Any]) -> Any:
        """The statement `name`, built once per set of tables: reusing one object keeps its
        cache key, so the runtime's compiled cache finds its SQL without recompiling."""
        found = self.statements.get(name)
        if found is None:
            found = self.statements[name] = build()
        return found


def system_tables(plugins: Any = None) -> SystemTables:
    """Fresh table objects (schema-less; tenancy maps them to the tenant), with the tables
    plugins register when a plugin manager is given."""
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
    org_units = sa.Table(
        "_metacrm_org_units", metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("parent_id", ID_TYPE, sa.ForeignKey("_metacrm_org_units.id",
                                                      ondelete="RESTRICT")),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("business_unit", sa.String(64)),
        sa.Column("manager_id", ID_TYPE, sa.ForeignKey("_metacrm_users.id",
                                                       ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix__metacrm_org_units_path", "path"))
    org_members = sa.Table(
        "_metacrm_org_members", metadata,
        sa.Column("user_id", ID_TYPE, sa.ForeignKey("_metacrm_users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("unit_id", ID_TYPE, sa.ForeignKey("_metacrm_org_units.id",
                                                    ondelete="CASCADE"), primary_key=True),
        sa.Column("is_primary", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Index("ix__metacrm_org_members_unit", "unit_id", "user_id"))
    user_roles = sa.Table(
        "_metacrm_user_roles", metadata,
        sa.Column("user_id", ID_TYPE, sa.ForeignKey("_metacrm_users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("role", sa.String(64), primary_key=True))
    shares = sa.Table(
        "_metacrm_shares", metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", ID_TYPE, nullable=False),
        sa.Column("user_id", ID_TYPE, sa.ForeignKey("_metacrm_users.id", ondelete="CASCADE")),
        sa.Column("unit_id", ID_TYPE, sa.ForeignKey("_metacrm_org_units.id",
                                                    ondelete="CASCADE")),
        sa.Column("access", sa.String(8), nullable=False),
        sa.Column("created_by", ID_TYPE),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("(user_id IS NULL) <> (unit_id IS NULL)",
                           name="ck__metacrm_shares_one_target"),
        sa.CheckConstraint("access IN ('read', 'edit')", name="ck__metacrm_shares_access"),
        sa.Index("ix__metacrm_shares_record", "entity", "record_id"),
        sa.Index("ix__metacrm_shares_user", "user_id", "entity"),
        sa.Index("ix__metacrm_shares_unit", "unit_id", "entity"))
    extra: dict[str, sa.Table] = {}
    if plugins is not None:
        for batch in plugins.hook.register_system_tables(metadata=metadata):
            for table in batch:
                extra[table.name] = table
    return SystemTables(metadata, audit, counters, users, tokens, org_units, org_members,
                        user_roles, shares, extra=extra)


def ensure_system_tables(connection: sa.Connection, plugins: Any = None) -> SystemTables:
    tables = system_tables(plugins)
    tables.metadata.create_all(connection, checkfirst=True)
    return tables


def runtime_system_tables(runtime: Any) -> SystemTables:
    """The system tables of one runtime version, built once (statements then hit the
    version's compiled cache instead of compiling against new Table objects)."""
    tables = runtime.extras.get("system_tables")
    if tables is None:
        platform = getattr(runtime, "platform", None)
        tables = system_tables(None if platform is None else platform.plugins)
        runtime.extras["system_tables"] = tables
    return tables
