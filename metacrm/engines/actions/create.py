"""`create` and `create_task`: new records from templated values."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from . import ActionContext, ActionFailed, RuleAction
from .support import entity_key, person, refusals, render, seconds, system_service

TEMPLATED = {"description": "a value or a template"}
CREATE_SCHEMA = {
    "type": "object",
    "required": ["entity", "values"],
    "properties": {
        "entity": {"type": "string", "description": "`module.entity` (or an entity of the "
                   "rule's module)."},
        "values": {"type": "object", "description": "{field: value or template}"},
        "owner": {"type": ["string", "integer"], "description": "owner, manager, actor, a "
                  "user id or username: who owns the new record."},
    },
    "additionalProperties": False,
}
TASK_SCHEMA = {
    "type": "object",
    "required": ["title"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "description": "A template."},
        "assignee": {"type": ["string", "integer"], "description": "owner (default), "
                     "manager, actor, a user id or a username."},
        "due_in": {"type": ["string", "integer"], "description": "30m, 12h, 3d, 2w (or "
                   "seconds) from now."},
        "entity": {"type": "string", "description": "The task entity (default: ocrm.task, "
                   "else the first entity named `task`)."},
        "description": {"type": "string"},
        "priority": {"type": "string"},
        "values": {"type": "object", "description": "More {field: value or template}."},
    },
    "additionalProperties": False,
}


def create_record(context: ActionContext, params: Any) -> dict[str, Any]:
    """Create a record of any entity (as the system, one level deeper)."""
    params = render(context, params)
    key = entity_key(context, str(params["entity"]))
    values = params.get("values") or {}
    if not isinstance(values, dict):
        raise ActionFailed("`values` is {field: value, ...}", retryable=False)
    owner = person(context, params["owner"]) if params.get("owner") is not None else None
    service = system_service(context)
    with refusals(f"create {key}"):
        created = service.create(key, values)
        if owner is not None:
            created = service.assign(key, created["id"], owner)
    return {"entity": key, "id": created["id"]}


def task_entity(context: ActionContext, name: str | None) -> str:
    """The entity tasks are made in: `name`, else ocrm.task, else one named `task`."""
    entities = context.runtime.registry.entities
    if name:
        return entity_key(context, name)
    if "ocrm.task" in entities:
        return "ocrm.task"
    found = next((key for key, e in entities.items() if e.name == "task"), None)
    if found is None:
        raise ActionFailed("there is no task entity: give `entity`, or enable a module with "
                           "an entity named `task` (ocrm)", retryable=False)
    return found


def create_task(context: ActionContext, params: Any) -> dict[str, Any]:
    """A task about the record: title, assignee, due time and a link back to the record.

    Fields it fills when the task entity has them: `title` (required), `assignee` (a user
    field; else the task's owner), `due_at` or `due` (date or datetime), a reference to
    the record's entity, `related_entity` and `related_id`, `description`, `priority`.
    """
    params = render(context, params)
    key = task_entity(context, params.get("entity"))
    entity = context.runtime.registry.entities[key]
    values: dict[str, Any] = {"title": params["title"]}
    assignee = person(context, params.get("assignee", "owner"))
    assignee_field = entity.get_field("assignee")
    if assignee_field is not None and assignee_field.type == "user":
        values["assignee"] = assignee
    if params.get("due_in") is not None:
        due_field = entity.get_field("due_at") or entity.get_field("due")
        if due_field is None:
            raise ActionFailed(f"{key} has no `due_at` or `due` field for `due_in`",
                               retryable=False)
        due = context.now() + _delta(seconds(params["due_in"], "due_in"))
        tz = ZoneInfo(context.runtime.config.timezone)
        values[due_field.name] = due.astimezone(tz).date().isoformat() \
            if due_field.type == "date" else due.isoformat()
    link = next((f for f in entity.fields if f.type == "reference" and
                 f.target == context.entity), None)
    if link is not None:
        values[link.name] = context.record["id"]
    if entity.get_field("related_entity") is not None:
        values["related_entity"] = context.entity
    if entity.get_field("related_id") is not None:
        values["related_id"] = context.record["id"]
    for name in ("description", "priority"):
        if params.get(name) is not None:
            values[name] = params[name]
    values.update(params.get("values") or {})
    service = system_service(context)
    with refusals(f"create a task in {key}"):
        task = service.create(key, values)
        if assignee_field is None or assignee_field.type != "user":
            task = service.assign(key, task["id"], assignee)
    return {"entity": key, "id": task["id"], "assignee": assignee}


def _delta(amount: int) -> Any:
    import datetime as dt

    return dt.timedelta(seconds=amount)


ACTIONS = [
    RuleAction("create", create_record, "Create a record with templated values.",
               CREATE_SCHEMA),
    RuleAction("create_task", create_task, "Create a task about the record for its owner, "
               "their manager or a named user, due after a delay.", TASK_SCHEMA),
]
