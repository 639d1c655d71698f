"""The workflow routes in the OpenAPI document (for entities the caller sees that have a
workflow), in the style of `metacrm.generators.openapi`."""

from __future__ import annotations

from typing import Any

from ...generators.openapi import API, RECORD_ID, _json, _responses, component_name

OBJECT = {"type": "object"}
REASON = {"type": "object", "properties": {
    "code": {"enum": ["permission", "role", "state", "pending", "guard", "requires",
                      "approvers"]},
    "status": {"type": "integer"}, "reason": {"type": "string"},
    "fields": {"type": "array", "items": {"type": "string"}}},
    "required": ["code", "status", "reason"]}
APPROVAL = {"type": "object", "properties": {
    "id": {"type": "integer"}, "transition": {"type": "string"},
    "status": {"enum": ["pending", "approved", "rejected", "failed", "cancelled"]},
    "by": {"enum": ["role", "manager"]}, "needed": {"type": "integer"},
    "approved": {"type": "integer"}, "votes": {"type": "array", "items": OBJECT},
    "can_vote": {"type": "boolean"}, "reason": {"type": ["string", "null"]}},
    "required": ["id", "transition", "status"]}
COMMENT = {"type": ["string", "null"], "maxLength": 4000}


def workflow_paths(scope: Any) -> dict[str, Any]:
    """Paths of the workflow routes of every entity of `scope` that has a workflow."""
    paths: dict[str, Any] = {}
    for entity in scope.entities.values():
        workflow = scope.workflow_for(entity.key)
        if workflow is None:
            continue
        op = f"{entity.module}_{entity.name}"
        base = f"{API}/{entity.module}/{entity.name}/{{id}}"
        tag = [entity.key]
        id_param = {"name": "id", "in": "path", "required": True, "schema": dict(RECORD_ID)}
        record = {"$ref": f"#/components/schemas/{component_name(entity)}"}
        update = {"$ref": f"#/components/schemas/{component_name(entity, '__update')}"}
        names = [t.name for t in workflow.transitions]
        result = {"type": "object", "properties": {
            "status": {"enum": ["done", "pending"]}, "workflow": {"type": "string"},
            "transition": {"type": "string"}, "record": record,
            "history_id": {"type": ["integer", "null"]},
            "actions": {"type": "array", "items": OBJECT}, "approval": APPROVAL},
            "required": ["status", "transition", "record"]}
        paths[f"{base}/workflow"] = {"get": {
            "tags": tag, "operationId": f"workflow_{op}", "parameters": [id_param],
            "summary": f"The record's state in {workflow.key}: transitions you may take "
                       "(with the reasons the others are refused), history, approvals",
            "responses": _responses({"200": _json({"type": "object", "properties": {
                "workflow": {"type": "string"}, "state": OBJECT,
                "transitions": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "available": {"type": "boolean"},
                    "reasons": {"type": "array", "items": REASON}}}},
                "history": {"type": "array", "items": OBJECT},
                "approvals": {"type": "array", "items": APPROVAL}},
                "required": ["workflow", "state", "transitions"]}, "The workflow view.")},
                "400", "401", "404")}}
        paths[f"{base}/transitions/{{name}}"] = {"post": {
            "tags": tag, "operationId": f"transition_{op}",
            "summary": "Take a transition (or ask for its approval: 202)",
            "parameters": [id_param, {"name": "name", "in": "path", "required": True,
                                      "schema": {"type": "string", "enum": names}},
                           {"name": "If-Match", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"values": update, "comment": COMMENT}}}}},
            "responses": _responses({"200": _json(result, "The record moved."),
                                     "202": _json(result, "An approval request was made.")},
                                    "400", "401", "404", "409", "412", "422")}}
        paths[f"{base}/approvals/{{approval_id}}/{{decision}}"] = {"post": {
            "tags": tag, "operationId": f"decide_{op}",
            "summary": "Approve or reject a pending approval request",
            "parameters": [id_param,
                           {"name": "approval_id", "in": "path", "required": True,
                            "schema": dict(RECORD_ID)},
                           {"name": "decision", "in": "path", "required": True,
                            "schema": {"enum": ["approve", "reject"]}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"comment": COMMENT}}}}},
            "responses": _responses({"200": _json(APPROVAL, "The request after your vote.")},
                                    "400", "401", "404", "409", "422")}}
    return paths


def approvals_path() -> dict[str, Any]:
    return {f"{API}/_workflow/approvals": {"get": {
        "tags": ["workflow"], "operationId": "workflow_approvals",
        "summary": "Approval requests waiting for your vote (or, requested=true, yours)",
        "parameters": [{"name": "mine", "in": "query", "schema": {"type": "boolean"}},
                       {"name": "requested", "in": "query", "schema": {"type": "boolean"}}],
        "responses": _responses({"200": _json({"type": "object", "properties": {
            "items": {"type": "array", "items": APPROVAL}}, "required": ["items"]},
            "Pending requests.")}, "400", "401")}}}
