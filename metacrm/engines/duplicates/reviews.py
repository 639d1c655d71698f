"""Reading and settling the review queue, and one record's candidates, as the caller.

A pair is listed only when the caller may read both of its records; each record comes as
the caller sees it (fields their roles hide are left out).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ...platform.records import (
    ID_MAX,
    Forbidden,
    NotFound,
    RecordService,
    ValidationFailed,
    decode_cursor,
    encode_cursor,
)
from . import index
from .rules import entity_rules
from .tables import REVIEW_STATUSES, REVIEWS


def _readable(service: RecordService, entity_key: str, column: Any,
              live: bool) -> sa.ColumnElement[bool]:
    """EXISTS: the record `column` names is one the caller may read."""
    table = service.access(entity_key).table
    conditions = [table.c.id == column]
    if live:
        conditions.append(table.c.deleted_at.is_(None))
    scoped = service.scope_where(entity_key, "read", table)
    if scoped is not None:
        conditions.append(scoped)
    return sa.exists().where(*conditions)


def review_queue(service: RecordService, entity_key: str, *, status: str = "open",
                 limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of review pairs in `status`, oldest first, with both records."""
    service.require(entity_key, "read")
    if status not in REVIEW_STATUSES:
        raise ValidationFailed(f"`status` is one of {', '.join(REVIEW_STATUSES)}",
                               {"status": ["unknown status"]})
    reviews = service.system.table(REVIEWS)
    live = status == "open"
    conditions = [reviews.c.entity == entity_key, reviews.c.status == status,
                  _readable(service, entity_key, reviews.c.record_a, live),
                  _readable(service, entity_key, reviews.c.record_b, live)]
    if cursor:
        after = decode_cursor(cursor)
        if len(after) != 1 or not isinstance(after[0], int):
            raise ValidationFailed("the cursor is not valid; start again without it")
        conditions.append(reviews.c.id > after[0])
    access = service.access(entity_key)
    with service.runtime.connect() as connection:
        rows = connection.execute(sa.select(reviews).where(*conditions).order_by(
            reviews.c.id).limit(limit + 1)).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = sorted({r["record_a"] for r in rows} | {r["record_b"] for r in rows})
        records = {}
        if ids:
            table = access.table
            records = {r["id"]: access.to_json(r) for r in connection.execute(
                sa.select(*access.columns).where(table.c.id.in_(ids))).mappings()}
    items = [_review_json(row, records) for row in rows]
    return {"items": items,
            "next_cursor": encode_cursor([rows[-1]["id"]]) if more and rows else None}


def _review_json(row: Any, records: dict[int, Any]) -> dict[str, Any]:
    return {"id": row["id"], "rule": row["rule"], "status": row["status"],
            "created_at": _iso(row["created_at"]), "resolved_at": _iso(row["resolved_at"]),
            "resolved_by": row["resolved_by"],
            "records": [records.get(row["record_a"], {"id": row["record_a"]}),
                        records.get(row["record_b"], {"id": row["record_b"]})]}


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()


def record_candidates(service: RecordService, entity_key: str,
                      record_id: int) -> list[dict[str, Any]]:
    """The live records sharing a match key with one record the caller may read, each
    with the rules it matches under and its review pair (if any)."""
    service.get(entity_key, record_id)  # 404 unless the caller may read it
    rules = entity_rules(service.runtime, entity_key)
    if rules is None:
        return []
    access = service.access(entity_key)
    table = access.table
    reviews = service.system.table(REVIEWS)
    with service.runtime.connect() as connection:
        found = index.stored_keys(connection, service.system, entity_key, record_id)
        matches = index.candidates(connection, service.system, entity_key, found, record_id)
        if not matches:
            return []
        conditions = [table.c.id.in_(list(matches)), table.c.deleted_at.is_(None)]
        scoped = service.scope_where(entity_key, "read", table)
        if scoped is not None:
            conditions.append(scoped)
        records = {r["id"]: access.to_json(r) for r in connection.execute(
            sa.select(*access.columns).where(*conditions).order_by(table.c.id)).mappings()}
        pairs = {}
        if records:
            rows = connection.execute(sa.select(reviews).where(
                reviews.c.entity == entity_key, sa.or_(
                    sa.and_(reviews.c.record_a == record_id,
                            reviews.c.record_b.in_(list(records))),
                    sa.and_(reviews.c.record_b == record_id,
                            reviews.c.record_a.in_(list(records)))))).mappings()
            for row in rows:
                other = row["record_b"] if row["record_a"] == record_id else row["record_a"]
                pairs[other] = {"id": row["id"], "status": row["status"], "rule": row["rule"]}
    return [{"record": record, "rules": matches[other_id], "review": pairs.get(other_id)}
            for other_id, record in records.items()]


def dismiss(service: RecordService, entity_key: str, review_id: int) -> dict[str, Any]:
    """Mark a pair as not duplicates (it is not asked again); needs `update` on both."""
    service.require(entity_key, "update")
    reviews = service.system.table(REVIEWS)
    if not 1 <= review_id <= ID_MAX:
        raise NotFound(f"there is no duplicate review {review_id}")
    with service.runtime.begin() as connection:
        row = connection.execute(sa.select(reviews).where(
            reviews.c.id == review_id, reviews.c.entity == entity_key)).mappings().first()
        if row is None:
            raise NotFound(f"there is no duplicate review {review_id} of {entity_key}")
    for record_id in (row["record_a"], row["record_b"]):
        _require_update(service, entity_key, record_id)
    now = dt.datetime.now(dt.UTC)
    with service.runtime.begin() as connection:
        connection.execute(reviews.update().where(reviews.c.id == review_id).values(
            status="dismissed", resolved_at=now, resolved_by=service.actor.user_id))
        row = connection.execute(sa.select(reviews).where(
            reviews.c.id == review_id)).mappings().one()
    return _review_json(row, {})


def _require_update(service: RecordService, entity_key: str, record_id: int) -> None:
    """NotFound unless the caller may read the record; Forbidden unless they may change it."""
    service.get(entity_key, record_id, include_deleted=True)
    guard = service.guard
    if guard is None:
        return
    table = service.access(entity_key).table
    with service.runtime.connect() as connection:
        row = connection.execute(sa.select(table).where(
            table.c.id == record_id)).mappings().one()
        if not guard.allows(connection, entity_key, "update", row):
            raise Forbidden(f"your roles do not allow `update` on {entity_key} {record_id}, "
                            "which settling its duplicate pair needs", action="update")
