"""Semantic checks over compiled scopes, registered through ``register_checks``.

Each check is a pure function of a :class:`CheckContext` that yields diagnostics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..hookspecs import hookimpl
from .build import LocatedSource
from .diagnostics import Diagnostic, DocPath, a_or_an, did_you_mean
from .fieldtypes import FieldTypeRegistry
from .ir import Entity, Field, Module, Scope, Source

SYSTEM_COLUMNS = frozenset({"id", "created_at", "created_by", "updated_at", "updated_by",
                            "owner", "business_unit", "row_version", "deleted_at"})
API_WORDS = frozenset({"filter", "sort", "fields", "expand", "cursor", "limit", "count", "q",
                       "include_deleted"})
RESERVED_FIELD_NAMES = SYSTEM_COLUMNS | API_WORDS
RESERVED_ENTITY_NAMES = frozenset({"meta", "openapi", "docs", "bulk", "problem", "error", "page",
                                   "transitions", "system", "audit"})
CONDITION_OPERATORS = frozenset({
    "eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains", "starts_with",
    "is_empty", "between", "older_than", "newer_than", "today", "this_week", "this_month",
})
TITLE_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check sees: one scope, the modules, the field types and the operator names.

    `condition_operators` (an OperatorRegistry; the built-in operators when None) parses
    conditions; `actions` is the ActionRegistry rule and transition actions are checked
    against (None: not checked).
    """

    scope: Scope
    modules: Mapping[str, Module]
    types: FieldTypeRegistry
    operators: frozenset[str] = CONDITION_OPERATORS
    condition_operators: Any = None
    actions: Any = None

    def error(self, code: str, message: str, where: Source | None,
              hint: str | None = None, severity: str = "error") -> Diagnostic:
        if where is None:
            return Diagnostic(code, message, hint=hint, severity=severity)
        return Diagnostic(code, message, where.file, where.line, where.column, hint=hint,
                          severity=severity)

    def resolve_path(self, entity: Entity, path: str) -> tuple[Field | None, str | None]:
        """The field at a dotted path through references, or why there is none."""
        current = entity
        parts = path.split(".")
        for depth, part in enumerate(parts):
            found = current.get_field(part)
            if found is None:
                hint = did_you_mean(part, current.field_names)
                return None, f"`{part}` is not a field of {current.key}" + (
                    f"; {hint}" if hint else "")
            if depth == len(parts) - 1:
                return found, None
            if found.type != "reference" or found.target not in self.scope.entities:
                return None, f"`{part}` of {current.key} is not a reference, so `{path}` " \
                    "cannot go through it"
            current = self.scope.entities[found.target]
        return None, "empty path"  # pragma: no cover - schema forbids empty paths


Check = Callable[[CheckContext], Iterable[Diagnostic]]


def at(where: Source | None, *path: str | int) -> Source | None:
    """Where part `path` of a definition is written (the definition itself if not known)."""
    if isinstance(where, LocatedSource):
        return where.at(*path)
    return where


def check_reserved_names(ctx: CheckContext) -> Iterator[Diagnostic]:
    for entity in ctx.scope.entities.values():
        if entity.name in RESERVED_ENTITY_NAMES:
            yield ctx.error("name.reserved-entity", f"`{entity.name}` is reserved and cannot name "
                            "an entity", entity.source, f"try `{entity.name}_record`")
        for f in entity.fields:
            if f.name in RESERVED_FIELD_NAMES:
                kind = "a system column" if f.name in SYSTEM_COLUMNS else "an API parameter"
                yield ctx.error("name.reserved-field", f"`{f.name}` is {kind} on every entity and "
                                "cannot name a field", f.source, f"try `{entity.name}_{f.name}`")
            if f.name.startswith("archived_"):
                yield ctx.error("name.reserved-field", f"`{f.name}`: names starting with "
                                "`archived_` are kept for archived columns", f.source)


