"""`notify`: a message through a channel (email, sms, push...) to people about the record.

Recipients (`to`, one or a list): `owner`, `manager` (the owner's), `actor` (who made
the change), `escalate_to` (everyone an SLA escalation names) — users: their e-mail, or
their user id for push; `customer` — the record itself when it is a customer, else the
customer it references: its `email` or `phone` field (and the customer's consent is
checked at send time); anything else is an address as is. The message is queued with the
channels' own retries and log (one delivery per run, action and recipient: a repeated
run sends nothing twice).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...platform.systables import runtime_system_tables
from . import ActionContext, ActionFailed, RuleAction
from .support import person, render

CUSTOMER = "customer.customer"
PEOPLE = ("owner", "manager", "actor", "escalate_to")
ADDRESS_FIELDS = {"email": ("email",), "sms": ("phone", "mobile")}
SCHEMA = {
    "type": "object",
    "required": ["channel", "to"],
    "properties": {
        "channel": {"type": "string", "description": "email, sms, push, or a plugin's."},
        "to": {"description": "owner, manager, actor, customer, an address, or a list.",
               "anyOf": [{"type": ["string", "integer"]},
                         {"type": "array", "items": {"type": ["string", "integer"]},
                          "minItems": 1}]},
        "subject": {"type": "string", "description": "A template."},
        "body": {"type": "string", "description": "A template."},
        "html": {"type": "string", "description": "A template (e-mail)."},
        "data": {"type": "object", "description": "Channel extras (templates)."},
    },
    "additionalProperties": False,
}


def notify(context: ActionContext, params: Any) -> dict[str, Any]:
    from ...platform.channels import Message, UnknownChannel, channels_of

    params = render(context, params)
    channel = str(params["channel"])
    registry = channels_of(context.platform)
    if channel not in registry:
        raise ActionFailed(f"there is no channel {channel!r}; channels: "
                           f"{', '.join(sorted(c.name for c in registry))}", retryable=False)
    targets = params["to"] if isinstance(params["to"], list) else [params["to"]]
    if "escalate_to" in targets:  # an SLA escalation: everyone it names
        position = targets.index("escalate_to")
        people = [int(p) for p in context.extras.get("escalate_to") or []]
        if not people:
            raise ActionFailed("there is nobody to escalate to", retryable=False)
        targets = targets[:position] + people + targets[position + 1:]
    sent = []
    for position, target in enumerate(targets):
        address, customer_id = _address(context, channel, target)
        message = Message(channel, address, subject=str(params.get("subject", "")),
                          body=str(params.get("body", "")), html=params.get("html"),
                          tenant=context.runtime.slug, customer_id=customer_id,
                          key=f"{context.key}:{position}", data=params.get("data") or {})
        try:
            delivery = registry.queue(context.runtime, message)
        except UnknownChannel as exc:
            raise ActionFailed(str(exc), retryable=False) from exc
        sent.append({"to": address, "delivery": delivery.id, "status": delivery.status})
    return {"channel": channel, "messages": sent}


def _address(context: ActionContext, channel: str, target: Any) -> tuple[str, int | None]:
    if target in PEOPLE or isinstance(target, int):
        return _user_address(context, channel, person(context, target)), None
    if target == "customer":
        return _customer_address(context, channel)
    return str(target), None


def _user_address(context: ActionContext, channel: str, user_id: int) -> str:
    if channel != "email":
        return str(user_id)  # push: the user's id (their devices are the adapter's business)
    users = runtime_system_tables(context.runtime).users
    with context.runtime.connect() as connection:
        email = connection.execute(sa.select(users.c.email).where(
            users.c.id == user_id)).scalar()
    if not email:
        raise ActionFailed(f"user {user_id} has no e-mail address", retryable=False)
    return email


def _customer_address(context: ActionContext, channel: str) -> tuple[str, int | None]:
    registry = context.runtime.registry
    record, customer_id = context.record, None
    if context.entity == CUSTOMER:
        customer_id = record["id"]
    else:
        entity = registry.entities[context.entity]
        link = next((f for f in entity.fields if f.type == "reference" and f.target == CUSTOMER
                     and record.get(f.name) is not None), None)
        if link is not None:
            customer_id = record[link.name]
            record = _customer(context, customer_id)
    for name in ADDRESS_FIELDS.get(channel, ()):
        if record.get(name):
            return str(record[name]), customer_id
    if channel == "push" and customer_id is not None:
        return str(customer_id), customer_id
    raise ActionFailed(f"the record has no customer {'/'.join(ADDRESS_FIELDS.get(channel, ()))}"
                       f" for {channel}", retryable=False)


def _customer(context: ActionContext, customer_id: int) -> dict[str, Any]:
    table = context.runtime.tables.by_entity[CUSTOMER]
    with context.runtime.connect() as connection:
        row = connection.execute(sa.select(table).where(table.c.id == customer_id)) \
            .mappings().first()
    return dict(row) if row is not None else {}


ACTIONS = [RuleAction("notify", notify, "Send a message (email, sms, push...) to the "
                      "owner, their manager, the customer or an address.", SCHEMA)]
