"""Registry scope → OpenAPI 3.1 document for a tenant's generated REST API."""

from __future__ import annotations

from typing import Any

from ..metadata.describe import text
from ..metadata.ir import Entity, Field, Scope

API = "/api/v1"
PROBLEM = {"$ref": "#/components/schemas/Problem"}
ERRORS = {
    "400": "The request is malformed (unknown parameter, bad filter or cursor).",
    "401": "Missing or invalid bearer token.",
    "403": "Your roles do not allow this (the record is one you may read).",
    "404": "No such tenant, entity or record.",
    "409": "The change conflicts with existing data (a unique value, a reference).",
    "412": "The record changed since you read it (row version / If-Match).",
    "422": "Some fields are not valid; `errors` lists them per field.",
}
SYSTEM_FIELDS: dict[str, dict[str, Any]] = {
    "id": {"type": "integer", "readOnly": True},
    "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    "created_by": {"type": ["integer", "null"], "readOnly": True},
    "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
    "updated_by": {"type": ["integer", "null"], "readOnly": True},
    "owner": {"type": ["integer", "null"], "readOnly": True},
    "business_unit": {"type": ["string", "null"], "readOnly": True},
    "row_version": {"type": "integer", "readOnly": True},
    "deleted_at": {"type": ["string", "null"], "format": "date-time", "readOnly": True},
}
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RECORD_ID = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}


def component_name(entity: Entity, suffix: str = "") -> str:
    return f"{entity.module}__{entity.name}{suffix}"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**schema, "type": [*kind, "null"]} if "null" not in kind else schema
    return {"anyOf": [schema, {"type": "null"}]}


def value_schema(field: Field, *, output: bool) -> dict[str, Any]:
    """The JSON Schema of one field's value, as read (output) or as written."""
    kind = field.type
    schema: dict[str, Any]
    if kind in ("string", "text", "email", "phone", "url", "autonumber"):
        schema = {"type": "string"}
        if field.max_length and kind != "autonumber":
            schema["maxLength"] = field.max_length
        if kind == "email":
            schema["format"] = "email"
        elif kind == "url":
            schema["format"] = "uri"
        if field.pattern and not output:
            schema["pattern"] = field.pattern
    elif kind == "integer":
        schema = {"type": "integer",  # 64-bit integers in the database
                  "minimum": field.min if field.min is not None else INT64_MIN,
                  "maximum": field.max if field.max is not None else INT64_MAX}
    elif kind in ("decimal", "money"):
        schema = {"type": "string", "pattern": DECIMAL_PATTERN, "format": "decimal"} if output \
            else {"type": ["string", "number"], "format": "decimal"}
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "date":
        schema = {"type": "string", "format": "date"}
    elif kind == "datetime":
        schema = {"type": "string", "format": "date-time"}
    elif kind == "enum":
        schema = {"type": "string", "enum": list(field.option_values)}
    elif kind == "multi_enum":
        schema = {"type": "array", "items": {"type": "string", "enum": list(field.option_values)}}
    elif kind == "uuid":
        schema = {"type": "string", "format": "uuid"}
    elif kind == "reference":
        schema = dict(RECORD_ID)
        if output:
            schema = {"anyOf": [schema, {"type": "object", "properties": {
                "id": {"type": "integer"}}, "required": ["id"]}]}
    elif kind == "user":
        schema = dict(RECORD_ID)
    elif kind == "many_to_many":
        schema = {"type": "array", "items": dict(RECORD_ID)}
    elif kind == "formula":
        schema = {}
    else:
        schema = {}
    label = text(field.label)
    description = label if isinstance(label, str) else (label or {}).get("en", field.name)
    if field.help:
        description = f"{description}. {field.help.get('en')}"
    if schema:
        schema = {**schema, "description": description}
    return schema


def entity_schemas(entity: Entity) -> dict[str, dict[str, Any]]:
    record: dict[str, Any] = dict(SYSTEM_FIELDS)
    create: dict[str, Any] = {}
    required: list[str] = []
    for field in entity.fields:
        if field.type == "children":
            continue
        if field.type != "many_to_many":
            schema = value_schema(field, output=True)
            record[field.name] = _nullable(schema) if schema else {}
        if field.read_only or field.type in ("formula", "autonumber"):
            continue
        schema = value_schema(field, output=False)
        create[field.name] = schema if field.required or field.type == "many_to_many" \
            else _nullable(schema)
        if field.required and field.default is None:
            required.append(field.name)
    update = dict(create)
    update["row_version"] = {"type": "integer", "description": "The version you read; a stale "
                             "one is refused with 412."}
    return {
        component_name(entity): {"type": "object", "title": entity.key, "properties": record,
                                 "required": ["id", "row_version"]},
        component_name(entity, "__create"): {"type": "object", "properties": create,
                                             "required": required,
                                             "additionalProperties": False},
        component_name(entity, "__update"): {"type": "object", "properties": update,
                                             "additionalProperties": False},
    }


