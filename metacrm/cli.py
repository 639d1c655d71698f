"""The `metacrm` command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import yaml

from .metadata.compiler import Compiler, CompileResult
from .metadata.describe import describe_entity
from .metadata.diagnostics import Diagnostic
from .metadata.library import Library
from .metadata.schemas import build_all


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
    data = describe_entity(scope.entities[entity], scope)
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
