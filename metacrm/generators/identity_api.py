"""The API's identity routes: the caller, users, roles, org units, tokens, and reloading
definitions as a maintainer. Users, roles and units are for administrators only."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from ..metadata.ir import ACTIONS
from ..platform.auth import PasswordCheck, issue_token
from ..platform.identity import IdentityService
from ..platform.records import Forbidden, RecordError, ValidationFailed
from .api import EntityAPI, json_response


class Unauthorized(RecordError):
    status, title = 401, "Unauthorized"


class Unprocessable(RecordError):
    status, title = 422, "Definitions do not compile"


def install_identity_routes(app: Flask, api: EntityAPI) -> None:
    """Add the identity routes to a version's sub-app (after build_api)."""

    passwords = PasswordCheck()

    def identity() -> IdentityService:
        return IdentityService(api.runtime, api.principal())

    def me() -> Response:
        principal = api.principal()
        service = api.service()
        guard = service.guard
        permissions = {}
        for key in service.visible_entities():
            actions = [a for a in ACTIONS if guard is None or guard.principal.is_admin
                       or guard.policy(key).granted(a)]  # what roles grant (not shares)
            permissions[key] = {"actions": actions,
                                "hidden_fields": sorted(guard.hidden(key)) if guard else [],
                                "read_only_fields": sorted(guard.read_only(key)) if guard
                                else []}
        return json_response({"id": principal.user_id, "username": principal.username,
                              "business_unit": principal.business_unit,
                              "roles": sorted(principal.roles),
                              "units": list(principal.unit_paths),
                              "permissions": permissions})

    def users() -> Response:
        if request.method == "GET":
            return json_response({"items": identity().users()})
        return json_response(identity().save_user(api.body()), 201)

    def user(user_id: int) -> Response:
        if request.method == "GET":
            return json_response(identity().user(user_id))
        return json_response(identity().save_user(api.body(), user_id))

    def roles() -> Response:
        return json_response({"items": identity().roles()})

    def units() -> Response:
        if request.method == "GET":
            return json_response({"items": identity().units()})
        return json_response(identity().save_unit(api.body()), 201)

    def unit(name: str) -> Response:
        if request.method == "GET":
            return json_response(identity().unit(name))
        if request.method == "DELETE":
            identity().delete_unit(name)
            return Response(status=204)
        return json_response(identity().save_unit(api.body(), name))

    def token() -> Response:
        """Trade a username and password for a bearer token (argon2-checked)."""
        body = api.body()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ValidationFailed("send `username` and `password`",
                                   {"username": ["required"], "password": ["required"]})
        user = passwords(api.runtime, username, password)  # the admin's check, timing too
        if user is None:
            raise Unauthorized("the username or password is wrong")
        name = body.get("name")
        with api.runtime.begin() as connection:
            issued = issue_token(connection, user.id,
                                 name[:100] if isinstance(name, str) and name else "login")
        return json_response({"token": issued, "token_type": "Bearer"}, 201)

    def reload_definitions() -> Response:
        """Reload the tenant's definitions, as a maintainer of every part that changed."""
        report = api.platform.reload(api.runtime.slug, actor=api.principal())
        body: dict[str, Any] = {"ok": report.ok, "changed": report.changed,
                                "version": report.version, "previous": report.previous,
                                "diagnostics": [d.to_dict() for d in report.diagnostics]}
        if report.forbidden:
            raise Forbidden(report.error or "you do not maintain these definitions",
                            diagnostics=body["diagnostics"])
        if not report.ok:
            raise Unprocessable(report.error or "the definitions were not applied",
                                diagnostics=body["diagnostics"])
        return json_response(body)

    routes = [
        ("/api/v1/_me", "api_me", me, ["GET"]),
        ("/api/v1/_identity/users", "api_users", users, ["GET", "POST"]),
        ("/api/v1/_identity/users/<int:user_id>", "api_user", user, ["GET", "PATCH"]),
        ("/api/v1/_identity/roles", "api_roles", roles, ["GET"]),
        ("/api/v1/_identity/units", "api_units", units, ["GET", "POST"]),
        ("/api/v1/_identity/units/<name>", "api_unit", unit, ["GET", "PATCH", "DELETE"]),
        ("/api/v1/_auth/token", "api_auth_token", token, ["POST"]),
        ("/api/v1/_metadata/reload", "api_metadata_reload", reload_definitions, ["POST"]),
    ]
    for rule, endpoint, view, methods in routes:
        app.add_url_rule(rule, endpoint, view, methods=methods)
