"""The `metacrm` command."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from .metadata.compiler import Compiler, CompileResult
from .metadata.describe import describe_entity
from .metadata.diagnostics import Diagnostic
from .metadata.library import Library, definition_files
from .metadata.schemas import build_all

if TYPE_CHECKING:
    from .platform.runtime import Platform


def _platform(ctx: click.Context) -> Platform:
    """The platform of the project at --root (databases per $METACRM_DATABASE_URL)."""
    from .platform.runtime import Platform
    from .platform.settings import Settings

    return Platform(Settings.from_env(ctx.obj.root))


def _runtime(platform: Platform, slug: str) -> Any:
    """The tenant's runtime, or a readable error for an unknown or broken tenant."""
    from .platform.runtime import UnknownTenant

    try:
        return platform.runtime(slug)
    except UnknownTenant as exc:
        raise click.ClickException(f"no active tenant {slug!r}; create it with "
                                   f"`metacrm tenant create {slug}`") from exc


def _root_default() -> str:
    return os.environ.get("METACRM_ROOT", ".")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=_root_default,
              show_default="$METACRM_ROOT or .",
              help="Project folder holding metadata/ and tenants/.")
@click.pass_context
def main(ctx: click.Context, root: Path) -> None:
    """metacrm: compile YAML definitions into tables, APIs and an admin UI, per tenant."""
    ctx.obj = Library.at(root)


def _compiler(ctx: click.Context) -> Compiler:
    return Compiler(ctx.obj)


# -- definitions ------------------------------------------------------------------------------

def _targets(library: Library, paths: tuple[Path, ...]) -> tuple[set[str], set[str], list[Path]]:
    """Which tenants and modules the paths belong to, and loose files outside both."""
    tenants: set[str] = set()
    modules: set[str] = set()
    loose: list[Path] = []
    for path in paths:
        resolved = path.resolve()
        if not path.exists():
            raise click.BadParameter(f"{path} does not exist", param_hint="PATH")
        for base in library.modules_dirs:
            if resolved == base.resolve():
                modules.update(d.name for d in library.module_dirs())
                break
            if base.resolve() in resolved.parents:
                modules.add(resolved.relative_to(base.resolve()).parts[0])
                break
        else:
            tenants_dir = library.tenants_dir.resolve()
            if resolved == tenants_dir:
                tenants.update(library.tenant_slugs())
            elif tenants_dir in resolved.parents:
                tenants.add(resolved.relative_to(tenants_dir).parts[0])
            elif resolved == library.root:
                modules.update(d.name for d in library.module_dirs())
                tenants.update(library.tenant_slugs())
            else:
                loose.append(path)
    return tenants, modules, loose


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], fmt: str) -> None:
    """Check definitions and report every problem (exit 1 if there are errors).

    With no PATH, checks every module and every tenant of the project.
    """
    library: Library = ctx.obj
    compiler = _compiler(ctx)
    if paths:
        tenants, modules, loose = _targets(library, paths)
    else:
        tenants, modules, loose = set(library.tenant_slugs()), {
            d.name for d in library.module_dirs()}, []
    results: list[tuple[str, CompileResult]] = []
    if modules:
        results.append((f"modules {', '.join(sorted(modules))}",
                        compiler.compile_library(sorted(modules))))
    for slug in sorted(tenants):
        results.append((f"tenant {slug}", compiler.compile_tenant(slug)))
    diagnostics: dict[Diagnostic, None] = {}
    for _, result in results:
        diagnostics.update(dict.fromkeys(result.diagnostics))
    loose = [f for path in loose for f in (definition_files(path) if path.is_dir() else [path])]
    for path in loose:
        diagnostics.update(dict.fromkeys(compiler.store.load(path).diagnostics))
    errors = [d for d in diagnostics if d.severity == "error"]
    if fmt == "json":
        click.echo(json.dumps({
            "ok": not errors,
            "checked": [name for name, _ in results] + [str(p) for p in loose],
            "versions": {name: r.registry.version for name, r in results if r.registry},
            "diagnostics": [d.to_dict() for d in diagnostics],
        }, ensure_ascii=False, indent=2))
    else:
        for diagnostic in diagnostics:
            click.echo(diagnostic.format())
        for name, result in results:
            if result.registry is not None:
                registry = result.registry
                click.echo(f"ok  {name}: {len(registry.modules)} module(s), "
                           f"{len(registry.entities)} entities, version {registry.version}")
        for path in loose:
            if not compiler.store.load(path).diagnostics:
                click.echo(f"ok  {path}")
        if errors:
            click.echo(f"{len(errors)} error(s)", err=True)
    sys.exit(1 if errors else 0)


