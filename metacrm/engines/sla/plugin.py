"""The SLA engine as a built-in plugin: its table, the write hook, the sweep and the API.

Imports nothing from the web layer at load time (the compiler loads every built-in
plugin and imports no Flask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...hookspecs import hookimpl
from ...platform.jobs import JobSpec

if TYPE_CHECKING:
    import sqlalchemy as sa
    from flask import Flask

    from ...platform.events import RecordEvent


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    from .store import clocks_table

    return [clocks_table(metadata)]


@hookimpl
def record_writing(event: RecordEvent, connection: sa.Connection, service: Any) -> None:
    from .engine import sync_record

    sync_record(connection, service.runtime, event.entity, event.record_id)


@hookimpl
def records_imported(entity: str, record_ids: list[int], connection: sa.Connection,
                     service: Any) -> None:
    from .engine import covers, sync_record

    if covers(service.runtime, entity):
        for record_id in record_ids:
            sync_record(connection, service.runtime, entity, record_id)


@hookimpl
def register_jobs() -> list[JobSpec]:
    from .sweep import JOB, run_sweep

    return [JobSpec(JOB, run_sweep, "Warn, breach and escalate SLA clocks that came due "
                    "(payload: {tenant} or every tenant).", every=60)]


@hookimpl
def install_api_routes(app: Flask, api: Any) -> None:
    from .api import install_sla_routes

    install_sla_routes(app, api)


@hookimpl
def extend_openapi(document: dict, api: Any, service: Any) -> None:
    from .api import sla_paths

    sla_paths(document, api, service)
