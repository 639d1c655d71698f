"""Resolution of workflows, rules, calendars and SLA policies: module files, then overlays.

In a module, each file defines one thing, keyed ``module.name`` (a workflow, rule or SLA
policy takes the module of its entity, so an overlay naming ``ocrm.lead`` finds it). In
an overlay folder (tenant or business unit) a file naming an existing key changes it:

- a workflow's states and transitions are added or replace the same-named ones, and
  ``remove_transitions`` drops some;
- a rule's, policy's or calendar's options written in the file replace the earlier ones
  (``enabled: false`` turns a rule off for a business unit);

a new key adds a definition. Drafts are copied on write, like entities and roles, so an
unchanged definition is one object in every scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .diagnostics import DiagnosticSink, DocPath, did_you_mean
from .loader import Document

KEYED_KINDS = ("rule", "sla", "calendar")
"""Kinds whose overlay files replace options one by one."""
REQUIRED_OPTIONS = {"workflow": ("field",), "rule": ("trigger", "do"),
                    "sla": ("calendar", "clocks"), "calendar": ()}
"""Options a new definition needs (an overlay changing an existing one may leave them out)."""
TEXT_OPTIONS = ("label",)
NAMES = {"workflow": "workflow", "rule": "rule", "sla": "SLA policy", "calendar": "calendar"}
EXAMPLES = {"workflow": "`field: status` (an enum field of the entity)",
            "rule": "`trigger: created` and `do: [{set: {status: new}}]`",
            "sla": "`calendar: office` and `clocks: {resolution: {stop: ..., targets: ...}}`",
            "calendar": ""}


@dataclass(slots=True)
class PartDraft:
    """A state or transition of a workflow, as one file wrote it."""

    spec: Any
    doc: Document
    path: DocPath
    origin: str


@dataclass(slots=True)
class WorkflowDraft:
    """A workflow being resolved: its options, states and transitions by name.

    `listed` is True when the defining file lists `states` (then those are the states);
    otherwise the states are the field's options.
    """

    module: str
    name: str
    spec: dict[str, Any]
    states: dict[str, PartDraft]
    transitions: dict[str, PartDraft]
    doc: Document
    origin: str
    listed: bool = False
    where: dict[str, tuple[Document, DocPath]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    def clone(self) -> WorkflowDraft:
        return WorkflowDraft(self.module, self.name, dict(self.spec), dict(self.states),
                             dict(self.transitions), self.doc, self.origin, self.listed,
                             dict(self.where))

    def locate(self, option: str) -> tuple[Document, DocPath]:
        return self.where.get(option, (self.doc, (option,)))


@dataclass(slots=True)
class OptionsDraft:
    """A rule, SLA policy or calendar being resolved; `where` remembers which file set each
    option (overlays replace options one by one)."""

    kind: str
    module: str
    name: str
    spec: dict[str, Any]
    doc: Document
    origin: str
    where: dict[str, tuple[Document, DocPath]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    def clone(self) -> OptionsDraft:
        return OptionsDraft(self.kind, self.module, self.name, dict(self.spec), self.doc,
                            self.origin, dict(self.where))

    def locate(self, option: str) -> tuple[Document, DocPath]:
        return self.where.get(option, (self.doc, (option,)))


class AutomationScope(Protocol):
    """The parts of a ScopeDraft this module reads and writes."""

    modules: tuple[str, ...]
    entities: Mapping[str, Any]
    workflows: dict[str, WorkflowDraft]
    rules: dict[str, OptionsDraft]
    calendars: dict[str, OptionsDraft]
    slas: dict[str, OptionsDraft]


def table_of(scope: AutomationScope, kind: str) -> dict[str, Any]:
    return {"workflow": scope.workflows, "rule": scope.rules, "calendar": scope.calendars,
            "sla": scope.slas}[kind]


def merge_text(old: Any, new: Any) -> Any:
    """A label laid over another: locale maps merge, anything else replaces."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {**old, **new}
    return new


def _qualified(ref: str, module: str) -> str:
    return ref if "." in ref else f"{module}.{ref}"


def _incomplete(kind: str, doc: Document, spec: Mapping[str, Any], sink: DiagnosticSink,
                changing: bool = False) -> bool:
    """Report the options a new definition lacks; True when it lacks some."""
    missing = [o for o in REQUIRED_OPTIONS[kind] if o not in spec]
    if missing:
        listed = " and ".join(f"`{o}`" for o in missing)
        hint = f"for example {EXAMPLES[kind]}"
        if changing:
            hint += f"; to change an existing {NAMES[kind]}, use its name and its entity"
        sink.add(doc.diagnostic(f"{kind}.incomplete", f"a new {NAMES[kind]} needs {listed}",
                                (kind,), hint=hint))
    return bool(missing)


