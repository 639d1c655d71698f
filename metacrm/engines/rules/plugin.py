"""The rules engine as a built-in plugin: its tables, the outbox inside every write, the
hand-off after commit, its jobs and the administrators' run routes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...hookspecs import hookimpl
from ...platform.jobs import JobSpec
from .dispatch import on_committed, on_writing
from .jobs import rule_jobs
from .tables import rule_tables


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return rule_tables(metadata)


@hookimpl
def record_writing(event: Any, connection: sa.Connection, service: Any) -> None:
    on_writing(event, connection, service)


@hookimpl
def record_event(event: Any, platform: Any) -> None:
    on_committed(event, platform)


@hookimpl
def register_jobs() -> list[JobSpec]:
    return rule_jobs()


@hookimpl
def install_api_routes(app: Any, api: Any) -> None:
    from .api import install_run_routes

    install_run_routes(app, api)


@hookimpl
def extend_openapi(document: dict, api: Any, service: Any) -> None:
    from .api import run_paths

    if service is None or service.guard is None or service.guard.principal.is_admin:
        document["paths"].update(run_paths())
