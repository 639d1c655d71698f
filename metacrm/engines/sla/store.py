"""The `_metacrm_sla_clocks` system table: every clock of every record, in each tenant's
database, read and written as :class:`~metacrm.engines.sla.clocks.Clock` values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ...generators.tables import ID_TYPE
from ...platform.systables import runtime_system_tables
from .clocks import STATUSES, Clock

TABLE = "_metacrm_sla_clocks"
UTC = dt.UTC


def clocks_table(metadata: sa.MetaData) -> sa.Table:
    """The table definition (registered through `register_system_tables`)."""
    return sa.Table(
        TABLE, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", ID_TYPE, nullable=False),
        sa.Column("policy", sa.String(130), nullable=False),
        sa.Column("clock", sa.String(64), nullable=False),
        sa.Column("target_seconds", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("alarm_at", sa.DateTime(timezone=True)),
        sa.Column("paused_since", sa.DateTime(timezone=True)),
        sa.Column("paused_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("warned_at", sa.DateTime(timezone=True)),
        sa.Column("breached_at", sa.DateTime(timezone=True)),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fired", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("entity", "record_id", "policy", "clock",
                            name="uq__metacrm_sla_clocks_clock"),
        sa.CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
                           name="ck__metacrm_sla_clocks_status"),
        sa.Index("ix__metacrm_sla_clocks_due", "status", "due_at"),
        sa.Index("ix__metacrm_sla_clocks_alarm", "alarm_at"))


def table_of(runtime: Any) -> sa.Table:
    return runtime_system_tables(runtime).table(TABLE)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Stored instants are UTC; SQLite hands them back naive."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_row(row: Mapping[str, Any]) -> Clock:
    return Clock(
        entity=row["entity"], record_id=row["record_id"], policy=row["policy"],
        clock=row["clock"], target_seconds=row["target_seconds"],
        started_at=_utc(row["started_at"]), due_at=_utc(row["due_at"]),
        alarm_at=_utc(row["alarm_at"]), paused_since=_utc(row["paused_since"]),
        paused_seconds=float(row["paused_seconds"] or 0), warned_at=_utc(row["warned_at"]),
        breached_at=_utc(row["breached_at"]), stopped_at=_utc(row["stopped_at"]),
        status=row["status"], fired=tuple(row["fired"] or ()), id=row["id"],
        version=row["version"])


def _values(clock: Clock) -> dict[str, Any]:
    return {"entity": clock.entity, "record_id": clock.record_id, "policy": clock.policy,
            "clock": clock.clock, "target_seconds": clock.target_seconds,
            "started_at": _utc(clock.started_at), "due_at": _utc(clock.due_at),
            "alarm_at": _utc(clock.alarm_at), "paused_since": _utc(clock.paused_since),
            "paused_seconds": clock.paused_seconds, "warned_at": _utc(clock.warned_at),
            "breached_at": _utc(clock.breached_at), "stopped_at": _utc(clock.stopped_at),
            "status": clock.status, "fired": list(clock.fired)}


def load(connection: sa.Connection, table: sa.Table, entity: str, record_id: int, *,
         lock: bool = False) -> list[Clock]:
    """A record's clocks (locked against the sweep for the transaction, with `lock`)."""
    query = sa.select(table).where(table.c.entity == entity, table.c.record_id == record_id
                                   ).order_by(table.c.id)
    if lock:
        query = query.with_for_update()
    return [from_row(r) for r in connection.execute(query).mappings()]


def insert(connection: sa.Connection, table: sa.Table, clock: Clock) -> None:
    connection.execute(table.insert().values(**_values(clock), version=0))


def save(connection: sa.Connection, table: sa.Table, clock: Clock) -> bool:
    """Write a changed clock if nobody changed it since it was read (its `version`);
    whether it was written — the sweep's claim that it alone fires what is due."""
    result = connection.execute(table.update().where(
        table.c.id == clock.id, table.c.version == clock.version).values(
        **_values(clock), version=clock.version + 1))
    return result.rowcount == 1


def due(connection: sa.Connection, table: sa.Table, now: dt.datetime,
        limit: int) -> list[Clock]:
    """Clocks whose next alarm has passed, oldest first."""
    return [from_row(r) for r in connection.execute(
        sa.select(table).where(table.c.alarm_at < _utc(now))
        .order_by(table.c.alarm_at, table.c.id).limit(limit)).mappings()]
