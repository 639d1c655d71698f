"""Delayed work in the database: `_metacrm_scheduled`, swept by beat.

Broker ETAs are no place for long delays (Redis hands an ETA task to another worker
after its visibility timeout; RabbitMQ drops a consumer that holds a message past its
consumer timeout), and the embedded queue lives in memory. So a job that should run
later is a row here, in the tenant's own database, and the periodic sweep enqueues the
rows that are due, claiming each once (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on
SQLite the sweep's ``BEGIN IMMEDIATE`` transaction serialises sweepers).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ...generators.tables import ID_TYPE

log = logging.getLogger(__name__)

SCHEDULED = "_metacrm_scheduled"
SWEEP_JOB = "jobs.sweep"
BATCH = 200
KEEP = dt.timedelta(days=7)
"""Enqueued and cancelled rows are kept this long after they were due, then purged."""


def scheduled_table(metadata: sa.MetaData) -> sa.Table:
    """The delayed-work table on `metadata` (every tenant database has one)."""
    return sa.Table(
        SCHEDULED, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("key", name="uq__metacrm_scheduled_key"),
        sa.Index("ix__metacrm_scheduled_due", "status", "due_at"))


TABLE = scheduled_table(sa.MetaData())
"""The same table for statements: schema-less, so any tenant's connection maps it."""


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (naive values, as SQLite returns them, are UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _connection(target: Any) -> tuple[Any, Any]:
    """(context manager yielding a connection, platform or None) for a runtime or a
    connection (the caller's transaction: the row commits or rolls back with it)."""
    if isinstance(target, sa.Connection):
        return _Borrowed(target), None
    return target.begin(), target.platform


class _Borrowed:
    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sa.Connection:
        return self.connection

    def __exit__(self, *_: Any) -> None:
        return None


def _insert(connection: sa.Connection) -> Any:
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(
        TABLE)


def schedule(target: Any, name: str, payload: Mapping[str, Any], due_at: dt.datetime,
             key: str | None = None, *, replace: bool = False) -> bool:
    """Run job `name` with `payload` at `due_at` (or the first sweep after it).

    `target` is a `TenantRuntime` (written in its own transaction) or a connection
    inside the caller's transaction. `key` makes the call idempotent: a second call with
    the same key changes nothing (returns False), unless `replace` is given, which moves
    the row to the new time and payload and makes it pending again. The sweep adds the
    tenant's slug to the payload as ``tenant``.
    """
    data = _json(payload)
    now = dt.datetime.now(dt.UTC)
    context, platform = _connection(target)
    if platform is not None:
        now = platform.now()
    values = {"job": name, "payload": data, "due_at": utc(due_at), "status": "pending",
              "key": key or f"{name}:{uuid.uuid4().hex}", "created_at": utc(now)}
    with context as connection:
        statement = _insert(connection).values(**values)
        if replace:
            statement = statement.on_conflict_do_update(
                index_elements=["key"], set_={"job": name, "payload": data,
                                              "due_at": values["due_at"],
                                              "status": "pending", "claimed_at": None})
        else:
            statement = statement.on_conflict_do_nothing(index_elements=["key"])
        return connection.execute(statement.returning(TABLE.c.id)).first() is not None


def cancel(target: Any, key: str) -> bool:
    """Cancel the pending row with `key` (False if none is pending)."""
    context, _ = _connection(target)
    with context as connection:
        result = connection.execute(
            TABLE.update().where(TABLE.c.key == key, TABLE.c.status == "pending")
            .values(status="cancelled"))
        return result.rowcount > 0


def pending(target: Any, key: str) -> dict[str, Any] | None:
    """The row with `key` (any status), or None."""
    context, _ = _connection(target)
    with context as connection:
        row = connection.execute(sa.select(TABLE).where(TABLE.c.key == key)).mappings().first()
    return None if row is None else {**row, "due_at": utc(row["due_at"])}


_CLAIM = sa.select(TABLE.c.id).where(
    TABLE.c.status == "pending", TABLE.c.due_at <= sa.bindparam("now")).order_by(
    TABLE.c.due_at, TABLE.c.id).limit(BATCH).with_for_update(skip_locked=True)


def claim_due(connection: sa.Connection, now: dt.datetime) -> list[sa.Row]:
    """Mark up to BATCH due rows enqueued and return them; each row is claimed once, even
    by concurrent sweepers (PostgreSQL skips rows another sweeper has locked)."""
    moment = utc(now)
    statement = TABLE.update().where(
        TABLE.c.id.in_(_CLAIM.scalar_subquery()), TABLE.c.status == "pending").values(
        status="enqueued", attempts=TABLE.c.attempts + 1, claimed_at=moment).returning(
        TABLE.c.id, TABLE.c.job, TABLE.c.payload, TABLE.c.key)
    return list(connection.execute(statement, {"now": moment}))


def sweep_tenant(runtime: Any, jobs: Any, now: dt.datetime) -> int:
    """Enqueue the tenant's due rows; how many. A job enqueue that fails (the broker is
    down) rolls its batch back, so the rows stay pending for the next sweep."""
    count = 0
    while True:
        with runtime.begin() as connection:
            rows = claim_due(connection, now)
            for row in rows:
                if row.job not in jobs.specs:
                    log.error("scheduled row %s names no job %r: marked failed", row.key,
                              row.job)
                    connection.execute(TABLE.update().where(TABLE.c.id == row.id)
                                       .values(status="failed"))
                    continue
                jobs.enqueue(row.job, {**row.payload, "tenant": runtime.slug})
                count += 1
            if len(rows) < BATCH:
                connection.execute(TABLE.delete().where(
                    TABLE.c.status.in_(("enqueued", "cancelled")),
                    TABLE.c.due_at < utc(now) - KEEP))
                return count


def sweep(platform: Any, payload: Mapping[str, Any]) -> None:
    """The periodic sweep: every active tenant's due rows (or one tenant's: ``tenant``)."""
    from . import jobs_of

    jobs = jobs_of(platform)
    now = platform.now()
    slugs = [payload["tenant"]] if payload.get("tenant") else platform.active_slugs()
    for slug in slugs:
        try:
            sweep_tenant(platform.runtime(slug), jobs, now)
        except Exception:
            log.exception("sweeping %s's scheduled jobs failed", slug)


def _json(payload: Mapping[str, Any]) -> dict[str, Any]:
    import json

    try:
        return json.loads(json.dumps(dict(payload)))
    except TypeError as exc:
        raise TypeError(f"a job payload must be JSON: {exc}") from exc
