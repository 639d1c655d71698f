"""The running platform: every tenant's current Registry, tables and database, swapped whole.

A reload compiles the definitions, plans and applies the migration, and only then
swaps the tenant's runtime. An invalid definition or a refused plan keeps the old
runtime serving and says why. Processes converge through the version recorded in
each tenant's own database, checked at most once per ``check_interval`` seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pluggy
import sqlalchemy as sa

from ..generators.catalog import Catalog
from ..generators.planner import Plan
from ..generators.specs import TableSpec, registry_specs
from ..generators.tables import TenantTables, build_tables
from ..metadata.compiler import Compiler
from ..metadata.diagnostics import Diagnostic
from ..metadata.fieldtypes import FieldTypeRegistry
from ..metadata.ir import Registry
from ..metadata.library import Library
from ..metadata.resolve import TenantConfig
from .connections import SharedConnection, request_connection
from .database import Databases, TenantDatabase
from .events import RecordEvent
from .migrator import MigrationRefused, migrate, migration_transaction, plan_only
from .settings import Settings
from .store import PlatformStore
from .systables import ensure_system_tables, runtime_system_tables

log = logging.getLogger(__name__)


class CompiledCache(OrderedDict):
    """A bounded statement cache for one Registry version (dropped with the version)."""

    def __init__(self, size: int = 500) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if len(self) > self.size:
            self.popitem(last=False)


@dataclass(frozen=True, slots=True)
class TenantRuntime:
    """One tenant on one Registry version: everything a request needs."""

    slug: str
    config: TenantConfig
    registry: Registry
    tables: TenantTables
    db: TenantDatabase
    types: FieldTypeRegistry
    compiled_cache: CompiledCache = field(default_factory=CompiledCache, compare=False)
    extras: dict[str, Any] = field(default_factory=dict, compare=False)
    """Per-version caches (schemas, table access); they go with the version."""
    platform: Any = field(default=None, compare=False, repr=False)
    """The Platform serving this runtime (engines reach jobs and plugins through it)."""

    @property
    def hooks(self) -> Any:
        """The plugin hooks (None for a runtime built outside a Platform)."""
        return None if self.platform is None else self.platform.plugins.hook

    @property
    def version(self) -> str:
        return self.registry.version

    def connect(self) -> Any:
        """A connection bound to this tenant and this version's statement cache, to read
        with; inside an API or admin request, the request's one connection
        (`request_connection`)."""
        shared = self.request_connection()
        if shared is not None:
            return shared.reading()
        return self.db.connect(compiled_cache=self.compiled_cache)

    def begin(self) -> Any:
        """A write transaction; inside an API or admin request, on the request's one
        connection (a savepoint when a write is already under way on it)."""
        shared = self.request_connection()
        if shared is not None:
            return shared.writing()
        return self.db.begin(compiled_cache=self.compiled_cache)

    def request_connection(self) -> SharedConnection | None:
        """This request's shared connection to the tenant (metacrm.platform.connections),
        or None outside a request of a sub-app that installed them."""
        return request_connection(self.slug, self.db, {"compiled_cache": self.compiled_cache})


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a reload did for one tenant."""

    slug: str
    ok: bool
    changed: bool
    version: str | None
    previous: str | None
    diagnostics: tuple[Diagnostic, ...] = ()
    plan: Plan | None = None
    error: str | None = None
    forbidden: bool = False  # refused because the actor does not own what changed

    def format(self) -> str:
        if not self.ok:
            head = f"{self.slug}: kept version {self.previous or 'none'}"
            body = [d.format() for d in self.diagnostics]
            if self.error:
                body.append(self.error)
            return "\n".join([head, *body])
        if not self.changed:
            return f"{self.slug}: unchanged at {self.version}"
        return f"{self.slug}: {self.previous or 'new'} → {self.version}"


class UnknownTenant(LookupError):
    """No active tenant by that slug."""


