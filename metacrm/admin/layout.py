"""Where a form's fields go: the YAML layout as one visitor sees it for one record.

`plan_form` places the fields the visitor may see into the layout's sections (their
columns, spans, help and `visible_when`/`read_only_when` conditions, evaluated on the
record's values with the condition engine); fields the layout leaves out follow in an
"Other fields" section, so a field added by an overlay can always be edited. Each placed
field gets a mode: editable, read-only (shown disabled), displayed (computed or not
writable) or children (a table of child records).

A *live* plan (the create and edit forms) also places the fields and sections a
`visible_when` hides, marked not `shown`, and keeps each condition's document, so the page
can show and hide them as the visitor types (admin.js); the server evaluates them again
on what was sent, and only that answer decides what is written.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from ..engines.conditions import ConditionError, EvalContext, evaluate, parse_condition
from ..metadata.ir import Entity, Field, thaw
from ..metadata.ir import Form as LayoutForm
from ..platform.records import RecordService
from .i18n import Translator

log = logging.getLogger(__name__)

EDIT, READ_ONLY, DISPLAY, CHILDREN = "edit", "read_only", "display", "children"
COMPUTED = frozenset({"formula", "autonumber"})


# -- the plan: which fields go where, and how --------------------------------------------------


@dataclass(slots=True)
class PlacedField:
    field: Field
    label: str
    help: str
    span: int
    mode: str
    shown: bool = True
    visible_when: Any = None
    """A live plan's `visible_when` condition (JSON data), for the browser to evaluate."""
    read_only_when: Any = None
    """A live plan's `read_only_when`, when only it decides between editable and read-only."""

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def widget(self) -> str:
        """How the template draws it: a kind per field type."""
        if self.mode in (DISPLAY, CHILDREN):
            return self.mode
        kind = self.field.type
        if kind in ("reference", "many_to_many", "boolean"):
            return kind
        return "input"


@dataclass(slots=True)
class PlacedSection:
    name: str
    label: str
    columns: int
    collapsed: bool
    fields: list[PlacedField]
    shown: bool = True
    visible_when: Any = None


@dataclass(slots=True)
class FormPlan:
    """A form as one visitor sees it for one record (or a new one)."""

    entity: Entity
    layout: LayoutForm | None
    sections: list[PlacedSection]
    creating: bool
    timezone: str
    placed: dict[str, PlacedField] = field(default_factory=dict)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    """A live plan: the type (and, unless an input on the form holds it, the value) of
    each field its conditions test that the visitor may read."""

    def fields(self, mode: str) -> list[Field]:
        """The fields in `mode` that are shown (a hidden field is never written)."""
        return [p.field for p in self.placed.values() if p.mode == mode and p.shown]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def default_layout(service: RecordService, key: str) -> LayoutForm | None:
    """The entity's default form in the visitor's business unit (else its first)."""
    forms = service.scope.forms_for(key)
    return next((f for f in forms if f.default), forms[0] if forms else None)


