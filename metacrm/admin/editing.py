"""Create and edit pages: a form from the layout, written through the record service.

A refused write (422 with per-field errors, 403 for a read-only field, 412 for a stale
row version) renders the form again with the visitor's input and each message beside its
field; nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from flask import flash, redirect, request
from flask_admin import expose

from ..platform.records import Forbidden, PreconditionFailed, ValidationFailed
from .base import here
from .convert import defaults, from_text
from .display import active_users
from .forms import (
    ManyField,
    ReferenceField,
    bind,
    form_class,
    initial_values,
    inputs,
    payload,
    submitted_values,
    validate,
)
from .layout import CHILDREN, DISPLAY, EDIT, READ_ONLY, FormPlan, plan_form
from .pages import RecordPages
from .related import linked_ids, related_lists, titles

FORM_TEMPLATE = "metacrm_admin/form.html"


@dataclass(slots=True)
class Outcome:
    """What a submitted form came to: saved, or a status with messages to show."""

    status: int = 200
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    stale_version: int | None = None
    saved: dict[str, Any] | None = None


class FormPages(RecordPages):
    """The create and edit pages."""

    @expose("/<module>/<entity>/new", methods=("GET", "POST"))
    def create_view(self, module: str, entity: str) -> Any:
        key = self.entity_key(module, entity)
        visitor = self.visitor
        service, t = visitor.service, visitor.t
        service.require(key, "create")
        access = service.access(key)
        timezone = self.ui.runtime.config.timezone
        values = defaults(access.full, ZoneInfo(timezone))
        for name in request.args:
            found = access.entity.get_field(name)
            if found is not None and not found.hidden:
                value = from_text(found, request.args[name])
                if value is not None:
                    values[name] = value
        plan = plan_form(service, key, values, t, creating=True, timezone=timezone, live=True)
        return self._form_page(key, plan, values, None)

    @expose("/<module>/<entity>/<int:record_id>/edit", methods=("GET", "POST"))
    def edit_view(self, module: str, entity: str, record_id: int) -> Any:
        key = self.entity_key(module, entity)
        visitor = self.visitor
        service, t = visitor.service, visitor.t
        service.require(key, "update")
        record = service.get(key, record_id)
        if not self.can_on(key, record_id, "update"):
            raise Forbidden(f"your roles do not allow `update` on {key} {record_id}",
                            action="update")
        access = service.access(key)
        many = [f.name for f in access.entity.fields if f.type == "many_to_many"]
        values = {**record, **linked_ids(service, key, record_id, many)}
        plan = plan_form(service, key, values, t, creating=False,
                         timezone=self.ui.runtime.config.timezone, live=True)
        return self._form_page(key, plan, values, record)

    # -- shared ------------------------------------------------------------------------------

    def _form_page(self, key: str, plan: FormPlan, values: Mapping[str, Any],
                   record: Mapping[str, Any] | None) -> Any:
        users = active_users(self.ui.runtime) if any(
            p.field.type == "user" for p in plan.placed.values()
            if p.mode in (EDIT, READ_ONLY)) else []
        cls = form_class(plan, self.visitor.t, users)
        posted = request.method == "POST"
        if posted:  # the form's conditions decide on what was sent, not on what is stored
            sent = bind(plan, cls, initial_values(plan, values), request.form, lock=False)
            plan = plan_form(self.visitor.service, key,
                             {**values, **submitted_values(sent, request.form, plan)},
                             self.visitor.t, creating=plan.creating, timezone=plan.timezone,
                             live=True)
            cls = form_class(plan, self.visitor.t, users)
        form = bind(plan, cls, initial_values(plan, values), request.form if posted else None)
        outcome = Outcome()
        if posted:
            outcome = self._save(key, plan, form, record)
            if outcome.saved is not None:
                return redirect(self.record_url(key, outcome.saved["id"]))
            bound = inputs(form, plan)
            for name, messages in outcome.errors.items():
                if name in bound and plan.placed[name].shown:
                    bound[name].errors = messages
                else:  # a field the form hides: above the form
                    outcome.general.extend(f"{name}: {m}" for m in messages)
        return self._render_form(key, plan, form, values, record, outcome)

    def _save(self, key: str, plan: FormPlan, form: Any,
              record: Mapping[str, Any] | None) -> Outcome:
        """Validate and write the submitted form through the record service."""
        service, t = self.visitor.service, self.visitor.t
        errors = validate(form, plan)
        data, unreadable = payload(form, plan, t)
        errors.update(unreadable)
        if errors:
            return Outcome(422, errors)
        try:
            if record is None:
                saved = service.create(key, data)
                flash(t("created", title=self.display().title(plan.entity, saved)), "success")
            else:
                saved = service.update(key, record["id"], data,
                                       expected_version=_version(form))
                flash(t("saved"), "success")
        except PreconditionFailed as exc:
            return Outcome(412, stale_version=exc.extra.get("current_version"))
        except (ValidationFailed, Forbidden) as exc:
            if isinstance(exc, Forbidden) and not exc.errors:
                raise  # the record itself is out of reach: the 403 page
            errors = {name: _messages(m) for name, m in exc.errors.items()}
            return Outcome(exc.status, errors, [] if errors else [exc.detail])
        return Outcome(saved=saved)

    def _render_form(self, key: str, plan: FormPlan, form: Any, values: Mapping[str, Any],
                     record: Mapping[str, Any] | None, outcome: Outcome) -> Any:
        service, t = self.visitor.service, self.visitor.t
        self._decorate(form, plan)
        display = self.display()
        children = {}
        if record is not None and any(p.mode == CHILDREN for p in plan.placed.values()):
            found, _ = related_lists(service, display, key, record["id"], t,
                                     self.record_url, self.new_url)
            children = {(c.entity, c.field): c for c in found}
        shown = {p.name: self.field_cells(display, p.field, values)
                 for p in plan.placed.values() if p.mode == DISPLAY}
        entity_label = t.text(plan.entity.label, plan.entity.name)
        title = (t("edit_record", title=display.title(plan.entity, record)) if record
                 else t("new_record", entity=entity_label))
        cancel = self.record_url(key, record["id"]) if record else self.list_url(key)
        return self.page(FORM_TEMPLATE, outcome.status, key=key, plan=plan, form=form,
                         inputs=inputs(form, plan),
                         errors=outcome.errors, general=outcome.general,
                         stale_version=outcome.stale_version, record=record,
                         children=children, shown=shown, title=title,
                         entity_label=entity_label, cancel_url=cancel, action=here())

    def _decorate(self, form: Any, plan: FormPlan) -> None:
        """Titles and lookup URLs for the reference and many_to_many pickers."""
        service = self.visitor.service
        display = self.display()
        bound = inputs(form, plan)
        for placed in plan.placed.values():
            if placed.mode not in (EDIT, READ_ONLY) or not placed.field.target:
                continue
            target, widget = placed.field.target, bound[placed.name]
            if isinstance(widget, ReferenceField):
                ids = [widget.data] if isinstance(widget.data, int) else []
            elif isinstance(widget, ManyField):
                ids = [i for i in widget.data or [] if isinstance(i, int)]
            else:
                continue
            names = titles(service, display, target, ids)
            if isinstance(widget, ReferenceField):
                widget.title = names.get(widget.data, f"#{widget.data}") if ids else ""
            else:
                widget.titles = {i: names.get(i, f"#{i}") for i in ids}
            if placed.mode == EDIT or placed.read_only_when is not None:
                widget.lookup_url = self.lookup_url(target)  # (one the browser may enable)


def _version(form: Any) -> int | None:
    raw = form.row_version.data
    try:
        return int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _messages(value: Any) -> list[str]:
    """Messages of one field from a record service error (lists, or per item of a list)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [f"{k}: {m}" for k, v in value.items() for m in _messages(v)]
    if isinstance(value, list | tuple):
        return [m for item in value for m in _messages(item)]
    return [str(value)]

