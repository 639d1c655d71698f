"""Message channels: e-mail, SMS, push and webhooks, behind one registry.

`channels_of(platform).send(runtime, message)` sends once, now;
`channels_of(platform).queue(runtime, message)` sends in the background with retries.
Both check the customer's consent and do-not-contact at send time and log every
message in `_metacrm_deliveries`, whose unique key makes a repeated send a no-op.
Plugins add or replace channels through the `register_channels` hook.
"""

from __future__ import annotations

from .adapters import Adapter, AdapterChannel, PushChannel, SmsChannel
from .base import FINAL, STATUSES, Channel, ChannelError, Delivery, Message, SendContext
from .consent import consent_refusal
from .deliveries import DELIVERIES
from .email import EmailChannel, parse_smtp_url
from .outbox import OutboxAdapter
from .registry import (
    ATTEMPT_JOB,
    BACKOFF,
    RECOVER_JOB,
    ChannelRegistry,
    UnknownChannel,
    channels_of,
)

__all__ = ["ATTEMPT_JOB", "BACKOFF", "DELIVERIES", "FINAL", "RECOVER_JOB", "STATUSES",
           "Adapter", "AdapterChannel", "Channel", "ChannelError", "ChannelRegistry",
           "Delivery", "EmailChannel", "Message", "OutboxAdapter", "PushChannel",
           "SendContext", "SmsChannel", "UnknownChannel", "channels_of", "consent_refusal",
           "parse_smtp_url"]
