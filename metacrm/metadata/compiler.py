"""The compiler: files → documents → resolved scopes → checked, immutable Registry.

Passes run in a fixed order and every pass reports into one sink, so a run lists
all problems. Two caches make recompiling cheap: an input fingerprint (the files'
content hashes) returns the previous result when nothing changed, and the content
hash of the resolved definitions lets tenants with identical definitions share one
Registry object.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from ..engines.actions import ActionRegistry
from ..engines.conditions import OperatorRegistry
from ..plugins import make_plugin_manager
from .automation_build import AutomationBuilder
from .build import Builder, content_hash, merge_storage, relations_of
from .checks import CONDITION_OPERATORS, CheckContext
from .diagnostics import Diagnostic, DiagnosticSink
from .fieldtypes import FieldTypeRegistry
from .ir import FrozenDict, Module, Registry, Scope, Text, thaw
from .kinds import KindRegistry
from .library import Library, definition_files
from .loader import Document
from .resolve import (
    ModuleSource,
    OverlayContext,
    ScopeDraft,
    TenantConfig,
    apply_overlays,
    base_scope,
    load_modules,
    module_order,
    overlay_files,
    tenant_config,
    unit_order,
)
from .sources import DocumentStore
from .validate import SchemaValidator

LIBRARY_TENANT = "_library"


@dataclass(frozen=True, slots=True)
class CompileResult:
    """A compiled tenant, or the diagnostics saying why it did not compile."""

    tenant: TenantConfig | None
    registry: Registry | None
    diagnostics: tuple[Diagnostic, ...]
    fingerprint: str = ""
    files: tuple[tuple[str, str, str], ...] = ()
    """(file, sha256, owner) of every file read: owner is `module:<name>`, `tenant` or
    `unit:<name>` (the part of the definitions whose team must approve a change)."""

    @property
    def ok(self) -> bool:
        return self.registry is not None


class Compiler:
    """Compiles tenants of one library; keep one per process (e.g. in app.extensions)."""

    def __init__(self, library: Library, plugin_manager: pluggy.PluginManager | None = None):
        self.library = library
        self.plugins = plugin_manager or make_plugin_manager()
        self.types = FieldTypeRegistry.from_plugins(self.plugins)
        self.kinds = KindRegistry.from_plugins(self.plugins)
        self.validator = SchemaValidator(self.kinds, self.types)
        self.store = DocumentStore(library, self.validator)
        self.checks = [c for batch in self.plugins.hook.register_checks() for c in batch]
        operators = [o for batch in self.plugins.hook.register_condition_operators()
                     for o in batch]
        self.operator_names = frozenset(o.name for o in operators) or CONDITION_OPERATORS
        self.condition_operators = OperatorRegistry(operators)
        self.actions = ActionRegistry.from_plugins(self.plugins)
        self.kinds_by_folder = {k.folder: k.name for k in self.kinds if k.folder}
        self._results: dict[str, CompileResult] = {}
        self._registries: weakref.WeakValueDictionary[str, Registry] = \
            weakref.WeakValueDictionary()

    # -- public entry points ----------------------------------------------------------------

    def compile_tenant(self, slug: str, trace: dict[str, Any] | None = None) -> CompileResult:
        """Compile tenant `slug` from tenants/<slug>/tenant.yaml.

        `trace`, when given, receives each pass's output (see metadata/snapshot.py) and
        bypasses the result cache.
        """
        with _gc_paused():
            return self._compile_file(self.library.tenant_file(slug), trace)

    def compile_library(self, modules: Iterable[str] | None = None) -> CompileResult:
        """Compile modules on their own (all of them by default), with no tenant overlays."""
        with _gc_paused():
            return self._compile_library(modules)

    def _compile_library(self, modules: Iterable[str] | None) -> CompileResult:
        sink = DiagnosticSink()
        wanted = set(modules) if modules is not None else None
        sources = load_modules(self.store, self.library, (), self.kinds_by_folder, sink, wanted)
        names = sorted(sources) if wanted is None else sorted(wanted)
        fake = Document(LIBRARY_TENANT, {"modules": names}, _empty_map(), "")
        enabled = [(n, fake, ("modules", i)) for i, n in enumerate(names)]
        closure = _dependency_closure(names, sources)
        enabled += [(n, fake, ()) for n in closure if n not in names]
        order = module_order(enabled, sources, sink)
        config = TenantConfig(LIBRARY_TENANT, Text.of(None, "library"), "en", ("en",), "UTC",
                              None, tuple(order), (), FrozenDict(), FrozenDict(),
                              self.library.root)
        return self._finish(config, sources, order, [], sink)

    # -- pipeline ---------------------------------------------------------------------------

    def _compile_file(self, tenant_file: Path, trace: dict[str, Any] | None = None
                      ) -> CompileResult:
        loaded = self.store.load(tenant_file)
        if loaded.doc is None or loaded.kind is None or loaded.diagnostics:
            return CompileResult(None, None, loaded.diagnostics or (
                Diagnostic("tenant.missing", "no tenant definition here", loaded.file),))
        if loaded.kind.name != "tenant":
            return CompileResult(None, None, (loaded.doc.diagnostic(
                "tenant.not-tenant", f"tenant.yaml must define a tenant; this file defines a "
                f"{loaded.kind.name}"),))
        doc = loaded.doc
        directory = tenant_file.parent
        if doc.data["tenant"] != directory.name:
            return CompileResult(None, None, (doc.diagnostic(
                "tenant.slug-mismatch", f"tenant `{doc.data['tenant']}` lives in folder "
                f"`{directory.name}`; the two must match", ("tenant",),
                hint=f"write `tenant: {directory.name}` or rename the folder"),))
        local_modules = (directory / "modules",)
        fingerprint = self._fingerprint(doc, directory, local_modules, loaded.digest)
        cached = self._results.get(fingerprint)
        if cached is not None and trace is None:
            return cached
        sink = DiagnosticSink()
        config = tenant_config(doc, directory, sink)
        wanted = self._needed_modules(config.modules, local_modules)
        sources = load_modules(self.store, self.library, local_modules, self.kinds_by_folder,
                               sink, wanted)
        enabled = [(name, doc, ("modules", i)) for i, name in enumerate(config.modules)]
        order = module_order(enabled, sources, sink)
        layers = [(None, config.team, overlay_files(self.store, doc, directory, config.overlays,
                                                    ("overlays",), sink))]
        for name in unit_order(config.units):
            unit = config.units[name]
            items = overlay_files(self.store, doc, directory, unit.overlays,
                                  ("business_units", name, "overlays"), sink)
            layers.append((name, _unit_team(config, name), items))
        if trace is not None:
            trace.update(tenant=loaded, sources=sources, layers=layers)
        result = self._finish(config, sources, order, layers, sink, trace)
        result = CompileResult(result.tenant, result.registry, result.diagnostics, fingerprint,
                               _owned_files(loaded, sources, order, layers))
        if result.ok:
            self._results = {k: v for k, v in self._results.items()
                             if v.tenant is None or v.tenant.slug != config.slug}
            self._results[fingerprint] = result
        return result

    def _finish(self, config: TenantConfig, sources: dict[str, ModuleSource], order: list[str],
                layers: list[tuple[str | None, str | None, list[Any]]],
                sink: DiagnosticSink, trace: dict[str, Any] | None = None) -> CompileResult:
        base = base_scope(order, sources, sink)
        scopes: dict[str, ScopeDraft] = {}
        for unit, team, items in layers:
            if unit is None:
                scope = base
                scope.unit = None
            else:
                parent = config.units[unit].parent
                scope = scopes[parent or ""].child(unit, config.units[unit].modules)
            apply_overlays(OverlayContext(scope, sources, self.types, team,
                                          f"unit:{unit}" if unit else "tenant", sink), items)
            scopes[unit or ""] = scope
        if not scopes:
            scopes[""] = base
        modules = {name: self._module(sources[name], base) for name in order}
        units = {n: thaw(_unit_json(u)) for n, u in config.units.items()}
        version = content_hash({n: _module_json(m) for n, m in modules.items()}, units,
                               list(scopes.values()))
        if trace is not None:
            trace.update(order=order, scopes=scopes, version=version)
        if sink.has_errors:
            # Still build and check what did resolve, so one run reports every problem.
            self._build(version, modules, config, scopes, sink)
            return CompileResult(config, None, sink.sorted())
        shared = self._registries.get(version)
        if shared is not None:
            for scope in shared.scopes.values():
                self._check(scope, shared.modules, sink)
            return CompileResult(config, shared, sink.sorted())
        registry = self._build(version, modules, config, scopes, sink)
        if sink.has_errors:
            return CompileResult(config, None, sink.sorted())
        self._registries[version] = registry
        return CompileResult(config, registry, sink.sorted())

    def _build(self, version: str, modules: dict[str, Module], config: TenantConfig,
               scopes: dict[str, ScopeDraft], sink: DiagnosticSink) -> Registry:
        builder = Builder(self.types, sink)
        automation = AutomationBuilder(sink)
        frozen_modules = FrozenDict(modules)
        built: dict[str, Scope] = {}
        for name, draft in scopes.items():
            entities = FrozenDict({k: builder.entity(e) for k, e in draft.entities.items()})
            scope = Scope(draft.unit, draft.modules, entities,
                          FrozenDict({k: builder.form(f) for k, f in draft.forms.items()}),
                          FrozenDict({k: builder.view(v) for k, v in draft.views.items()}),
                          FrozenDict({k: builder.role(r) for k, r in draft.roles.items()}),
                          FrozenDict({k: automation.workflow(w, entities)
                                      for k, w in draft.workflows.items()}),
                          FrozenDict({k: automation.rule(r) for k, r in draft.rules.items()}),
                          FrozenDict({k: automation.calendar(c)
                                      for k, c in draft.calendars.items()}),
                          FrozenDict({k: automation.sla(p) for k, p in draft.slas.items()}))
            built[name] = scope
            self._check(scope, frozen_modules, sink)
        ordered = [built[""], *(built[n] for n in built if n)]
        storage = merge_storage([dict(s.entities) for s in ordered], self.types, sink)
        units = FrozenDict({name: dataclasses.replace(unit, overlays=())
                            for name, unit in config.units.items()})
        return Registry(version, frozen_modules, FrozenDict(storage), FrozenDict(built),
                        units, relations_of(storage))

    def _check(self, scope: Scope, modules: FrozenDict[str, Module], sink: DiagnosticSink) -> None:
        context = CheckContext(scope, modules, self.types, self.operator_names,
                               self.condition_operators, self.actions)
        for check in self.checks:
            sink.extend(check(context))

    @staticmethod
    def _module(source: ModuleSource, base: ScopeDraft) -> Module:
        data = source.manifest.data
        from .build import source_of

        return Module(data["module"], data.get("version", "0.0.0"),
                      Text.of(data.get("label"), data["module"]), data["owner"],
                      tuple(data.get("depends") or ()),
                      tuple(k for k, e in base.entities.items() if e.module == source.name),
                      Text.of(data.get("description")), source_of(source.manifest, ("module",)))

    def _needed_modules(self, enabled: Iterable[str], local: tuple[Path, ...]) -> set[str]:
        """Enabled modules and their dependencies, by folder: other modules are not loaded,
        so a broken module that a tenant does not use cannot break that tenant."""
        folders = {d.name: d for d in self.library.module_dirs(local)}
        needed: set[str] = set()
        stack = list(enabled)
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            needed.add(name)
            if name not in folders:
                continue
            manifest = self.store.load(folders[name] / "module.yaml")
            data = manifest.doc.data if manifest.doc is not None else None
            if isinstance(data, dict) and isinstance(data.get("depends"), list):
                stack.extend(d for d in data["depends"] if isinstance(d, str))
        return needed

    def _fingerprint(self, doc: Document, directory: Path, local: tuple[Path, ...],
                     tenant_digest: str) -> str:
        """A hash of every input file's content hash, unchanged files costing one stat."""
        digest = hashlib.sha256(tenant_digest.encode())
        folders = [*self.library.module_dirs(local)]
        data = doc.data
        overlays = list(data.get("overlays") or ())
        for unit in (data.get("business_units") or {}).values():
            overlays.extend(unit.get("overlays") or ())
        folders.extend((directory / o).resolve() for o in overlays)
        for folder in folders:
            for path in definition_files(folder):
                item = self.store.load(path)
                digest.update(f"{item.file}\0{item.digest}\n".encode())
        digest.update(",".join(sorted(self.types.names())).encode())
        return digest.hexdigest()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while compiling: a compile allocates hundreds of
    thousands of short-lived objects and frees them by reference counting (about a third of
    a cold compile went to collections that found nothing)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _owned_files(tenant: Any, sources: dict[str, ModuleSource], order: list[str],
                 layers: list[tuple[str | None, str | None, list[Any]]]
                 ) -> tuple[tuple[str, str, str], ...]:
    files = [(tenant.file, tenant.digest, "tenant")]
    for name in order:
        if name not in sources:
            continue
        source = sources[name]
        files.append((source.manifest.file, source.manifest.digest, f"module:{name}"))
        files += [(item.file, item.digest, f"module:{name}") for item in source.loaded]
    for unit, _, items in layers:
        owner = f"unit:{unit}" if unit else "tenant"
        files += [(item.file, item.digest, owner) for item in items]
    return tuple(files)


def _unit_team(config: TenantConfig, name: str) -> str | None:
    """A unit's team: its own, else its nearest parent's, else the tenant's."""
    current: str | None = name
    while current is not None:
        unit = config.units[current]
        if unit.team:
            return unit.team
        current = unit.parent
    return config.team


def _dependency_closure(names: list[str], sources: dict[str, ModuleSource]) -> list[str]:
    seen: list[str] = []
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen or name not in sources:
            continue
        seen.append(name)
        stack.extend(sources[name].depends)
    return seen


def _module_json(module: Module) -> dict[str, Any]:
    return {"version": module.version, "owner": module.owner, "depends": list(module.depends),
            "label": list(module.label.values), "description": list(module.description.values)}


def _unit_json(unit: Any) -> dict[str, Any]:
    return {"label": list(unit.label.values), "parent": unit.parent, "team": unit.team,
            "modules": list(unit.modules)}


def _empty_map():
    from .loader import SourceMap

    return SourceMap({(): (1, 1)}, {})