@main.command()
@click.argument("tenant")
@click.argument("entity")
@click.option("--unit", help="Show the entity as this business unit sees it.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.pass_context
def show(ctx: click.Context, tenant: str, entity: str, unit: str | None, fmt: str) -> None:
    """Print the resolved definition of MODULE.ENTITY for TENANT (and --unit)."""
    result = _compiler(ctx).compile_tenant(tenant)
    if result.registry is None:
        for diagnostic in result.diagnostics:
            click.echo(diagnostic.format(), err=True)
        raise click.ClickException(f"tenant {tenant!r} does not compile")
    registry = result.registry
    if unit and unit not in registry.units:
        raise click.ClickException(f"tenant {tenant!r} has no business unit {unit!r}; units: "
                                   f"{', '.join(registry.units) or 'none'}")
    scope = registry.scope(unit)
    if entity not in scope.entities:
        raise click.ClickException(f"no entity {entity!r}; entities: "
                                   f"{', '.join(scope.entities)}")
    data = describe_entity(scope.entities[entity], scope, automation=True)
    data = {"tenant": tenant, "unit": unit, "version": registry.version, **data}
    if fmt == "json":
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        click.echo(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), nl=False)


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write <kind>.schema.json files into.")
@click.pass_context
def schema(ctx: click.Context, out: Path) -> None:
    """Write the JSON Schema of every definition kind, for editors."""
    compiler = _compiler(ctx)
    out.mkdir(parents=True, exist_ok=True)
    for kind_name, body in build_all(compiler.kinds, compiler.types).items():
        target = out / compiler.kinds[kind_name].schema_file
        target.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", "utf-8")
        click.echo(f"wrote {target}")


# -- tenants and migrations -----------------------------------------------------------------

@main.group()
def tenant() -> None:
    """Create, list and archive tenants."""


@tenant.command("create")
@click.argument("slug")
@click.option("--allow-destructive", is_flag=True, help="Apply lossy changes (archiving).")
@click.pass_context
def tenant_create(ctx: click.Context, slug: str, allow_destructive: bool) -> None:
    """Provision SLUG from tenants/SLUG/tenant.yaml: database, tables, store record."""
    platform = _platform(ctx)
    try:
        report = platform.create_tenant(slug, allow_destructive=allow_destructive)
    finally:
        platform.close()
    click.echo(report.format())
    if report.plan is not None and report.plan.steps:
        click.echo(report.plan.format())
    sys.exit(0 if report.ok else 1)


@tenant.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def tenant_list(ctx: click.Context, fmt: str) -> None:
    """List provisioned tenants, and defined ones not yet created."""
    platform = _platform(ctx)
    try:
        records = platform.store.list()
        defined = set(ctx.obj.tenant_slugs())
    finally:
        platform.close()
    rows = [{"slug": r.slug, "status": r.status, "version": r.metadata_version,
             "label": r.label} for r in records]
    known = {r.slug for r in records}
    rows += [{"slug": s, "status": "not created", "version": None, "label": ""}
             for s in sorted(defined - known)]
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['slug']:<20} {row['status']:<12} {row['version'] or '-':<18} "
                   f"{row['label']}")


