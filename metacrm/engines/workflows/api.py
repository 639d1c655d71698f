"""The workflow routes of a tenant version's API (installed by `install_api_routes`).

    GET  /api/v1/<module>/<entity>/<id>/workflow                       state, transitions, history
    POST /api/v1/<module>/<entity>/<id>/transitions/<name>             {values, comment}
    POST /api/v1/<module>/<entity>/<id>/approvals/<approval_id>/<approve|reject>  {comment}
    GET  /api/v1/_workflow/approvals?mine=true                         requests waiting for you
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from ...generators.api import BadRequest, EntityAPI, _flag, _if_match, json_response
from ...platform.records import NotFound, RecordService, ValidationFailed
from .approvals import vote, waiting_for
from .engine import WorkflowEngine, _comment
from .history import workflow_view

BODY_KEYS = frozenset({"values", "comment"})


def _engine(api: EntityAPI) -> WorkflowEngine:
    service: RecordService = api.service()
    return WorkflowEngine(api.platform, api.runtime, service.actor)


def _body(allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object of a request (an empty body is an empty object)."""
    if not request.get_data():
        return {}
    from ...generators.api import _json_text

    data = _json_text(request.get_data(), "body")
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationFailed(f"unknown key `{unknown[0]}`; send "
                               + " and ".join(f"`{k}`" for k in sorted(allowed)),
                               {unknown[0]: ["unknown key"]})
    return data


def _no_args(*allowed: str) -> None:
    extra = sorted(set(request.args) - set(allowed))
    if extra:
        raise BadRequest(f"unknown parameter `{extra[0]}`", {extra[0]: ["unknown parameter"]})


def install_workflow_routes(app: Flask, api: EntityAPI) -> None:
    base = "/api/v1/<module>/<entity>/<int:record_id>"

    def state(module: str, entity: str, record_id: int) -> Response:
        key = api.entity_key(module, entity)
        _no_args()
        engine = _engine(api)
        subject = engine.subject(key, record_id)
        return json_response(workflow_view(engine, subject, api.principal().locale))

    def transition(module: str, entity: str, record_id: int, name: str) -> Response:
        key = api.entity_key(module, entity)
        _no_args()
        body = _body(BODY_KEYS)
        result = _engine(api).take(key, record_id, name, values=body.get("values"),
                                   comment=body.get("comment"),
                                   expected_version=_if_match(record_id))
        status = 202 if result.status == "pending" else 200
        headers = {"ETag": f'"{record_id}-{result.record["row_version"]}"'}
        return json_response(result.to_dict(), status, headers)

    def decide(module: str, entity: str, record_id: int, approval_id: int,
               decision: str) -> Response:
        key = f"{module}.{entity}"
        if key not in api.registry.entities:
            raise NotFound(f"there is no entity {key}")
        if decision not in ("approve", "reject"):
            raise NotFound(f"there is no approval decision `{decision}`; use approve or "
                           "reject")
        _no_args()
        body = _body(frozenset({"comment"}))
        approval = vote(_engine(api), key, record_id, approval_id, decision,
                        _comment(body.get("comment")))
        return json_response(approval)

    def approvals() -> Response:
        _no_args("mine", "requested")
        mine = _flag("mine", request.args.get("mine", "true"))
        requested = _flag("requested", request.args.get("requested"))
        if not mine and not requested:
            raise BadRequest("list the requests waiting for you (`mine=true`) or those you "
                             "made (`requested=true`)", {"mine": ["true, or give requested"]})
        return json_response({"items": waiting_for(_engine(api), requested=requested)})

    routes = [
        (f"{base}/workflow", "api_workflow_state", state, ["GET"]),
        (f"{base}/transitions/<name>", "api_workflow_transition", transition, ["POST"]),
        (f"{base}/approvals/<int:approval_id>/<decision>", "api_workflow_decide", decide,
         ["POST"]),
        ("/api/v1/_workflow/approvals", "api_workflow_approvals", approvals, ["GET"]),
    ]
    for rule, endpoint, view, methods in routes:
        app.add_url_rule(rule, endpoint, view, methods=methods)
