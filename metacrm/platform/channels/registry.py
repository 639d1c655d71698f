"""The channel registry: consent, the delivery log, one attempt, retries with backoff."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..jobs import jobs_of, schedule
from ..jobs.scheduled import utc
from . import deliveries
from .base import FINAL, Channel, ChannelError, Delivery, Message, SendContext
from .consent import consent_refusal

log = logging.getLogger(__name__)

BACKOFF = (10, 60, 300, 1800, 7200)
"""Seconds before attempt 2, 3, ...: 10 s, 1 min, 5 min, 30 min, 2 h; then parked."""
ATTEMPT_JOB = "deliveries.attempt"
RECOVER_JOB = "deliveries.recover"
LEASE = dt.timedelta(minutes=10)
"""A delivery queued or sending for longer than this lost its job: recover re-queues it."""


class UnknownChannel(KeyError):
    """No channel by that name."""


class ChannelRegistry:
    """The channels of one platform, and the one way messages are sent through them."""

    def __init__(self, platform: Any, channels: Iterable[Channel],
                 backoff: tuple[float, ...] = BACKOFF) -> None:
        self.platform = platform
        self.backoff = tuple(backoff)
        self._by_name: dict[str, Channel] = {}
        for channel in channels:
            found = self._by_name.get(channel.name)
            if found is not None and not found.replaceable:
                if channel.replaceable:
                    continue
                raise ValueError(f"channel {channel.name!r} is registered twice")
            self._by_name[channel.name] = channel

    @property
    def max_attempts(self) -> int:
        return len(self.backoff) + 1

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Channel | None:
        return self._by_name.get(name)

    # -- sending ------------------------------------------------------------------------------

    def send(self, runtime: Any, message: Message) -> Delivery:
        """Send now, once: consent, the channel, the log. A refusal is `refused`, a
        failure `failed` (the caller may send again with the same key); a key already
        sent, refused, parked or being sent returns that delivery with `duplicate` True,
        sending nothing."""
        message = self._prepare(runtime, message)
        row, created = self._record(runtime, message)
        if not created and (row["status"] in FINAL or row["status"] == "sending"):
            return deliveries.to_delivery(row, duplicate=True)  # done, or on its way
        number = row["attempts"] + 1
        return self.attempt(runtime, row["id"], number, retry=False) or \
            self._current(runtime, row["id"], duplicate=True)

    def queue(self, runtime: Any, message: Message, *,
              connection: sa.Connection | None = None) -> Delivery:
        """Send in the background, retried with backoff (`BACKOFF`) and parked after the
        last attempt. With `connection` (the caller's transaction) the delivery commits
        with the caller's change and the next sweep sends it; without, it is queued now."""
        message = self._prepare(runtime, message)
        row, created = self._record(runtime, message, connection)
        if not created:
            return deliveries.to_delivery(row, duplicate=True)
        payload = {"delivery": row["id"], "attempt": 1}
        if connection is not None:
            schedule(connection, ATTEMPT_JOB, payload, self.platform.now(),
                     key=f"delivery:{row['id']}:1", replace=True)
        else:
            jobs_of(self.platform).enqueue(ATTEMPT_JOB, {**payload, "tenant": runtime.slug})
        return deliveries.to_delivery(row)

    def retry(self, runtime: Any, delivery_id: int) -> Delivery:
        """Send a parked or failed delivery again, from a first attempt (an administrator's
        retry); LookupError if there is none, ValueError if it is not parked or failed."""
        now = utc(self.platform.now())
        table = deliveries.TABLE
        with runtime.begin() as connection:
            row = deliveries.by_id(connection, delivery_id)
            if row is None:
                raise LookupError(f"there is no delivery {delivery_id}")
            if row["status"] not in ("parked", "failed"):
                raise ValueError(f"delivery {delivery_id} is {row['status']}; only parked "
                                 "or failed deliveries are retried")
            connection.execute(table.update().where(table.c.id == delivery_id).values(
                status="queued", attempts=0, updated_at=now, next_at=None))
        jobs_of(self.platform).enqueue(ATTEMPT_JOB, {"tenant": runtime.slug,
                                                     "delivery": delivery_id, "attempt": 1})
        return self._current(runtime, delivery_id)

    # -- one attempt --------------------------------------------------------------------------

    def attempt(self, runtime: Any, delivery_id: int, number: int, *,
                retry: bool = True) -> Delivery | None:
        """Attempt `number` of a delivery. Runs only if the delivery is not final and this
        attempt has not finished (a redelivered job re-runs an unfinished attempt: at least
        once); None when there is nothing to do. With `retry`, a failure schedules the next
        attempt or parks the delivery; without, it is `failed`."""
        claimed = self._claim(runtime, delivery_id, number)
        if claimed is None:
            return None
        message = Message.from_dict(claimed["message"])
        with runtime.connect() as connection:
            refusal = consent_refusal(connection, runtime, message)
        if refusal is not None:
            log.info("%s delivery %s refused: %s", message.channel, message.key, refusal)
            return self._finish(runtime, delivery_id, number, "refused", reason=refusal)
        channel = self.get(message.channel)
        try:
            if channel is None:
                raise ChannelError(f"there is no channel {message.channel!r}",
                                   retryable=False)
            reference = channel.send(message, SendContext(self.platform, runtime.slug))
        except ChannelError as exc:
            return self._failed(runtime, delivery_id, number, str(exc), exc.retryable, retry)
        except Exception as exc:
            log.exception("channel %s failed on delivery %s", message.channel, message.key)
            return self._failed(runtime, delivery_id, number, f"{type(exc).__name__}: {exc}",
                                True, retry)
        return self._finish(runtime, delivery_id, number, "sent",
                            reference=None if reference is None else str(reference)[:2000])

    def _failed(self, runtime: Any, delivery_id: int, number: int, reason: str,
                retryable: bool, retry: bool) -> Delivery:
        if not retry:
            return self._finish(runtime, delivery_id, number, "failed", reason=reason)
        if not retryable:
            log.warning("delivery %s parked: %s", delivery_id, reason)
            return self._finish(runtime, delivery_id, number, "parked", reason=reason)
        if number >= self.max_attempts:
            log.warning("delivery %s parked after %s attempts: %s", delivery_id, number,
                        reason)
            return self._finish(runtime, delivery_id, number, "parked",
                                reason=f"gave up after {number} attempts: {reason}")
        next_at = utc(self.platform.now()) + dt.timedelta(seconds=self.backoff[number - 1])
        return self._finish(runtime, delivery_id, number, "retrying", reason=reason,
                            next_at=next_at)

    def _claim(self, runtime: Any, delivery_id: int, number: int) -> Any:
        table = deliveries.TABLE
        now = utc(self.platform.now())
        unfinished = sa.or_(table.c.attempts == number - 1,
                            sa.and_(table.c.attempts == number, table.c.status == "sending"))
        with runtime.begin() as connection:
            return connection.execute(
                table.update().where(table.c.id == delivery_id,
                                     table.c.status.not_in(tuple(FINAL)), unfinished)
                .values(status="sending", attempts=number, updated_at=now, next_at=None)
                .returning(table.c.message)).mappings().first()

    def _finish(self, runtime: Any, delivery_id: int, number: int, status: str, *,
                reason: str | None = None, reference: str | None = None,
                next_at: dt.datetime | None = None) -> Delivery:
        table = deliveries.TABLE
        now = utc(self.platform.now())
        values: dict[str, Any] = {"status": status, "reason": reason, "updated_at": now,
                                  "next_at": next_at}
        if reference is not None:
            values["reference"] = reference
        if status == "sent":
            values["sent_at"] = now
        with runtime.begin() as connection:
            connection.execute(table.update().where(
                table.c.id == delivery_id, table.c.attempts == number).values(**values))
            if next_at is not None:
                schedule(connection, ATTEMPT_JOB, {"delivery": delivery_id,
                                                   "attempt": number + 1},
                         next_at, key=f"delivery:{delivery_id}:{number + 1}", replace=True)
            row = deliveries.by_id(connection, delivery_id)
        return deliveries.to_delivery(row)

    # -- the log ------------------------------------------------------------------------------

    def _prepare(self, runtime: Any, message: Message) -> Message:
        if message.channel not in self._by_name:
            raise UnknownChannel(f"there is no channel {message.channel!r}; channels: "
                                 f"{', '.join(self._by_name)}")
        changes: dict[str, Any] = {}
        if message.tenant != runtime.slug:
            changes["tenant"] = runtime.slug
        if not message.key:
            changes["key"] = f"{message.channel}:{uuid.uuid4().hex}"
        if changes:
            message = Message(**{**message.to_dict(), **changes})
        return message

    def _record(self, runtime: Any, message: Message,
                connection: sa.Connection | None = None) -> tuple[Any, bool]:
        """The delivery row for the message's key: (row, True) when this call created it."""
        if connection is None:
            with runtime.begin() as own:
                return self._record(runtime, message, own)
        now = utc(self.platform.now())
        table = deliveries.TABLE
        insert = (postgresql.insert if connection.dialect.name == "postgresql"
                  else sqlite.insert)(table)
        statement = insert.values(
            channel=message.channel, recipient=message.to[:2000],
            subject=(message.subject or None) and message.subject[:500], status="queued",
            key=message.key, attempts=0, customer_id=message.customer_id,
            message=message.to_dict(), created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["key"]).returning(*table.c)
        row = connection.execute(statement).mappings().first()
        if row is not None:
            return row, True
        return deliveries.by_key(connection, message.key or ""), False

    def _current(self, runtime: Any, delivery_id: int, *, duplicate: bool = False) -> Delivery:
        with runtime.connect() as connection:
            row = deliveries.by_id(connection, delivery_id)
        return deliveries.to_delivery(row, duplicate=duplicate)

    # -- recovery -----------------------------------------------------------------------------

    def recover(self, runtime: Any) -> int:
        """Re-queue deliveries whose job was lost (queued or sending for longer than
        LEASE: a process stopped with jobs in memory); how many."""
        table = deliveries.TABLE
        now = utc(self.platform.now())
        jobs = jobs_of(self.platform)
        with runtime.begin() as connection:
            rows = deliveries.stale(connection, now - LEASE)
            for row in rows:
                number = row["attempts"] + (1 if row["status"] == "queued" else 0)
                connection.execute(table.update().where(table.c.id == row["id"]).values(
                    updated_at=now))
                jobs.enqueue(ATTEMPT_JOB, {"tenant": runtime.slug, "delivery": row["id"],
                                           "attempt": max(number, 1)})
        return len(rows)


def channels_of(platform: Any) -> ChannelRegistry:
    """The platform's channels (built once, kept in `platform.extensions`)."""
    found = platform.extensions.get("channels")
    if found is None:
        channels = [c for batch in platform.plugins.hook.register_channels() for c in batch]
        found = platform.extensions.setdefault("channels", ChannelRegistry(platform, channels))
    return found