# -- module files ---------------------------------------------------------------------------

def add_module_definition(scope: AutomationScope, kind: str, module: str, doc: Document,
                          sink: DiagnosticSink) -> None:
    """A workflow, rule, calendar or SLA file of module `module`."""
    data = doc.data
    if kind == "calendar":
        name = data["calendar"]
        if "." in name:
            owner, name = name.split(".", 1)
            if owner != module:
                sink.add(doc.diagnostic(
                    "calendar.foreign-module", f"a calendar of module `{module}` is named "
                    f"`{module}.{name}` or `{name}`, not `{data['calendar']}`", ("calendar",),
                    hint=f"write `calendar: {name}`"))
                return
        key = f"{module}.{name}"
    else:
        name = data[kind]
        key = f"{_qualified(data['entity'], module).split('.')[0]}.{name}"
    table = table_of(scope, kind)
    if key in table:
        first = table[key].doc
        sink.add(doc.diagnostic(f"{kind}.duplicate", f"{NAMES[kind]} `{key}` is defined twice "
                                f"(first in {first.file}:{first.pos((kind,))[0]})", (kind,),
                                hint=f"give one of them another name; an overlay changes a "
                                f"module's {NAMES[kind]} by naming it"))
        return
    if kind == "workflow" and "remove_transitions" in data:
        sink.add(doc.diagnostic("workflow.remove-in-module", "`remove_transitions` is for "
                                "overlays that extend a workflow", ("remove_transitions",),
                                key=True, hint="in a module, leave the transition out"))
    if _incomplete(kind, doc, data, sink):
        return
    spec = _spec(kind, data, module)
    owner = key.split(".", 1)[0]
    if kind == "workflow":
        table[key] = _new_workflow(owner, name, spec, doc, module)
    else:
        table[key] = OptionsDraft(kind, owner, name, spec, doc, module)


