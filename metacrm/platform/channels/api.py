"""The administrators' view of the delivery log: list deliveries, retry a parked one."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from ...generators.api import json_response
from ..records import Conflict, Forbidden, NotFound, RecordError
from . import deliveries
from .base import STATUSES
from .registry import channels_of

BASE = "/api/v1/_automation/deliveries"
ID_MAX = 2**63 - 1


class BadRequest(RecordError):
    status, title = 400, "Bad request"


def install_delivery_routes(app: Flask, api: Any) -> None:
    def require_admin() -> None:
        if not api.principal().is_admin:
            raise Forbidden("only administrators see the delivery log", role="administrator")

    def number(name: str, default: int | None, low: int, high: int) -> int | None:
        raw = request.args.get(name)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise BadRequest(f"`{name}` must be a whole number from {low} to {high}",
                             {name: ["out of range"]})
        return int(raw)

    def api_deliveries() -> Response:
        require_admin()
        status = request.args.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadRequest(f"`status` must be one of {', '.join(STATUSES)}",
                             {"status": ["unknown status"]})
        limit = number("limit", 50, 1, 500) or 50
        before = number("before", None, 1, ID_MAX)
        with api.runtime.connect() as connection:
            items = deliveries.listing(connection, status=status,
                                       channel=request.args.get("channel") or None,
                                       limit=limit, before=before)
        more = items[-1]["id"] if len(items) == limit else None
        return json_response({"items": items, "next_before": more})

    def api_delivery_retry(delivery_id: int) -> Response:
        require_admin()
        if delivery_id > ID_MAX:
            raise NotFound(f"there is no delivery {delivery_id}")
        registry = channels_of(api.platform)
        try:
            registry.retry(api.runtime, delivery_id)
        except LookupError as exc:
            raise NotFound(str(exc)) from exc
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        with api.runtime.connect() as connection:
            row = deliveries.by_id(connection, delivery_id)
        return json_response(deliveries.public(row), 202)

    app.add_url_rule(BASE, "api_deliveries", api_deliveries, methods=["GET"])
    app.add_url_rule(f"{BASE}/<int:delivery_id>/retry", "api_delivery_retry",
                     api_delivery_retry, methods=["POST"])


def delivery_paths() -> dict[str, Any]:
    """OpenAPI paths of the delivery routes (administrators only)."""
    problem = {"content": {"application/problem+json": {"schema": {"type": "object"}}}}
    item = {"type": "object", "properties": {
        name: {"type": kind} for name, kind in (
            ("id", "integer"), ("channel", "string"), ("recipient", "string"),
            ("subject", ["string", "null"]), ("status", "string"),
            ("reason", ["string", "null"]), ("key", "string"), ("attempts", "integer"),
            ("customer_id", ["integer", "null"]), ("reference", ["string", "null"]),
            ("created_at", "string"), ("updated_at", "string"),
            ("next_at", ["string", "null"]), ("sent_at", ["string", "null"]))}}
    errors = {code: {"description": text, **problem} for code, text in (
        ("401", "No valid token."), ("403", "Not an administrator."))}
    tag = ["automation"]
    return {
        BASE: {"get": {
            "tags": tag, "operationId": "list_deliveries",
            "summary": "The delivery log: messages and webhooks, newest first",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string",
                                                             "enum": list(STATUSES)}},
                {"name": "channel", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                            "maximum": 500}},
                {"name": "before", "in": "query", "schema": {"type": "integer",
                                                             "minimum": 1,
                                                             "maximum": ID_MAX}}],
            "responses": {"200": {"description": "Deliveries.", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "items": {"type": "array", "items": item},
                    "next_before": {"type": ["integer", "null"]}}}}}},
                "400": {"description": "A bad query parameter.", **problem}, **errors}}},
        f"{BASE}/{{id}}/retry": {"post": {
            "tags": tag, "operationId": "retry_delivery",
            "summary": "Send a parked or failed delivery again",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 1,
                                       "maximum": ID_MAX}}],
            "responses": {"202": {"description": "Queued again.", "content": {
                "application/json": {"schema": item}}},
                "404": {"description": "No such delivery.", **problem},
                "409": {"description": "Not parked or failed.", **problem}, **errors}}},
    }