def _module_reach(ctx: CheckContext, module: str) -> set[str]:
    reach, stack = {module}, [module]
    while stack:
        for dep in ctx.modules[stack.pop()].depends:
            if dep not in reach and dep in ctx.modules:
                reach.add(dep)
                stack.append(dep)
    return reach


def check_references(ctx: CheckContext) -> Iterator[Diagnostic]:
    entities = ctx.scope.entities
    for entity in entities.values():
        for f in entity.fields:
            if f.type not in ("reference", "many_to_many", "children") or not f.target:
                continue
            if f.target not in entities:
                module = f.target.split(".")[0]
                yield ctx.error("ref.unknown-entity", f"`{entity.key}.{f.name}` refers to "
                                f"`{f.target}`, which is not an entity of the enabled modules",
                                f.source, did_you_mean(f.target, entities) or (
                                    f"module `{module}` is not enabled here; enabled: "
                                    f"{', '.join(ctx.scope.modules) or 'none'}"
                                    if module not in ctx.scope.modules else None))
                continue
            target_module = f.target.split(".")[0]
            if f.origin == "module" and entity.module in ctx.modules and \
                    target_module not in _module_reach(ctx, entity.module):
                yield ctx.error("ref.undeclared-dependency", f"`{entity.key}.{f.name}` refers to "
                                f"module `{target_module}`, which module `{entity.module}` does "
                                "not depend on", f.source,
                                f"add `{target_module}` to `depends` in module.yaml")
            if f.type == "children":
                via = entities[f.target].get_field(f.via or "")
                if via is None:
                    yield ctx.error("ref.unknown-via", f"`{f.name}` lists {f.target} records via "
                                    f"`{f.via}`, which is not a field of {f.target}", f.source,
                                    did_you_mean(f.via or "", entities[f.target].field_names))
                elif via.type != "reference" or via.target != entity.key:
                    yield ctx.error("ref.bad-via", f"`{f.target}.{f.via}` must be a reference to "
                                    f"{entity.key} for `{f.name}` to list its records", f.source)


def check_entity_parts(ctx: CheckContext) -> Iterator[Diagnostic]:
    for entity in ctx.scope.entities.values():
        names = entity.field_names
        if entity.title:
            for name in TITLE_PLACEHOLDER.findall(entity.title):
                if name not in names:
                    yield ctx.error("entity.title", f"title names `{{{name}}}`, which is not a "
                                    f"field of {entity.key}", at(entity.source, "title"),
                                    did_you_mean(name, names))
        for position, name in enumerate(entity.search):
            if name not in names:
                yield ctx.error("entity.search", f"search names `{name}`, which is not a field "
                                f"of {entity.key}", at(entity.source, "search", position),
                                did_you_mean(name, names))
        for number, index in enumerate(entity.indexes):
            for position, name in enumerate(index.fields):
                f = entity.get_field(name)
                if f is None or not f.stored:
                    what = "not a field" if f is None else "a field that is not stored"
                    yield ctx.error("entity.index", f"index `{index.name}` names `{name}`, which "
                                    f"is {what} of {entity.key}",
                                    at(entity.source, "indexes", number, "fields", position),
                                    did_you_mean(name, names) if f is None else
                                    f"{f.type} fields have no column to index")
        for f in entity.fields:
            if f.formula is not None:
                for path in sorted(f.formula.field_paths()):
                    found, problem = ctx.resolve_path(entity, ".".join(path))
                    if found is None:
                        yield ctx.error("field.formula-ref", f"formula of `{f.name}`: {problem}",
                                        f.source)
                    elif found.name == f.name and len(path) == 1:
                        yield ctx.error("field.formula-ref", f"formula of `{f.name}` refers to "
                                        "itself", f.source)


def _condition_fields(condition: Any,
                      below: DocPath = ()) -> Iterator[tuple[DocPath, str, str | None]]:
    """Every (place in the condition, field path, operator) of a condition."""
    if not isinstance(condition, Mapping):
        return
    for key in ("all", "any"):
        for index, item in enumerate(condition.get(key) or ()):
            yield from _condition_fields(item, (*below, key, index))
    if "not" in condition:
        yield from _condition_fields(condition["not"], (*below, "not"))
    if "field" in condition:
        yield below, condition["field"], condition.get("op")


