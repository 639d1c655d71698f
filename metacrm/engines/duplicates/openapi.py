"""The duplicate and merge routes in the OpenAPI document, in the style of
`metacrm.generators.openapi`."""

from __future__ import annotations

from typing import Any

from ...generators.openapi import API, RECORD_ID, _json, _responses, component_name

OBJECT = {"type": "object"}
DATETIME = {"type": ["string", "null"], "format": "date-time"}


def duplicate_paths(scope: Any) -> dict[str, Any]:
    """Paths for every entity of `scope`: merging everywhere, the review queue and
    candidates where the entity has match rules."""
    paths: dict[str, Any] = {}
    for entity in scope.entities.values():
        op = f"{entity.module}_{entity.name}"
        base = f"{API}/{entity.module}/{entity.name}"
        tag = [entity.key]
        id_param = {"name": "id", "in": "path", "required": True, "schema": dict(RECORD_ID)}
        record = {"$ref": f"#/components/schemas/{component_name(entity)}"}
        merge_log = {"type": "object", "properties": {
            "id": {"type": "integer"}, "winner": {"type": "integer"},
            "loser": {"type": "integer"}, "fields": OBJECT, "moved": OBJECT,
            "actor": {"type": ["integer", "null"]}, "at": {"type": "string"},
            "loser_record": OBJECT}, "required": ["id", "winner", "loser", "fields", "moved"]}
        paths[f"{base}/{{id}}/merge"] = {"post": {
            "tags": tag, "operationId": f"merge_{op}", "parameters": [id_param],
            "summary": "Merge another record (`loser`) into this one: choose per field which "
                       "value survives, move every reference, soft-delete the loser.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["loser"], "additionalProperties": False,
                "properties": {
                    "loser": dict(RECORD_ID),
                    "fields": {"type": "object", "additionalProperties": {
                        "enum": ["winner", "loser", "union"]}},
                    "force": {"type": "boolean"}}}}}},
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "merge": merge_log, "record": record}, "required": ["merge", "record"]},
                "The merge and the surviving record.")}, "400", "401", "404", "409", "422")}}
        paths[f"{base}/{{id}}/merges"] = {"get": {
            "tags": tag, "operationId": f"merges_{op}", "parameters": [
                id_param, {"name": "loser_data", "in": "query",
                           "schema": {"type": "string", "enum": ["true", "false"]},
                           "description": "Include each losing record's data."}],
            "summary": "The merge log of a record (as winner or loser).",
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "items": {"type": "array", "items": merge_log}}, "required": ["items"]},
                "Merges, oldest first.")}, "400", "401", "404")}}
        if not entity.duplicates:
            continue
        review = {"type": "object", "properties": {
            "id": {"type": "integer"}, "rule": {"type": "string"},
            "status": {"enum": ["open", "dismissed", "merged"]},
            "created_at": DATETIME, "resolved_at": DATETIME,
            "resolved_by": {"type": ["integer", "null"]},
            "records": {"type": "array", "items": OBJECT}},
            "required": ["id", "rule", "status"]}
        paths[f"{base}/duplicates"] = {"get": {
            "tags": tag, "operationId": f"duplicates_{op}",
            "summary": "The review queue: pairs of possible duplicates you may read.",
            "parameters": [
                {"name": "status", "in": "query",
                 "schema": {"enum": ["open", "dismissed", "merged"]}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "items": {"type": "array", "items": review},
                "next_cursor": {"type": ["string", "null"]}},
                "required": ["items", "next_cursor"]}, "A page of pairs.")},
                "400", "401", "404", "422")}}
        paths[f"{base}/duplicates/{{review_id}}/dismiss"] = {"post": {
            "tags": tag, "operationId": f"dismiss_duplicate_{op}",
            "summary": "Mark a pair as not duplicates (it is not asked again).",
            "parameters": [{"name": "review_id", "in": "path", "required": True,
                            "schema": dict(RECORD_ID)}],
            "responses": _responses({"200": _json(review, "The dismissed pair.")},
                                    "400", "401", "404")}}
        paths[f"{base}/{{id}}/duplicates"] = {"get": {
            "tags": tag, "operationId": f"duplicate_candidates_{op}", "parameters": [id_param],
            "summary": "Live records sharing a match key with this one.",
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "record": record, "rules": {"type": "array", "items": {"type": "string"}},
                    "review": {"type": ["object", "null"]}},
                    "required": ["record", "rules", "review"]}}},
                "required": ["items"]}, "Candidates, by id.")}, "400", "401", "404")}}
    return paths
