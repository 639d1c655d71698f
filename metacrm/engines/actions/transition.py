"""`transition`: take a workflow transition on the record (as the system)."""

from __future__ import annotations

from typing import Any

from ...platform.records import Actor
from . import ActionContext, ActionFailed, RuleAction
from .support import refusals, render, unit_of

SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "description": "The transition's name."},
        "values": {"type": "object", "description": "Fields the transition sets "
                   "(templates)."},
        "comment": {"type": "string"},
    },
    "additionalProperties": False,
}


def transition(context: ActionContext, params: Any) -> dict[str, Any]:
    try:
        from ..workflows import take_transition
    except ImportError as exc:  # pragma: no cover - the workflow engine ships with metacrm
        raise ActionFailed("the workflow engine is not installed", retryable=False) from exc
    if isinstance(params, str):
        params = {"name": params}
    params = render(context, params)
    record_id = context.record["id"]
    actor = Actor(None, unit_of(context), context.depth + 1)
    with refusals(f"transition `{params['name']}` on {context.entity} {record_id}",
                  retry_conflicts=False):
        result = take_transition(context.platform, context.runtime, context.entity,
                                 record_id, params["name"], actor=actor,
                                 depth=context.depth + 1, values=params.get("values"),
                                 comment=params.get("comment"))
    return {"transition": params["name"], "status": getattr(result, "status", None)}


ACTIONS = [RuleAction("transition", transition, "Take a workflow transition on the record.",
                      SCHEMA)]
