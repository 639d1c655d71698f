"""Duplicate detection as a built-in plugin: its tables, the key index kept inside every
write, the review, candidate and merge routes and their OpenAPI paths."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...hookspecs import hookimpl
from .detect import on_record_writing
from .tables import duplicate_tables


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return duplicate_tables(metadata)


@hookimpl
def record_writing(event: Any, connection: sa.Connection, service: Any) -> None:
    on_record_writing(event, connection, service)


@hookimpl
def install_api_routes(app: Any, api: Any) -> None:
    from .api import install_duplicate_routes

    install_duplicate_routes(app, api)


@hookimpl
def extend_openapi(document: dict, api: Any, service: Any) -> None:
    from .openapi import duplicate_paths

    scope = api.visible_scope(service) if service is not None else api.registry.scope(None)
    document["paths"].update(duplicate_paths(scope))
