"""`_metacrm_deliveries`: one row per message, whatever its channel (webhooks included).

The row is the message's log and its idempotency key: `key` is unique, so a second
send with the same key finds the row instead of sending again. It also keeps the
message itself, so a later attempt (a retry, an administrator's "retry") can send it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ...generators.tables import ID_TYPE
from ..jobs.scheduled import utc
from .base import Delivery

DELIVERIES = "_metacrm_deliveries"


def deliveries_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        DELIVERIES, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(2000), nullable=False),
        sa.Column("subject", sa.String(500)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("customer_id", ID_TYPE),
        sa.Column("message", sa.JSON, nullable=False),
        sa.Column("reference", sa.String(2000)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("key", name="uq__metacrm_deliveries_key"),
        sa.Index("ix__metacrm_deliveries_status", "status", "updated_at"))


TABLE = deliveries_table(sa.MetaData())
"""The same table for statements (schema-less: any tenant's connection maps it)."""

PUBLIC = ("id", "channel", "recipient", "subject", "status", "reason", "key", "attempts",
          "customer_id", "reference", "created_at", "updated_at", "next_at", "sent_at")


def to_delivery(row: Mapping[str, Any], *, duplicate: bool = False) -> Delivery:
    next_at = row.get("next_at")
    return Delivery(row["id"], row["channel"], row["recipient"], row["status"], row["key"],
                    row.get("reason"), row.get("attempts") or 0, row.get("reference"),
                    duplicate, utc(next_at) if next_at else None)


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the API shows it (never the stored message: it may hold a secret)."""
    out = {name: row[name] for name in PUBLIC}
    for name in ("created_at", "updated_at", "next_at", "sent_at"):
        if out[name] is not None:
            out[name] = utc(out[name]).isoformat()
    return out


def by_key(connection: sa.Connection, key: str) -> Mapping[str, Any] | None:
    return connection.execute(sa.select(TABLE).where(TABLE.c.key == key)).mappings().first()


def by_id(connection: sa.Connection, delivery_id: int) -> Mapping[str, Any] | None:
    return connection.execute(sa.select(TABLE).where(TABLE.c.id == delivery_id)
                              ).mappings().first()


def listing(connection: sa.Connection, *, status: str | None = None,
            channel: str | None = None, limit: int = 50,
            before: int | None = None) -> list[dict[str, Any]]:
    """Newest first; `before` (an id) pages on."""
    query = sa.select(TABLE).order_by(TABLE.c.id.desc()).limit(limit)
    if status:
        query = query.where(TABLE.c.status == status)
    if channel:
        query = query.where(TABLE.c.channel == channel)
    if before:
        query = query.where(TABLE.c.id < before)
    return [public(row) for row in connection.execute(query).mappings()]


def stale(connection: sa.Connection, before: dt.datetime) -> list[Mapping[str, Any]]:
    """Deliveries left queued or sending since before `before` (a lost job)."""
    return list(connection.execute(sa.select(TABLE.c.id, TABLE.c.status, TABLE.c.attempts)
                                   .where(TABLE.c.status.in_(("queued", "sending")),
                                          TABLE.c.updated_at < utc(before))
                                   .limit(500)).mappings())
