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

    from .engines.conditions.operators import Operator
    from .metadata.checks import CheckContext
    from .metadata.diagnostics import Diagnostic
    from .metadata.fieldtypes import FieldType
    from .metadata.kinds import DefinitionKind
    from .platform.events import RecordEvent

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
def record_event(event: RecordEvent) -> None:
    """Called after a record is created, updated, deleted or restored (committed)."""
