"""Definition kinds: what a YAML file may define, recognised by its top-level key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..hookspecs import hookimpl


@dataclass(frozen=True, slots=True)
class DefinitionKind:
    """One kind of definition file, e.g. an entity or a list view."""

    name: str
    key: str
    schema: str | Mapping[str, Any]
    description: str
    folder: str | None = None

    @property
    def schema_file(self) -> str:
        return f"{self.name}.schema.json"


def builtin_kinds() -> list[DefinitionKind]:
    """The definition kinds every installation has."""
    return [
        DefinitionKind("module", "module", "module.json",
                       "A module manifest: name, version, owning team, dependencies.", None),
        DefinitionKind("entity", "entity", "entity.json",
                       "A record type with its fields.", "entities"),
        DefinitionKind("form", "form", "form.json",
                       "A form layout: sections, columns and field order.", "forms"),
        DefinitionKind("view", "view", "view.json",
                       "A list view: columns, sort, filter, search.", "views"),
        DefinitionKind("role", "role", "role.json",
                       "A role: what its users may do to each entity's records and fields.",
                       "roles"),
        DefinitionKind("workflow", "workflow", "workflow.json",
                       "A workflow: states and named transitions over one enum field.",
                       "workflows"),
        DefinitionKind("rule", "rule", "rule.json",
                       "An automation rule: a trigger, a condition and actions.", "rules"),
        DefinitionKind("calendar", "calendar", "calendar.json",
                       "A business calendar: working hours per weekday, holidays, a timezone.",
                       "calendars"),
        DefinitionKind("sla", "sla", "sla.json",
                       "A service-level policy: clocks with targets in business time, "
                       "escalations.", "slas"),
        DefinitionKind("tenant", "tenant", "tenant.json",
                       "A tenant's configuration: modules, locale, business units.", None),
        DefinitionKind("overlay", "extend", "overlay.json",
                       "Changes to an entity for a tenant or business unit.", None),
    ]


@hookimpl
def register_definition_kinds() -> list[DefinitionKind]:
    return builtin_kinds()


class KindRegistry:
    """The definition kinds known to one plugin manager."""

    def __init__(self, kinds: Iterable[DefinitionKind]) -> None:
        self._by_name: dict[str, DefinitionKind] = {}
        self._by_key: dict[str, DefinitionKind] = {}
        for kind in kinds:
            if kind.name in self._by_name or kind.key in self._by_key:
                raise ValueError(f"definition kind {kind.name!r} is registered twice")
            self._by_name[kind.name] = kind
            self._by_key[kind.key] = kind

    @classmethod
    def from_plugins(cls, plugin_manager: Any) -> KindRegistry:
        return cls(k for batch in plugin_manager.hook.register_definition_kinds() for k in batch)

    def __getitem__(self, name: str) -> DefinitionKind:
        return self._by_name[name]

    def __iter__(self):
        return iter(self._by_name.values())

    def keys(self) -> tuple[str, ...]:
        return tuple(self._by_key)

    def detect(self, data: Mapping[str, Any]) -> list[DefinitionKind]:
        """The kinds whose key appears at the top level of `data`."""
        return [self._by_key[key] for key in data if key in self._by_key]