def _check_condition(ctx: CheckContext, entity: Entity, condition: Any, where: Source | None,
                     owner: str, *place: str | int, code: str | None = None
                     ) -> Iterator[Diagnostic]:
    """Every unknown field path and operator of `condition` (codes `condition.field` and
    `condition.operator`, or `code` for both when given)."""
    for below, path, op in _condition_fields(condition):
        found, problem = ctx.resolve_path(entity, path)
        if found is None:
            yield ctx.error(code or "condition.field", f"{owner}: {problem}",
                            at(where, *place, *below, "field"))
        if op is not None and op not in ctx.operators:
            yield ctx.error(code or "condition.operator", f"{owner}: unknown operator `{op}`",
                            at(where, *place, *below, "op"), did_you_mean(op, ctx.operators)
                            or f"operators: {', '.join(sorted(ctx.operators))}")


def check_forms(ctx: CheckContext) -> Iterator[Diagnostic]:
    defaults: dict[str, str] = {}
    for form in ctx.scope.forms.values():
        entity = ctx.scope.entities.get(form.entity)
        if entity is None:
            yield ctx.error("form.unknown-entity", f"form `{form.key}` is for `{form.entity}`, "
                            "which is not an entity of the enabled modules", form.source,
                            did_you_mean(form.entity, ctx.scope.entities))
            continue
        if form.default:
            if form.entity in defaults:
                yield ctx.error("form.two-defaults", f"{form.entity} has two default forms: "
                                f"`{defaults[form.entity]}` and `{form.key}`",
                                at(form.source, "default"),
                                "set `default: true` on one form of the entity only")
            defaults[form.entity] = form.key
        seen: set[str] = set()
        for number, section in enumerate(form.sections):
            yield from _check_condition(ctx, entity, section.visible_when, form.source,
                                        f"form `{form.key}`", "sections", number, "visible_when")
            for item in section.fields:
                if entity.get_field(item.field) is None:
                    yield ctx.error("form.unknown-field", f"form `{form.key}` places `{item.field}`"
                                    f", which is not a field of {entity.key}", item.source,
                                    did_you_mean(item.field, entity.field_names))
                elif item.field in seen:
                    yield ctx.error("form.duplicate-field", f"form `{form.key}` places "
                                    f"`{item.field}` twice", item.source)
                seen.add(item.field)
                for condition in (item.visible_when, item.read_only_when):
                    yield from _check_condition(ctx, entity, condition, item.source,
                                                f"form `{form.key}`")


def check_views(ctx: CheckContext) -> Iterator[Diagnostic]:
    defaults: dict[str, str] = {}
    for view in ctx.scope.views.values():
        entity = ctx.scope.entities.get(view.entity)
        if entity is None:
            yield ctx.error("view.unknown-entity", f"view `{view.key}` is for `{view.entity}`, "
                            "which is not an entity of the enabled modules", view.source,
                            did_you_mean(view.entity, ctx.scope.entities))
            continue
        if view.default:
            if view.entity in defaults:
                yield ctx.error("view.two-defaults", f"{view.entity} has two default views: "
                                f"`{defaults[view.entity]}` and `{view.key}`",
                                at(view.source, "default"),
                                "set `default: true` on one view of the entity only")
            defaults[view.entity] = view.key
        known = set(entity.field_names) | SYSTEM_COLUMNS
        for column in view.columns:
            if column.field in SYSTEM_COLUMNS:
                continue
            found, problem = ctx.resolve_path(entity, column.field)
            if found is None:
                yield ctx.error("view.unknown-column", f"view `{view.key}`: {problem}",
                                column.source)
        for what, names in (("sort", [k.field for k in view.sort]),
                            ("quick_filters", view.quick_filters), ("search", view.search)):
            for position, name in enumerate(names):
                if name not in known:
                    yield ctx.error(f"view.unknown-{what.replace('_', '-')}",
                                    f"view `{view.key}` {what} names `{name}`, which is not a "
                                    f"field of {entity.key}", at(view.source, what, position),
                                    did_you_mean(name, known))
        yield from _check_condition(ctx, entity, view.filter, view.source,
                                    f"view `{view.key}` filter", "filter")


