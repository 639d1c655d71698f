"""What administrators see of automation: the run log, and retrying a parked run."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ...platform.records import Conflict, NotFound, ValidationFailed
from .dispatch import enqueue_runs
from .runner import run_table
from .settings import utc_now
from .tables import STATUSES

RETRYABLE = ("parked", "stopped", "skipped")
MAX_LIMIT = 500
ID_MAX = 2**63 - 1


def run_to_json(row: Any) -> dict[str, Any]:
    out = {}
    for key, value in dict(row).items():
        if isinstance(value, dt.datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
        out[key] = value
    out.pop("lease_until", None)
    return out


def list_runs(runtime: Any, *, status: str | None = None, rule: str | None = None,
              entity: str | None = None, record_id: int | None = None, limit: int = 50,
              before: int | None = None) -> dict[str, Any]:
    """Runs, newest first, filtered; `next` is the `before` of the following page."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"`status` is one of {', '.join(STATUSES)}",
                               {"status": [f"not one of {', '.join(STATUSES)}"]})
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"`limit` is between 1 and {MAX_LIMIT}",
                               {"limit": ["out of range"]})
    runs = run_table(runtime)
    where = []
    for column, value in (("status", status), ("rule", rule), ("entity", entity),
                          ("record_id", record_id)):
        if value is not None:
            where.append(runs.c[column] == value)
    if before is not None:
        where.append(runs.c.id < before)
    with runtime.connect() as connection:
        rows = connection.execute(sa.select(runs).where(*where).order_by(runs.c.id.desc())
                                  .limit(limit + 1)).mappings().all()
    items = [run_to_json(r) for r in rows[:limit]]
    return {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}


def _existing(run_id: int) -> None:
    if not 1 <= run_id <= ID_MAX:  # beyond 64 bits: cannot exist (nor be sent to SQL)
        raise NotFound(f"there is no automation run {run_id}")


def get_run(runtime: Any, run_id: int) -> dict[str, Any]:
    _existing(run_id)
    runs = run_table(runtime)
    with runtime.connect() as connection:
        row = connection.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
    if row is None:
        raise NotFound(f"there is no automation run {run_id}")
    return run_to_json(row)


def retry_run(platform: Any, runtime: Any, run_id: int) -> dict[str, Any]:
    """Put a parked (or stopped, or skipped) run back in the queue, attempts from zero."""
    _existing(run_id)
    runs = run_table(runtime)
    now = utc_now(platform)
    with runtime.begin() as connection:
        row = connection.execute(sa.select(runs.c.status, runs.c.last_error).where(
            runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"there is no automation run {run_id}")
        if row.status not in RETRYABLE:
            raise Conflict(f"run {run_id} is {row.status}; only a parked, stopped or skipped "
                           "run can be retried", status_now=row.status)
        connection.execute(runs.update().where(runs.c.id == run_id,
                                               runs.c.status == row.status).values(
            status="pending", attempts=0, next_attempt_at=now, finished_at=None,
            last_error=f"retried by an administrator after: {row.last_error}"[:4000]))
    enqueue_runs(platform, runtime.slug, [run_id])
    return get_run(runtime, run_id)
