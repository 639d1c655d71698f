"""The channel interface: a message, what became of it, and what a channel must do."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One message to one recipient on one channel.

    `customer_id` names the customer it is sent to (their consent is checked at send
    time); leave it None for people who are not customers (an employee, a webhook).
    `key` makes the send idempotent: a second send with the same key is a no-op.
    `data` carries channel-specific extras (a push notification's data, a webhook's
    signing secret, an e-mail's ``reply_to``).
    """

    channel: str
    to: str
    subject: str = ""
    body: str = ""
    html: str | None = None
    tenant: str | None = None
    customer_id: int | None = None
    key: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data": dict(self.data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


STATUSES = ("queued", "sending", "sent", "refused", "failed", "retrying", "parked")
"""A delivery's life: queued → sending → sent; refused (consent, do-not-contact: never
retried); failed (one synchronous attempt failed); retrying (a later attempt is
scheduled); parked (the last attempt failed, or the failure cannot be retried: an
administrator looks at it)."""
FINAL = frozenset({"sent", "refused", "parked"})


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of a message: its row in `_metacrm_deliveries`."""

    id: int
    channel: str
    to: str
    status: str
    key: str
    reason: str | None = None
    attempts: int = 0
    reference: str | None = None
    """What the channel said it did: an SMTP message id, an outbox file, an HTTP status."""
    duplicate: bool = False
    """True when a delivery with this key existed: this call sent nothing."""
    next_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status == "sent"

    @property
    def refused(self) -> bool:
        return self.status == "refused"


class ChannelError(Exception):
    """A channel could not hand the message over. `retryable` False parks the delivery
    at once (a malformed address, a recipient the server refuses for good)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class SendContext:
    """Where a channel sends from: the platform, its settings and the tenant."""

    platform: Any
    tenant: str

    @property
    def settings(self) -> Any:
        return self.platform.settings

    def outbox(self, channel: str) -> Path:
        """The tenant's outbox folder for `channel` (``var/outbox/<tenant>/<channel>``)."""
        return Path(self.settings.outbox) / self.tenant / channel


class Channel:
    """A way to send messages. Subclasses set `name` and implement `send`.

    `send(message, context)` hands the message over and returns a reference (a message
    id, a file), or raises `ChannelError`; it does not check consent nor log the
    delivery: the registry does both. A built-in channel is `replaceable`: a plugin's
    channel of the same name takes its place (an SMS provider instead of the outbox).
    """

    name: str = ""
    description: str = ""
    replaceable: bool = False

    def send(self, message: Message, context: SendContext) -> str | None:
        raise NotImplementedError
