"""The record pages of every entity: one generic flask-admin view serves them all.

    /admin/<module>/<entity>/                      list (views, sort, filters, search, pages)
    /admin/<module>/<entity>/bulk            POST  bulk delete
    /admin/<module>/<entity>/export                CSV through RecordService.export
    /admin/<module>/<entity>/lookup?q=             JSON {items: [{id, title}]} for pickers
    /admin/<module>/<entity>/new             GET/POST  create (editing.py)
    /admin/<module>/<entity>/<id>                  the record page
    /admin/<module>/<entity>/<id>/edit       GET/POST  edit (editing.py)

Like the API's, the views are generic (datasette's way), built per Registry version.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Response, flash, jsonify, redirect, request, url_for
from flask_admin import expose

from ..engines.conditions.values import TEXT_TYPES
from ..metadata.ir import Entity
from ..platform.records import ListQuery, NotFound, RecordError, ValidationFailed
from .auth import safe_next
from .base import AdminUI, here
from .display import SYSTEM_COLUMNS, TITLE_PART, Cell, Display, user_ids_in, user_names
from .editing import FormPages
from .layout import CHILDREN, plan_form
from .lists import ListColumn, resolve_list
from .related import history, linked_ids, related_lists
from .workflow import WorkflowPages, workflow_panel

LOOKUP_LIMIT = 20
BULK_MAX = 500  # records one bulk action may touch (a list page holds at most 500)
QUERY_MAX = 200


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    title: str
    url: str
    cells: tuple[Cell, ...]


class RecordsView(FormPages, WorkflowPages):
    """List, record, create, edit, bulk, export and lookup pages of every entity."""

    def __init__(self, ui: AdminUI) -> None:
        self._default_view = "list_view"  # its pages all need an entity: no "/" of its own
        super().__init__(ui, name="Records", endpoint="records", url="/admin")

    def is_visible(self) -> bool:
        return False  # the menus are built per visitor (base.build_menus)

    # -- list ----------------------------------------------------------------------------------

    @expose("/<module>/<entity>/")
    def list_view(self, module: str, entity: str) -> Any:
        key = self.entity_key(module, entity)
        visitor = self.visitor
        service, t = visitor.service, visitor.t
        spec = resolve_list(service, key, request.args, t)
        errors = list(spec.errors)
        page = None
        if not errors:
            try:
                page = service.list(key, spec.query(request.args.get("cursor")))
            except ValidationFailed as exc:
                errors.append(exc.detail)
            except RecordError as exc:
                if exc.status >= 500 or exc.status in (403, 404):
                    raise
                errors.append(exc.detail)
        items = page.items if page is not None else []
        display = self.display(user_names(self.ui.runtime, user_ids_in(
            spec.entity, items, [column.name for column in spec.columns])))
        rows = [Row(item["id"], display.title(spec.entity, item),
                    self.record_url(key, item["id"]),
                    tuple(_cell(display, column, item) for column in spec.columns))
                for item in items]
        access = service.access(key)
        return self.page(
            "metacrm_admin/list.html", 422 if errors else 200, key=key, spec=spec, rows=rows,
            page=page, errors=errors, entity_label=t.text(
                access.entity.plural_label or access.entity.label, access.entity.name),
            list_url=lambda **changes: self.list_url(key, spec.state(**changes)),
            clear_url=self.list_url(key, {"view": spec.view.key} if spec.view is not None
                                    and spec.view is not spec.views[0] else None),
            search_hint=t("search_in", fields=", ".join(
                t.text(f.label, f.name) for f in spec.search_fields)),
            view_url=lambda view: self.list_url(key, {"view": view.key}),
            export_url=url_for("records.export_view", module=module, entity=entity) + "?"
            + urlencode(spec.state()),
            new_url=self.new_url(key) if self.can(key, "create") else None,
            bulk_url=url_for("records.bulk_view", module=module, entity=entity),
            can_delete=self.can(key, "delete"), can_export=self.can(key, "export"),
            here=here())

    @expose("/<module>/<entity>/bulk", methods=("POST",))
    def bulk_view(self, module: str, entity: str) -> Any:
        key = self.entity_key(module, entity)
        service, t = self.visitor.service, self.visitor.t
        back = safe_next(request.form.get("next"), self.list_url(key))
        if request.form.get("action") != "delete":
            raise RecordError("unknown bulk action")
        service.require(key, "delete")
        ids = [int(i) for i in request.form.getlist("ids") if i.strip().isdecimal()][:BULK_MAX]
        if not ids:
            flash(t("nothing_selected"), "warning")
            return redirect(back)
        deleted, failed = 0, []
        for record_id in ids:
            try:
                service.delete(key, record_id)
                deleted += 1
            except RecordError as exc:
                failed.append(t("delete_failed", title=f"#{record_id}", detail=exc.detail))
        if deleted:
            flash(t("deleted_n", count=deleted), "success")
        for message in failed:
            flash(message, "danger")
        return redirect(back)

    @expose("/<module>/<entity>/export")
    def export_view(self, module: str, entity: str) -> Any:
        """CSV of every record the visitor may export, filtered like the list."""
        key = self.entity_key(module, entity)
        service = self.visitor.service
        spec = resolve_list(service, key, request.args, self.visitor.t)
        service.require(key, "export")
        if spec.filter is not None:
            service.parse_filter(key, spec.filter)  # a bad filter fails before streaming
        columns = service.export_columns(key)
        query = ListQuery(filter=spec.filter, sort=spec.sort)
        return Response(_csv_rows(columns, service.export(key, query)),
                        content_type="text/csv; charset=utf-8", headers={
                            "Content-Disposition": f'attachment; filename="{key}.csv"'})

    @expose("/<module>/<entity>/lookup")
    def lookup_view(self, module: str, entity: str) -> Any:
        """Records for a reference picker: id and title, at most LOOKUP_LIMIT."""
        key = self.entity_key(module, entity)
        service = self.visitor.service
        found = service.access(key).entity
        text = (request.args.get("q") or "").strip()[:QUERY_MAX]
        tests: list[dict[str, Any]] = []
        if text:
            tests = [{"field": f, "op": "contains", "value": text} for f in _lookup_fields(found)]
            if text.isdecimal() and len(text) < 19:
                tests.append({"field": "id", "op": "eq", "value": int(text)})
            if not tests:
                return jsonify(items=[])
        page = service.list(key, ListQuery(filter={"any": tests} if tests else None,
                                           limit=LOOKUP_LIMIT))
        display = self.display(user_names(self.ui.runtime, user_ids_in(found, page.items, ())))
        return jsonify(items=[{"id": item["id"], "title": display.title(found, item)}
                              for item in page.items])

    # -- the record page -----------------------------------------------------------------------

    @expose("/<module>/<entity>/<int:record_id>")
    def details_view(self, module: str, entity: str, record_id: int) -> Any:
        key = self.entity_key(module, entity)
        visitor = self.visitor
        service, t = visitor.service, visitor.t
        record = service.get(key, record_id)
        access = service.access(key)
        many = [f.name for f in access.entity.fields if f.type == "many_to_many"
                and not f.hidden]
        links = linked_ids(service, key, record_id, many)
        values = {**record, **links}
        plan = plan_form(service, key, values, t, creating=False,
                         timezone=self.ui.runtime.config.timezone)
        display = self.display(user_names(self.ui.runtime, user_ids_in(access.entity,
                                                                       [record])))
        shown = {}
        for placed in plan.placed.values():
            if placed.mode != CHILDREN:
                shown[placed.name] = self.field_cells(display, placed.field, values)
        children, referencing = related_lists(service, display, key, record_id, t,
                                              self.record_url, self.new_url)
        system = [(display.label(None, name), display.cell(None, name, record.get(name)))
                  for name in SYSTEM_COLUMNS if name not in ("deleted_at",)]
        return self.render(
            "metacrm_admin/details.html", key=key, record=record, plan=plan, shown=shown,
            title=display.title(access.entity, record), system=system,
            children={(c.entity, c.field): c for c in children}, referencing=referencing,
            unplaced_children=[c for c in children if not any(
                p.mode == CHILDREN and (p.field.target, p.field.via) == (c.entity, c.field)
                for p in plan.placed.values())],
            history=history(service, display, access.entity, key, record_id, t),
            workflow=workflow_panel(self, key, record_id),
            entity_label=t.text(access.entity.label, access.entity.name),
            list_url=self.list_url(key),
            edit_url=url_for("records.edit_view", module=module, entity=entity,
                             record_id=record_id) if self.can_on(key, record_id, "update")
            else None,
            bulk_url=url_for("records.bulk_view", module=module, entity=entity)
            if self.can_on(key, record_id, "delete") else None)

    # -- anything else under /admin/ -----------------------------------------------------------

    @expose("/<path:rest>", methods=("GET", "POST"))
    def unknown_view(self, rest: str) -> Any:
        raise NotFound(f"there is no admin page {rest!r}")


def _cell(display: Display, column: ListColumn, item: Mapping[str, Any]) -> Cell:
    if column.via is not None:
        target = item.get(column.via.name)
        rest = column.name.split(".", 1)[1]
        value = target.get(rest) if isinstance(target, Mapping) else None
        return display.cell(column.field, rest, value)
    return display.cell(column.field, column.name, item.get(column.name))


def _lookup_fields(entity: Entity) -> list[str]:
    """The text fields a picker searches: the title's fields, then the entity's search."""
    names = TITLE_PART.findall(entity.title or "") + list(entity.search)
    found = (entity.get_field(n) for n in dict.fromkeys(names))
    return [f.name for f in found if f is not None and not f.hidden and f.stored
            and f.type in TEXT_TYPES]


def _csv_rows(columns: list[str], records: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    for index, record in enumerate(records, 1):
        writer.writerow({k: _csv_value(v) for k, v in record.items()})
        if index % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_value(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value

