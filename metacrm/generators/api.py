"""The generated REST API: generic views over every entity of a Registry version.

Like datasette's, the views are generic (one set of URL rules serves every entity),
and the whole sub-app is rebuilt per Registry version and swapped on reload.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ..metadata.describe import describe_entity
from ..metadata.ir import FrozenDict
from ..platform.auth import User, user_for_token
from ..platform.connections import install as install_request_connections
from ..platform.permissions import Principal, load_principal
from ..platform.problems import PROBLEM_TYPE, problem
from ..platform.records import (
    Actor,
    ListQuery,
    NotFound,
    PreconditionFailed,
    RecordError,
    RecordService,
    ValidationFailed,
)
from ..platform.systables import runtime_system_tables
from .openapi import build_openapi

LIST_PARAMS = frozenset({"filter", "sort", "limit", "cursor", "fields", "expand", "count",
                         "include_deleted"})
TRUE = frozenset({"1", "true", "yes"})
FALSE = frozenset({"0", "false", "no"})
log = logging.getLogger(__name__)


class BadRequest(RecordError):
    status, title = 400, "Bad request"


class Unauthorized(RecordError):
    status, title = 401, "Unauthorized"


def problem_response(status: int, title: str, detail: str | None = None,
                     **extra: Any) -> Response:
    body = json.dumps(problem(status, title, detail, **extra), ensure_ascii=False, default=str)
    return Response(body, status=status, content_type=PROBLEM_TYPE)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None):
    body = json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json",
                    headers=dict(headers or {}))


def _flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise BadRequest(f"`{name}` must be true or false", {name: ["not a boolean"]})


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(p for p in (value or "").split(",") if p)


def _simple_value(field_type: str, op: str, raw: str) -> Any:
    """A query-string value in the JSON shape the condition parser takes."""
    if op in ("in", "not_in"):
        return [_scalar(field_type, part) for part in raw.split(",")]
    if op == "between":
        parts = raw.split(",")
        if len(parts) != 2:
            raise BadRequest("`between` takes two values separated by a comma")
        return [_scalar(field_type, p) for p in parts]
    if op == "is_empty":
        return _flag(op, raw)
    if op in ("older_than", "newer_than"):
        return raw
    return _scalar(field_type, raw)


def _scalar(field_type: str, raw: str) -> Any:
    if field_type in ("integer", "reference", "user", "id"):
        try:
            return int(raw)
        except ValueError as exc:
            raise BadRequest(f"`{raw}` is not a whole number") from exc
    if field_type == "boolean":
        return _flag("value", raw)
    return raw


class EntityAPI:
    """Request handling for one Registry version of one tenant."""

    def __init__(self, platform: Any, runtime: Any) -> None:
        self.platform = platform
        self.runtime = runtime
        self.registry = runtime.registry
        self._openapi: dict[str | None, dict[str, Any]] = {}

    # -- request context ----------------------------------------------------------------------

    def principal(self) -> Principal:
        """The caller: their token's user with roles and org units (once per request)."""
        found = g.get("metacrm_principal")
        if found is None:
            user = self.user()
            with self.runtime.connect() as connection:
                found = load_principal(connection, runtime_system_tables(self.runtime), user,
                                       self.registry.units)
            g.metacrm_principal = found
        return found

    def user(self) -> User:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send `Authorization: Bearer <token>`; create one with "
                               "`metacrm token create TENANT USER`")
        with self.runtime.connect() as connection:
            user = user_for_token(connection, token.strip(),
                                  runtime_system_tables(self.runtime))
        if user is None:
            raise Unauthorized("the token is unknown, revoked or expired")
        return user

    def service(self) -> RecordService:
        found = g.get("metacrm_service")
        if found is None:
            found = RecordService(self.runtime, Actor.of(self.principal()),
                                  emit=self.platform.emit, operators=self.platform.operators)
            g.metacrm_service = found
        return found

    def entity_key(self, module: str, entity: str) -> str:
        key = f"{module}.{entity}"
        service = self.service()
        if key not in service.scope.entities:
            raise NotFound(f"there is no entity {key}")
        service.access(key)  # NotFound when the caller's roles hide the entity
        return key

    # -- list query ---------------------------------------------------------------------------

    def list_query(self, service: RecordService, key: str) -> tuple[ListQuery, Any]:
        access = service.access(key)
        entity = access.entity
        args = request.args
        conditions: list[Any] = []
        if "filter" in args:
            conditions.append(_json_text(args["filter"], "filter"))
        for name, raw in args.items(multi=True):
            if name in LIST_PARAMS:
                continue
            field_name, _, op = name.partition("__")
            field = entity.get_field(field_name)
            system = field_name in ("id", "created_at", "updated_at", "owner", "business_unit",
                                    "created_by", "updated_by", "row_version")
            if field is None and not system:
                raise BadRequest(f"unknown parameter `{name}`", {name: ["unknown parameter"]})
            field_type = field.type if field is not None else (
                "integer" if field_name in ("id", "owner", "created_by", "updated_by",
                                            "row_version") else "string")
            op = op or "eq"
            conditions.append({"field": field_name, "op": op,
                               **({} if op in ("today", "this_week", "this_month") else
                                  {"value": _simple_value(field_type, op, raw)})})
        document = None
        if conditions:
            document = conditions[0] if len(conditions) == 1 else {"all": conditions}
            if document is None:
                message = "a condition must be a mapping with `all`, `any`, `not` or `field`"
                raise ValidationFailed(f"the filter is not valid: {message}",
                                       {"filter": [message]})
        query = dataclasses.replace(self.paging(entity), filter=document)
        return query, None

    def paging(self, entity: Any) -> ListQuery:
        args = request.args
        sort = []
        for part in _names(args.get("sort")):
            name = part.lstrip("-")
            if entity.get_field(name) is None and name not in ("id", "created_at",
                                                               "updated_at"):
                raise BadRequest(f"cannot sort by `{name}`: not a field",
                                 {"sort": [f"unknown field `{name}`"]})
            sort.append((name, part.startswith("-")))
        try:
            limit = int(args.get("limit", 50))
        except ValueError as exc:
            raise BadRequest("`limit` must be a whole number") from exc
        if not 1 <= limit <= 500:
            raise BadRequest("`limit` must be between 1 and 500")
        fields = _names(args.get("fields")) or None
        if fields:
            unknown = [f for f in fields if entity.get_field(f) is None and f not in (
                "id", "created_at", "updated_at", "row_version", "owner", "business_unit",
                "created_by", "updated_by", "deleted_at")]
            if unknown:
                raise BadRequest(f"unknown field(s) in `fields`: {', '.join(unknown)}")
        return ListQuery(sort=tuple(sort), limit=limit, cursor=args.get("cursor") or None,
                         fields=fields, expand=_names(args.get("expand")),
                         count=_flag("count", args.get("count")),
                         include_deleted=_flag("include_deleted", args.get("include_deleted")))

    # -- views --------------------------------------------------------------------------------

    def list(self, module: str, entity: str) -> Response:
        key = self.entity_key(module, entity)
        service = self.service()
        query, where = self.list_query(service, key)
        page = service.list(key, query, where=where)
        body: dict[str, Any] = {"items": page.items, "next_cursor": page.next_cursor}
        if query.count:
            body["count"] = page.count
            body["count_exact"] = page.count_exact
        return json_response(body)

    def create(self, module: str, entity: str) -> Response:
        key = self.entity_key(module, entity)
        record = self.service().create(key, self.body())
        location = f"{request.script_root}{request.path.rstrip('/')}/{record['id']}"
        return json_response(record, 201, {"ETag": _etag(record), "Location": location})

    def get(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        extra = set(request.args) - {"expand"}
        if extra:
            raise BadRequest(f"unknown parameter `{sorted(extra)[0]}`")
        record = self.service().get(key, record_id, expand=_names(request.args.get("expand")))
        return json_response(record, headers={"ETag": _etag(record)})

    def update(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        record = self.service().update(key, record_id, self.body(),
                                       expected_version=_if_match(record_id))
        return json_response(record, headers={"ETag": _etag(record)})

    def delete(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        self.service().delete(key, record_id, expected_version=_if_match(record_id))
        return Response(status=204)

    def restore(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        record = self.service().restore(key, record_id)
        return json_response(record, headers={"ETag": _etag(record)})

    def history(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        if request.args:
            raise BadRequest(f"unknown parameter `{sorted(request.args)[0]}`")
        service = self.service()
        service.get(key, record_id, include_deleted=True)
        return json_response({"items": service.history(key, record_id)})

    def bulk(self, module: str, entity: str) -> Response:
        key = self.entity_key(module, entity)
        body = self.body()
        records = body.get("records")
        if not isinstance(records, list) or len(records) > 1000:
            raise ValidationFailed("`records` must be a list of at most 1000 objects",
                                   {"records": ["a list of at most 1000 objects"]})
        unknown = set(body) - {"records", "key"}
        if unknown:
            raise ValidationFailed(f"unknown key `{sorted(unknown)[0]}`")
        match = body.get("key")
        if match is not None and not isinstance(match, str):
            raise ValidationFailed("`key` must be a field name", {"key": ["not a field name"]})
        result = self.service().bulk_upsert(key, records, key=match)
        return json_response({"created": result.created, "updated": result.updated,
                              "errors": {str(k): v for k, v in result.errors.items()}})

    def meta(self) -> Response:
        service = self.service()
        scope = self.visible_scope(service)
        return json_response({
            "tenant": self.runtime.slug, "version": self.registry.version,
            "unit": service.actor.unit,
            "entities": {key: describe_entity(entity, scope)
                         for key, entity in scope.entities.items()}})

    def visible_scope(self, service: RecordService) -> Any:
        """The caller's business unit's definitions, less what their roles hide."""
        scope = service.scope
        if service.guard is None or service.guard.principal.is_admin:
            return scope
        return dataclasses.replace(scope, entities=FrozenDict(
            {key: service.access(key).entity for key in service.visible_entities()}))

    def document(self, service: RecordService | None) -> dict[str, Any]:
        """The OpenAPI document the caller sees (their unit's scope, less hidden entities
        and fields), built once per version, unit and set of roles."""
        key = service.guard.fingerprint() if service and service.guard else None
        document = self._openapi.get(key)
        if document is None:
            scope = self.visible_scope(service) if service else self.registry.scope(None)
            document = build_openapi(scope, tenant=self.runtime.slug,
                                     version=self.registry.version)
            self.platform.plugins.hook.extend_openapi(document=document, api=self,
                                                      service=service)
            self._openapi[key] = document
        return document

    def openapi(self) -> Response:
        header = request.headers.get("Authorization", "")
        document = self.document(self.service() if header else None)
        # the API lives where this document was asked for (/t/<slug>/, a header or a host)
        return json_response({**document, "servers": [{"url": f"{request.script_root}/"}]})

    def export(self, module: str, entity: str) -> Response:
        """Every record the caller may export, as CSV (their readable fields only)."""
        key = self.entity_key(module, entity)
        service = self.service()
        query, _ = self.list_query(service, key)
        columns = list(query.fields or service.export_columns(key))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
        writer.writeheader()
        for record in service.export(key, query):
            writer.writerow({k: _csv_value(v) for k, v in record.items()})
        return Response(buffer.getvalue(), content_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{module}.{entity}.csv"'})

    def assign(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        body = self.body()
        owner = body.get("owner")
        if isinstance(owner, bool) or not isinstance(owner, int):
            raise ValidationFailed("send `owner`: the id of the user to assign the record to",
                                   {"owner": ["a user id"]})
        record = self.service().assign(key, record_id, owner,
                                       expected_version=_if_match(record_id))
        return json_response(record, headers={"ETag": _etag(record)})

    def shares(self, module: str, entity: str, record_id: int) -> Response:
        key = self.entity_key(module, entity)
        service = self.service()
        if request.method == "GET":
            return json_response({"items": service.shares(key, record_id)})
        body = self.body()
        share = service.share(key, record_id, user_id=body.get("user"),
                              unit=body.get("unit"), access=body.get("access", "read"))
        return json_response(share, 201)

    def unshare(self, module: str, entity: str, record_id: int, share_id: int) -> Response:
        key = self.entity_key(module, entity)
        self.service().unshare(key, record_id, share_id)
        return Response(status=204)

    def body(self) -> dict[str, Any]:
        if not request.data:
            raise ValidationFailed("send the fields as a JSON object")
        data = _json_text(request.data, "body")
        if not isinstance(data, dict):
            raise ValidationFailed("the body must be a JSON object of field values")
        return data


def _json_text(text: str | bytes, name: str) -> Any:
    """Parsed JSON from a request, or a 400 naming `name` (the body or a parameter)."""
    what = "the body" if name == "body" else f"`{name}`"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(f"{what} is not valid JSON", {name: [message]}) from exc
    if not _encodable(data):
        raise BadRequest(f"{what} holds text that is not valid Unicode (a lone surrogate)",
                         {name: ["not valid Unicode"]})
    return data


def _encodable(value: Any) -> bool:
    """Whether every string in a JSON value can be encoded as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _csv_value(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def _etag(record: Mapping[str, Any]) -> str:
    return f'"{record["id"]}-{record["row_version"]}"'


def _if_match(record_id: int) -> int | None:
    header = request.headers.get("If-Match")
    if not header:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    ident, _, version = value.partition("-")
    if ident != str(record_id) or not version.isdigit():
        raise PreconditionFailed("If-Match does not name a version of this record")
    return int(version)


DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:0 .2rem}} h2{{border-bottom:1px solid #ddd}}
.m{{display:inline-block;width:4.5rem;font-weight:bold}}</style></head><body>
<h1>{title}</h1><p>Version <code>{version}</code>. Machine-readable:
<a href="{base}/api/v1/openapi.json">openapi.json</a> (OpenAPI 3.1).
Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.</p>{body}</body></html>"""


def docs_html(document: Mapping[str, Any], base: str) -> str:
    from html import escape

    sections = []
    for path, item in document["paths"].items():
        rows = []
        for method, operation in item.items():
            if method == "parameters":
                continue
            summary = escape(operation.get("summary", operation.get("operationId", "")))
            rows.append(f"<div><span class=m>{method.upper()}</span><code>{escape(path)}</code>"
                        f" {summary}</div>")
        sections.append("".join(rows))
    schemas = []
    for name, schema in document["components"]["schemas"].items():
        props = ", ".join(f"<code>{escape(p)}</code>" for p in schema.get("properties", {}))
        schemas.append(f"<h3 id='{escape(name)}'>{escape(name)}</h3><p>{props}</p>")
    body = "<h2>Endpoints</h2>" + "".join(sections) + "<h2>Schemas</h2>" + "".join(schemas)
    info = document["info"]
    return DOCS_PAGE.format(title=escape(info["title"]), version=escape(info["version"]),
                            base=escape(base), body=body)


def build_api(app: Flask, platform: Any, runtime: Any) -> EntityAPI:
    """Install the API's routes and error handling on a version's sub-app."""
    install_request_connections(app)  # first: the hooks below read through it
    api = EntityAPI(platform, runtime)
    app.extensions["metacrm.api"] = api
    base = "/api/v1/<module>/<entity>"
    public = {"api_openapi", "api_docs", "api_auth_token"}

    @app.before_request
    def authenticate() -> None:
        if request.endpoint in public or request.endpoint is None:
            return
        if request.endpoint and request.endpoint.startswith("api_"):
            g.metacrm_user = api.user()
            api.principal()

    routes = [
        ("/api/v1/_meta", "api_meta", api.meta, ["GET"]),
        ("/api/v1/openapi.json", "api_openapi", api.openapi, ["GET"]),
        (base, "api_list", api.list, ["GET"]),
        (base, "api_create", api.create, ["POST"]),
        (f"{base}/bulk", "api_bulk", api.bulk, ["POST"]),
        (f"{base}/export", "api_export", api.export, ["GET"]),
        (f"{base}/<int:record_id>/assign", "api_assign", api.assign, ["POST"]),
        (f"{base}/<int:record_id>/shares", "api_shares", api.shares, ["GET", "POST"]),
        (f"{base}/<int:record_id>/shares/<int:share_id>", "api_unshare", api.unshare,
         ["DELETE"]),
        (f"{base}/<int:record_id>", "api_get", api.get, ["GET"]),
        (f"{base}/<int:record_id>", "api_update", api.update, ["PATCH"]),
        (f"{base}/<int:record_id>", "api_delete", api.delete, ["DELETE"]),
        (f"{base}/<int:record_id>/restore", "api_restore", api.restore, ["POST"]),
        (f"{base}/<int:record_id>/history", "api_history", api.history, ["GET"]),
    ]
    for rule, endpoint, view, methods in routes:
        app.add_url_rule(rule, endpoint, view, methods=methods)

    from .identity_api import install_identity_routes

    install_identity_routes(app, api)
    platform.plugins.hook.install_api_routes(app=app, api=api)

    @app.get("/api/docs")
    def api_docs() -> Response:
        return Response(docs_html(api.document(None), request.script_root),
                        content_type="text/html")

    @app.errorhandler(RecordError)
    def record_error(exc: RecordError) -> Response:
        extra = dict(exc.extra)
        if exc.errors:
            extra["errors"] = exc.errors
        return problem_response(exc.status, exc.title, exc.detail, **extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return problem_response(exc.code or 500, exc.name, exc.description)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return problem_response(500, "Internal error", "the server could not complete the "
                                "request; the error has been logged")

    return api