def _responses(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
    """`ok` plus problem responses; whatever needs a token may also be forbidden (403)."""
    out = dict(ok)
    if "401" in codes and "403" not in codes:
        codes = (*codes, "403")
    for code in codes:
        out[code] = {"description": ERRORS[code],
                     "content": {"application/problem+json": {"schema": PROBLEM}}}
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def list_parameters(entity: Entity) -> list[dict[str, Any]]:
    params = [
        {"name": "filter", "in": "query", "schema": {"type": "string"},
         "description": "A condition as JSON: {all|any|not} or {field, op, value}."},
        {"name": "sort", "in": "query", "schema": {"type": "string"},
         "description": "Comma-separated fields; a leading `-` sorts descending."},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                    "maximum": 500}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"},
         "description": "`next_cursor` of the previous page."},
        {"name": "fields", "in": "query", "schema": {"type": "string"},
         "description": "Comma-separated fields to return (`id` and `row_version` always "
                        "come along)."},
        {"name": "expand", "in": "query", "schema": {"type": "string"},
         "description": "Comma-separated reference fields to return as records."},
        {"name": "count", "in": "query", "schema": {"type": "boolean"},
         "description": "Also return the number of matching records (exact up to 10,000)."},
        {"name": "include_deleted", "in": "query", "schema": {"type": "boolean"}},
    ]
    for field in entity.fields:
        if field.stored and field.type not in ("json", "multi_enum", "many_to_many"):
            params.append({"name": field.name, "in": "query", "schema": {"type": "string"},
                           "description": f"Equals; `{field.name}__<op>=` for other operators."})
    return params


SHARE = {"type": "object", "properties": {
    "id": {"type": "integer"}, "user": {"type": ["integer", "null"]},
    "unit": {"type": ["string", "null"]}, "access": {"enum": ["read", "edit"]},
    "created_at": {"type": "string", "format": "date-time"}},
    "required": ["id", "access"]}


def record_action_paths(entity: Entity, base: str, tag: list[str], ref: dict[str, Any],
                        id_param: dict[str, Any], if_match: dict[str, Any]) -> dict[str, Any]:
    """Export, assignment and sharing of one entity's records."""
    op = f"{entity.module}_{entity.name}"
    share_id = {"name": "share_id", "in": "path", "required": True, "schema": dict(RECORD_ID)}
    return {
        f"{base}/export": {"get": {
            "tags": tag, "operationId": f"export_{op}",
            "summary": "Every record you may export, as CSV (your readable fields).",
            "parameters": [p for p in list_parameters(entity)
                           if p["name"] not in ("limit", "cursor", "count")],
            "responses": _responses({"200": {"description": "CSV, a header row first.",
                                             "content": {"text/csv": {"schema": {
                                                 "type": "string"}}}}},
                                    "400", "401", "404", "422")}},
        f"{base}/{{id}}/assign": {"post": {
            "tags": tag, "operationId": f"assign_{op}", "parameters": [id_param, if_match],
            "summary": "Give the record to another owner.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["owner"],
                "properties": {"owner": dict(RECORD_ID)}}}}},
            "responses": _responses({"200": _json(ref, "The reassigned record.")},
                                    "400", "401", "404", "412", "422")}},
        f"{base}/{{id}}/shares": {
            "parameters": [id_param],
            "get": {"tags": tag, "operationId": f"shares_{op}",
                    "responses": _responses({"200": _json({"type": "object", "properties": {
                        "items": {"type": "array", "items": SHARE}}}, "The record's shares.")},
                        "401", "404")},
            "post": {"tags": tag, "operationId": f"share_{op}",
                     "summary": "Share the record with a user or an org unit (and its subtree).",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "properties": {
                             "user": dict(RECORD_ID), "unit": {"type": "string"},
                             "access": {"enum": ["read", "edit"]}}}}}},
                     "responses": _responses({"201": _json(SHARE, "The new share.")},
                                             "400", "401", "404", "422")}},
        f"{base}/{{id}}/shares/{{share_id}}": {"delete": {
            "tags": tag, "operationId": f"unshare_{op}", "parameters": [id_param, share_id],
            "responses": _responses({"204": {"description": "The share is gone."}},
                                    "401", "404")}},
    }


