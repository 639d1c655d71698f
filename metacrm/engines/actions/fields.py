"""`set`: change fields of the record the rule runs on."""

from __future__ import annotations

from typing import Any

from . import ActionContext, ActionFailed, RuleAction
from .support import person, refusals, render, system_service

SCHEMA = {
    "type": "object",
    "description": "{field: value}; values may be templates (`{{ record.score + 10 }}`). "
                   "`owner` takes `owner`, `manager`, `actor`, a user id or a username.",
    "minProperties": 1,
    "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
}


def set_fields(context: ActionContext, params: Any) -> dict[str, Any]:
    """Update the record (as the system, one level deeper); `owner` reassigns it."""
    values = render(context, params)
    if not isinstance(values, dict) or not values:
        raise ActionFailed("`set` takes {field: value, ...}", retryable=False)
    owner = values.pop("owner", None)
    user_id = person(context, owner) if owner is not None else None  # before any change
    service = system_service(context)
    record_id = context.record["id"]
    what = f"set on {context.entity} {record_id}"
    changed: list[str] = []
    if values:
        with refusals(what):
            before = dict(context.record)
            after = service.update(context.entity, record_id, values)
        changed = sorted(k for k in values if after.get(k) != before.get(k))
    if user_id is not None:
        with refusals(what):
            service.assign(context.entity, record_id, user_id)
        changed.append("owner")
    return {"record": record_id, "changed": changed}


ACTIONS = [RuleAction("set", set_fields, "Change fields of the record (values may be "
                      "templates).", SCHEMA)]