class Platform:
    """Per-app state: compiler, databases, platform store and tenants' runtimes."""

    def __init__(self, settings: Settings, plugin_manager: pluggy.PluginManager | None = None,
                 *, check_interval: float = 1.0) -> None:
        self.settings = settings
        self.library = Library.at(settings.root)
        self.compiler = Compiler(self.library, plugin_manager)
        self.databases = Databases(settings)
        self.store = PlatformStore(self.databases)
        self.check_interval = check_interval
        self._runtimes: dict[str, TenantRuntime] = {}
        self._checked: dict[str, float] = {}
        self._files: dict[str, tuple[tuple[str, str, str], ...]] = {}
        """Per tenant: (file, digest, owner) of the definitions being served (ownership)."""
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[RecordEvent], None]] = []
        self._specs: OrderedDict[str, dict[str, TableSpec]] = OrderedDict()
        self._catalog = Catalog()
        self._statement_cache = CompiledCache(50)
        self._operators: Any = None
        self.clock: Callable[[], dt.datetime] = partial(dt.datetime.now, dt.UTC)
        """What time it is for the engines (sweeps, SLA clocks); tests set their own."""
        self.extensions: dict[str, Any] = {}
        """Per-platform state of engines and plugins (jobs, channels, rule engine), by name."""
        self.store.upgrade()

    # -- events and engines -------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The engines' current time (aware, UTC), from `clock`."""
        return self.clock()

    @property
    def plugins(self) -> pluggy.PluginManager:
        return self.compiler.plugins

    @property
    def operators(self) -> Any:
        """The condition operators registered by plugins (built once)."""
        if self._operators is None:
            from ..engines.conditions import OperatorRegistry

            self._operators = OperatorRegistry.from_plugins(self.plugins)
        return self._operators

    def subscribe(self, callback: Callable[[RecordEvent], None]) -> None:
        """Call `callback` with every committed record event (in-process)."""
        self._subscribers.append(callback)

    def emit(self, event: RecordEvent) -> None:
        """Deliver a committed record event to plugins and subscribers.

        The change is already committed: one failing receiver is logged and never keeps
        the others from the event.
        """
        plugins = [partial(impl.function, **{k: v for k, v in
                                             (("event", event), ("platform", self))
                                             if k in impl.argnames})
                   for impl in self.plugins.hook.record_event.get_hookimpls()]
        subscribers = [partial(callback, event) for callback in self._subscribers]
        for deliver in [*plugins, *subscribers]:
            try:
                deliver()
            except Exception:
                log.exception("record event receiver %r failed for %s %s", deliver.func,
                              event.entity, event.record_id)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._runtimes.clear()
        self.databases.dispose()

    def desired_specs(self, registry: Registry) -> dict[str, TableSpec]:
        """The table specs a Registry needs (kept for the last few versions)."""
        specs = self._specs.get(registry.version)
        if specs is None:
            specs = registry_specs(registry, self.compiler.types)
            self._specs[registry.version] = specs
            while len(self._specs) > 8:
                self._specs.popitem(last=False)
        return specs

    def create_tenant(self, slug: str, *, allow_destructive: bool = False) -> ReloadReport:
        """Provision tenant `slug` from tenants/<slug>/tenant.yaml (idempotent)."""
        result = self.compiler.compile_tenant(slug)
        if result.registry is None or result.tenant is None:
            return ReloadReport(slug, False, False, None, None, result.diagnostics,
                                error=f"tenant {slug!r} does not compile")
        self.store.add(slug, result.tenant.label.get(result.tenant.locale))
        return self.reload(slug, allow_destructive=allow_destructive)

    def archive_tenant(self, slug: str) -> bool:
        with self._lock:
            self._runtimes.pop(slug, None)
        return self.store.archive(slug)

    def active_slugs(self) -> list[str]:
        return [t.slug for t in self.store.list() if t.status == "active"]

    # -- reload -------------------------------------------------------------------------------

    def plan(self, slug: str) -> tuple[Plan | None, tuple[Diagnostic, ...]]:
        """The migration `reload` would apply now, or the diagnostics blocking it."""
        result = self.compiler.compile_tenant(slug)
        if result.registry is None:
            return None, result.diagnostics
        version = result.registry.version
        current = self._db_version(slug)
        if current == version:
            return Plan(slug, current, version, ()), result.diagnostics
        db = self.databases.tenant(slug)
        return plan_only(db, self.desired_specs(result.registry), version), result.diagnostics

    def reload(self, slug: str, *, allow_destructive: bool = False,
               actor: Any = None) -> ReloadReport:
        """Compile, migrate and swap tenant `slug`; on any failure keep the old runtime.

        With `actor` (a Principal), the reload is refused unless the actor maintains the
        team of every module, tenant overlay or business unit whose definitions changed.
        """
        with self._lock:
            previous = self._runtimes.get(slug)
            previous_version = previous.version if previous else self._db_version(slug)
            result = self.compiler.compile_tenant(slug)
            if result.registry is None or result.tenant is None:
                return ReloadReport(slug, False, False, None, previous_version,
                                    result.diagnostics, error="definitions do not compile")
            registry = result.registry
            if actor is not None:
                refused = self._ownership_refusals(previous, registry, result.tenant, actor,
                                                   result.files)
                if refused:
                    return ReloadReport(slug, False, False, None, previous_version,
                                        result.diagnostics, error="; ".join(refused),
                                        forbidden=True)
            db = self.databases.tenant(slug)
            desired = self.desired_specs(registry)
            try:
                migration = migrate(db, desired, registry.version,
                                    allow_destructive=allow_destructive)
            except MigrationRefused as refused:
                self.store.record_migration(slug, refused.plan.to_dict(), "refused",
                                            destructive=True, error=str(refused))
                return ReloadReport(slug, False, False, None, previous_version,
                                    result.diagnostics, refused.plan, str(refused))
            except Exception as exc:
                return ReloadReport(slug, False, False, None, previous_version,
                                    result.diagnostics, error=f"migration failed: {exc}")
            if migration.applied or previous is None:
                with migration_transaction(db) as connection:  # under the lock: no CREATE race
                    ensure_system_tables(connection, self.plugins)
            if migration.applied:
                self.store.record_migration(
                    slug, migration.plan.to_dict(), "applied",
                    destructive=bool(migration.plan.destructive), seconds=migration.seconds)
            self.store.record_version(slug, registry.version, {
                "entities": len(registry.entities), "units": list(registry.units)})
            self._swap(slug, result.tenant, registry, db, desired)
            self._files[slug] = result.files
            return ReloadReport(slug, True, previous_version != registry.version,
                                registry.version, previous_version, result.diagnostics,
                                migration.plan)

    def _ownership_refusals(self, previous: TenantRuntime | None, registry: Registry,
                            config: TenantConfig, actor: Any,
                            files: tuple[tuple[str, str, str], ...]) -> list[str]:
        from .identity import teams_of
        from .ownership import changed_owners, owner_teams, refusals

        if previous is None or previous.slug not in self._files:
            return ["the tenant is not loaded; an operator reloads it first"]
        owners = changed_owners(self._files[previous.slug], files)
        if not owners:
            return []
        teams = owner_teams(owners, previous.registry, registry, config)
        with previous.connect() as connection:
            maintained = teams_of(connection, runtime_system_tables(previous), actor.user_id,
                                  {t for t in teams.values() if t})
        return refusals(teams, maintained)

    def reload_all(self, *, allow_destructive: bool = False) -> Iterator[ReloadReport]:
        for slug in self.active_slugs():
            yield self.reload(slug, allow_destructive=allow_destructive)

    def _swap(self, slug: str, config: TenantConfig, registry: Registry, db: TenantDatabase,
              desired: dict[str, TableSpec]) -> TenantRuntime:
        current = self._runtimes.get(slug)
        if current is not None and current.registry is registry and current.config == config:
            self._checked[slug] = time.monotonic()
            return current
        keys = {entity.id: key for key, entity in registry.entities.items()}
        runtime = TenantRuntime(slug, config, registry, build_tables(desired, keys), db,
                                self.compiler.types, platform=self)
        self._runtimes[slug] = runtime
        self._checked[slug] = time.monotonic()
        return runtime

    def _db_version(self, slug: str) -> str | None:
        """The version the tenant's database records, in one round trip (None: new)."""
        db = self.databases.tenant(slug)
        with db.connect(compiled_cache=self._statement_cache) as connection:
            try:
                return self._catalog.version(connection)
            except sa.exc.DBAPIError:
                connection.rollback()
                return None

    # -- requests -----------------------------------------------------------------------------

    def runtime(self, slug: str) -> TenantRuntime:
        """The tenant's current runtime, converging on the version its database records."""
        runtime = self._runtimes.get(slug)
        now = time.monotonic()
        if runtime is not None and now - self._checked.get(slug, 0.0) < self.check_interval:
            return runtime
        with self._lock:
            record = self.store.get(slug)
            if record is None or record.status != "active":  # maybe archived by another process
                self._runtimes.pop(slug, None)
                raise UnknownTenant(slug)
            runtime = self._runtimes.get(slug)
            if runtime is None or self._db_version(slug) != runtime.version:
                return self._adopt(slug)
            self._checked[slug] = now
            return runtime

    def _adopt(self, slug: str) -> TenantRuntime:
        """Take the version another process migrated to (files are shared by deployment)."""
        result = self.compiler.compile_tenant(slug)
        db_version = self._db_version(slug)
        current = self._runtimes.get(slug)
        if result.registry is None or result.tenant is None or db_version is None:
            if current is not None:
                return current
            raise UnknownTenant(slug)
        if result.registry.version != db_version:
            report = self.reload(slug)
            if not report.ok and current is not None:
                return current
            if not report.ok:
                raise UnknownTenant(slug)
            return self._runtimes[slug]
        db = self.databases.tenant(slug)
        self._files[slug] = result.files
        return self._swap(slug, result.tenant, result.registry, db,
                          self.desired_specs(result.registry))
