"""`GET /api/v1/<module>/<entity>/<id>/sla`: a record's clocks, for whoever may read it."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response

from ...generators.api import EntityAPI, json_response
from ...generators.openapi import API, PROBLEM, RECORD_ID
from ...platform.records import NotFound
from . import store
from .engine import now_of
from .policies import covered_entities, policies_for
from .sweep import clock_json

CLOCK_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "policy": {"type": "string"}, "clock": {"type": "string"},
    "status": {"enum": ["running", "paused", "met", "breached"]},
    "target_seconds": {"type": "integer"},
    "elapsed_seconds": {"type": ["number", "null"],
                        "description": "Business seconds the clock has run."},
    "remaining_seconds": {"type": ["number", "null"],
                          "description": "Business seconds left (negative: overdue)."},
    "started_at": {"type": "string", "format": "date-time"},
    "due_at": {"type": ["string", "null"], "format": "date-time"},
    "paused": {"type": "boolean"},
    "paused_since": {"type": ["string", "null"], "format": "date-time"},
    "paused_seconds": {"type": "number"},
    "warned": {"type": "boolean"},
    "warned_at": {"type": ["string", "null"], "format": "date-time"},
    "breached": {"type": "boolean"},
    "breached_at": {"type": ["string", "null"], "format": "date-time"},
    "stopped_at": {"type": ["string", "null"], "format": "date-time"},
    "escalations_fired": {"type": "array", "items": {"type": "integer"}}},
    "required": ["policy", "clock", "status", "target_seconds", "due_at"]}


def record_clocks(runtime: Any, entity: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every clock of a record, as JSON, at the platform's now."""
    unit = record.get("business_unit")
    policies = {p.key: p for p in policies_for(
        runtime, entity, unit if unit in runtime.registry.scopes else None)}
    now = now_of(runtime)
    with runtime.connect() as connection:
        found = store.load(connection, store.table_of(runtime), entity, record["id"])
    return [clock_json(c, policies.get(c.policy), runtime, now) for c in found]


def install_sla_routes(app: Flask, api: EntityAPI) -> None:
    def api_sla(module: str, entity: str, record_id: int) -> Response:
        key = api.entity_key(module, entity)
        if key not in covered_entities(api.registry):
            raise NotFound(f"no SLA policy covers {key}")
        record = api.service().get(key, record_id)  # NotFound unless the caller may read it
        return json_response({"entity": key, "id": record_id,
                              "clocks": record_clocks(api.runtime, key, record)})

    app.add_url_rule("/api/v1/<module>/<entity>/<int:record_id>/sla", "api_sla", api_sla,
                     methods=["GET"])


def sla_paths(document: dict[str, Any], api: EntityAPI, service: Any) -> None:
    """The `/sla` path of every entity with a policy that the caller's document lists."""
    covered = covered_entities(api.registry)
    scope = service.scope if service is not None else api.registry.scope(None)
    problem = {"content": {"application/problem+json": {"schema": PROBLEM}}}
    for key in sorted(covered):
        entity = scope.entities.get(key)
        base = None if entity is None else f"{API}/{entity.module}/{entity.name}"
        if base is None or base not in document.get("paths", {}):
            continue  # hidden from the caller
        document["paths"][f"{base}/{{id}}/sla"] = {"get": {
            "tags": [key], "operationId": f"sla_{entity.module}_{entity.name}",
            "summary": "The record's SLA clocks: status, target, elapsed and remaining "
                       "business time, due time, warning and breach.",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": dict(RECORD_ID)}],
            "responses": {
                "200": {"description": "The record's clocks.", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "entity": {"type": "string"}, "id": {"type": "integer"},
                        "clocks": {"type": "array", "items": CLOCK_SCHEMA}}}}}},
                "401": {"description": "Missing or invalid bearer token.", **problem},
                "404": {"description": "No such record, or no policy covers the entity.",
                        **problem}}}}