def _not_writable(f: Field) -> str | None:
    """Why nobody can write field `f`, or None when it can be written."""
    if f.type in ("formula", "autonumber"):
        return f"{a_or_an(f.type)} field (computed, never written)"
    if not f.stored:
        return f"{a_or_an(f.type)} field (not stored on the record)"
    if f.read_only:
        return "read-only"
    return None


def check_roles(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Each grant names an entity of the scope, fields of that entity and conditions that
    hold together; `write` on a field nobody can write is a warning."""
    entities = ctx.scope.entities
    for role in ctx.scope.roles.values():
        for grant in role.grants.values():
            entity = entities.get(grant.entity)
            if entity is None:
                module = grant.entity.split(".")[0]
                yield ctx.error("role.unknown-entity", f"role `{role.name}` grants on "
                                f"`{grant.entity}`, which is not an entity of the enabled "
                                "modules", grant.source, did_you_mean(grant.entity, entities) or (
                                    f"module `{module}` is not enabled here; enabled: "
                                    f"{', '.join(ctx.scope.modules) or 'none'}"
                                    if module not in ctx.scope.modules else
                                    f"entities of `{module}`: " + (", ".join(
                                        k for k in entities if k.startswith(module + "."))
                                        or "none")))
                continue
            owner = f"role `{role.name}` on {entity.key}"
            for action, rule in grant.actions.items():
                yield from _check_condition(ctx, entity, rule.when, grant.source,
                                            f"role `{role.name}`, `when` of `{action}` on "
                                            f"{entity.key}", action, "when",
                                            code="role.bad-condition")
            for name, access in grant.fields.items():
                f = entity.get_field(name)
                where = at(grant.source, "fields", name)
                if f is None:
                    yield ctx.error("role.unknown-field", f"{owner}: `{name}` is not a field of "
                                    f"{entity.key}", where,
                                    did_you_mean(name, entity.field_names))
                elif access == "write" and (why := _not_writable(f)) is not None:
                    yield ctx.error("role.field-not-writable", f"{owner} gives `write` on "
                                    f"`{name}`, which is {why}: nobody can write it", where,
                                    "write `read` (or `hidden`), or leave the field out",
                                    severity="warning")


def check_stable_ids(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Two fields (or entities) may not share a stable id: a rename would be ambiguous."""
    entities_by_id: dict[str, Entity] = {}
    for entity in ctx.scope.entities.values():
        other = entities_by_id.setdefault(entity.id, entity)
        if other is not entity:
            yield ctx.error("id.duplicate-entity", f"entities `{other.key}` and `{entity.key}` "
                            f"share the stable id `{entity.id}` (one was renamed from the "
                            "other's name)", entity.source,
                            "give the new entity a name the other never had")
        fields_by_id: dict[str, Field] = {}
        for f in entity.fields:
            first = fields_by_id.setdefault(f.id, f)
            if first is not f:
                renamed = first if first.renamed_from else f
                new = f if renamed is first else first
                yield ctx.error("id.duplicate-field", f"`{entity.key}.{new.name}` takes the "
                                f"stable id of `{renamed.name}`, which was renamed from "
                                f"`{new.name}`; the database could not tell them apart",
                                new.source, f"give the new field a name `{renamed.name}` "
                                "never had")


BUILTIN_CHECKS: tuple[Check, ...] = (
    check_reserved_names, check_references, check_entity_parts, check_forms, check_views,
    check_roles, check_stable_ids,
)


@hookimpl
def register_checks() -> list[Check]:
    from .automation_checks import AUTOMATION_CHECKS

    return [*BUILTIN_CHECKS, *AUTOMATION_CHECKS]
