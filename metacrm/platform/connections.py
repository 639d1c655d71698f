"""One database connection per request, shared by every read and write of the request.

A sub-app that calls `install(app)` (the API and the admin do) gives each request a
`RequestConnections` in `flask.g`. Inside such a request, `TenantRuntime.connect()` and
`TenantRuntime.begin()` no longer check out a connection each: the first one takes a
connection from the pool, every later one reuses it, and it goes back to the pool when
the request ends (`teardown_request`, errors included).

Between writes the connection is in autocommit mode (PostgreSQL: the driver's autocommit;
SQLite: no ``BEGIN``), so reads hold no transaction: no BEGIN/ROLLBACK per read, no
snapshot kept open while a page renders, nothing for a write to wait on. A write
(`runtime.begin()`) runs on the same connection in a transaction of its own (SQLite's
``BEGIN IMMEDIATE``, PostgreSQL's default isolation), so reading first and then writing
can neither deadlock nor see ``database is locked``; the `connection` a `record_writing`
plugin receives is that transaction's. A write begun inside another write (a plugin
writing from `record_writing`) joins it as a savepoint.

Outside such a request (the CLI, jobs, tests calling the record service directly) each
`connect()` and `begin()` checks out a connection of its own, as before.

Inside a request, use the connection `runtime.connect()` gives only to read, and write
with `runtime.begin()`: it is in autocommit mode, so a write on it would not be atomic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask, g, has_app_context

from .database import TenantDatabase

SCOPE = "metacrm_connections"  # flask.g attribute: this request's RequestConnections
INSTALLED = "metacrm.connections"  # app.extensions key: the hooks are in place


class SharedConnection:
    """One tenant's connection for one request: checked out on first use."""

    def __init__(self, db: TenantDatabase, options: dict[str, Any]) -> None:
        self.db = db
        self.options = options
        self._connection: sa.Connection | None = None
        self._writes = 0  # write transactions open on it (nested ones are savepoints)

    def _checkout(self) -> sa.Connection:
        if self._connection is None or self._connection.closed:
            connection = self.db.engine.connect()
            self._connection = connection.execution_options(
                **self.db.options(**self.options), **self.db.autocommit_options())
        return self._connection

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """The connection for reads (inside a write: the write's transaction)."""
        connection = self._checkout()
        try:
            yield connection
        except sa.exc.DBAPIError:
            if connection.invalidated and not self._writes:
                self.release()  # a lost server connection: the next read takes a new one
            raise

    @contextmanager
    def writing(self) -> Iterator[sa.Connection]:
        """A write transaction on the request's connection, committed when the block ends
        (rolled back on an exception); inside another write, a savepoint of it."""
        connection = self._checkout()
        if self._writes:
            with connection.begin_nested():
                yield connection
            return
        if connection.in_transaction():
            connection.commit()  # the autobegun read "transaction": autocommit, nothing to end
        connection.execution_options(**self.db.transaction_options(connection))
        self._writes += 1
        try:
            with connection.begin():
                yield connection
        finally:
            self._writes -= 1
            try:
                connection.execution_options(**self.db.autocommit_options())
            except sa.exc.SQLAlchemyError:
                self.release()

    def release(self) -> None:
        """Give the connection back to the pool (the next use takes another)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class RequestConnections:
    """The shared connections of one request, one per tenant."""

    def __init__(self) -> None:
        self.shared: dict[str, SharedConnection] = {}

    def get(self, slug: str, db: TenantDatabase, options: dict[str, Any]) -> SharedConnection:
        found = self.shared.get(slug)
        if found is None:
            found = self.shared[slug] = SharedConnection(db, options)
        return found

    def close(self) -> None:
        shared, self.shared = self.shared, {}
        for connection in shared.values():
            connection.release()


def install(app: Flask) -> None:
    """Give each request of `app` its shared connections (idempotent)."""
    if app.extensions.get(INSTALLED):
        return
    app.extensions[INSTALLED] = True

    @app.before_request
    def _open_connections() -> None:
        setattr(g, SCOPE, RequestConnections())

    @app.teardown_request
    def _close_connections(_exc: BaseException | None) -> None:
        scope = g.pop(SCOPE, None)
        if scope is not None:
            scope.close()


def request_connection(slug: str, db: TenantDatabase,
                       options: dict[str, Any]) -> SharedConnection | None:
    """This request's connection to tenant `slug`, or None outside such a request."""
    if not has_app_context():
        return None
    scope = g.get(SCOPE)
    return None if scope is None else scope.get(slug, db, options)
