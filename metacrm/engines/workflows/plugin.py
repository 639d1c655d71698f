"""The workflow engine as a built-in plugin: its tables, the state field's guard inside
every write, the API routes and their OpenAPI paths."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...hookspecs import hookimpl
from .guard import check_write
from .tables import workflow_tables


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return workflow_tables(metadata)


@hookimpl
def record_writing(event: Any, connection: sa.Connection, service: Any) -> None:
    check_write(event, connection, service)


@hookimpl
def install_api_routes(app: Any, api: Any) -> None:
    from .api import install_workflow_routes

    install_workflow_routes(app, api)


@hookimpl
def extend_openapi(document: dict, api: Any, service: Any) -> None:
    from .openapi import approvals_path, workflow_paths

    scope = api.visible_scope(service) if service is not None else api.registry.scope(None)
    document["paths"].update(workflow_paths(scope))
    document["paths"].update(approvals_path())