@tenant.command("archive")
@click.argument("slug")
@click.pass_context
def tenant_archive(ctx: click.Context, slug: str) -> None:
    """Stop serving SLUG; its data is kept."""
    platform = _platform(ctx)
    try:
        archived = platform.archive_tenant(slug)
    finally:
        platform.close()
    if not archived:
        raise click.ClickException(f"no active tenant {slug!r}")
    click.echo(f"archived {slug} (data kept)")


def _slugs(platform: Platform, slug: str | None, every: bool) -> list[str]:
    if every == (slug is not None):
        raise click.UsageError("name one TENANT or give --all")
    return platform.active_slugs() if every else [slug]  # type: ignore[list-item]


@main.command()
@click.argument("slug", metavar="TENANT", required=False)
@click.option("--all", "every", is_flag=True, help="Every active tenant.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def plan(ctx: click.Context, slug: str | None, every: bool, fmt: str) -> None:
    """Print the schema changes `migrate` would make (exit 1 if any would be refused)."""
    platform = _platform(ctx)
    refused = False
    out = []
    try:
        for name in _slugs(platform, slug, every):
            the_plan, diagnostics = platform.plan(name)
            if the_plan is None:
                refused = True
                out.append({"tenant": name, "error": "definitions do not compile",
                            "diagnostics": [d.to_dict() for d in diagnostics]})
                if fmt == "text":
                    click.echo(f"{name}: definitions do not compile")
                    for diagnostic in diagnostics:
                        click.echo(diagnostic.format())
                continue
            refused = refused or bool(the_plan.refusals())
            out.append(the_plan.to_dict())
            if fmt == "text":
                click.echo(the_plan.format())
    finally:
        platform.close()
    if fmt == "json":
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
    sys.exit(1 if refused else 0)


def _apply(ctx: click.Context, slug: str | None, every: bool, allow_destructive: bool) -> None:
    platform = _platform(ctx)
    failed = False
    try:
        for name in _slugs(platform, slug, every):
            report = platform.reload(name, allow_destructive=allow_destructive)
            click.echo(report.format())
            if report.plan is not None and report.plan.steps:
                click.echo(report.plan.format())
            failed = failed or not report.ok
    finally:
        platform.close()
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("slug", metavar="TENANT", required=False)
@click.option("--all", "every", is_flag=True, help="Every active tenant.")
@click.option("--allow-destructive", is_flag=True,
              help="Apply lossy changes; removed columns are archived (renamed), never dropped.")
@click.pass_context
def migrate(ctx: click.Context, slug: str | None, every: bool, allow_destructive: bool) -> None:
    """Apply the planned schema changes and record the new metadata version."""
    _apply(ctx, slug, every, allow_destructive)


@main.command()
@click.argument("slug", metavar="TENANT", required=False)
@click.option("--all", "every", is_flag=True, help="Every active tenant.")
@click.pass_context
def reload(ctx: click.Context, slug: str | None, every: bool) -> None:
    """Compile, migrate and publish changed definitions; running servers pick them up.

    An invalid definition or a refused plan leaves the serving version in place.
    """
    _apply(ctx, slug, every, False)


@main.command()
@click.option("--tenant", "slugs", multiple=True, default=("acme",), show_default=True,
              help="Tenant(s) to provision before serving.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--watch/--no-watch", default=True, help="Reload when YAML files change.")
@click.option("--demo/--no-demo", default=True,
              help="Generate the tenant's demo.yaml records (once per tenant).")
@click.pass_context
def run(ctx: click.Context, slugs: tuple[str, ...], host: str, port: int, watch: bool,
        demo: bool) -> None:
    """Provision the tenant(s) and serve them (development server)."""
    from werkzeug.serving import run_simple

    from .platform.app import create_app
    from .platform.runtime import Platform
    from .platform.settings import Settings
    from .platform.watcher import watch as start_watcher

    settings = Settings.from_env(ctx.obj.root)
    platform = Platform(settings)
    for slug in slugs:
        report = platform.create_tenant(slug)
        click.echo(report.format())
        if not report.ok:
            raise click.ClickException(f"tenant {slug!r} could not be provisioned")
    from .platform.auth import create_user, issue_token, roles_of, set_roles
    from .platform.passwords import hash_password

    app = create_app(settings, platform)
    if watch:
        start_watcher(platform, lambda r: click.echo(r.format()))
    _start_jobs(platform)
    for slug in slugs:
        runtime = platform.runtime(slug)
        seeded = _seed(runtime)
        if seeded:
            click.echo(f"{slug}: seeded {seeded['units']} org units and {seeded['users']} "
                       "users from org.yaml")
        if demo:
            _demo(platform, runtime)
        password = os.environ.get("METACRM_ADMIN_PASSWORD") or secrets.token_urlsafe(9)
        with runtime.begin() as connection:
            user_id = create_user(connection, "admin", "Administrator",
                                  password_hash=hash_password(password))
            set_roles(connection, user_id, ["administrator", *roles_of(connection, user_id)])
            secret = issue_token(connection, user_id, "make run")
        base = f"http://{host}:{port}/t/{slug}"
        click.echo(f"\nserving {slug} at {base}/")
        click.echo(f"  API docs:  {base}/api/docs")
        click.echo(f"  login:     user `admin`, password {password}, API token {secret}")
        click.echo(f"  try:       curl -H 'Authorization: Bearer {secret}' "
                   f"{base}/api/v1/customer/customer")
    run_simple(host, port, app, threaded=True, use_reloader=False)


def _start_jobs(platform: Platform) -> None:
    """Embedded mode: a job thread and a beat thread in this process; with a broker,
    workers and `metacrm beat` run them."""
    from .platform.jobs import jobs_of

    jobs = jobs_of(platform)
    jobs.start()
    if jobs.mode == "embedded":
        click.echo("jobs: run in this process (no broker); delayed work is swept every "
                   f"{platform.settings.sweep_seconds:g}s")
    else:
        click.echo(f"jobs: sent to queue {platform.settings.queue} on "
                   f"{_safe_url(platform.settings.broker_url or '')}; run `metacrm worker` "
                   "and `metacrm beat`")


# -- background jobs --------------------------------------------------------------------------

def _broker_settings(ctx: click.Context) -> Any:
    from .platform.jobs.broker import check_broker_url
    from .platform.settings import Settings

    settings = Settings.from_env(ctx.obj.root)
    if not settings.broker_url:
        raise click.ClickException(
            "set METACRM_BROKER_URL (redis://host:6379/0 or amqp://user:pass@host:5672//) "
            "to run workers; without a broker, `metacrm run` runs jobs in-process")
    try:
        check_broker_url(settings.broker_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    return settings


def _safe_url(url: str) -> str:
    """A broker URL without its password, for output."""
    import re

    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


@main.command()
@click.option("--concurrency", type=int, help="Worker processes or threads (default: CPUs).")
@click.option("--queues", help="Comma-separated queues to consume (default: every job queue).")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork",
              show_default=True, help="How jobs run: child processes, threads, or inline.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, queues: str | None, pool: str,
           loglevel: str) -> None:
    """Run a Celery worker for the jobs of this installation ($METACRM_BROKER_URL)."""
    from .platform.jobs.broker import celery_app
    from .platform.runtime import Platform
    from .plugins import make_plugin_manager

    settings = _broker_settings(ctx)
    if not queues:
        extra = {spec.queue for batch in make_plugin_manager().hook.register_jobs()
                 for spec in batch if spec.queue}
        queues = ",".join([settings.queue, *sorted(f"{settings.queue}.{q}" for q in extra)])
    app = celery_app(settings, lambda: Platform(settings))
    argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}", f"--queues={queues}",
            "--without-mingle", "--without-gossip", f"--hostname=metacrm-{os.getpid()}@%h"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    click.echo(f"worker: queues {queues} on {_safe_url(settings.broker_url)}")
    app.worker_main(argv)