def identity_paths() -> dict[str, Any]:
    """The caller, users, roles, org units, login and reloading definitions."""
    obj = {"type": "object"}
    items = {"type": "object", "properties": {"items": {"type": "array", "items": obj}}}
    user_body = {"type": "object", "properties": {
        "username": {"type": "string"}, "display_name": {"type": "string"},
        "email": {"type": ["string", "null"]}, "password": {"type": "string"},
        "locale": {"type": ["string", "null"]}, "active": {"type": "boolean"},
        "business_unit": {"type": ["string", "null"]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "unit": {"type": ["string", "null"]},
        "units": {"type": "array", "items": {"type": "string"}}}}
    unit_body = {"type": "object", "properties": {
        "name": {"type": "string"}, "label": {"type": "string"}, "kind": {"type": "string"},
        "parent": {"type": ["string", "null"]}, "business_unit": {"type": ["string", "null"]},
        "manager": {"type": ["integer", "null"]}}}
    user_id = {"name": "user_id", "in": "path", "required": True, "schema": dict(RECORD_ID)}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    tag = ["identity"]

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    return {
        f"{API}/_me": {"get": {"tags": tag, "operationId": "me",
                               "summary": "You: roles, units and what you may do per entity",
                               "responses": _responses({"200": _json(obj, "The caller.")},
                                                       "401")}},
        f"{API}/_identity/users": {
            "get": {"tags": tag, "operationId": "list_users",
                    "responses": _responses({"200": _json(items, "Users.")}, "401")},
            "post": {"tags": tag, "operationId": "create_user", "requestBody": body(user_body),
                     "responses": _responses({"201": _json(obj, "The new user.")},
                                             "400", "401", "409", "422")}},
        f"{API}/_identity/users/{{user_id}}": {
            "parameters": [user_id],
            "get": {"tags": tag, "operationId": "get_user",
                    "responses": _responses({"200": _json(obj, "The user.")}, "401", "404")},
            "patch": {"tags": tag, "operationId": "update_user", "requestBody": body(user_body),
                      "responses": _responses({"200": _json(obj, "The user.")},
                                              "400", "401", "404", "409", "422")}},
        f"{API}/_identity/roles": {"get": {
            "tags": tag, "operationId": "list_roles",
            "responses": _responses({"200": _json(items, "Roles and their grants.")}, "401")}},
        f"{API}/_identity/units": {
            "get": {"tags": tag, "operationId": "list_units",
                    "responses": _responses({"200": _json(items, "The org tree.")}, "401")},
            "post": {"tags": tag, "operationId": "create_unit", "requestBody": body(unit_body),
                     "responses": _responses({"201": _json(obj, "The new unit.")},
                                             "400", "401", "409", "422")}},
        f"{API}/_identity/units/{{name}}": {
            "parameters": [name],
            "get": {"tags": tag, "operationId": "get_unit",
                    "responses": _responses({"200": _json(obj, "The unit.")}, "401", "404")},
            "patch": {"tags": tag, "operationId": "update_unit", "requestBody": body(unit_body),
                      "responses": _responses({"200": _json(obj, "The unit.")},
                                              "400", "401", "404", "422")},
            "delete": {"tags": tag, "operationId": "delete_unit",
                       "responses": _responses({"204": {"description": "Deleted."}},
                                               "401", "404", "409")}},
        f"{API}/_auth/token": {"post": {
            "tags": tag, "operationId": "login", "security": [],
            "summary": "Trade a username and password for a bearer token",
            "requestBody": body({"type": "object", "required": ["username", "password"],
                                 "properties": {"username": {"type": "string"},
                                                "password": {"type": "string"},
                                                "name": {"type": "string"}}}),
            "responses": _responses({"201": _json({"type": "object", "properties": {
                "token": {"type": "string"}, "token_type": {"const": "Bearer"}},
                "required": ["token"]}, "A new token.")}, "400", "422", "401")}},
        f"{API}/_metadata/reload": {"post": {
            "tags": tag, "operationId": "reload_definitions",
            "summary": "Reload the definitions, as a maintainer of every changed part",
            "responses": _responses({"200": _json(obj, "What the reload did.")},
                                    "401", "422")}},
    }


def build_openapi(scope: Scope, *, tenant: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the entities `scope` sees."""
    schemas: dict[str, Any] = {
        "Problem": {"type": "object", "description": "RFC 9457 problem details.",
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                   "status": {"type": "integer"}, "detail": {"type": "string"},
                                   "errors": {"type": "object"}},
                    "required": ["title", "status"]},
    }
    paths: dict[str, Any] = {}
    id_param = {"name": "id", "in": "path", "required": True, "schema": dict(RECORD_ID)}
    if_match = {"name": "If-Match", "in": "header", "required": False,
                "schema": {"type": "string"}, "description": "The ETag you read."}
    for entity in scope.entities.values():
        schemas.update(entity_schemas(entity))
        ref = {"$ref": f"#/components/schemas/{component_name(entity)}"}
        create = {"$ref": f"#/components/schemas/{component_name(entity, '__create')}"}
        update = {"$ref": f"#/components/schemas/{component_name(entity, '__update')}"}
        base = f"{API}/{entity.module}/{entity.name}"
        tag = [entity.key]
        page = {"type": "object", "properties": {
            "items": {"type": "array", "items": ref},
            "next_cursor": {"type": ["string", "null"]},
            "count": {"type": ["integer", "null"]}, "count_exact": {"type": "boolean"}},
            "required": ["items", "next_cursor"]}
        paths[base] = {
            "get": {"tags": tag, "operationId": f"list_{entity.module}_{entity.name}",
                    "summary": f"List {entity.key}", "parameters": list_parameters(entity),
                    "responses": _responses({"200": _json(page, "A page of records.")},
                                            "400", "401", "422")},
            "post": {"tags": tag, "operationId": f"create_{entity.module}_{entity.name}",
                     "summary": f"Create a {entity.key}",
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": create}}},
                     "responses": _responses({"201": _json(ref, "The created record.")},
                                             "400", "401", "409", "422")},
        }
        paths[f"{base}/{{id}}"] = {
            "parameters": [id_param],
            "get": {"tags": tag, "operationId": f"get_{entity.module}_{entity.name}",
                    "parameters": [{"name": "expand", "in": "query",
                                    "schema": {"type": "string"}}],
                    "responses": _responses({"200": _json(ref, "The record (ETag header).")},
                                            "400", "401", "404", "422")},
            "patch": {"tags": tag, "operationId": f"update_{entity.module}_{entity.name}",
                      "parameters": [if_match],
                      "requestBody": {"required": True,
                                      "content": {"application/json": {"schema": update}}},
                      "responses": _responses({"200": _json(ref, "The updated record.")},
                                              "400", "401", "404", "409", "412", "422")},
            "delete": {"tags": tag, "operationId": f"delete_{entity.module}_{entity.name}",
                       "parameters": [if_match],
                       "responses": _responses({"204": {"description": "Deleted (soft)."}},
                                               "400", "401", "404", "409", "412")},
        }
        paths[f"{base}/{{id}}/restore"] = {"post": {
            "tags": tag, "operationId": f"restore_{entity.module}_{entity.name}",
            "parameters": [id_param],
            "responses": _responses({"200": _json(ref, "The restored record.")},
                                    "401", "404", "409")}}
        paths[f"{base}/{{id}}/history"] = {"get": {
            "tags": tag, "operationId": f"history_{entity.module}_{entity.name}",
            "parameters": [id_param],
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object"}}}}, "Audit entries.")},
                "401", "404")}}
        paths[f"{base}/bulk"] = {"post": {
            "tags": tag, "operationId": f"bulk_{entity.module}_{entity.name}",
            "summary": "Create records, or update those matching `key`.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["records"], "additionalProperties": False,
                "properties": {"key": {"type": "string"},
                               "records": {"type": "array", "maxItems": 1000,
                                           "items": {"type": "object"}}}}}}},
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "created": {"type": "array", "items": {"type": "integer"}},
                "updated": {"type": "array", "items": {"type": "integer"}},
                "errors": {"type": "object"}}}, "What happened to each record.")},
                "400", "401", "422")}}
        paths.update(record_action_paths(entity, base, tag, ref, id_param, if_match))
    paths.update(identity_paths())
    paths[f"{API}/_meta"] = {"get": {"operationId": "meta", "summary": "Entities and fields",
                                     "responses": _responses({"200": _json(
                                         {"type": "object"}, "Entity descriptions.")}, "401")}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"metacrm API — tenant {tenant}", "version": version},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }
