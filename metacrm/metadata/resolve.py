"""Overlay resolution: module base → tenant overlays → business-unit overlays.

The order is fixed and documented in docs/language.md ("Overlays"): modules in
dependency order, then the tenant's overlay folders in the order tenant.yaml lists
them, then each unit's folders after its parent unit's; files within a folder by
path. Drafts are copied on write, so unchanged entities are shared between scopes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .automation import (
    KEYED_KINDS,
    OptionsDraft,
    WorkflowDraft,
    add_module_definition,
    apply_overlay_definition,
)
from .diagnostics import DiagnosticSink, DocPath, a_or_an, did_you_mean
from .fieldtypes import FieldTypeRegistry
from .ir import FrozenDict, Text, Unit
from .library import MODULE_MANIFEST, Library, definition_files
from .loader import Document
from .sources import DocumentStore, Loaded

STRUCTURAL_OPTIONS = frozenset({"type", "unique", "index", "max_length", "min", "max", "pattern",
                                "precision", "scale", "currency", "on_delete", "renamed_from"})
TEXT_OPTIONS = frozenset({"label", "help", "description"})
MODULE_ONLY_KINDS = frozenset({"module", "tenant", "overlay"})
OVERLAY_KINDS = frozenset({"overlay", "form", "view", "role", "workflow", "rule", "sla",
                           "calendar"})
RESERVED_ROLES = frozenset({"administrator"})
"""Role names the platform keeps for its built-in roles (`administrator` may do anything)."""
HEADQUARTERS_MODES = ("across_units", "unit_only")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """A tenant's own settings from tenant.yaml (not part of the shared Registry)."""

    slug: str
    label: Text
    locale: str
    locales: tuple[str, ...]
    timezone: str
    team: str | None
    modules: tuple[str, ...]
    overlays: tuple[str, ...]
    units: FrozenDict[str, Unit]
    settings: FrozenDict[str, Any]
    directory: Path
    headquarters: str = "across_units"
    """`across_units`: headquarters users' roles reach every business unit; `unit_only`:
    every grant is limited to the records of the user's own business unit."""


@dataclass(slots=True)
class FieldDraft:
    """A field being resolved; `where` remembers which file set each option."""

    name: str
    spec: dict[str, Any]
    doc: Document
    path: DocPath
    origin: str
    id: str
    where: dict[str, tuple[Document, DocPath]] = field(default_factory=dict)

    def locate(self, option: str | None = None) -> tuple[Document, DocPath]:
        if option and option in self.where:
            return self.where[option]
        if option and option in self.spec:
            return self.doc, (*self.path, option)
        return self.doc, self.path


@dataclass(slots=True)
class EntityDraft:
    """An entity being resolved; `where` remembers which overlay set each entity option."""

    module: str
    name: str
    id: str
    spec: dict[str, Any]
    fields: dict[str, FieldDraft]
    doc: Document
    where: dict[str, tuple[Document, DocPath]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    def clone(self) -> EntityDraft:
        return EntityDraft(self.module, self.name, self.id, dict(self.spec), dict(self.fields),
                           self.doc, dict(self.where))

    def locate(self, option: str) -> tuple[Document, DocPath]:
        """The file and path that set entity option `option` (the module's, unless overlaid)."""
        return self.where.get(option, (self.doc, (option,)))


@dataclass(slots=True)
class DefinitionDraft:
    """A form or view being resolved."""

    kind: str
    module: str
    name: str
    spec: dict[str, Any]
    doc: Document
    origin: str

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True, slots=True)
class GrantDraft:
    """One role's grant on one entity, as written by one file (replaced, never changed)."""

    entity: str
    spec: Mapping[str, Any]
    doc: Document
    path: DocPath
    origin: str


@dataclass(slots=True)
class RoleDraft:
    """A role being resolved: its texts and its grants by entity key.

    `modules` remembers which module's file first defined the role (for `role.duplicate`);
    `where` which file set each text.
    """

    name: str
    spec: dict[str, Any]
    grants: dict[str, GrantDraft]
    doc: Document
    where: dict[str, tuple[Document, DocPath]] = field(default_factory=dict)
    modules: dict[str, Document] = field(default_factory=dict)

    def clone(self) -> RoleDraft:
        return RoleDraft(self.name, dict(self.spec), dict(self.grants), self.doc,
                         dict(self.where), dict(self.modules))


@dataclass(slots=True)
class ScopeDraft:
    unit: str | None
    modules: tuple[str, ...]
    entities: dict[str, EntityDraft]
    forms: dict[str, DefinitionDraft]
    views: dict[str, DefinitionDraft]
    roles: dict[str, RoleDraft] = field(default_factory=dict)
    workflows: dict[str, WorkflowDraft] = field(default_factory=dict)
    rules: dict[str, OptionsDraft] = field(default_factory=dict)
    calendars: dict[str, OptionsDraft] = field(default_factory=dict)
    slas: dict[str, OptionsDraft] = field(default_factory=dict)

    def child(self, unit: str, modules: tuple[str, ...]) -> ScopeDraft:
        return ScopeDraft(unit, modules, dict(self.entities), dict(self.forms), dict(self.views),
                          dict(self.roles), dict(self.workflows), dict(self.rules),
                          dict(self.calendars), dict(self.slas))


@dataclass(slots=True)
class ModuleSource:
    name: str
    directory: Path
    manifest: Document
    owner: str
    depends: tuple[str, ...]
    loaded: list[Loaded]


def oldest_name(name: str, spec: Mapping[str, Any]) -> str:
    """The first name a renamed thing had: the root of its stable id."""
    history = spec.get("renamed_from")
    if isinstance(history, str):
        return history
    if isinstance(history, list) and history:
        return history[-1]
    return name


# -- modules --------------------------------------------------------------------------------

def load_modules(store: DocumentStore, library: Library, extra_dirs: tuple[Path, ...],
                 kinds_by_folder: Mapping[str, str], sink: DiagnosticSink,
                 wanted: set[str] | None = None) -> dict[str, ModuleSource]:
    """Load every module folder (only `wanted` ones when given)."""
    modules: dict[str, ModuleSource] = {}
    for directory in library.module_dirs(extra_dirs):
        if wanted is not None and directory.name not in wanted:
            continue
        manifest = store.load(directory / MODULE_MANIFEST)
        sink.extend(manifest.diagnostics)
        if manifest.doc is None or manifest.kind is None:
            continue
        if manifest.kind.name != "module":
            sink.add(manifest.doc.diagnostic("module.not-manifest", "module.yaml must define a "
                                             "module; this file defines "
                                             f"{a_or_an(manifest.kind.name)}"))
            continue
        if manifest.diagnostics:
            continue
        data = manifest.doc.data
        name = data["module"]
        if name != directory.name:
            sink.add(manifest.doc.diagnostic(
                "module.name-mismatch", f"module `{name}` lives in folder `{directory.name}`; "
                "the two must match", ("module",), hint=f"rename the folder or write "
                f"`module: {directory.name}`"))
            continue
        if name in modules:
            first = modules[name].manifest.file
            sink.add(manifest.doc.diagnostic("module.duplicate", f"module `{name}` is defined "
                                             f"twice (also in {first})", ("module",)))
            continue
        loaded = []
        for path in definition_files(directory):
            if path.name == MODULE_MANIFEST and path.parent == directory:
                continue
            item = store.load(path)
            sink.extend(item.diagnostics)
            if item.doc is None or item.kind is None:
                continue
            folder = path.relative_to(directory).parts[0] if path.parent != directory else ""
            expected = kinds_by_folder.get(folder)
            if item.kind.name in MODULE_ONLY_KINDS or (expected and expected != item.kind.name):
                want = f"{expected} definitions" if expected else "module definitions"
                sink.add(item.doc.diagnostic(
                    "module.wrong-folder", f"`{folder or '.'}/` holds {want}; this file defines "
                    f"{a_or_an(item.kind.name)}", (item.kind.key,), key=True,
                    hint=_folder_hint(item.kind.name, item.kind.folder)))
                continue
            loaded.append(item)
        modules[name] = ModuleSource(name, directory, manifest.doc, data["owner"],
                                     tuple(data.get("depends") or ()), loaded)
    return modules


def module_order(enabled: Iterable[tuple[str, Document, DocPath]],
                 modules: Mapping[str, ModuleSource], sink: DiagnosticSink) -> list[str]:
    """Enabled modules in dependency order; reports unknown, missing and cyclic ones."""
    wanted: dict[str, tuple[Document, DocPath]] = {}
    for name, doc, path in enabled:
        if name not in modules:
            sink.add(doc.diagnostic("module.unknown", f"there is no module `{name}`", path,
                                    hint=did_you_mean(name, modules) or _known("modules",
                                                                               modules)))
            continue
        wanted[name] = (doc, path)
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = " → ".join((*chain[chain.index(name):], name))
            source = modules[name]
            sink.add(source.manifest.diagnostic("module.cycle", f"modules depend on each other "
                                                f"in a circle: {cycle}", ("depends",)))
            return
        state[name] = "active"
        source = modules[name]
        for index, dep in enumerate(source.depends):
            path = ("depends", index)
            if dep not in modules:
                sink.add(source.manifest.diagnostic("module.unknown-dependency",
                                                    f"module `{name}` depends on `{dep}`, "
                                                    "which does not exist", path,
                                                    hint=did_you_mean(dep, modules) or
                                                    _known("modules", modules)))
            elif dep not in wanted:
                doc, where = wanted[name]
                sink.add(doc.diagnostic("module.missing-dependency", f"module `{name}` needs "
                                        f"`{dep}`, which is not enabled", where,
                                        hint=f"add `{dep}` to modules"))
            else:
                visit(dep, (*chain, name))
        state[name] = "done"
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def _folder_hint(kind: str, folder: str | None) -> str | None:
    if folder:
        return f"move the file to the module's `{folder}/` folder"
    if kind == "overlay":
        return "overlays live in a tenant's overlay folders (listed in tenant.yaml)"
    if kind == "tenant":
        return "a tenant is defined in tenants/<slug>/tenant.yaml"
    return None


def _known(what: str, names: Iterable[str]) -> str:
    listed = sorted(names)
    return f"{what} in this library: {', '.join(listed)}" if listed else f"there are no {what}"


# -- base scope -----------------------------------------------------------------------------

def base_scope(order: list[str], modules: Mapping[str, ModuleSource],
               sink: DiagnosticSink) -> ScopeDraft:
    """The modules' own definitions, before any overlay."""
    scope = ScopeDraft(None, tuple(order), {}, {}, {})
    for name in order:
        for item in modules[name].loaded:
            doc, kind = item.doc, item.kind
            assert doc is not None and kind is not None
            if item.diagnostics:
                continue
            if kind.name == "entity":
                _add_entity(scope, name, doc, sink)
            elif kind.name in ("form", "view"):
                _add_definition(scope, kind.name, name, doc, name, sink)
            elif kind.name == "role":
                _add_module_role(scope, name, doc, modules, sink)
            elif kind.name == "workflow" or kind.name in KEYED_KINDS:
                add_module_definition(scope, kind.name, name, doc, sink)
    return scope


def _add_entity(scope: ScopeDraft, module: str, doc: Document, sink: DiagnosticSink) -> None:
    data = doc.data
    key = f"{module}.{data['entity']}"
    if key in scope.entities:
        first = scope.entities[key].doc
        sink.add(doc.diagnostic("entity.duplicate", f"entity `{key}` is defined twice (first in "
                                f"{first.file}:{first.pos(('entity',))[0]})", ("entity",)))
        return
    entity_id = f"{module}.{oldest_name(data['entity'], data)}"
    spec = {k: v for k, v in data.items() if k != "fields"}
    fields: dict[str, FieldDraft] = {}
    naming = data.get("naming")
    if naming and naming.get("field", "number") not in data["fields"]:
        number = naming.get("field", "number")
        fields[number] = FieldDraft(number, {"type": "autonumber", "pattern": naming["autonumber"],
                                             "unique": True, "read_only": True,
                                             # English falls back to the name: "Number"
                                             "label": {"zh-Hant": "編號", "zh-Hans": "编号"}},
                                    doc, ("naming",), "module", f"{entity_id}.{number}",
                                    {"pattern": (doc, ("naming", "autonumber"))})
    for name, fspec in data["fields"].items():
        if "insert_after" in fspec:
            sink.add(doc.diagnostic("field.insert-after", "`insert_after` is for overlays; in a "
                                    "module, fields appear in the order they are written",
                                    ("fields", name, "insert_after"), key=True))
        fields[name] = FieldDraft(name, dict(fspec), doc, ("fields", name), "module",
                                  f"{entity_id}.{oldest_name(name, fspec)}")
    scope.entities[key] = EntityDraft(module, data["entity"], entity_id, spec, fields, doc)


def _entity_key(ref: str, module: str | None) -> str:
    return ref if "." in ref or module is None else f"{module}.{ref}"


def _add_definition(scope: ScopeDraft, kind: str, module: str | None, doc: Document, origin: str,
                    sink: DiagnosticSink) -> None:
    data = doc.data
    entity = _entity_key(data["entity"], module)
    if module is None:
        module = entity.split(".")[0]
    table = scope.forms if kind == "form" else scope.views
    draft = DefinitionDraft(kind, module, data[kind], {**data, "entity": entity}, doc, origin)
    if draft.key in table:
        first = table[draft.key].doc
        sink.add(doc.diagnostic(f"{kind}.duplicate", f"{kind} `{draft.key}` is defined twice "
                                f"(first in {first.file})", (kind,)))
        return
    table[draft.key] = draft


def _role_draft(scope: ScopeDraft, doc: Document, sink: DiagnosticSink) -> RoleDraft | None:
    """The role `doc` adds to (a copy, so other scopes keep theirs), or None if reserved."""
    name = doc.data["role"]
    if name in RESERVED_ROLES:
        sink.add(doc.diagnostic("role.reserved", f"`{name}` is the platform's built-in role "
                                "(it may do anything) and cannot be defined", ("role",),
                                hint="give the role another name, e.g. `crm_admin`"))
        return None
    old = scope.roles.get(name)
    draft = old.clone() if old is not None else RoleDraft(name, {}, {}, doc)
    scope.roles[name] = draft
    return draft


def _add_module_role(scope: ScopeDraft, module: str, doc: Document,
                     modules: Mapping[str, ModuleSource], sink: DiagnosticSink) -> None:
    """A module's role file: grants on the module's own entities, merged with other modules'
    grants of the same role; the first module (in order) with a text keeps it."""
    data = doc.data
    name = data["role"]
    first = scope.roles[name].modules.get(module) if name in scope.roles else None
    if first is not None:
        sink.add(doc.diagnostic("role.duplicate", f"role `{name}` is defined twice in module "
                                f"`{module}` (first in {first.file}:{first.pos(('role',))[0]})",
                                ("role",), hint="keep one file per role in a module; each "
                                "file lists every entity the role reaches"))
        return
    draft = _role_draft(scope, doc, sink)
    if draft is None:
        return
    draft.modules[module] = doc
    for option in ("label", "description"):
        if option in data and option not in draft.spec:
            draft.spec[option] = data[option]
            draft.where[option] = (doc, (option,))
    for written, spec in (data.get("grants") or {}).items():
        path = ("grants", written)
        key = _entity_key(written, module)
        owner = key.split(".", 1)[0]
        if owner != module:
            folder = ""
            if owner in modules:
                manifest = modules[owner].manifest.file
                folder = f" ({manifest.rsplit('/', 1)[0]}/roles/)" if "/" in manifest else ""
            sink.add(doc.diagnostic(
                "role.foreign-entity", f"a role in module `{module}` may grant only on "
                f"`{module}`'s own entities; `{key}` belongs to module `{owner}`", path,
                key=True, hint=f"grant it in `{owner}`'s roles folder{folder}, or in a tenant "
                "overlay"))
            continue
        if key in draft.grants and draft.grants[key].doc is doc:
            sink.add(doc.diagnostic("role.duplicate", f"role `{name}` grants on `{key}` twice in "
                                    "this file", path, key=True))
            continue
        draft.grants[key] = GrantDraft(key, spec, doc, path, module)


# -- overlays -------------------------------------------------------------------------------

@dataclass(slots=True)
class OverlayContext:
    scope: ScopeDraft
    modules: Mapping[str, ModuleSource]
    types: FieldTypeRegistry
    team: str | None
    origin: str
    sink: DiagnosticSink


def apply_overlays(ctx: OverlayContext, items: Iterable[Loaded]) -> None:
    """Apply overlay, form, view and role files in order to `ctx.scope`."""
    for item in items:
        ctx.sink.extend(item.diagnostics)
        if item.doc is None or item.kind is None or item.diagnostics:
            continue
        if item.kind.name not in OVERLAY_KINDS:
            ctx.sink.add(item.doc.diagnostic(
                "overlay.wrong-kind", f"overlay folders hold overlays (`extend:`), forms, "
                "views, roles, workflows, rules, calendars and SLA policies; this file defines "
                f"{a_or_an(item.kind.name)}", (item.kind.key,),
                key=True, hint="define new entities in a module; an overlay can add fields "
                "to an existing entity with `extend: module.entity`"
                if item.kind.name == "entity" else None))
        elif item.kind.name == "overlay":
            apply_entity_overlay(ctx, item.doc)
        elif item.kind.name == "role":
            apply_role_overlay(ctx, item.doc)
        elif item.kind.name == "workflow" or item.kind.name in KEYED_KINDS:
            apply_overlay_definition(ctx.scope, item.kind.name, item.doc, ctx.origin, ctx.sink)
        else:
            ref = item.doc.data["entity"]
            if "." not in ref:
                known = [k for k in ctx.scope.entities if k.split(".", 1)[1] == ref]
                ctx.sink.add(item.doc.diagnostic(
                    "overlay.bare-entity", f"a {item.kind.name} in an overlay folder names its "
                    f"entity with the module: `{known[0] if known else 'module.' + ref}`",
                    ("entity",), hint=f"write `entity: {known[0]}`" if len(known) == 1 else None))
                continue
            _add_definition(ctx.scope, item.kind.name, None, item.doc, ctx.origin, ctx.sink)


def apply_role_overlay(ctx: OverlayContext, doc: Document) -> None:
    """A role file in an overlay folder: each entity it lists gets this file's grant instead
    of the role's earlier one (other entities keep theirs); texts merge like labels."""
    data = doc.data
    draft = _role_draft(ctx.scope, doc, ctx.sink)
    if draft is None:
        return
    for option in ("label", "description"):
        if option in data:
            draft.spec[option] = _merge_text(draft.spec.get(option), data[option])
            draft.where[option] = (doc, (option,))
    for key, spec in (data.get("grants") or {}).items():
        path = ("grants", key)
        if "." not in key:
            known = [k for k in ctx.scope.entities if k.split(".", 1)[1] == key]
            ctx.sink.add(doc.diagnostic(
                "overlay.bare-entity", f"a role in an overlay folder names each entity with its "
                f"module: `{known[0] if known else 'module.' + key}`", path, key=True,
                hint=f"write `{known[0]}:`" if len(known) == 1 else None))
            continue
        draft.grants[key] = GrantDraft(key, spec, doc, path, ctx.origin)


def apply_entity_overlay(ctx: OverlayContext, doc: Document) -> None:
    data = doc.data
    key = data["extend"]
    if "." not in key or key not in ctx.scope.entities:
        hint = did_you_mean(key, ctx.scope.entities) or (
            "name the entity with its module, e.g. `ocrm.lead`" if "." not in key else None)
        ctx.sink.add(doc.diagnostic("overlay.unknown-entity", f"there is no entity `{key}` to "
                                    "extend in the enabled modules", ("extend",), hint=hint))
        return
    draft = ctx.scope.entities[key].clone()
    ctx.scope.entities[key] = draft
    team = data.get("team", ctx.team)
    owner = ctx.modules[draft.module].owner
    for option in ("label", "plural_label", "description"):
        if option in data:
            draft.spec[option] = _merge_text(draft.spec.get(option), data[option])
            draft.where[option] = (doc, (option,))
    for option in ("title", "search"):
        if option in data:
            draft.spec[option] = data[option]
            draft.where[option] = (doc, (option,))
    if "duplicates" in data:
        _add_match_rules(ctx, draft, doc)
    for name, spec in (data.get("fields") or {}).items():
        path = ("fields", name)
        if name in draft.fields:
            _change_field(ctx, draft, doc, path, name, spec, team, owner)
        elif "type" not in spec:
            ctx.sink.add(doc.diagnostic(
                "overlay.unknown-field", f"`{name}` is not a field of {key}; to add a new field, "
                "give it a `type`", path, key=True, hint=did_you_mean(name, draft.fields)))
        else:
            _add_field(ctx, draft, doc, path, name, spec)


def _add_match_rules(ctx: OverlayContext, draft: EntityDraft, doc: Document) -> None:
    """An overlay's `duplicates`: each match rule replaces the same-named one or is added."""
    rules = list(draft.spec.get("duplicates") or ())
    names = [r["rule"] for r in rules]
    seen: set[str] = set()
    for index, rule in enumerate(doc.data["duplicates"]):
        name = rule["rule"]
        if name in seen:
            ctx.sink.add(doc.diagnostic("duplicates.duplicate-rule", f"match rule `{name}` is "
                                        "listed twice", ("duplicates", index, "rule"),
                                        hint="give each match rule its own name"))
            continue
        seen.add(name)
        if name in names:
            rules[names.index(name)] = rule
        else:
            rules.append(rule)
            names.append(name)
        draft.where[f"duplicates.{name}"] = (doc, ("duplicates", index))
    draft.spec["duplicates"] = rules


def _add_field(ctx: OverlayContext, draft: EntityDraft, doc: Document, path: DocPath, name: str,
               spec: Mapping[str, Any]) -> None:
    if isinstance(spec.get("options"), Mapping):
        ctx.sink.add(doc.diagnostic("overlay.options-patch-on-new-field", f"`{name}` is a new "
                                    "field: list its options instead of using add/relabel",
                                    (*path, "options")))
        return
    clean = {k: v for k, v in spec.items() if k != "insert_after"}
    new = FieldDraft(name, clean, doc, path, ctx.origin, f"{draft.id}.{oldest_name(name, spec)}")
    draft.fields = _placed(ctx, draft, doc, path, new, spec.get("insert_after"))


def _placed(ctx: OverlayContext, draft: EntityDraft, doc: Document, path: DocPath,
            new: FieldDraft, after: str | None) -> dict[str, FieldDraft]:
    fields = {k: v for k, v in draft.fields.items() if k != new.name}
    if after is None:
        fields[new.name] = new
        return fields
    if after not in fields:
        ctx.sink.add(doc.diagnostic("overlay.unknown-insert-after", f"insert_after names "
                                    f"`{after}`, which is not a field of {draft.key}",
                                    (*path, "insert_after"), hint=did_you_mean(after, fields)))
        fields[new.name] = new
        return fields
    placed: dict[str, FieldDraft] = {}
    for key, value in fields.items():
        placed[key] = value
        if key == after:
            placed[new.name] = new
    return placed


