"""Database fixtures: every test asking for `backend` runs on SQLite and on PostgreSQL.

Loaded as a pytest plugin by ``tests/conftest.py`` (``pytest_plugins = ["dbfixtures"]``).

The PostgreSQL leg needs ``METACRM_TEST_PG_URL`` (``make test`` exports it when a server
answers, see ``scripts/test-env.sh``). Without it the leg is skipped with a reason, except
when ``CI=true``: there a missing PostgreSQL fails the tests instead of hiding them.

Isolation on PostgreSQL, robust under pytest-xdist (and under two pytest sessions sharing
one server): every worker process creates its own throw-away database,
``metacrm_test_<worker>_<pid>``, through the admin URL the first time a test needs it, and
drops it (``WITH (FORCE)``) when the session ends. A worker runs its tests one at a time,
so before each test every non-system schema of that database is dropped: each test
starts from an empty database (platform schema ``metacrm``, tenant schemas
``tenant_<slug>``) whatever tenant slugs it uses, and no two workers ever share a schema
or a platform store. Subprocesses a test starts reach the same database through the
``METACRM_DATABASE_URL`` of :meth:`Project.env`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import write_files
from sqlalchemy.engine import make_url

from metacrm.generators.catalog import Catalog
from metacrm.generators.specs import TableSpec
from metacrm.platform.runtime import Platform, TenantRuntime
from metacrm.platform.settings import Settings

PG_ENV = "METACRM_TEST_PG_URL"
BACKENDS = ("sqlite", "postgresql")


# -- PostgreSQL: one throw-away database per worker ------------------------------------------

def _admin_url() -> str | None:
    url = os.environ.get(PG_ENV) or None
    if url is None and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {PG_ENV} is unset: the PostgreSQL leg is required in CI "
                    "(run the tests through `make test`, which starts and finds the server)",
                    pytrace=False)
    return url


@pytest.fixture(scope="session")
def pg_database_url(worker_id: str) -> Iterator[str]:
    """The URL of this worker's own throw-away PostgreSQL database (dropped at the end)."""
    admin = _admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL leg: set {PG_ENV} (e.g. postgresql+psycopg://postgres@"
                    "127.0.0.1:5432/postgres) or run `make test`")
    name = f"metacrm_test_{worker_id}_{os.getpid()}".lower()
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"PostgreSQL leg: {PG_ENV} does not answer ({exc.orig})")
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def reset_pg_database(url: str) -> None:
    """Drop every schema a previous test of this worker left behind."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            schemas = connection.exec_driver_sql(
                "SELECT nspname FROM pg_namespace WHERE left(nspname, 3) <> 'pg_' "
                "AND nspname NOT IN ('public', 'information_schema')").scalars().all()
            for schema in schemas:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """pytest-xdist's worker id (gw0, gw1, ...), or "master" when not distributed."""
    worker = getattr(request.config, "workerinput", None)
    return worker["workerid"] if worker else "master"


# -- backends --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Backend:
    """One database backend: its name and the platform's database URL (None: SQLite)."""

    name: str
    database_url: str | None

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each test using it runs twice: on SQLite files and on a PostgreSQL database."""
    if request.param == "sqlite":
        return Backend("sqlite", None)
    url = request.getfixturevalue("pg_database_url")
    reset_pg_database(url)
    return Backend("postgresql", url)


class Project:
    """A throw-away project (metadata/, tenants/) and its var/ folder, on one backend.

    Calling it writes files into the project and returns a new Platform on it; every
    Platform made is closed when the test ends.
    """

    def __init__(self, root: Path, backend: Backend) -> None:
        self.root = root / "project"
        self.var_dir = root / "var"
        self.backend = backend
        self.root.mkdir(parents=True, exist_ok=True)
        self._platforms: list[Platform] = []

    def settings(self, **changes: Any) -> Settings:
        return Settings(self.root, self.var_dir, self.backend.database_url, **changes)

    def write(self, files: Mapping[str, str]) -> None:
        write_files(self.root, files)

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink()

    def env(self) -> dict[str, str]:
        """Environment for a `metacrm` subprocess or CliRunner on this project."""
        env = {"METACRM_ROOT": str(self.root), "METACRM_VAR": str(self.var_dir),
               "METACRM_DATABASE_URL": self.backend.database_url or ""}
        return env

    def __call__(self, files: Mapping[str, str] | None = None, *,
                 check_interval: float = 1.0, **settings: Any) -> Platform:
        if files:
            self.write(files)
        platform = Platform(self.settings(**settings), check_interval=check_interval)
        self._platforms.append(platform)
        return platform

    def close(self) -> None:
        for platform in self._platforms:
            platform.close()


@pytest.fixture
def make_platform(tmp_path: Path, backend: Backend) -> Iterator[Project]:
    """``make_platform(files)`` writes a small library and returns a Platform on it."""
    project = Project(tmp_path, backend)
    try:
        yield project
    finally:
        project.close()


# -- looking at a tenant's live database ------------------------------------------------------

@contextmanager
def tenant_connection(platform: Platform, slug: str) -> Iterator[sa.Connection]:
    """A connection on `slug`'s tables (its SQLite file, or its PostgreSQL schema)."""
    with platform.databases.tenant(slug).connect() as connection:
        yield connection


