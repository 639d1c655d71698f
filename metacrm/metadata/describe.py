"""Plain-data descriptions of Registry objects, for `metacrm show` and the API's _meta."""

from __future__ import annotations

from typing import Any

from .ir import Entity, Field, Form, Grant, Role, Scope, Text, View, thaw


def text(value: Text) -> Any:
    """A Text as YAML would write it: a string, or a locale map."""
    values = dict(value.values)
    if list(values) == ["*"]:
        return values["*"]
    return values or None


def describe_field(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": field.type, "id": field.id, "label": text(field.label)}
    optional = {
        "help": text(field.help) if field.help else None,
        "required": field.required or None, "unique": field.unique or None,
        "index": field.index or None, "default": thaw(field.default),
        "read_only": field.read_only or None, "hidden": field.hidden or None,
        "min": field.min, "max": field.max, "max_length": field.max_length,
        "pattern": field.pattern, "precision": field.precision, "scale": field.scale,
        "currency": field.currency, "to": field.target if field.type != "children" else None,
        "of": field.target if field.type == "children" else None, "via": field.via,
        "on_delete": field.on_delete, "autonumber": field.autonumber,
        "expression": field.formula.text if field.formula else None, "returns": field.returns,
        "renamed_from": list(field.renamed_from) or None,
        "options": [{"value": o.value, "label": text(o.label)} for o in field.options] or None,
        "origin": field.origin if field.origin != "module" else None,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    out.update(thaw(field.params))
    return out


def describe_form(form: Form) -> dict[str, Any]:
    return {"label": text(form.label), "default": form.default, "origin": form.origin,
            "sections": [{"name": s.name, "label": text(s.label), "columns": s.columns,
                          "fields": [f.field for f in s.fields]} for s in form.sections]}


def describe_view(view: View) -> dict[str, Any]:
    out: dict[str, Any] = {"label": text(view.label), "default": view.default,
                           "origin": view.origin, "columns": [c.field for c in view.columns],
                           "sort": [("-" if k.descending else "") + k.field for k in view.sort],
                           "page_size": view.page_size}
    if view.filter is not None:
        out["filter"] = thaw(view.filter)
    return out


def describe_entity(entity: Entity, scope: Scope | None = None) -> dict[str, Any]:
    """An entity as resolved, with the forms and views its scope has for it."""
    out: dict[str, Any] = {"entity": entity.key, "id": entity.id, "label": text(entity.label)}
    if entity.plural_label:
        out["plural_label"] = text(entity.plural_label)
    if entity.title:
        out["title"] = entity.title
    if entity.search:
        out["search"] = list(entity.search)
    if entity.indexes:
        out["indexes"] = [{"name": i.name, "fields": list(i.fields), "unique": i.unique}
                          for i in entity.indexes]
    out["fields"] = {f.name: describe_field(f) for f in entity.fields}
    if scope is not None:
        out["forms"] = {f.key: describe_form(f) for f in scope.forms_for(entity.key)}
        out["views"] = {v.key: describe_view(v) for v in scope.views_for(entity.key)}
    return out


def describe_grant(grant: Grant) -> dict[str, Any]:
    """A grant as resolved: every granted action (a scope, or {scope, when}), its fields."""
    actions = {a: r.scope if r.when is None else {"scope": r.scope, "when": thaw(r.when)}
               for a, r in grant.actions.items()}
    out: dict[str, Any] = {"origin": grant.origin, "actions": actions}
    if grant.fields:
        out["fields"] = dict(grant.fields)
    return out


def describe_role(role: Role) -> dict[str, Any]:
    """A role as one scope sees it, with its grants by entity."""
    out: dict[str, Any] = {"label": text(role.label)}
    if role.description:
        out["description"] = text(role.description)
    out["grants"] = {k: describe_grant(g) for k, g in role.grants.items()}
    return out