def _change_field(ctx: OverlayContext, draft: EntityDraft, doc: Document, path: DocPath,
                  name: str, spec: Mapping[str, Any], team: str | None, owner: str) -> None:
    old = draft.fields[name]
    new = FieldDraft(name, dict(old.spec), old.doc, old.path, old.origin, old.id, dict(old.where))
    where = f"`{draft.key}.{name}`"

    def refuse(option: str, what: str, hint: str = "") -> None:
        who = f"team `{team}`" if team else "an overlay without a team"
        ctx.sink.add(doc.diagnostic(
            "overlay.not-owner", f"{who} does not own module `{draft.module}` (owner: "
            f"`{owner}`) and may not {what}", (*path, option), key=True,
            hint=hint or f"ask `{owner}` to change the module, or add a new field in this "
            "overlay; overlays may add fields and options and change labels, help, defaults "
            "and hiding"))

    for option, value in spec.items():
        location = (doc, (*path, option))
        if option == "insert_after":
            continue
        if option == "type" and value != old.spec["type"]:
            old_type = ctx.types[old.spec["type"]]
            if value not in old_type.widens_to:
                ctx.sink.add(doc.diagnostic(
                    "overlay.type-change", f"{where} is {a_or_an(old_type.name)} field; an "
                    f"overlay may not make it {a_or_an(str(value))} field: existing values "
                    "could not be kept", (*path, option),
                    hint=_widen_hint(old_type.name, old_type.widens_to)))
            elif team != owner:
                refuse(option, f"widen the type of {where}")
            else:
                new.spec[option], new.where[option] = value, location
        elif option == "options":
            if isinstance(value, Mapping):
                _patch_options(ctx, new, doc, (*path, option), value)
            elif team != owner:
                refuse(option, f"replace the options of {where}",
                       "to add options, write `options: {add: [...]}`; to rename one, "
                       "`options: {relabel: {value: label}}`")
            else:
                new.spec[option], new.where[option] = value, location
        elif option == "required" and value is False and old.spec.get("required") \
                and team != owner:
            refuse(option, f"make {where} optional: the module requires it")
        elif option in STRUCTURAL_OPTIONS and value != old.spec.get(option) and team != owner:
            refuse(option, f"change `{option}` of {where}")
        elif option in TEXT_OPTIONS:
            new.spec[option] = _merge_text(old.spec.get(option), value)
            new.where[option] = location
        else:
            new.spec[option], new.where[option] = value, location
    draft.fields[name] = new
    if "insert_after" in spec:
        draft.fields = _placed(ctx, draft, doc, path, new, spec["insert_after"])


def _widen_hint(name: str, widens_to: frozenset[str]) -> str:
    if widens_to:
        return f"{a_or_an(name)} field may only be widened to {', '.join(sorted(widens_to))}"
    return "add a new field with the type you need instead"


def _patch_options(ctx: OverlayContext, field_draft: FieldDraft, doc: Document, path: DocPath,
                   patch: Mapping[str, Any]) -> None:
    current = list(field_draft.spec.get("options") or [])
    if "options" not in ctx.types[field_draft.spec["type"]].options_schema:
        ctx.sink.add(doc.diagnostic("overlay.no-options", f"`{field_draft.name}` is "
                                    f"{a_or_an(field_draft.spec['type'])} field and has no "
                                    "options", path))
        return
    values = [o["value"] if isinstance(o, Mapping) else o for o in current]
    for index, option in enumerate(patch.get("add") or ()):
        value = option["value"] if isinstance(option, Mapping) else option
        if value in values:
            ctx.sink.add(doc.diagnostic("overlay.option-exists", f"option `{value}` already "
                                        f"exists on `{field_draft.name}`", (*path, "add", index)))
            continue
        current.append(option)
        values.append(value)
    for value, label in (patch.get("relabel") or {}).items():
        if value not in values:
            ctx.sink.add(doc.diagnostic(
                "overlay.unknown-option", f"`{value}` is not an option of `{field_draft.name}`",
                (*path, "relabel", value), key=True, hint=did_you_mean(value, values)))
            continue
        index = values.index(value)
        option = current[index]
        base = option if isinstance(option, Mapping) else {"value": option}
        current[index] = {**base, "label": _merge_text(base.get("label"), label)}
    field_draft.spec["options"] = current
    field_draft.where["options"] = (doc, path)