def plan_form(service: RecordService, key: str, values: Mapping[str, Any], t: Translator,
              *, creating: bool, timezone: str, live: bool = False) -> FormPlan:
    """Place the visible fields of `key` in its layout for a record with `values` (with
    `live`, the fields a condition hides too, not `shown`, with their conditions)."""
    access = service.access(key)
    entity, full = access.entity, access.full
    layout = default_layout(service, key)
    writable = access.schemas.create.fields if creating else access.schemas.update.fields
    conditions = _Conditions(service, full, values, timezone)
    visible = frozenset(service.visible_entities())
    plan = FormPlan(entity, layout, [], creating, timezone)
    placed: set[str] = set()
    tested: set[str] = set()
    for section in layout.sections if layout is not None else ():
        placed.update(f.field for f in section.fields)
        section_shown = conditions.holds(section.visible_when, default=True)
        if not section_shown and not live:
            continue
        fields = []
        for form_field in section.fields:
            found = entity.get_field(form_field.field)
            if found is None or found.hidden:
                continue  # the visitor's roles (or the unit's overlay) hide it
            shown = conditions.holds(form_field.visible_when, default=True)
            if not shown and not live:
                continue
            base = _mode(found, access.read_only, writable, creating, False, visible)
            if base is None:
                continue
            decided = base == EDIT and form_field.read_only_when is not None
            mode = READ_ONLY if decided and conditions.holds(form_field.read_only_when,
                                                             default=False) else base
            help_text = t.text(form_field.help) if form_field.help else t.text(found.help)
            one = PlacedField(found, t.text(found.label, found.name), help_text,
                              max(1, min(form_field.span, section.columns)), mode, shown)
            if live:
                one.visible_when = thaw(form_field.visible_when)
                one.read_only_when = thaw(form_field.read_only_when) if decided else None
                tested.update(condition_fields(one.visible_when))
                tested.update(condition_fields(one.read_only_when))
            fields.append(one)
        if fields:
            one_section = PlacedSection(section.name, t.text(section.label), section.columns,
                                        section.collapsed, fields, section_shown)
            if live:
                one_section.visible_when = thaw(section.visible_when)
                tested.update(condition_fields(one_section.visible_when))
            plan.sections.append(one_section)
    rest = []
    for found in entity.fields:
        if found.name in placed or found.hidden:
            continue
        mode = _mode(found, access.read_only, writable, creating, False, visible)
        if mode is not None:
            rest.append(PlacedField(found, t.text(found.label, found.name),
                                    t.text(found.help), 1, mode))
    if rest:
        label = t("other_fields") if layout is not None else ""
        plan.sections.append(PlacedSection("_other", label, 1 if layout else 2, False, rest))
    plan.placed = {p.name: p for s in plan.sections for p in s.fields}
    if live:
        plan.live = _tested_fields(plan, entity, values, tested)
    return plan


def condition_fields(document: Any) -> set[str]:
    """The field paths a condition document tests."""
    found: set[str] = set()
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("field"), str):
                found.add(item["field"])
            for key in ("all", "any"):
                if isinstance(item.get(key), list | tuple):
                    stack.extend(item[key])
            stack.append(item.get("not"))
    return found


SYSTEM_TYPES = {"id": "integer", "row_version": "integer", "owner": "user",
                "created_by": "user", "updated_by": "user", "business_unit": "string",
                "created_at": "datetime", "updated_at": "datetime"}


def _tested_fields(plan: FormPlan, entity: Entity, values: Mapping[str, Any],
                   names: set[str]) -> dict[str, dict[str, Any]]:
    """Type and value of each field the conditions test, for the browser: an input of
    the form holds the value of an editable or read-only field; a field the visitor may
    not read, a formula (computed on the server) or a path is left out (the browser then
    keeps the server's answer)."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        found = entity.get_field(name)
        if found is None and name in SYSTEM_TYPES:
            out[name] = {"type": SYSTEM_TYPES[name], "value": values.get(name)}
            continue
        if found is None or found.hidden or found.formula is not None:
            continue
        placed = plan.placed.get(name)
        if placed is not None and placed.mode in (EDIT, READ_ONLY):
            out[name] = {"type": found.type}
        else:
            out[name] = {"type": found.type, "value": values.get(name)}
    return out


def _mode(found: Field, read_only: frozenset[str], writable: Mapping[str, Any],
          creating: bool, read_only_when: bool, visible: frozenset[str]) -> str | None:
    if found.type == "children":
        return None if creating else CHILDREN
    if found.type in COMPUTED or found.read_only or found.name not in writable:
        return None if creating and found.type == "formula" else DISPLAY
    if found.name in read_only or read_only_when:
        return READ_ONLY
    if found.type in ("reference", "many_to_many") and found.target is not None and \
            found.target not in visible:
        return READ_ONLY  # its records cannot be looked up by this visitor
    return EDIT


class _Conditions:
    """`visible_when` / `read_only_when` on one record's values (server side)."""

    def __init__(self, service: RecordService, entity: Entity, values: Mapping[str, Any],
                 timezone: str) -> None:
        self.service = service
        self.entity = entity
        self.values = values
        zone = ZoneInfo(timezone)
        self.context = EvalContext(dt.datetime.now(zone), zone)

    def holds(self, document: Any, *, default: bool) -> bool:
        if document is None:
            return default
        try:
            node = parse_condition(thaw(document), self.entity, self.service.registry,
                                   self.service.operators, unit=self.service.actor.unit)
            return evaluate(node, self.values, self.context)
        except (ConditionError, TypeError, ValueError) as exc:
            log.warning("form condition on %s not evaluated: %s", self.entity.key, exc)
            return default
