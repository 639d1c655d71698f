"""Every extension point of metacrm, as pluggy hook specifications, grouped by phase.

Built-in field types and definition kinds register through these same hooks
(see ``metacrm.plugins.DEFAULT_PLUGINS``). Hooks named ``register_*`` return lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flask import Flask
    from sqlalchemy import Connection, MetaData, Table

    from .engines.actions import RuleAction
    from .engines.conditions.operators import Operator
    from .generators.api import EntityAPI
    from .metadata.checks import CheckContext
    from .metadata.diagnostics import Diagnostic
    from .metadata.fieldtypes import FieldType
    from .metadata.kinds import DefinitionKind
    from .platform.channels import Channel
    from .platform.events import RecordEvent
    from .platform.jobs import JobSpec
    from .platform.records import RecordService
    from .platform.runtime import Platform

PROJECT = "metacrm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- definition language (compile time) ---------------------------------------------------


@hookspec
def register_field_types() -> list[FieldType]:
    """Return field types (name, option schema, checks) that entities may declare."""


@hookspec
def register_definition_kinds() -> list[DefinitionKind]:
    """Return definition kinds (top-level key and JSON Schema) that YAML files may hold."""


@hookspec
def register_checks() -> list[Callable[[CheckContext], Iterable[Diagnostic]]]:
    """Return semantic checks run over every compiled tenant; each yields diagnostics."""


# -- engines (run time) ---------------------------------------------------------------------


@hookspec
def register_condition_operators() -> list[Operator]:
    """Return condition operators (name, SQL and Python forms) for filters and rules."""


# -- records (run time) ---------------------------------------------------------------------


@hookspec
def record_writing(event: RecordEvent, connection: Connection, service: RecordService) -> None:
    """Called inside a record write's transaction, after the row is written; raising a
    ``RecordError`` refuses the write and rolls it back (workflows, duplicate checks, the
    rules engine's outbox)."""


@hookspec
def record_event(event: RecordEvent, platform: Platform) -> None:
    """Called after a record is created, updated, deleted, restored or assigned (committed)."""


@hookspec
def records_imported(entity: str, record_ids: list[int], connection: Connection,
                     service: RecordService) -> None:
    """Called once per batch of an import, inside the batch's transaction, with the ids of
    the records it created (imports write in bulk: `record_writing` is not called per row)."""


@hookspec
def register_system_tables(metadata: MetaData) -> list[Table]:
    """Return system tables (on `metadata`) a plugin keeps in every tenant's database;
    they are created on reload and reached with ``SystemTables.table(name)``."""


# -- web (per Registry version) -----------------------------------------------------------------


@hookspec
def install_api_routes(app: Flask, api: EntityAPI) -> None:
    """Add routes to a tenant version's API sub-app (transitions, merge, 360 views...);
    endpoints named `api_*` are authenticated like the generated ones."""


@hookspec
def extend_openapi(document: dict, api: EntityAPI, service: RecordService | None) -> None:
    """Add the paths of routes installed by `install_api_routes` to the caller's OpenAPI."""


# -- automation (run time) ------------------------------------------------------------------


@hookspec
def register_rule_actions() -> list[RuleAction]:
    """Return actions that rules and workflow transitions may run (set, create, notify...)."""


@hookspec
def register_channels() -> list[Channel]:
    """Return message channels (email, sms, push...) that notify actions send through."""


@hookspec
def register_jobs() -> list[JobSpec]:
    """Return background jobs: tasks the engines enqueue and periodic sweeps beat runs."""
