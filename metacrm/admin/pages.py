"""Helpers every record page shares: the entity in the URL, links, formatting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import url_for

from ..metadata.ir import Entity
from ..platform.records import ListQuery, NotFound
from .base import SecureView
from .display import Cell, Display
from .related import titles


class RecordPages(SecureView):
    """A SecureView with what the record pages (views.py, editing.py) need."""

    def entity_key(self, module: str, entity: str) -> str:
        """`module.entity` when the visitor may see it; NotFound otherwise."""
        key = f"{module}.{entity}"
        service = self.visitor.service
        if key not in service.scope.entities:
            raise NotFound(f"there is no entity {key}")
        service.access(key)
        return key

    def can(self, key: str, action: str) -> bool:
        """Whether the visitor's roles grant `action` on some records of `key`."""
        guard = self.visitor.service.guard
        return guard is None or guard.can(key, action)

    def can_on(self, key: str, record_id: int, action: str) -> bool:
        """Whether `action` reaches this record (its scope and conditions): asked as a
        list of the records the visitor may `action`, limited to this one."""
        service = self.visitor.service
        if service.guard is None or service.guard.principal.is_admin:
            return True
        if not service.guard.can(key, action):
            return False
        page = service.list(key, ListQuery(filter={"field": "id", "op": "eq", "value": record_id},
                                           limit=1), action=action)
        return bool(page.items)

    def record_url(self, key: str, record_id: int) -> str:
        module, name = key.split(".", 1)
        return url_for("records.details_view", module=module, entity=name,
                       record_id=record_id)

    def list_url(self, key: str, params: Mapping[str, Any] | None = None) -> str:
        module, name = key.split(".", 1)
        url = url_for("records.list_view", module=module, entity=name)
        return f"{url}?{urlencode(params)}" if params else url

    def new_url(self, key: str, prefill: Mapping[str, Any] | None = None) -> str:
        module, name = key.split(".", 1)
        url = url_for("records.create_view", module=module, entity=name)
        return f"{url}?{urlencode(prefill)}" if prefill else url

    def lookup_url(self, key: str) -> str:
        module, name = key.split(".", 1)
        return url_for("records.lookup_view", module=module, entity=name)

    def display(self, users: Mapping[int, str] | None = None) -> Display:
        visitor = self.visitor
        service = visitor.service

        def entity_of(key: str) -> Entity | None:
            try:
                return service.access(key).entity
            except NotFound:
                return None

        return Display(visitor.t, self.ui.runtime.config.timezone, users, self.record_url,
                       entity_of)

    def field_cells(self, display: Display, found: Any, values: Mapping[str, Any]
                    ) -> list[Cell]:
        """A field's value on the record page (links for references and links)."""
        value = values.get(found.name)
        if found.type == "many_to_many" and found.target:
            names = titles(self.visitor.service, display, found.target, value or [])
            return [Cell(names.get(i, f"#{i}"), self.record_url(found.target, i))
                    for i in value or []]
        if found.type == "reference" and found.target and isinstance(value, int):
            names = titles(self.visitor.service, display, found.target, [value])
            return [Cell(names.get(value, f"#{value}"), self.record_url(found.target, value))]
        cell = display.cell(found, found.name, value)
        return [cell] if cell.text else []
