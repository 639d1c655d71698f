"""INSERT ... ON CONFLICT statements that SQLAlchemy's compiled cache can keep.

The SQLite and PostgreSQL `insert()` constructs with ``on_conflict_*`` are not cacheable
(their class says ``inherit_cache = False``), so every execution would compile again
(about a millisecond, on every write with a rule). The engine's are built once, hold no
literal values (every value is an execution parameter) and never change, so a fixed name
is a correct cache key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.cache_key import CacheKey


class _Fixed:
    _fixed_key: tuple[Any, ...] | None = None

    def _generate_cache_key(self) -> CacheKey | None:
        if self._fixed_key is None:
            return None
        return CacheKey(self._fixed_key, [])


class _SqliteInsert(_Fixed, sqlite.Insert):
    inherit_cache = False


class _PostgresqlInsert(_Fixed, postgresql.Insert):
    inherit_cache = False


def dialect_insert(connection: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (with ``on_conflict_*``) for `table`."""
    kind = _PostgresqlInsert if connection.dialect.name == "postgresql" else _SqliteInsert
    return kind(table)


def fixed(statement: Any, name: str) -> Any:
    """`statement` (built with `dialect_insert`, no literal values) cached as `name`."""
    statement._fixed_key = ("metacrm.rules", name, id(statement.table))
    return statement