@contextmanager
def inspector(platform: Platform, slug: str) -> Iterator[tuple[sa.Inspector, str | None]]:
    """An inspector on the live database and the schema argument its calls need."""
    db = platform.databases.tenant(slug)
    with db.connect() as connection:
        yield sa.inspect(connection), db.schema


def table_names(platform: Platform, slug: str) -> set[str]:
    with inspector(platform, slug) as (insp, schema):
        return set(insp.get_table_names(schema=schema))


def column_names(platform: Platform, slug: str, table: str) -> list[str]:
    with inspector(platform, slug) as (insp, schema):
        return [c["name"] for c in insp.get_columns(table, schema=schema)]


def columns(platform: Platform, slug: str, table: str) -> dict[str, dict[str, Any]]:
    with inspector(platform, slug) as (insp, schema):
        return {c["name"]: c for c in insp.get_columns(table, schema=schema)}


def schema_snapshot(platform: Platform, slug: str) -> dict[str, Any]:
    """Tables, columns (name, type, nullability), indexes, checks and foreign keys."""
    out: dict[str, Any] = {}
    with inspector(platform, slug) as (insp, schema):
        for table in sorted(insp.get_table_names(schema=schema)):
            out[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"])
                            for c in insp.get_columns(table, schema=schema)],
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(table, schema=schema)),
                "checks": sorted(c["name"] or "" for c in
                                 insp.get_check_constraints(table, schema=schema)),
                "fks": sorted((f["name"] or "", tuple(f["constrained_columns"]))
                              for f in insp.get_foreign_keys(table, schema=schema)),
            }
    return out


def catalog_version(platform: Platform, slug: str) -> str | None:
    with tenant_connection(platform, slug) as connection:
        return Catalog().version(connection)


def catalog_specs(platform: Platform, slug: str) -> dict[str, TableSpec]:
    with tenant_connection(platform, slug) as connection:
        return Catalog().specs(connection)


def insert(runtime: TenantRuntime, entity: str, *rows: Mapping[str, Any]) -> list[int]:
    """Insert rows through the runtime's tables; returns their ids."""
    table = runtime.tables.by_entity[entity]
    ids = []
    with runtime.begin() as connection:
        for row in rows:
            result = connection.execute(table.insert().values(**row).returning(table.c.id))
            ids.append(result.scalar_one())
    return ids


def fetch(platform: Platform, slug: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of a raw SQL query on the tenant's tables (unqualified table names)."""
    db = platform.databases.tenant(slug)
    with db.connect() as connection:
        if db.schema is not None:  # undone when the connection rolls back on close
            connection.exec_driver_sql(f'SET LOCAL search_path TO "{db.schema}"')
        return [tuple(r) for r in connection.execute(sa.text(sql), params)]


def execute(platform: Platform, slug: str, sql: str, **params: Any) -> None:
    """Run one raw statement on the tenant's tables and commit it."""
    db = platform.databases.tenant(slug)
    with db.begin() as connection:
        if db.schema is not None:
            connection.exec_driver_sql(f'SET LOCAL search_path TO "{db.schema}"')
        connection.execute(sa.text(sql), params)
