"""SMS and push: channels that hand messages to an adapter (a provider's API).

The built-in adapter is the outbox (JSON lines under ``var/outbox``); a provider
plugin registers ``SmsChannel(TheirAdapter(...))`` through `register_channels`, which
takes the built-in channel's place.
"""

from __future__ import annotations

from typing import Protocol

import phonenumbers

from .base import Channel, ChannelError, Message, SendContext
from .outbox import OutboxAdapter


class Adapter(Protocol):
    """Hands one message to a provider; returns its reference or raises ChannelError."""

    def deliver(self, message: Message, context: SendContext) -> str | None: ...


class AdapterChannel(Channel):
    """A channel whose sending is an adapter's job."""

    def __init__(self, adapter: Adapter | None = None) -> None:
        self.adapter: Adapter = adapter or OutboxAdapter()
        self.replaceable = isinstance(self.adapter, OutboxAdapter)

    def check(self, message: Message) -> None:
        """Refuse a malformed recipient (ChannelError, not retryable)."""

    def send(self, message: Message, context: SendContext) -> str | None:
        self.check(message)
        return self.adapter.deliver(message, context)


class SmsChannel(AdapterChannel):
    """Text messages to E.164 phone numbers (``+886912345678``)."""

    name = "sms"
    description = "Text messages to E.164 numbers, through an adapter (default: outbox)."

    def check(self, message: Message) -> None:
        try:
            number = phonenumbers.parse(message.to, None)
        except phonenumbers.NumberParseException as exc:
            raise ChannelError(f"{message.to!r} is not a phone number in E.164 form "
                               f"(+<country><number>): {exc}", retryable=False) from exc
        if not phonenumbers.is_possible_number(number):
            raise ChannelError(f"{message.to!r} is not a possible phone number",
                               retryable=False)


class PushChannel(AdapterChannel):
    """Push notifications to a device token (`to`); `subject` is the title and
    ``data`` the notification's data."""

    name = "push"
    description = "Push notifications to device tokens, through an adapter (default: outbox)."

    def check(self, message: Message) -> None:
        if not message.to.strip():
            raise ChannelError("a push notification needs a device token", retryable=False)
