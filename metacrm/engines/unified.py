"""The unified view of one record: the record and, per entity of the enabled modules that
references it, the referencing records the caller may read.

    GET /api/v1/<module>/<entity>/<id>/360?limit=50&entities=ocrm.lead,service.ticket

Every list goes through the caller's `RecordService.list`, so permission scopes, shares and
hidden fields apply exactly as in the entity's own list; each is capped at `limit` records
(newest first) with a count and a link to the full, filtered list. Works for any entity
(`customer.customer` is the usual one); a built-in plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, Response

from ..generators.api import BadRequest, EntityAPI, json_response
from ..generators.openapi import API, RECORD_ID, _json, _responses, component_name
from ..hookspecs import hookimpl
from ..metadata.ir import Relation
from ..platform.records import ListQuery, NotFound, RecordService

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Link:
    """One way records point at the viewed entity: a reference or many_to_many field."""

    key: str  # "module.entity", or "module.entity.field" when one entity links twice
    relation: Relation


def links_to(service: RecordService, entity_key: str) -> list[Link]:
    """Relations into `entity_key` the caller can follow: the source entity is one they
    may read and the linking field one they see."""
    visible = set(service.visible_entities())
    relations = [r for r in service.registry.incoming(entity_key) if r.source in visible]
    counts: dict[str, int] = {}
    for relation in relations:
        counts[relation.source] = counts.get(relation.source, 0) + 1
    found = []
    for relation in relations:
        try:
            source = service.access(relation.source)
        except NotFound:
            continue
        if source.entity.get_field(relation.field) is None:  # hidden from the caller
            continue
        if service.guard is not None and not service.guard.can(relation.source, "read"):
            continue
        key = relation.source if counts[relation.source] == 1 else \
            f"{relation.source}.{relation.field}"
        found.append(Link(key, relation))
    return found


def unified_view(service: RecordService, entity_key: str, record_id: int, *,
                 limit: int = DEFAULT_LIMIT, only: set[str] | None = None,
                 base_url: str = "") -> dict[str, Any]:
    """{record, related: {key: {entity, field, items, count, count_exact, next_cursor, url}}}."""
    record = service.get(entity_key, record_id)
    related: dict[str, Any] = {}
    for link in links_to(service, entity_key):
        relation = link.relation
        if only is not None and link.key not in only and relation.source not in only:
            continue
        source = service.access(relation.source)
        table = source.table
        if relation.kind == "reference":
            where = table.c[relation.field] == record_id
        else:
            link_table = service.runtime.tables.by_id[
                service.registry.entities[relation.source].field(relation.field).id]
            where = table.c.id.in_(link_table.select().with_only_columns(
                link_table.c.source_id).where(link_table.c.target_id == record_id))
        page = service.list(relation.source, ListQuery(
            sort=(("id", True),), limit=limit, count=True), where=where)
        module, name = relation.source.split(".", 1)
        url = None  # a many_to_many field has no list filter to link to
        if relation.kind == "reference":
            url = f"{base_url}{API}/{module}/{name}?{relation.field}={record_id}&sort=-id"
        related[link.key] = {
            "entity": relation.source, "field": relation.field, "items": page.items,
            "count": page.count, "count_exact": page.count_exact,
            "next_cursor": page.next_cursor, "url": url}
    return {"record": record, "related": related}


def install_unified_routes(app: Flask, api: EntityAPI) -> None:
    from flask import request  # not a module attribute: this module is a plugin

    def view(module: str, entity: str, record_id: int) -> Response:
        key = api.entity_key(module, entity)
        extra = sorted(set(request.args) - {"limit", "entities"})
        if extra:
            raise BadRequest(f"unknown parameter `{extra[0]}`",
                             {extra[0]: ["unknown parameter"]})
        raw = request.args.get("limit", str(DEFAULT_LIMIT))
        if not raw.isdecimal() or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadRequest(f"`limit` is a whole number from 1 to {MAX_LIMIT}",
                             {"limit": [f"1 to {MAX_LIMIT}"]})
        only = None
        if request.args.get("entities"):
            only = {p.strip() for p in request.args["entities"].split(",") if p.strip()}
        return json_response(unified_view(api.service(), key, record_id, limit=int(raw),
                                          only=only, base_url=request.script_root))

    app.add_url_rule("/api/v1/<module>/<entity>/<int:record_id>/360", "api_unified_view",
                     view, methods=["GET"])


def unified_paths(scope: Any) -> dict[str, Any]:
    paths = {}
    for entity in scope.entities.values():
        record = {"$ref": f"#/components/schemas/{component_name(entity)}"}
        group = {"type": "object", "properties": {
            "entity": {"type": "string"}, "field": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object"}},
            "count": {"type": ["integer", "null"]}, "count_exact": {"type": "boolean"},
            "next_cursor": {"type": ["string", "null"]}, "url": {"type": ["string", "null"]}},
            "required": ["entity", "field", "items", "count", "url"]}
        paths[f"{API}/{entity.module}/{entity.name}/{{id}}/360"] = {"get": {
            "tags": [entity.key], "operationId": f"unified_{entity.module}_{entity.name}",
            "summary": "The record with the records of every entity that references it "
                       "(those you may read), newest first, capped per entity.",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": dict(RECORD_ID)},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
                {"name": "entities", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated entity keys to include (default: all)."}],
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "record": record, "related": {"type": "object",
                                              "additionalProperties": group}},
                "required": ["record", "related"]}, "The unified view.")},
                "400", "401", "404")}}
    return paths


@hookimpl
def install_api_routes(app: Any, api: Any) -> None:
    install_unified_routes(app, api)


@hookimpl
def extend_openapi(document: dict, api: Any, service: Any) -> None:
    scope = api.visible_scope(service) if service is not None else api.registry.scope(None)
    document["paths"].update(unified_paths(scope))
