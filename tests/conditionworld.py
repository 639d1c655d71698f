"""Shared by the condition tests: a compiled library, its tables, and a database per backend."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from metacrm.engines.conditions import OperatorRegistry
from metacrm.generators.specs import registry_specs
from metacrm.generators.tables import TenantTables, build_tables
from metacrm.metadata.compiler import Compiler
from metacrm.metadata.ir import Registry
from metacrm.metadata.library import Library

PG_URL = os.environ.get("METACRM_TEST_PG_URL")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=[
    pytest.mark.postgres, pytest.mark.skipif(not PG_URL, reason="METACRM_TEST_PG_URL is not set")])]


class World:
    """The compiled registry, its tables and operators (not a dataclass: Hypothesis would
    print every field of the Registry when reporting an example)."""

    def __init__(self, registry: Registry, tables: TenantTables,
                 operators: OperatorRegistry) -> None:
        self.registry = registry
        self.tables = tables
        self.operators = operators

    def __repr__(self) -> str:
        return f"World({self.registry.version[:12]})"


def compile_world(library: Library, tenant: str = "acme") -> World:
    compiler = Compiler(library)
    result = compiler.compile_tenant(tenant)
    assert result.registry is not None, [d.format() for d in result.diagnostics]
    registry = result.registry
    specs = registry_specs(registry, compiler.types)
    tables = build_tables(specs, {e.id: key for key, e in registry.entities.items()})
    return World(registry, tables, OperatorRegistry.from_plugins(compiler.plugins))


@contextmanager
def open_database(backend: str, world: World) -> Iterator[sa.Connection]:
    """A connection whose tables exist: in-memory SQLite, or a throw-away PostgreSQL schema
    `cond_<random>` dropped at the end."""
    schema = None
    if backend == "sqlite":
        engine = sa.create_engine("sqlite://")
        connection = engine.connect()
    else:
        engine = sa.create_engine(PG_URL)
        schema = f"cond_{secrets.token_hex(6)}"
        with engine.begin() as setup:
            setup.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        connection = engine.connect().execution_options(schema_translate_map={None: schema})
    try:
        world.tables.metadata.create_all(connection)
        connection.commit()
        yield connection
    finally:
        connection.close()
        if schema is not None:
            with engine.begin() as teardown:
                teardown.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