def _merge_text(old: Any, new: Any) -> Any:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {**old, **new}
    return new


# -- tenant ---------------------------------------------------------------------------------

def tenant_config(doc: Document, directory: Path, sink: DiagnosticSink) -> TenantConfig:
    """The tenant's settings; reports unknown parents, cycles and unknown unit modules."""
    data = doc.data
    modules = tuple(data["modules"])
    units: dict[str, Unit] = {}
    raw_units = data.get("business_units") or {}
    for name, spec in raw_units.items():
        parent = spec.get("parent")
        if parent is not None and parent not in raw_units:
            sink.add(doc.diagnostic("tenant.unknown-parent", f"unit `{name}` names parent "
                                    f"`{parent}`, which is not a business unit",
                                    ("business_units", name, "parent"),
                                    hint=did_you_mean(parent, raw_units)))
            parent = None
        for index, module in enumerate(spec.get("modules") or ()):
            if module not in modules:
                sink.add(doc.diagnostic("tenant.unit-module", f"unit `{name}` enables module "
                                        f"`{module}`, which the tenant does not enable",
                                        ("business_units", name, "modules", index)))
        units[name] = Unit(name, Text.of(spec.get("label"), name), parent, spec.get("team"),
                           tuple(spec.get("modules") or modules), tuple(spec.get("overlays") or ()))
    for name in units:
        seen, current = [name], units[name].parent
        while current is not None:
            if current in seen:
                sink.add(doc.diagnostic("tenant.unit-cycle", f"business units are each other's "
                                        f"parents: {' → '.join([*seen, current])}",
                                        ("business_units", name, "parent")))
                units[name] = Unit(name, units[name].label, None, units[name].team,
                                   units[name].modules, units[name].overlays)
                break
            seen.append(current)
            current = units[current].parent
    locale = data.get("locale", "en")
    permissions = data.get("permissions") or {}
    return TenantConfig(
        data["tenant"], Text.of(data.get("label"), data["tenant"]), locale,
        tuple(data.get("locales") or (locale,)), data.get("timezone", "UTC"), data.get("team"),
        modules, tuple(data.get("overlays") or ()), FrozenDict(units),
        FrozenDict(data.get("settings") or {}), directory,
        permissions.get("headquarters", HEADQUARTERS_MODES[0]))


def unit_order(units: Mapping[str, Unit]) -> list[str]:
    """Units with every parent before its children."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        parent = units[name].parent
        if parent is not None:
            visit(parent)
        order.append(name)

    for name in units:
        visit(name)
    return order


def overlay_files(store: DocumentStore, doc: Document, base: Path, folders: Iterable[str],
                  path: DocPath, sink: DiagnosticSink) -> list[Loaded]:
    """Load the files of overlay folders listed in tenant.yaml, reporting missing ones."""
    items: list[Loaded] = []
    for index, folder in enumerate(folders):
        target = (base / folder).resolve()
        if target != base.resolve() and base.resolve() not in target.parents:
            sink.add(doc.diagnostic("tenant.overlay-outside", f"overlay folder `{folder}` is "
                                    "outside the tenant's folder", (*path, index),
                                    hint="a tenant's overlays live in its own folder, e.g. "
                                    "overlays/retail"))
            continue
        if not target.exists():
            here = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_dir())
            sink.add(doc.diagnostic("tenant.missing-overlay", f"overlay folder `{folder}` does "
                                    "not exist", (*path, index),
                                    hint=f"folders are relative to {doc.file}; the folders "
                                    f"there are {', '.join(here[:12])}" if here else
                                    f"create it next to {doc.file}"))
            continue
        items.extend(store.load(p) for p in definition_files(target))
    return items
