"""`convert`: turn the record into new, linked records of other entities, in one action.

    convert:
      records:
        account:
          entity: ocrm.account
          link: converted_account          # the record's field that gets the new id
          values: {name: "{{ record.company }}"}
        contact:
          entity: ocrm.contact
          link: converted_contact
          values: {name: "{{ record.contact_name }}", account: "{{ created.account.id }}"}
      set: {converted_at: "{{ now }}"}

Records are made in the order written; each one's templates see the records made before
it as ``created.<name>`` (its id and values). With `link`, the record's field is set to
the new record's id. A record whose `link` field already holds an id is not made again
(the linked record is used as ``created.<name>``), so a retried conversion finishes the
work instead of duplicating it. `set` changes more fields of the record, with the links,
in one update. Everything is written as the system, one automation level deeper.
"""

from __future__ import annotations

from typing import Any

from ...hookspecs import hookimpl
from ...platform.records import NotFound
from ..templates import TemplateError, render_value, template_variables
from . import ActionContext, ActionFailed, RuleAction
from .support import entity_key, person, refusals, system_service

NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
SCHEMA = {
    "type": "object",
    "required": ["records"],
    "properties": {
        "records": {
            "type": "object", "minProperties": 1, "propertyNames": NAME,
            "description": "The records to make, by a name later templates use "
                           "(`created.<name>.id`), in order.",
            "additionalProperties": {
                "type": "object", "required": ["entity", "values"],
                "properties": {
                    "entity": {"type": "string", "description": "`module.entity`."},
                    "values": {"type": "object", "description": "{field: value or template}"},
                    "link": {**NAME, "description": "A reference field of the record that "
                             "gets the new record's id."},
                    "owner": {"type": ["string", "integer"], "description": "owner (the "
                              "record's, the default), manager, actor, a user id or username."},
                },
                "additionalProperties": False}},
        "set": {"type": "object", "description": "More fields of the record to change "
                "(values may be templates)."},
    },
    "additionalProperties": False,
}


def convert(context: ActionContext, params: Any) -> dict[str, Any]:
    """Make the records in order, link them to the record, then update the record once."""
    if not isinstance(params, dict) or not isinstance(params.get("records"), dict):
        raise ActionFailed("`convert` takes {records: {name: {entity, values, link}}}",
                           retryable=False)
    service = system_service(context)
    source = context.entity
    record_id = context.record["id"]
    variables = template_variables(context)
    created: dict[str, Any] = {}
    links: dict[str, int] = {}
    made: list[dict[str, Any]] = []
    entity = context.runtime.registry.entities[source]
    for name, spec in params["records"].items():
        key = entity_key(context, str(spec["entity"]))
        link = spec.get("link")
        if link is not None:
            found = entity.get_field(link)
            if found is None or found.type != "reference" or found.target != key:
                raise ActionFailed(f"`{link}` is not a reference field of {source} to {key}",
                                   retryable=False)
        existing = context.record.get(link) if link else None
        if existing:
            try:
                created[name] = service.get(key, int(existing))
                made.append({"name": name, "entity": key, "id": int(existing),
                             "existing": True})
                continue
            except NotFound:
                pass  # the linked record is gone: make a new one
        try:
            values = render_value(context.platform, spec.get("values") or {},
                                  {**variables, "created": created})
        except TemplateError as exc:
            raise ActionFailed(f"convert `{name}`: template error: {exc}",
                               retryable=False) from exc
        if not isinstance(values, dict):
            raise ActionFailed(f"convert `{name}`: `values` is {{field: value}}",
                               retryable=False)
        values = {k: v for k, v in values.items() if v is not None and v != ""}
        with refusals(f"convert {source} {record_id} into {key}"):
            new = service.create(key, values)
            owner = _owner(context, spec.get("owner", "owner"))
            if owner is not None and new.get("owner") != owner:
                new = service.assign(key, new["id"], owner)
        created[name] = new
        made.append({"name": name, "entity": key, "id": new["id"]})
        if link is not None:
            links[link] = new["id"]
    try:
        changes = render_value(context.platform, params.get("set") or {},
                               {**variables, "created": created})
    except TemplateError as exc:
        raise ActionFailed(f"convert: `set`: template error: {exc}", retryable=False) from exc
    changes = {**dict(changes or {}), **links}
    if changes:
        with refusals(f"convert: link {source} {record_id}"):
            service.update(source, record_id, changes)
    return {"records": made, "linked": sorted(links)}


def _owner(context: ActionContext, who: Any) -> int | None:
    """Who owns the new records: by default the converted record's owner (if any)."""
    if who == "owner" and context.record.get("owner") is None:
        return None
    return person(context, who)


ACTIONS = [RuleAction("convert", convert, "Turn the record into new records of other "
                      "entities, each linked back to it (lead → account, contact, "
                      "opportunity).", SCHEMA)]


@hookimpl
def register_rule_actions() -> list[RuleAction]:
    return ACTIONS