@main.command()
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Enqueue the periodic jobs when due (run one beat per installation)."""
    import signal

    from .platform.jobs import jobs_of
    from .platform.runtime import Platform

    settings = _broker_settings(ctx)
    platform = Platform(settings)
    jobs = jobs_of(platform)
    periods = ", ".join(f"{spec.name} every {spec.every:g}s" for spec in jobs.periodic())
    click.echo(f"beat: {periods or 'no periodic jobs'} to queue {settings.queue} on "
               f"{_safe_url(settings.broker_url)}")
    signal.signal(signal.SIGTERM, lambda *_: jobs.beat.stop())
    try:
        jobs.beat.run()
    except KeyboardInterrupt:
        pass
    finally:
        jobs.stop()
        platform.close()


# -- users and tokens -----------------------------------------------------------------------

@main.group()
def user() -> None:
    """Manage a tenant's users."""


@user.command("create")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("username")
@click.option("--name", "display_name", help="Display name (default: the username).")
@click.option("--unit", help="The user's business unit.")
@click.option("--email")
@click.option("--role", "roles", multiple=True, help="A role (repeat for several).")
@click.option("--org-unit", "org_units", multiple=True,
              help="An org unit to place the user in (the first is primary).")
@click.option("--password", is_flag=True, help="Ask for a password (typed twice).")
@click.pass_context
def user_create(ctx: click.Context, tenant_slug: str, username: str, display_name: str | None,
                unit: str | None, email: str | None, roles: tuple[str, ...],
                org_units: tuple[str, ...], password: bool) -> None:
    """Create or update USERNAME in TENANT (roles and org units replace the old ones)."""
    from .platform.auth import user_by_name
    from .platform.identity import IdentityService
    from .platform.records import RecordError

    secret = click.prompt("password", hide_input=True, confirmation_prompt=True) \
        if password else None
    platform = _platform(ctx)
    try:
        runtime = _runtime(platform, tenant_slug)
        if unit and unit not in runtime.registry.units:
            raise click.ClickException(f"tenant {tenant_slug!r} has no business unit {unit!r}")
        body: dict[str, object] = {"display_name": display_name or username, "email": email,
                                   "business_unit": unit}
        if roles:
            body["roles"] = list(roles)
        if org_units:
            body["units"] = list(org_units)
        if secret is not None:
            body["password"] = secret
        with runtime.connect() as connection:
            existing = user_by_name(connection, username)
        try:
            saved = IdentityService(runtime).save_user(
                body if existing else {**body, "username": username},
                existing.id if existing else None)
        except RecordError as exc:
            raise click.ClickException(_record_error(exc)) from exc
    finally:
        platform.close()
    roles_text = ", ".join(saved["roles"]) or "no roles"
    click.echo(f"user {username} (id {saved['id']}) in {tenant_slug}: {roles_text}")


@user.command("list")
@click.argument("tenant_slug", metavar="TENANT")
@click.pass_context
def user_list(ctx: click.Context, tenant_slug: str) -> None:
    """List TENANT's users with their roles and org units."""
    from .platform.identity import IdentityService

    platform = _platform(ctx)
    try:
        users = IdentityService(_runtime(platform, tenant_slug)).users()
    finally:
        platform.close()
    for item in users:
        state = "" if item["active"] else " (inactive)"
        click.echo(f"{item['id']:>5}  {item['username']}{state}  roles: "
                   f"{', '.join(item['roles']) or '-'}  units: {', '.join(item['units']) or '-'}")


def _record_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", {})
    details = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in errors.items())
    return f"{getattr(exc, 'detail', exc)}" + (f" ({details})" if details else "")


# -- roles and the org tree -------------------------------------------------------------------

@main.group()
def role() -> None:
    """Show the roles a tenant's definitions declare."""


@role.command("list")
@click.argument("tenant_slug", metavar="TENANT")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def role_list(ctx: click.Context, tenant_slug: str, fmt: str) -> None:
    """List TENANT's roles and what each grants per entity."""
    from .platform.identity import IdentityService

    platform = _platform(ctx)
    try:
        roles = IdentityService(_runtime(platform, tenant_slug)).roles()
    finally:
        platform.close()
    if fmt == "json":
        click.echo(json.dumps(roles, ensure_ascii=False, indent=2))
        return
    for item in roles:
        click.echo(f"{item['name']}: {item['label']}")
        for entity, grant in item["grants"].items():
            actions = ", ".join(f"{a}={r if isinstance(r, str) else r['scope'] + '+when'}"
                                for a, r in grant["actions"].items())
            fields = ", ".join(f"{f}={a}" for f, a in grant["fields"].items())
            click.echo(f"  {entity}: {actions}" + (f"; fields: {fields}" if fields else ""))


@main.group()
def org() -> None:
    """Manage a tenant's org tree (group → business unit → region → branch → team)."""


@org.command("list")
@click.argument("tenant_slug", metavar="TENANT")
@click.pass_context
def org_list(ctx: click.Context, tenant_slug: str) -> None:
    """Print TENANT's org tree, indented."""
    from .platform.identity import IdentityService

    platform = _platform(ctx)
    try:
        units = IdentityService(_runtime(platform, tenant_slug)).units()
    finally:
        platform.close()
    for unit in units:
        bu = f" [{unit['business_unit']}]" if unit["business_unit"] else ""
        click.echo(f"{'  ' * unit['depth']}{unit['name']} ({unit['kind']}): {unit['label']}{bu}")


@org.command("add")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("name")
@click.option("--label", help="Shown name (default: NAME).")
@click.option("--kind", default="team", show_default=True)
@click.option("--parent", help="The parent unit (none: a root).")
@click.option("--business-unit", help="The business unit whose definitions its users see.")
@click.pass_context
def org_add(ctx: click.Context, tenant_slug: str, name: str, label: str | None, kind: str,
            parent: str | None, business_unit: str | None) -> None:
    """Add org unit NAME to TENANT."""
    _org_change(ctx, tenant_slug, {"name": name, "label": label or name, "kind": kind,
                                   "parent": parent, "business_unit": business_unit}, None)


@org.command("move")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("name")
@click.argument("parent")
@click.pass_context
def org_move(ctx: click.Context, tenant_slug: str, name: str, parent: str) -> None:
    """Move unit NAME (and its subtree) under PARENT; no record changes."""
    _org_change(ctx, tenant_slug, {"parent": parent}, name)


def _org_change(ctx: click.Context, tenant_slug: str, body: dict[str, object],
                name: str | None) -> None:
    from .platform.identity import IdentityService
    from .platform.records import RecordError

    platform = _platform(ctx)
    try:
        try:
            unit = IdentityService(_runtime(platform, tenant_slug)).save_unit(body, name)
        except RecordError as exc:
            raise click.ClickException(_record_error(exc)) from exc
    finally:
        platform.close()
    click.echo(f"{unit['name']} at {unit['path']} ({unit['kind']})")


@org.command("seed")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def org_seed(ctx: click.Context, tenant_slug: str, file: Path | None) -> None:
    """Apply FILE (default tenants/TENANT/org.yaml): units, users, roles. Idempotent."""
    platform = _platform(ctx)
    try:
        counts = _seed(_runtime(platform, tenant_slug), file, required=True)
    finally:
        platform.close()
    click.echo(f"{tenant_slug}: {counts['units']} org units and {counts['users']} users "
               "match the seed file")


def _seed(runtime: object, file: Path | None = None, *,
          required: bool = False) -> dict[str, int] | None:
    from .platform.records import RecordError
    from .platform.seed import SeedError, apply_seed, load_seed, seed_file

    path = file or seed_file(runtime.config.directory)  # type: ignore[attr-defined]
    if not path.exists():
        if required:
            raise click.ClickException(f"there is no seed file at {path}")
        return None
    try:
        return apply_seed(runtime, load_seed(path))
    except SeedError as exc:
        raise click.ClickException(str(exc)) from exc
    except RecordError as exc:
        raise click.ClickException(f"{path}: {_record_error(exc)}") from exc


@main.command("demo")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--again", is_flag=True,
              help="Generate another set even though the tenant already has its demo data.")
@click.pass_context
def demo_command(ctx: click.Context, tenant_slug: str, file: Path | None, again: bool) -> None:
    """Generate FILE's demo records (default tenants/TENANT/demo.yaml). Idempotent."""
    platform = _platform(ctx)
    try:
        _demo(platform, _runtime(platform, tenant_slug), file, required=True, again=again)
    finally:
        platform.close()


def _demo(platform: Platform, runtime: Any, file: Path | None = None, *,
          required: bool = False, again: bool = False) -> None:
    from .platform.demo import DemoError, apply_demo, demo_file, load_demo

    path = file or demo_file(runtime.config.directory)
    if not path.exists():
        if required:
            raise click.ClickException(f"there is no demo file at {path}")
        return
    try:
        result = apply_demo(runtime, load_demo(path), again=again)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    if not result.applied:
        when = f" on {result.at:%Y-%m-%d %H:%M}" if result.at else ""
        click.echo(f"{runtime.slug}: demo data {result.status}{when}; nothing added "
                   "(`metacrm demo --again` adds another set)")
        return
    try:
        from .platform.jobs import jobs_of

        jobs_of(platform).drain()  # the rules' follow-ups of the new records
    except Exception as exc:  # the records are in; a failing follow-up is only reported
        click.echo(f"{runtime.slug}: demo follow-up jobs: {exc}", err=True)
    made = ", ".join(f"{n} {key}" for key, n in result.counts.items())
    click.echo(f"{runtime.slug}: demo data generated: {made}")


# -- export ---------------------------------------------------------------------------------

@main.command("export")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("entity_key", metavar="MODULE.ENTITY")
@click.option("--as", "username", required=True,
              help="Export as this user: their roles decide which rows and columns.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: standard output).")
@click.pass_context
def export(ctx: click.Context, tenant_slug: str, entity_key: str, username: str,
           out: Path | None) -> None:
    """Export MODULE.ENTITY as CSV, as USER would see it (the `export` action)."""
    import csv

    from .platform.auth import user_by_name
    from .platform.permissions import load_principal
    from .platform.records import Actor, ListQuery, RecordError, RecordService
    from .platform.systables import runtime_system_tables

    platform = _platform(ctx)
    try:
        runtime = _runtime(platform, tenant_slug)
        with runtime.connect() as connection:
            found = user_by_name(connection, username)
            if found is None:
                raise click.ClickException(f"no user {username!r} in {tenant_slug}")
            principal = load_principal(connection, runtime_system_tables(runtime), found,
                                       runtime.registry.units)
        service = RecordService(runtime, Actor.of(principal), operators=platform.operators)
        try:  # refuse before writing anything: a refused export leaves no file behind
            service.require(entity_key, "export")
        except RecordError as exc:
            raise click.ClickException(_record_error(exc)) from exc
        handle = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
        try:
            columns = service.export_columns(entity_key)
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            rows = 0
            for record in service.export(entity_key, ListQuery()):
                writer.writerow({k: json.dumps(v, ensure_ascii=False)
                                 if isinstance(v, list | dict) else v
                                 for k, v in record.items()})
                rows += 1
        except RecordError as exc:
            raise click.ClickException(_record_error(exc)) from exc
        finally:
            if out:
                handle.close()
    finally:
        platform.close()
    if out:
        click.echo(f"{rows} rows to {out}")


# -- import ---------------------------------------------------------------------------------

@main.command("import")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("entity_key", metavar="MODULE.ENTITY")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and write nothing.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Where rejected rows are listed (default: FILE.errors.csv, written only "
                   "when a row is rejected).")
@click.option("--key", help="Update records whose FIELD (`id` or a unique field) matches; "
                            "create the others.")
@click.option("--as", "username",
              help="Import as this user: their roles decide (default: the system).")
@click.option("--batch", "batch_size", type=click.IntRange(1, 50_000), default=2000,
              show_default=True, help="Rows per transaction.")
