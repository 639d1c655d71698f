"""The platform store: tenants, their metadata versions and migration history.

Its tables are managed by alembic (``migrations/`` at the project root); on PostgreSQL
they live in the ``metacrm`` schema, on SQLite in ``var/platform.db``.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

from .database import Databases
from .migrator import ensure_schema

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_UPGRADE_LOCK = zlib.crc32(b"metacrm:platform-store") & 0x7FFFFFFF


def store_metadata(schema: str | None) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    """The store's tables (the alembic migrations create exactly these)."""
    metadata = sa.MetaData(schema=schema)
    tenants = sa.Table(
        "tenants", metadata,
        sa.Column("slug", sa.String(40), primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("metadata_version", sa.String(32)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True)))
    versions = sa.Table(
        "metadata_versions", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(40), nullable=False, index=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))
    migrations = sa.Table(
        "migrations", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(40), nullable=False, index=True),
        sa.Column("from_version", sa.String(32)),
        sa.Column("to_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("destructive", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))
    return metadata, tenants, versions, migrations


@dataclass(frozen=True, slots=True)
class TenantRecord:
    slug: str
    label: str
    status: str
    metadata_version: str | None
    created_at: dt.datetime
    archived_at: dt.datetime | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PlatformStore:
    """Reads and writes the platform tables."""

    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self.engine = databases.platform_engine
        self.schema = databases.platform_schema
        self.metadata, self.tenants, self.versions, self.migrations = store_metadata(self.schema)

    def upgrade(self) -> None:
        """Bring the store's tables to the newest alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        # processes starting at once queue here: SQLite takes the write lock at BEGIN
        # (a deferred transaction could not upgrade its stale read), PostgreSQL an advisory
        # lock (creating the schema and alembic's tables would race otherwise)
        with self.engine.connect() as connection, \
                connection.execution_options(sqlite_begin="IMMEDIATE").begin():
            if self.engine.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _UPGRADE_LOCK})
            if self.schema:
                ensure_schema(connection, self.schema)
            config.attributes["connection"] = connection
            config.attributes["schema"] = self.schema
            command.upgrade(config, "head")

    def get(self, slug: str) -> TenantRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(self.tenants).where(
                self.tenants.c.slug == slug)).mappings().first()
        return _record(row) if row else None

    def list(self) -> list[TenantRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(self.tenants).order_by(self.tenants.c.slug))
            return [_record(r) for r in rows.mappings()]

    def add(self, slug: str, label: str) -> None:
        """Record tenant `slug` as active (an upsert: safe when processes do it at once)."""
        now = _now()
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(self.tenants).values(
            slug=slug, label=label, status="active", created_at=now, updated_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[self.tenants.c.slug],
            set_={"label": label, "status": "active", "archived_at": None, "updated_at": now})
        with self.engine.begin() as connection:
            connection.execute(statement)

    def archive(self, slug: str) -> bool:
        with self.engine.begin() as connection:
            result = connection.execute(self.tenants.update().where(
                self.tenants.c.slug == slug, self.tenants.c.status == "active")
                .values(status="archived", archived_at=_now(), updated_at=_now()))
        return result.rowcount > 0

    def record_version(self, slug: str, version: str, summary: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.tenants.update().where(self.tenants.c.slug == slug)
                               .values(metadata_version=version, updated_at=_now()))
            last = connection.execute(
                sa.select(self.versions.c.version).where(self.versions.c.tenant == slug)
                .order_by(self.versions.c.id.desc()).limit(1)).scalar()
            if last != version:
                connection.execute(self.versions.insert().values(
                    tenant=slug, version=version, summary=json.dumps(summary),
                    created_at=_now()))

    def record_migration(self, slug: str, plan: dict[str, Any], status: str, *,
                         destructive: bool = False, error: str | None = None,
                         seconds: float | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.migrations.insert().values(
                tenant=slug, from_version=plan.get("from_version"),
                to_version=plan["to_version"], status=status, destructive=destructive,
                plan=json.dumps(plan), error=error, seconds=seconds, created_at=_now()))

    def history(self, slug: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(self.migrations).where(self.migrations.c.tenant == slug)
                .order_by(self.migrations.c.id.desc()).limit(limit)).mappings()
            return [dict(r) for r in rows]


def _record(row: Any) -> TenantRecord:
    return TenantRecord(row["slug"], row["label"], row["status"], row["metadata_version"],
                        row["created_at"], row["archived_at"])
