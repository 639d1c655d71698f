"""Create and edit forms as WTForms forms, one field class per field type.

Only the fields a plan (layout.py) marks editable are ever read from a submitted form and
sent to the record service, which validates them; read-only fields always show the
record's values, whatever the browser sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    EmailField,
    Form,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TelField,
    TextAreaField,
    URLField,
)
from wtforms import Field as WTField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from ..metadata.ir import Field
from .convert import from_json, to_json
from .i18n import Translator
from .layout import EDIT, READ_ONLY, FormPlan, PlacedField

ATTRIBUTE = "f_{}"
"""A form class's attribute for a field (its HTML name stays the field's name), so fields
named like WTForms' own attributes (`data`, `errors`, `meta`) cannot clash."""
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


class ReferenceField(WTField):
    """A reference: the id in a hidden input, picked with the lookup autocomplete."""

    title: str = ""
    lookup_url: str = ""

    def process_formdata(self, valuelist: list[Any]) -> None:
        raw = (valuelist[0] if valuelist else "") or ""
        self.data = None
        if str(raw).strip():
            try:
                self.data = int(str(raw).strip())
            except ValueError as exc:
                raise ValueError("not a record id") from exc

    def _value(self) -> str:
        return "" if self.data is None else str(self.data)


class ManyField(WTField):
    """A many_to_many: a list of ids (one hidden input each), added with the lookup."""

    titles: Mapping[int, str] = {}
    lookup_url: str = ""

    def process_data(self, value: Any) -> None:
        self.data = list(value or [])

    def process_formdata(self, valuelist: list[Any]) -> None:
        ids = []
        for raw in valuelist:
            text = str(raw).strip()
            if not text:
                continue
            try:
                ids.append(int(text))
            except ValueError as exc:
                raise ValueError("not a record id") from exc
        self.data = list(dict.fromkeys(ids))


def form_class(plan: FormPlan, t: Translator, users: Sequence[tuple[int, str]] = ()
               ) -> type[Form]:
    """A WTForms class with one field per editable or read-only placed field."""
    attrs: dict[str, Any] = {"row_version": HiddenField(id="field-row_version")}
    for placed in plan.placed.values():
        if placed.mode in (EDIT, READ_ONLY):
            attrs[ATTRIBUTE.format(placed.name)] = _wtforms_field(placed, t, users)
    return type(f"{plan.entity.module}_{plan.entity.name}_form", (Form,), attrs)


def inputs(form: Form, plan: FormPlan) -> dict[str, Any]:
    """The form's bound fields by field name (the editable and read-only ones)."""
    return {name: form[ATTRIBUTE.format(name)] for name, placed in plan.placed.items()
            if placed.mode in (EDIT, READ_ONLY)}


def _wtforms_field(placed: PlacedField, t: Translator,
                   users: Sequence[tuple[int, str]]) -> Any:
    found = placed.field
    render: dict[str, Any] = {}
    if placed.mode == READ_ONLY:
        render["disabled"] = True
    if found.required:
        render["aria-required"] = "true"
    if found.max_length and found.type in ("string", "email", "phone", "url"):
        render["maxlength"] = found.max_length
    kw: dict[str, Any] = {"label": placed.label, "id": f"field-{found.name}", "name": found.name,
                          "description": placed.help, "render_kw": render,
                          "validators": [Optional()]}
    kind = found.type
    if kind == "boolean":
        return BooleanField(**{**kw, "validators": []})
    if kind == "reference":
        return ReferenceField(**kw)
    if kind == "many_to_many":
        return ManyField(**kw)
    if kind == "enum":
        choices = [SelectChoice("", t("none_value")), *_options(found, t)]
        return SelectField(choices=choices, **kw)
    if kind == "multi_enum":
        return SelectMultipleField(choices=_options(found, t), **kw)
    if kind == "user":
        choices = [SelectChoice("", t("none_value")),
                   *(SelectChoice(str(i), name) for i, name in users)]
        return SelectField(choices=choices, validate_choice=False, **kw)
    if kind == "integer":
        return IntegerField(**kw)
    if kind in ("decimal", "money"):
        return DecimalField(places=None, **kw)
    if kind == "date":
        return DateField(**kw)
    if kind == "datetime":
        return DateTimeLocalField(format=DATETIME_FORMATS, **kw)
    if kind in ("text", "json"):
        return TextAreaField(**{**kw, "render_kw": {**render, "rows": 4 if kind == "text"
                                                    else 6}})
    return {"email": EmailField, "phone": TelField, "url": URLField}.get(kind, StringField)(**kw)


def _options(found: Field, t: Translator) -> list[SelectChoice]:
    return [SelectChoice(o.value, t.text(o.label, o.value)) for o in found.options]


def bind(plan: FormPlan, cls: type[Form], initial: Mapping[str, Any],
         formdata: Any = None, *, lock: bool = True) -> Form:
    """A form with `initial` values, overlaid by the submitted `formdata` (if any); fields
    the visitor may not change always show the record's values (unless not `lock`)."""
    form = cls(formdata=formdata, data={ATTRIBUTE.format(k) if k != "row_version" else k: v
                                        for k, v in initial.items()})
    if formdata is not None and lock:
        bound = inputs(form, plan)
        for name in (p.name for p in plan.placed.values() if p.mode == READ_ONLY):
            bound[name].data = initial.get(name)
            bound[name].raw_data = None
    return form


def validate(form: Form, plan: FormPlan) -> dict[str, list[str]]:
    """WTForms' own checks of the editable fields shown (numbers, dates, ids)."""
    errors: dict[str, list[str]] = {}
    bound = inputs(form, plan)
    for placed in plan.placed.values():
        if placed.mode == EDIT and placed.shown:
            input_field = bound[placed.name]
            if not input_field.validate(form):
                errors[placed.name] = [str(e) for e in input_field.errors]
    return errors


def payload(form: Form, plan: FormPlan, t: Translator) -> tuple[dict[str, Any],
                                                             dict[str, list[str]]]:
    """The JSON values of the editable fields for the record service, and any values
    that could not be read (JSON text). On create, empty inputs are left out so that
    defaults apply."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    bound = inputs(form, plan)
    for found in plan.fields(EDIT):
        data = bound[found.name].data
        try:
            value = to_json(found, data, plan.zone)
        except ValueError as exc:
            errors[found.name] = [t("invalid_json", error=str(exc)) if found.type == "json"
                                  else str(exc)]
            continue
        if plan.creating and (value is None or value == []):
            continue
        values[found.name] = value
    return values, errors


def submitted_values(form: Form, formdata: Any, plan: FormPlan) -> dict[str, Any]:
    """What was sent for the fields the visitor may change, as JSON values, whatever the
    form's conditions say (to evaluate them on what was sent): the editable fields, and
    the fields only a `read_only_when` made read-only when their input was sent (the
    browser enabled it). Unreadable values are left out."""
    values: dict[str, Any] = {}
    bound = inputs(form, plan)
    for placed in plan.placed.values():
        if placed.mode != EDIT and not (placed.mode == READ_ONLY and
                                        placed.read_only_when is not None and
                                        placed.name in formdata):
            continue
        try:
            values[placed.name] = to_json(placed.field, bound[placed.name].data, plan.zone)
        except ValueError:
            continue
    return values


def initial_values(plan: FormPlan, record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's JSON values as the Python values WTForms fields take."""
    out: dict[str, Any] = {"row_version": record.get("row_version")}
    for placed in plan.placed.values():
        if placed.mode in (EDIT, READ_ONLY):
            out[placed.name] = from_json(placed.field, record.get(placed.name), plan.zone)
    return out
