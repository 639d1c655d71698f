"""The duplicate routes of a tenant version's API (installed by `install_api_routes`).

    GET  /api/v1/<module>/<entity>/duplicates?status=open          the review queue
    POST /api/v1/<module>/<entity>/duplicates/<review_id>/dismiss  not duplicates
    GET  /api/v1/<module>/<entity>/<id>/duplicates                  one record's candidates
    POST /api/v1/<module>/<entity>/<winner_id>/merge                {loser, fields, force}
    GET  /api/v1/<module>/<entity>/<id>/merges                      the merge log
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, request

from ...generators.api import BadRequest, EntityAPI, _flag, json_response
from ...platform.records import ValidationFailed
from .merge import merge_records
from .reviews import dismiss, record_candidates, review_queue
from .tables import MERGES

MERGE_KEYS = frozenset({"loser", "fields", "force"})


def _no_args(*allowed: str) -> None:
    extra = sorted(set(request.args) - set(allowed))
    if extra:
        raise BadRequest(f"unknown parameter `{extra[0]}`", {extra[0]: ["unknown parameter"]})


def _limit() -> int:
    raw = request.args.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError as exc:
        raise BadRequest("`limit` must be a whole number", {"limit": ["not a number"]}) from exc
    if not 1 <= limit <= 500:
        raise BadRequest("`limit` must be between 1 and 500", {"limit": ["1 to 500"]})
    return limit


def install_duplicate_routes(app: Flask, api: EntityAPI) -> None:
    base = "/api/v1/<module>/<entity>"

    def queue(module: str, entity: str) -> Response:
        key = api.entity_key(module, entity)
        _no_args("status", "limit", "cursor")
        return json_response(review_queue(
            api.service(), key, status=request.args.get("status", "open"), limit=_limit(),
            cursor=request.args.get("cursor") or None))

    def candidates(module: str, entity: str, record_id: int) -> Response:
        key = api.entity_key(module, entity)
        _no_args()
        return json_response({"items": record_candidates(api.service(), key, record_id)})

    def dismiss_pair(module: str, entity: str, review_id: int) -> Response:
        key = api.entity_key(module, entity)
        _no_args()
        return json_response(dismiss(api.service(), key, review_id))

    def merge(module: str, entity: str, record_id: int) -> Response:
        key = api.entity_key(module, entity)
        _no_args()
        body = api.body()
        unknown = sorted(set(body) - MERGE_KEYS)
        if unknown:
            raise ValidationFailed(f"unknown key `{unknown[0]}`; send `loser`, `fields` and "
                                   "`force`", {unknown[0]: ["unknown key"]})
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ValidationFailed("`force` is true or false", {"force": ["a boolean"]})
        result = merge_records(api.service(), key, record_id, body.get("loser"),
                               body.get("fields") or {}, force=force)
        return json_response({"merge": {"id": result.merge_id, "winner": record_id,
                                        "loser": result.loser_id,
                                        "fields": result.fields, "moved": result.moved},
                              "record": result.winner},
                             headers={"ETag": f'"{record_id}-{result.winner["row_version"]}"'})

    def merges(module: str, entity: str, record_id: int) -> Response:
        key = api.entity_key(module, entity)
        _no_args("loser_data")
        with_data = _flag("loser_data", request.args.get("loser_data"))
        service = api.service()
        service.get(key, record_id, include_deleted=True)  # 404 unless readable
        table = service.system.table(MERGES)
        with service.runtime.connect() as connection:
            rows = connection.execute(sa.select(table).where(
                table.c.entity == key, sa.or_(table.c.winner_id == record_id,
                                              table.c.loser_id == record_id))
                .order_by(table.c.id)).mappings().all()
        hidden = service.guard.hidden(key) if service.guard is not None else frozenset()
        return json_response({"items": [_merge_json(r, with_data, hidden) for r in rows]})

    routes = [
        (f"{base}/duplicates", "api_duplicates_queue", queue, ["GET"]),
        (f"{base}/duplicates/<int:review_id>/dismiss", "api_duplicates_dismiss",
         dismiss_pair, ["POST"]),
        (f"{base}/<int:record_id>/duplicates", "api_duplicates_candidates", candidates,
         ["GET"]),
        (f"{base}/<int:record_id>/merge", "api_merge", merge, ["POST"]),
        (f"{base}/<int:record_id>/merges", "api_merges", merges, ["GET"]),
    ]
    for rule, endpoint, view, methods in routes:
        app.add_url_rule(rule, endpoint, view, methods=methods)


def _merge_json(row: Any, with_data: bool, hidden: frozenset[str]) -> dict[str, Any]:
    at = row["at"]
    out = {"id": row["id"], "winner": row["winner_id"], "loser": row["loser_id"],
           "fields": {k: v for k, v in row["fields"].items() if k not in hidden},
           "moved": row["moved"], "actor": row["actor"],
           "at": at.isoformat() if at.tzinfo else at.isoformat() + "+00:00"}
    if with_data:
        out["loser_record"] = {k: v for k, v in row["loser"].items() if k not in hidden}
    return out
