"""What the built-in actions share: rendering parameters, writing as the system one level
deeper, finding entities and users, and turning refusals into `ActionFailed`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from jinja2 import TemplateError

from ...platform.records import (
    Actor,
    Conflict,
    PreconditionFailed,
    RecordError,
    RecordService,
)
from ...platform.systables import runtime_system_tables
from ..templates import render_value, template_variables
from . import ActionContext, ActionFailed


def render(context: ActionContext, value: Any) -> Any:
    """`value` with its templates rendered against the action's variables."""
    try:
        return render_value(context.platform, value, template_variables(context))
    except TemplateError as exc:
        raise ActionFailed(f"template error: {exc}", retryable=False) from exc


def unit_of(context: ActionContext) -> str | None:
    """The business unit the action writes as: the rule's scope, else the record's."""
    if "scope" in context.extras:
        return context.extras["scope"]
    unit = context.record.get("business_unit")
    return unit if unit in context.runtime.registry.scopes else None


def system_service(context: ActionContext) -> RecordService:
    """The record service as the system, one automation level deeper than the trigger
    (so the changes an action makes can trigger rules, up to the depth limit)."""
    platform = context.platform
    return RecordService(context.runtime, Actor(None, unit_of(context), context.depth + 1),
                         emit=platform.emit, operators=platform.operators)


@contextmanager
def refusals(what: str, *, retry_conflicts: bool = True) -> Iterator[None]:
    """Turn the record service's refusals into `ActionFailed` (a conflict may pass on a
    retry; a validation error or a missing record will not)."""
    try:
        yield
    except (Conflict, PreconditionFailed) as exc:
        raise ActionFailed(f"{what}: {exc.detail}", retryable=retry_conflicts) from exc
    except RecordError as exc:
        raise ActionFailed(f"{what}: {describe_refusal(exc)}", retryable=False) from exc


def describe_refusal(exc: RecordError) -> str:
    """A refusal's detail with its per-field errors: ``... (title: required)``."""
    if not exc.errors:
        return exc.detail

    def text(messages: Any) -> str:
        return ", ".join(map(str, messages)) if isinstance(messages, list) else str(messages)

    return exc.detail + " (" + "; ".join(f"{k}: {text(v)}" for k, v in exc.errors.items()) + ")"


def entity_key(context: ActionContext, name: str) -> str:
    """`module.entity`, or a bare entity name in the module of the record's entity."""
    key = name if "." in name else f"{context.entity.split('.')[0]}.{name}"
    if key not in context.runtime.registry.entities:
        raise ActionFailed(f"there is no entity {key}", retryable=False)
    return key


def find_user(context: ActionContext, who: Any) -> int:
    """An active user by id or username; ActionFailed if there is none."""
    users = runtime_system_tables(context.runtime).users
    if isinstance(who, bool) or not isinstance(who, int | str) or who == "":
        raise ActionFailed(f"{who!r} is not a user id or username", retryable=False)
    column = users.c.id if isinstance(who, int) or str(who).isdigit() else users.c.username
    value = int(who) if column is users.c.id else who
    with context.runtime.connect() as connection:
        found = connection.execute(sa.select(users.c.id).where(
            column == value, users.c.active.is_(True))).scalar()
    if found is None:
        raise ActionFailed(f"there is no active user {who!r}", retryable=False)
    return int(found)


def manager_of(context: ActionContext, user_id: int | None) -> int:
    """The nearest manager above a user in the org tree."""
    from ...platform.orgtree import OrgTree

    if user_id is None:
        raise ActionFailed("the record has no owner, so it has no manager", retryable=False)
    with context.runtime.connect() as connection:
        managers = OrgTree(connection, runtime_system_tables(context.runtime)) \
            .managers_above(user_id)
    if not managers:
        raise ActionFailed(f"user {user_id} has no manager in the org tree", retryable=False)
    return managers[0]


def person(context: ActionContext, who: Any) -> int:
    """`owner`, `manager` (the owner's), `actor` (who made the change), `escalate_to` (an
    SLA escalation's first person), a user id or a username, as a user id."""
    if who == "owner":
        owner = context.record.get("owner")
        if owner is None:
            raise ActionFailed("the record has no owner", retryable=False)
        return int(owner)
    if who == "manager":
        return manager_of(context, context.record.get("owner"))
    if who == "escalate_to":  # an SLA escalation's people (see docs/sla.md)
        people = list(context.extras.get("escalate_to") or [])
        if not people:
            raise ActionFailed("there is nobody to escalate to", retryable=False)
        return int(people[0])
    if who == "actor":
        if context.actor_id is None:
            raise ActionFailed("the change was made by the system, not a user",
                               retryable=False)
        return context.actor_id
    return find_user(context, who)


def seconds(value: Any, name: str) -> int:
    """A duration parameter: `30m`, `12h`, `3d`, `2w`, or whole seconds."""
    from ..conditions import Duration

    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(Duration.parse(str(value)).delta.total_seconds())
    except ValueError as exc:
        raise ActionFailed(f"`{name}`: {exc}", retryable=False) from exc


def field_value_at(field_type: str, instant: dt.datetime, timezone: Any) -> str:
    """An instant as a value of a date (the tenant's local day) or datetime field."""
    if field_type == "date":
        return instant.astimezone(timezone).date().isoformat()
    return instant.astimezone(dt.UTC).isoformat()