def _spec(kind: str, data: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The file's options, its entity (and an SLA's calendar) named with their module."""
    spec = {k: v for k, v in data.items() if k not in (kind, "states", "transitions",
                                                        "remove_transitions")}
    if "entity" in spec:
        spec["entity"] = _qualified(spec["entity"], module)
    if kind == "sla" and isinstance(spec.get("calendar"), str):
        spec["calendar"] = _qualified(spec["calendar"], module)
    if kind == "calendar":
        spec.pop("calendar", None)
    return spec


def _new_workflow(module: str, name: str, spec: dict[str, Any], doc: Document,
                  origin: str) -> WorkflowDraft:
    data = doc.data
    states = {s: PartDraft(v, doc, ("states", s), origin)
              for s, v in (data.get("states") or {}).items()}
    transitions = {t: PartDraft(v, doc, ("transitions", t), origin)
                   for t, v in (data.get("transitions") or {}).items()}
    return WorkflowDraft(module, name, spec, states, transitions, doc, origin,
                         "states" in data)


# -- overlay files --------------------------------------------------------------------------

def apply_overlay_definition(scope: AutomationScope, kind: str, doc: Document, origin: str,
                             sink: DiagnosticSink) -> None:
    """A workflow, rule, calendar or SLA file in an overlay folder: changes the definition
    with the same key, or adds a new one."""
    data = doc.data
    ref = data["calendar"] if kind == "calendar" else data["entity"]
    if "." not in ref:
        _bare_name(scope, kind, doc, ref, sink)
        return
    module = ref.split(".", 1)[0]
    if kind == "calendar":
        name = ref.split(".", 1)[1]
        if module not in scope.modules:
            sink.add(doc.diagnostic("calendar.unknown-module", f"calendar `{ref}` names module "
                                    f"`{module}`, which is not enabled here", ("calendar",),
                                    hint=did_you_mean(module, scope.modules) or
                                    f"enabled modules: {', '.join(scope.modules) or 'none'}"))
            return
    else:
        name = data[kind]
    key = f"{module}.{name}"
    table = table_of(scope, kind)
    old = table.get(key)
    if old is None:
        if kind == "workflow" and data.get("remove_transitions"):
            sink.add(doc.diagnostic(
                "workflow.unknown-transition", f"there is no workflow `{key}` whose transitions "
                "could be removed", ("remove_transitions",), key=True,
                hint=did_you_mean(key, table) or "name an existing workflow to extend it"))
            return
        if _incomplete(kind, doc, data, sink, changing=True):
            return
        spec = _spec(kind, data, module)
        table[key] = (_new_workflow(module, name, spec, doc, origin) if kind == "workflow"
                      else OptionsDraft(kind, module, name, spec, doc, origin))
        return
    if kind != "calendar" and old.spec.get("entity") != ref:
        sink.add(doc.diagnostic(
            f"{kind}.entity-mismatch", f"{NAMES[kind]} `{key}` is for {old.spec.get('entity')}; an "
            f"overlay changing it cannot move it to {ref}", ("entity",),
            hint=f"write `entity: {old.spec.get('entity')}`, or give the new {NAMES[kind]} "
            "another name"))
        return
    draft = old.clone()
    draft.origin = origin
    table[key] = draft
    if kind == "workflow":
        _extend_workflow(draft, doc, origin, sink)
        return
    for option, value in _spec(kind, data, module).items():
        if option == "entity":
            continue
        draft.spec[option] = merge_text(draft.spec.get(option), value) \
            if option in TEXT_OPTIONS else value
        draft.where[option] = (doc, (option,))


def _bare_name(scope: AutomationScope, kind: str, doc: Document, ref: str,
               sink: DiagnosticSink) -> None:
    if kind == "calendar":
        known = [k for k in scope.calendars if k.split(".", 1)[1] == ref]
        sink.add(doc.diagnostic("overlay.bare-name", "a calendar in an overlay folder is named "
                                f"with its module: `{known[0] if known else 'module.' + ref}`",
                                ("calendar",), hint=f"write `calendar: {known[0]}`"
                                if len(known) == 1 else None))
        return
    known = [k for k in scope.entities if k.split(".", 1)[1] == ref]
    sink.add(doc.diagnostic("overlay.bare-entity", f"a {kind} in an overlay folder names its "
                            f"entity with the module: `{known[0] if known else 'module.' + ref}`",
                            ("entity",), hint=f"write `entity: {known[0]}`"
                            if len(known) == 1 else None))


def _extend_workflow(draft: WorkflowDraft, doc: Document, origin: str,
                     sink: DiagnosticSink) -> None:
    data = doc.data
    if "field" in data and data["field"] != draft.spec.get("field"):
        sink.add(doc.diagnostic(
            "workflow.field-change", f"workflow `{draft.key}` runs over field "
            f"`{draft.spec.get('field')}`; an overlay cannot move it to `{data['field']}`",
            ("field",), hint="leave `field` out, or give a new workflow another name"))
    for option in ("label", "initial"):
        if option in data:
            draft.spec[option] = merge_text(draft.spec.get(option), data[option]) \
                if option == "label" else data[option]
            draft.where[option] = (doc, (option,))
    for index, name in enumerate(data.get("remove_transitions") or ()):
        if name not in draft.transitions:
            sink.add(doc.diagnostic(
                "workflow.unknown-transition", f"workflow `{draft.key}` has no transition "
                f"`{name}` to remove", ("remove_transitions", index),
                hint=did_you_mean(name, draft.transitions) or "its transitions: " +
                (", ".join(draft.transitions) or "none")))
            continue
        del draft.transitions[name]
    for name, spec in (data.get("states") or {}).items():
        draft.states[name] = PartDraft(spec, doc, ("states", name), origin)
    for name, spec in (data.get("transitions") or {}).items():
        draft.transitions[name] = PartDraft(spec, doc, ("transitions", name), origin)


# -- the metadata version -------------------------------------------------------------------

def automation_json(scope: AutomationScope) -> dict[str, Any]:
    """What the content hash sees of a scope's workflows, rules, calendars and policies
    (empty when it has none, so definitions without any keep their version)."""
    out: dict[str, Any] = {}
    if scope.workflows:
        out["workflows"] = {
            k: [w.origin, w.spec, w.listed,
                {s: [p.origin, p.spec] for s, p in w.states.items()},
                {t: [p.origin, p.spec] for t, p in w.transitions.items()}]
            for k, w in scope.workflows.items()}
    for name, table in (("rules", scope.rules), ("calendars", scope.calendars),
                        ("slas", scope.slas)):
        if table:
            out[name] = {k: [d.origin, d.spec] for k, d in table.items()}
    return out
