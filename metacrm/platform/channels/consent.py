"""Consent and do-not-contact, checked at send time for messages to a customer.

What the tenant's definitions declare decides what is checked:

- entity ``customer.customer`` with a boolean field ``do_not_contact``: a customer
  marked so gets nothing, on any channel;
- entity ``customer.consent`` with fields ``customer`` (reference), ``channel`` (enum)
  and ``status`` (enum): for a channel among the ``channel`` options, the customer's
  latest consent record for that channel must say ``granted`` (no record: no consent).
  Latest means by the datetime field ``at`` when the entity has one (consents given
  elsewhere and imported later), else by when the record was created.
  A channel that is not an option of ``channel`` is not subject to consent.

A tenant with neither is not checked. Messages without a customer are never checked.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .base import Message

CUSTOMER = "customer.customer"
CONSENT = "customer.consent"
GRANTED = "granted"


def consent_refusal(connection: sa.Connection, runtime: Any, message: Message) -> str | None:
    """Why `message` may not go to its customer now, or None when it may."""
    customer_id = message.customer_id
    if customer_id is None:
        return None
    registry = runtime.registry
    customer = registry.entities.get(CUSTOMER)
    if customer is None:
        return None
    table = runtime.tables.by_entity[CUSTOMER]
    flag = customer.get_field("do_not_contact")
    checks_flag = flag is not None and flag.type == "boolean" and flag.stored
    columns = [table.c.id, *([table.c.do_not_contact] if checks_flag else [])]
    row = connection.execute(sa.select(*columns).where(
        table.c.id == customer_id, table.c.deleted_at.is_(None))).first()
    if row is None:
        return f"customer {customer_id} does not exist"
    if checks_flag and row.do_not_contact:
        return f"customer {customer_id} is marked do-not-contact"
    return _consent_refusal(connection, runtime, message, customer_id)


def _consent_refusal(connection: sa.Connection, runtime: Any, message: Message,
                     customer_id: int) -> str | None:
    entity = runtime.registry.entities.get(CONSENT)
    if entity is None:
        return None
    fields = {name: entity.get_field(name) for name in ("customer", "channel", "status")}
    if any(f is None or not f.stored for f in fields.values()):
        return None
    if fields["channel"].options and message.channel not in fields["channel"].option_values:
        return None
    table = runtime.tables.by_entity[CONSENT]
    when = entity.get_field("at")
    order = [table.c.at.desc().nulls_last()] if when is not None and when.stored and \
        when.type == "datetime" else []
    latest = connection.execute(
        sa.select(table.c.status).where(
            table.c.customer == customer_id, table.c.channel == message.channel,
            table.c.deleted_at.is_(None))
        .order_by(*order, table.c.created_at.desc(), table.c.id.desc()).limit(1)).scalar()
    if latest == GRANTED:
        return None
    if latest is None:
        return f"customer {customer_id} has given no consent to {message.channel} messages"
    return f"customer {customer_id}'s consent to {message.channel} messages is {latest}"
