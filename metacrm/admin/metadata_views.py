"""Read-only metadata pages for administrators: modules, resolved entities per business
unit, metadata versions with the migration history, and the pending migration plan."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask import request
from flask_admin import expose

from ..metadata.describe import describe_entity
from ..platform.records import Forbidden, NotFound
from .base import AdminUI, SecureView

HISTORY_LIMIT = 50


class MetadataView(SecureView):
    """`/admin/_metadata/...`: what the tenant runs on (administrators only)."""

    def __init__(self, ui: AdminUI) -> None:
        super().__init__(ui, name="Metadata", endpoint="metadata", url="/admin/_metadata")

    def is_visible(self) -> bool:
        return False  # the menus are built per visitor (base.build_menus)

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        response = super()._handle_view(name, **kwargs)
        if response is None and not self.visitor.is_admin:
            raise Forbidden("only administrators see the metadata pages")
        return response

    @expose("/")
    def index(self) -> Any:
        registry = self.ui.registry
        units = [("", self.visitor.t("tenant_wide"))] + [
            (name, self.visitor.t.text(unit.label, name)) for name, unit in
            registry.units.items()]
        return self.render("metacrm_admin/metadata/index.html", registry=registry,
                           units=units, version=registry.version)

    @expose("/entity/<key>")
    def entity_view(self, key: str) -> Any:
        registry = self.ui.registry
        unit = request.args.get("unit") or ""
        if unit and unit not in registry.units:
            raise NotFound(f"there is no business unit {unit!r}")
        scope = registry.scope(unit or None)
        if key not in scope.entities:
            raise NotFound(f"there is no entity {key}")
        described = describe_entity(scope.entities[key], scope)
        units = [("", self.visitor.t("tenant_wide"))] + [
            (name, self.visitor.t.text(found.label, name)) for name, found in
            registry.units.items()]
        return self.render("metacrm_admin/metadata/entity.html", key=key, unit=unit,
                           units=units, text=json.dumps(described, ensure_ascii=False,
                                                        indent=2, default=str))

    @expose("/versions")
    def versions_view(self) -> Any:
        store = self.ui.platform.store
        versions = store.versions
        with store.engine.connect() as connection:
            rows = connection.execute(sa.select(versions).where(
                versions.c.tenant == self.ui.slug).order_by(versions.c.id.desc()).limit(
                HISTORY_LIMIT)).mappings().all()
        migrations = store.history(self.ui.slug, HISTORY_LIMIT)
        for migration in migrations:
            try:
                migration["steps"] = len(json.loads(migration["plan"]).get("steps", []))
            except (TypeError, ValueError):
                migration["steps"] = None
        return self.render("metacrm_admin/metadata/versions.html", versions=rows,
                           migrations=migrations, current=self.ui.registry.version)

    @expose("/plan")
    def plan_view(self) -> Any:
        plan, diagnostics = self.ui.platform.plan(self.ui.slug)
        return self.render("metacrm_admin/metadata/plan.html", plan=plan,
                           diagnostics=[d.format() for d in diagnostics],
                           current=self.ui.registry.version)
