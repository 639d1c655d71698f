"""Plain, JSON-able pictures of each compiler pass, for golden fixtures and debugging.

One pure function per pass: documents as loaded (with their line marks), the
resolved scope drafts, and the compiled Registry. Results share nothing with the
compiler's objects, so callers may change them freely. Dump the results with
``json.dumps(..., sort_keys=True)``: mappings whose order means nothing come out
sorted, and every order that does mean something (fields, options, form sections,
view columns, files in overlay order, scopes parents first) is kept as a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import Any

from .automation import OptionsDraft, WorkflowDraft
from .describe import (
    describe_calendar,
    describe_entity,
    describe_role,
    describe_rule,
    describe_sla,
    describe_workflow,
    text,
)
from .diagnostics import Diagnostic, format_path
from .ir import Entity, Form, FormField, Module, Registry, Scope, Unit, View, thaw
from .loader import Document
from .resolve import DefinitionDraft, EntityDraft, FieldDraft, RoleDraft, ScopeDraft
from .sources import Loaded


def snapshot_documents(loaded_list: Iterable[Loaded]) -> list[dict[str, Any]]:
    """Each file as the loader and schema pass left it: kind, data, marks, problems."""
    out = []
    for item in loaded_list:
        entry: dict[str, Any] = {"file": item.file,
                                 "kind": item.kind.name if item.kind else None}
        if item.doc is not None:
            entry["data"] = deepcopy(item.doc.data)
            entry["marks"] = _marks(item.doc)
        if item.diagnostics:
            entry["diagnostics"] = snapshot_diagnostics(item.diagnostics)
        out.append(entry)
    return out


def snapshot_scopes(scope_drafts: Mapping[str, ScopeDraft]) -> list[dict[str, Any]]:
    """The resolved drafts of every scope, tenant-wide first, then units parents first."""
    return [{"scope": name,
             "unit": draft.unit,
             "modules": list(draft.modules),
             "entities": {k: _entity_draft(e) for k, e in draft.entities.items()},
             "forms": {k: _definition_draft(d) for k, d in draft.forms.items()},
             "views": {k: _definition_draft(d) for k, d in draft.views.items()},
             "roles": {k: _role_draft(r) for k, r in draft.roles.items()},
             **_automation_drafts(draft)}
            for name, draft in scope_drafts.items()]


def snapshot_registry(registry: Registry | None,
                      diagnostics: Iterable[Diagnostic] = ()) -> dict[str, Any]:
    """A Registry as plain data: modules, units, scopes as seen, storage, relations."""
    out: dict[str, Any] = {"ok": registry is not None,
                           "diagnostics": snapshot_diagnostics(diagnostics)}
    if registry is None:
        return out
    out.update({
        "version": registry.version,
        "module_order": list(registry.modules),
        "modules": {n: _module(m) for n, m in registry.modules.items()},
        "units": {n: _unit(u) for n, u in registry.units.items()},
        "scopes": [{"scope": name, "unit": scope.unit, "modules": list(scope.modules),
                    "entities": {k: _entity(e) for k, e in scope.entities.items()},
                    "forms": {k: _form(f) for k, f in scope.forms.items()},
                    "views": {k: _view(v) for k, v in scope.views.items()},
                    "roles": {k: describe_role(r) for k, r in scope.roles.items()},
                    **_automation(scope)}
                   for name, scope in registry.scopes.items()],
        "storage": {k: _entity(e) for k, e in registry.entities.items()},
        "relations": sorted(({"kind": r.kind, "source": r.source, "field": r.field,
                              "target": r.target, "on_delete": r.on_delete}
                             for r in registry.relations),
                            key=lambda r: (r["source"], r["field"])),
    })
    return out


def snapshot_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[str]:
    """Diagnostics as the CLI prints them (file:line:col, code, message, hint)."""
    return [d.format() for d in diagnostics]


# -- helpers --------------------------------------------------------------------------------

def _automation_drafts(draft: ScopeDraft) -> dict[str, Any]:
    """Workflow, rule, calendar and policy drafts, only when the scope has some."""
    parts = {"workflows": {k: _workflow_draft(w) for k, w in draft.workflows.items()},
             "rules": {k: _options_draft(d) for k, d in draft.rules.items()},
             "calendars": {k: _options_draft(d) for k, d in draft.calendars.items()},
             "sla_policies": {k: _options_draft(d) for k, d in draft.slas.items()}}
    return {k: v for k, v in parts.items() if v}


def _workflow_draft(draft: WorkflowDraft) -> dict[str, Any]:
    """States and transitions as lists: their order is the order shown to people."""
    out: dict[str, Any] = {"module": draft.module, "name": draft.name, "origin": draft.origin,
                           "spec": deepcopy(draft.spec), "listed_states": draft.listed,
                           "source": _where(draft.doc, ("workflow",))}
    for part in ("states", "transitions"):
        out[part] = [{"name": name, "origin": p.origin, "spec": deepcopy(p.spec),
                      "source": _where(p.doc, p.path)}
                     for name, p in getattr(draft, part).items()]
    if draft.where:
        out["set_by"] = {option: _where(doc, path) for option, (doc, path) in draft.where.items()}
    return out


def _options_draft(draft: OptionsDraft) -> dict[str, Any]:
    out: dict[str, Any] = {"module": draft.module, "name": draft.name, "origin": draft.origin,
                           "spec": deepcopy(draft.spec),
                           "source": _where(draft.doc, (draft.kind,))}
    if draft.where:
        out["set_by"] = {option: _where(doc, path) for option, (doc, path) in draft.where.items()}
    return out


def _workflow(workflow: Any) -> dict[str, Any]:
    described = describe_workflow(workflow)
    described["states"] = [{"name": k, **v} for k, v in described["states"].items()]
    described["transitions"] = [{"name": k, **v} for k, v in described["transitions"].items()]
    return described


def _automation(scope: Scope) -> dict[str, Any]:
    """Workflows, rules, calendars and policies, only when the scope has some (so older
    golden fixtures stay as they are)."""
    parts = {"workflows": {k: _workflow(w) for k, w in scope.workflows.items()},
             "rules": {k: describe_rule(r) for k, r in scope.rules.items()},
             "calendars": {k: describe_calendar(c) for k, c in scope.calendars.items()},
             "sla_policies": {k: describe_sla(p) for k, p in scope.sla_policies.items()}}
    return {k: v for k, v in parts.items() if v}


def _marks(doc: Document) -> dict[str, str]:
    """`line:column` of every node: of its key for mapping entries, else of its value."""
    source = doc.source
    return {format_path(path) or "$": "{}:{}".format(*source.keys.get(path, position))
            for path, position in source.values.items()}


def _where(doc: Document, path: tuple) -> str:
    line, column = doc.pos(path, key=bool(path))
    return f"{doc.file}:{line}:{column}"


def _field_draft(draft: FieldDraft) -> dict[str, Any]:
    out: dict[str, Any] = {"name": draft.name, "id": draft.id, "origin": draft.origin,
                           "spec": deepcopy(draft.spec), "source": _where(draft.doc, draft.path)}
    if draft.where:
        out["set_by"] = {option: _where(doc, path) for option, (doc, path) in draft.where.items()}
    return out


def _entity_draft(draft: EntityDraft) -> dict[str, Any]:
    return {"id": draft.id, "module": draft.module, "name": draft.name,
            "spec": deepcopy(draft.spec), "source": _where(draft.doc, ("entity",)),
            "fields": [_field_draft(f) for f in draft.fields.values()]}


def _definition_draft(draft: DefinitionDraft) -> dict[str, Any]:
    return {"kind": draft.kind, "module": draft.module, "name": draft.name,
            "origin": draft.origin, "spec": deepcopy(draft.spec),
            "source": _where(draft.doc, (draft.kind,))}


def _role_draft(draft: RoleDraft) -> dict[str, Any]:
    out: dict[str, Any] = {"name": draft.name, "spec": deepcopy(draft.spec),
                           "source": _where(draft.doc, ("role",)),
                           "grants": {k: {"origin": g.origin, "spec": deepcopy(g.spec),
                                          "source": _where(g.doc, g.path)}
                                      for k, g in draft.grants.items()}}
    if draft.where:
        out["set_by"] = {option: _where(doc, path) for option, (doc, path) in draft.where.items()}
    return out


def _entity(entity: Entity) -> dict[str, Any]:
    out = describe_entity(entity)
    out["fields"] = [{"name": f.name, **out["fields"][f.name], **({} if f.stored else
                      {"stored": False})} for f in entity.fields]
    extra = {"description": text(entity.description) if entity.description else None,
             "icon": entity.icon, "renamed_from": list(entity.renamed_from) or None}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _form(form: Form) -> dict[str, Any]:
    return {"entity": form.entity, "label": text(form.label), "default": form.default,
            "origin": form.origin,
            "sections": [{"name": s.name, "label": text(s.label), "columns": s.columns,
                          "collapsed": s.collapsed, "visible_when": thaw(s.visible_when),
                          "fields": [_form_field(f) for f in s.fields]} for s in form.sections]}


def _form_field(item: FormField) -> str | dict[str, Any]:
    extra = {"help": text(item.help) if item.help else None,
             "span": item.span if item.span != 1 else None,
             "visible_when": thaw(item.visible_when), "read_only_when": thaw(item.read_only_when)}
    extra = {k: v for k, v in extra.items() if v is not None}
    return {"field": item.field, **extra} if extra else item.field


def _view(view: View) -> dict[str, Any]:
    columns: list[Any] = []
    for column in view.columns:
        extra = {"label": text(column.label) if column.label else None, "width": column.width}
        extra = {k: v for k, v in extra.items() if v is not None}
        columns.append({"field": column.field, **extra} if extra else column.field)
    return {"entity": view.entity, "label": text(view.label), "default": view.default,
            "origin": view.origin, "columns": columns,
            "sort": [("-" if k.descending else "") + k.field for k in view.sort],
            "filter": thaw(view.filter), "quick_filters": list(view.quick_filters),
            "search": list(view.search), "page_size": view.page_size}


def _module(module: Module) -> dict[str, Any]:
    return {"version": module.version, "label": text(module.label), "owner": module.owner,
            "depends": list(module.depends), "entities": list(module.entities),
            "description": text(module.description)}


def _unit(unit: Unit) -> dict[str, Any]:
    return {"label": text(unit.label), "parent": unit.parent, "team": unit.team,
            "modules": list(unit.modules), "overlays": list(unit.overlays)}