@click.pass_context
def import_command(ctx: click.Context, tenant_slug: str, entity_key: str, file: Path,
                   dry_run: bool, report: Path | None, key: str | None, username: str | None,
                   batch_size: int) -> None:
    """Import FILE (CSV, UTF-8, a header row of field names or labels) into MODULE.ENTITY.

    Rows that fail are listed in the report and the others are imported; duplicate rules
    apply (block rules reject rows, review rules queue pairs). Exit 1 if any row failed.
    """
    from .platform.importer import ImportFailed, data_rows, import_csv
    from .platform.records import RecordError

    platform = _platform(ctx)
    report = report or file.with_name(file.name + ".errors.csv")
    if report.exists():
        report.unlink()  # a report from an earlier run would read as this run's
    try:
        runtime = _runtime(platform, tenant_slug)
        service = _service_as(platform, runtime, tenant_slug, username)
        total = data_rows(file)
        with click.progressbar(length=total, label=f"importing {file.name}",
                               file=sys.stderr, show_pos=True) as bar:
            try:
                result = import_csv(service, entity_key, file, dry_run=dry_run, key=key,
                                    batch_size=batch_size, report=report,
                                    progress=bar.update)
            except (ImportFailed, RecordError) as exc:
                raise click.ClickException(_record_error(exc)) from exc
    finally:
        platform.close()
    prefix = "dry run: " if dry_run else ""
    click.echo(f"{prefix}{result.summary()}")
    if result.skipped_columns:
        click.echo("skipped columns: " + ", ".join(result.skipped_columns))
    if result.report is not None:
        click.echo(f"{result.errors} error(s) listed in {result.report}")
    sys.exit(1 if result.rejected else 0)


def _service_as(platform: Platform, runtime: Any, tenant_slug: str,
                username: str | None) -> Any:
    """The record service acting as USERNAME (their roles), or as the system."""
    from .platform.auth import user_by_name
    from .platform.permissions import load_principal
    from .platform.records import Actor, RecordService
    from .platform.systables import runtime_system_tables

    if username is None:
        return RecordService(runtime, Actor(), emit=platform.emit,
                             operators=platform.operators)
    with runtime.connect() as connection:
        found = user_by_name(connection, username)
        if found is None:
            raise click.ClickException(f"no user {username!r} in {tenant_slug}")
        principal = load_principal(connection, runtime_system_tables(runtime), found,
                                   runtime.registry.units)
    return RecordService(runtime, Actor.of(principal), emit=platform.emit,
                         operators=platform.operators)


@main.group()
def token() -> None:
    """Issue and revoke API tokens (stored only as hashes)."""


@token.command("create")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option("--days", type=int, help="Expire after this many days.")
@click.pass_context
def token_create(ctx: click.Context, tenant_slug: str, username: str, name: str,
                 days: int | None) -> None:
    """Print a new bearer token for USERNAME (shown once)."""
    import datetime as dt

    from .platform.auth import issue_token, user_by_name

    platform = _platform(ctx)
    try:
        runtime = _runtime(platform, tenant_slug)
        with runtime.begin() as connection:
            found = user_by_name(connection, username)
            if found is None:
                raise click.ClickException(f"no user {username!r} in {tenant_slug}; create one "
                                           "with `metacrm user create`")
            secret = issue_token(connection, found.id, name,
                                 dt.timedelta(days=days) if days else None)
    finally:
        platform.close()
    click.echo(secret)


@token.command("revoke")
@click.argument("tenant_slug", metavar="TENANT")
@click.argument("secret", metavar="TOKEN")
@click.pass_context
def token_revoke(ctx: click.Context, tenant_slug: str, secret: str) -> None:
    """Revoke TOKEN."""
    from .platform.auth import revoke_token

    platform = _platform(ctx)
    try:
        with _runtime(platform, tenant_slug).begin() as connection:
            revoked = revoke_token(connection, secret)
    finally:
        platform.close()
    if not revoked:
        raise click.ClickException("no such token")
    click.echo("revoked")
