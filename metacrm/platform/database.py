"""Engines and per-tenant connections.

Isolation comes from construction: SQLite gives every tenant its own file and engine;
PostgreSQL gives every tenant its own schema, reached only through a connection whose
``schema_translate_map`` points unqualified tables at that schema.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .settings import Settings

PLATFORM_SCHEMA = "metacrm"
AUTOCOMMIT = "AUTOCOMMIT"
PING_AFTER_IDLE = 5.0
"""Seconds a pooled PostgreSQL connection may sit unused before it is pinged on checkout."""
_SLUG = re.compile(r"^[a-z][a-z0-9-]{1,39}$")


def tenant_schema(slug: str) -> str:
    return "tenant_" + slug.replace("-", "_")


def check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise ValueError(f"{slug!r} is not a tenant slug (lower-case letters, digits, '-')")
    return slug


def _sqlite_engine(path: Path) -> sa.Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}", pool_pre_ping=False)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves: transactional DDL
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        if mode != AUTOCOMMIT:  # autocommit: each statement is a transaction of its own
            connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def ping_when_idle(engine: sa.Engine, idle: float = PING_AFTER_IDLE) -> None:
    """Ping a pooled connection on checkout only when it sat unused for `idle` seconds.

    `pool_pre_ping` pings on every checkout: one round trip per request, a fifth of an
    admin page's exchanges with PostgreSQL. What it guards against (a restarted server, a
    firewall or `idle_session_timeout` dropping idle connections) strikes connections
    that have been idle; one given back moments ago is used as it is. A server restarted
    within that window fails one statement, and SQLAlchemy then invalidates every pooled
    connection, as a failed ping would.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["metacrm_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("metacrm_idle_since", None)
        if since is None or time.monotonic() - since < idle:
            return  # a new connection, or one in use moments ago
        dialect = engine.dialect
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            alive = False
        if not alive:  # the pool drops every older connection and takes a new one
            raise sa.exc.InvalidatePoolError("a pooled connection was lost")


@dataclass(slots=True)
class TenantDatabase:
    """One tenant's database: an engine plus how to reach the tenant's tables in it."""

    slug: str
    engine: sa.Engine
    schema: str | None  # PostgreSQL schema; None for a SQLite file

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def options(self, **extra: Any) -> dict[str, Any]:
        options = dict(extra)
        if self.schema is not None:
            options["schema_translate_map"] = {None: self.schema}
        return options

    def autocommit_options(self) -> dict[str, Any]:
        """Options running each statement in a transaction of its own: reads that send no
        BEGIN or ROLLBACK and hold nothing open (a request's shared connection)."""
        if self.dialect == "sqlite":
            return {"sqlite_begin": AUTOCOMMIT}  # the driver already leaves BEGIN to us
        return {"isolation_level": AUTOCOMMIT}

    def transaction_options(self, connection: sa.Connection) -> dict[str, Any]:
        """Options undoing `autocommit_options` for a write transaction (as `begin`)."""
        if self.dialect == "sqlite":
            return {"sqlite_begin": "IMMEDIATE"}
        return {"isolation_level": connection.default_isolation_level}

    @contextmanager
    def connect(self, **options: Any) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            yield connection.execution_options(**self.options(**options))

    @contextmanager
    def begin(self, **options: Any) -> Iterator[sa.Connection]:
        """A write transaction on the tenant's tables.

        On SQLite it starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads
        and then writes cannot upgrade its lock while another writer commits (WAL gives
        SQLITE_BUSY at once, without waiting), whereas an immediate one waits its turn.
        """
        options.setdefault("sqlite_begin", "IMMEDIATE")
        with self.engine.connect() as connection:
            connection = connection.execution_options(**self.options(**options))
            with connection.begin():
                yield connection


class Databases:
    """The platform database and every tenant's; keep one per app (app.extensions)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tenants: dict[str, TenantDatabase] = {}
        if settings.is_postgres:
            self.platform_engine = sa.create_engine(settings.database_url, pool_size=10,
                                                    max_overflow=20)
            ping_when_idle(self.platform_engine)
            self.platform_schema: str | None = PLATFORM_SCHEMA
        else:
            self.platform_engine = _sqlite_engine(settings.var_dir / "platform.db")
            self.platform_schema = None

    @property
    def dialect(self) -> str:
        return self.platform_engine.dialect.name

    def tenant(self, slug: str) -> TenantDatabase:
        """The database handle of tenant `slug` (created lazily, one per process)."""
        check_slug(slug)
        found = self._tenants.get(slug)
        if found is None:
            if self.settings.is_postgres:
                found = TenantDatabase(slug, self.platform_engine, tenant_schema(slug))
            else:
                path = self.settings.var_dir / "tenants" / f"{slug}.db"
                found = TenantDatabase(slug, _sqlite_engine(path), None)
            self._tenants[slug] = found
        return found

    def tenant_file(self, slug: str) -> Path | None:
        if self.settings.is_postgres:
            return None
        return self.settings.var_dir / "tenants" / f"{slug}.db"

    def forget(self, slug: str) -> None:
        found = self._tenants.pop(slug, None)
        if found is not None and found.engine is not self.platform_engine:
            found.engine.dispose()

    def dispose(self) -> None:
        for slug in list(self._tenants):
            self.forget(slug)
        self.platform_engine.dispose()
