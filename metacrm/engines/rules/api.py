"""The administrators' view of automation runs: the run log, one run, retrying one."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from ...generators.api import json_response
from ...platform.records import Forbidden, RecordError
from .admin import MAX_LIMIT, get_run, list_runs, retry_run
from .tables import STATUSES

BASE = "/api/v1/_automation/runs"
INT64_MAX = 2**63 - 1


class BadRequest(RecordError):
    status, title = 400, "Bad request"


def install_run_routes(app: Flask, api: Any) -> None:
    def require_admin() -> None:
        if not api.principal().is_admin:
            raise Forbidden("only administrators see automation runs", role="administrator")

    def number(name: str, default: int | None, low: int, high: int) -> int | None:
        raw = request.args.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
            raise BadRequest(f"`{name}` must be a whole number from {low} to {high}",
                             {name: ["out of range"]})
        return int(raw)

    def name(parameter: str) -> str | None:
        raw = request.args.get(parameter) or None
        if raw is not None and (len(raw) > 200 or "\x00" in raw or not raw.isprintable()):
            raise BadRequest(f"`{parameter}` must be a name such as `ocrm.lead`",
                             {parameter: ["not a name"]})
        return raw

    def api_rule_runs() -> Response:
        require_admin()
        status = request.args.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadRequest(f"`status` must be one of {', '.join(STATUSES)}",
                             {"status": ["unknown status"]})
        return json_response(list_runs(
            api.runtime, status=status, rule=name("rule"), entity=name("entity"),
            record_id=number("record_id", None, 1, INT64_MAX),
            limit=number("limit", 50, 1, MAX_LIMIT) or 50,
            before=number("before", None, 1, INT64_MAX)))

    def api_rule_run(run_id: int) -> Response:
        require_admin()
        return json_response(get_run(api.runtime, run_id))

    def api_rule_run_retry(run_id: int) -> Response:
        require_admin()
        return json_response(retry_run(api.platform, api.runtime, run_id), 202)

    app.add_url_rule(BASE, "api_rule_runs", api_rule_runs, methods=["GET"])
    app.add_url_rule(f"{BASE}/<int:run_id>", "api_rule_run", api_rule_run, methods=["GET"])
    app.add_url_rule(f"{BASE}/<int:run_id>/retry", "api_rule_run_retry", api_rule_run_retry,
                     methods=["POST"])


def run_paths() -> dict[str, Any]:
    """OpenAPI paths of the run routes (administrators only)."""
    problem = {"content": {"application/problem+json": {"schema": {"type": "object"}}}}
    nullable_text = {"type": ["string", "null"]}
    item = {"type": "object", "properties": {
        "id": {"type": "integer"}, "rule": {"type": "string"}, "scope": {"type": "string"},
        "entity": {"type": "string"}, "record_id": {"type": "integer"},
        "trigger": {"type": "string"}, "dedup_key": {"type": "string"},
        "status": {"enum": list(STATUSES)}, "attempts": {"type": "integer"},
        "next_attempt_at": {"type": "string"}, "depth": {"type": "integer"},
        "actor": {"type": ["integer", "null"]}, "event": {"type": ["object", "null"]},
        "created_at": {"type": "string"}, "started_at": nullable_text,
        "finished_at": nullable_text, "last_error": nullable_text,
        "results": {"type": ["array", "null"]}}}
    errors = {code: {"description": text, **problem} for code, text in (
        ("401", "No valid token."), ("403", "Not an administrator."))}
    run_id = {"name": "id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}}
    whole = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
    tag = ["automation"]
    return {
        BASE: {"get": {
            "tags": tag, "operationId": "list_rule_runs",
            "summary": "The automation run log, newest first (parked runs wait for you)",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string",
                                                             "enum": list(STATUSES)}},
                {"name": "rule", "in": "query", "schema": {"type": "string"}},
                {"name": "entity", "in": "query", "schema": {"type": "string"}},
                {"name": "record_id", "in": "query", "schema": whole},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                            "maximum": MAX_LIMIT}},
                {"name": "before", "in": "query", "schema": whole}],
            "responses": {"200": {"description": "Runs.", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "items": {"type": "array", "items": item},
                    "next": {"type": ["integer", "null"]}}}}}},
                "400": {"description": "A bad query parameter.", **problem}, **errors}}},
        f"{BASE}/{{id}}": {"get": {
            "tags": tag, "operationId": "get_rule_run", "summary": "One automation run",
            "parameters": [run_id],
            "responses": {"200": {"description": "The run.", "content": {
                "application/json": {"schema": item}}},
                "404": {"description": "No such run.", **problem}, **errors}}},
        f"{BASE}/{{id}}/retry": {"post": {
            "tags": tag, "operationId": "retry_rule_run",
            "summary": "Run a parked (or stopped, or skipped) run again, from its first "
                       "unfinished action",
            "parameters": [run_id],
            "responses": {"202": {"description": "Queued again.", "content": {
                "application/json": {"schema": item}}},
                "404": {"description": "No such run.", **problem},
                "409": {"description": "Not parked, stopped or skipped.", **problem},
                **errors}}},
    }
