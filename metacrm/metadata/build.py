"""Drafts → Registry IR: fields, entities, forms, views, roles; the union stored per tenant."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from .automation import automation_json
from .diagnostics import Diagnostic, DiagnosticSink, DocPath, a_or_an
from .fieldtypes import FieldType, FieldTypeRegistry
from .formula import FormulaError, parse_formula
from .ir import (
    ACTIONS,
    IR_FORMAT,
    Column,
    Entity,
    Field,
    Form,
    FormField,
    FrozenDict,
    Grant,
    Index,
    MatchKey,
    MatchRule,
    Option,
    Relation,
    Role,
    ScopeRule,
    Section,
    SortKey,
    Source,
    Text,
    View,
    freeze,
)
from .loader import Document
from .resolve import DefinitionDraft, EntityDraft, FieldDraft, GrantDraft, RoleDraft, ScopeDraft

_KNOWN_SPEC = frozenset({
    "type", "label", "help", "description", "required", "unique", "index", "default",
    "read_only", "hidden", "renamed_from", "insert_after", "min", "max", "max_length",
    "min_length", "pattern", "options", "precision", "scale", "currency", "to", "on_delete",
    "of", "via", "expression", "returns",
})


def source_of(doc: Document, path: tuple) -> Source:
    line, column = doc.pos(path, key=bool(path))
    return Source(doc.file, line, column)


class LocatedSource(Source):
    """A definition's Source that also knows where its parts are written.

    It is the plain Source for everything else (equality, hashing, ``str``, ``asdict``);
    checks call :meth:`at` to point a diagnostic at the line that holds the problem, e.g.
    ``view.source.at("sort", 1)`` for the second sort key.
    """

    __slots__ = ("parts",)
    parts: Mapping[DocPath, Source]

    def __init__(self, file: str, line: int, column: int,
                 parts: Mapping[DocPath, Source] = FrozenDict()) -> None:
        Source.__init__(self, file, line, column)
        object.__setattr__(self, "parts", parts)

    def at(self, *path: str | int) -> Source:
        """Where `path` (below the definition) is written, or its nearest recorded ancestor."""
        while path:
            if path in self.parts:
                return self.parts[path]
            path = path[:-1]
        return self

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Source):
            return (self.file, self.line, self.column) == (other.file, other.line, other.column)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.file, self.line, self.column))

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocatedSource, (self.file, self.line, self.column, self.parts))


def located(doc: Document, key: str, parts: Mapping[str, tuple[Document, DocPath]]) -> Source:
    """The Source of `doc`'s `key`, knowing where each option in `parts` (and below) is."""
    table: dict[DocPath, Source] = {}
    for option, (where, path) in parts.items():
        data: Any = where.data
        for step in path:
            try:
                data = data[step]
            except (KeyError, IndexError, TypeError):
                data = None
                break
        for below, (line, column) in _positions(where, path, data):
            table[(option, *below)] = Source(where.file, line, column)
    base = source_of(doc, (key,))
    return LocatedSource(base.file, base.line, base.column, FrozenDict(table))


def located_at(doc: Document, path: DocPath) -> LocatedSource:
    """The Source of the key at `path`, knowing where every key and item below it is written
    (``grant.source.at("fields", "credit_limit")`` is the line of that key)."""
    value: Any = doc.data
    for step in path:
        value = value[step]
    table: dict[DocPath, Source] = {}
    for below, _ in _positions(doc, path, value):
        line, column = doc.pos((*path, *below), key=True)
        table[below] = Source(doc.file, line, column)
    base = table.pop(())
    return LocatedSource(base.file, base.line, base.column, FrozenDict(table))


def _positions(doc: Document, path: DocPath, value: Any,
               below: DocPath = ()) -> Iterator[tuple[DocPath, tuple[int, int]]]:
    yield below, doc.pos(path)
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _positions(doc, (*path, key), item, (*below, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _positions(doc, (*path, index), item, (*below, index))


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class Builder:
    """Builds IR objects from drafts, sharing one object per unchanged draft."""

    def __init__(self, types: FieldTypeRegistry, sink: DiagnosticSink) -> None:
        self.types = types
        self.sink = sink
        self._fields: dict[int, Field] = {}
        self._entities: dict[int, tuple[EntityDraft, Entity]] = {}
        self._definitions: dict[int, tuple[DefinitionDraft, Form | View]] = {}
        self._grants: dict[int, tuple[GrantDraft, Grant]] = {}
        self._roles: dict[int, tuple[RoleDraft, Role]] = {}

    def field(self, draft: FieldDraft, module: str) -> Field:
        cached = self._fields.get(id(draft))
        if cached is None:
            cached = self._build_field(draft, module)
            self._fields[id(draft)] = cached
        return cached

    def _build_field(self, draft: FieldDraft, module: str) -> Field:
        spec = draft.spec
        field_type = self.types[spec["type"]]
        self._check_spec(draft, field_type)
        options = tuple(self._option(o) for o in spec.get("options") or ())
        target = spec.get("to") or spec.get("of")
        if target and "." not in target:
            target = f"{module}.{target}"
        formula = None
        if field_type.name == "formula":
            try:
                formula = parse_formula(spec["expression"])
            except FormulaError:
                formula = None
        params = {k: freeze(v) for k, v in spec.items() if k not in _KNOWN_SPEC}
        is_autonumber = field_type.name == "autonumber"
        numeric = field_type.name in ("decimal", "money")
        doc, path = draft.doc, draft.path
        return Field(
            name=draft.name, id=draft.id, type=field_type.name,
            label=Text.of(spec.get("label"), draft.name.replace("_", " ").capitalize()),
            help=Text.of(spec.get("help")), required=bool(spec.get("required")),
            unique=bool(spec.get("unique")), index=bool(spec.get("index")),
            default=freeze(spec.get("default")),
            read_only=bool(spec.get("read_only")) or field_type.name in ("formula", "autonumber"),
            hidden=bool(spec.get("hidden")), min=spec.get("min"), max=spec.get("max"),
            max_length=spec.get("max_length", 255 if field_type.name == "string" else None),
            pattern=None if is_autonumber else spec.get("pattern"), options=options,
            precision=spec.get("precision", 18 if numeric else None),
            scale=spec.get("scale", 2 if numeric else None),
            currency=spec.get("currency"), target=target,
            on_delete=spec.get("on_delete", "restrict") if field_type.name == "reference" else None,
            via=spec.get("via"), autonumber=spec.get("pattern") if is_autonumber else None,
            formula=formula, returns=spec.get("returns", "decimal") if formula or
            field_type.name == "formula" else None,
            renamed_from=_names(spec.get("renamed_from")), stored=field_type.stored,
            origin=draft.origin, params=FrozenDict(params), source=source_of(doc, path))

    @staticmethod
    def _option(option: Any) -> Option:
        if isinstance(option, Mapping):
            return Option(option["value"], Text.of(option.get("label"), option["value"]),
                          option.get("color"))
        return Option(option, Text.of(None, option))

    def _check_spec(self, draft: FieldDraft, field_type: FieldType) -> None:
        if field_type.check_spec is not None:
            for sub, message, hint in field_type.check_spec(draft.spec):
                doc, path = draft.locate(str(sub[0]) if sub else None)
                self.sink.add(doc.diagnostic(f"field.{field_type.name}", message,
                                             (*path, *sub[1:]), hint=hint))
        if "default" in draft.spec:
            problem = field_type.check_value(draft.spec["default"], draft.spec)
            if problem:
                doc, path = draft.locate("default")
                self.sink.add(doc.diagnostic("field.bad-default", f"default of `{draft.name}` "
                                             f"is not valid: {problem}", path))

    def entity(self, draft: EntityDraft) -> Entity:
        cached = self._entities.get(id(draft))
        if cached is not None:
            return cached[1]
        spec = draft.spec
        fields = tuple(self.field(f, draft.module) for f in draft.fields.values())
        indexes = tuple(
            Index(ix.get("name") or f"ix_{draft.module}_{draft.name}_{'_'.join(ix['fields'])}",
                  tuple(ix["fields"]), bool(ix.get("unique")))
            for ix in spec.get("indexes") or ())
        entity = Entity(
            module=draft.module, name=draft.name, id=draft.id,
            label=Text.of(spec.get("label"), draft.name.replace("_", " ").capitalize()),
            fields=fields, plural_label=Text.of(spec.get("plural_label")),
            description=Text.of(spec.get("description")), title=spec.get("title"),
            icon=spec.get("icon"), search=tuple(spec.get("search") or ()), indexes=indexes,
            renamed_from=_names(spec.get("renamed_from")), duplicates=match_rules(draft),
            source=located(draft.doc, "entity", {o: draft.locate(o) for o in
                                                 ("title", "search", "indexes") if o in spec}))
        self._entities[id(draft)] = (draft, entity)
        return entity

    def form(self, draft: DefinitionDraft) -> Form:
        cached = self._definitions.get(id(draft))
        if cached is not None:
            return cached[1]  # type: ignore[return-value]
        spec, doc = draft.spec, draft.doc
        sections = []
        for s_index, section in enumerate(spec["sections"]):
            items = []
            for f_index, item in enumerate(section["fields"]):
                where = source_of(doc, ("sections", s_index, "fields", f_index))
                if isinstance(item, str):
                    items.append(FormField(item, source=where))
                else:
                    items.append(FormField(item["field"], Text.of(item.get("help")),
                                           item.get("span", 1), freeze(item.get("visible_when")),
                                           freeze(item.get("read_only_when")), where))
            name = section.get("name") or f"section_{s_index + 1}"
            sections.append(Section(name, Text.of(section.get("label")), tuple(items),
                                    section.get("columns", 1), bool(section.get("collapsed")),
                                    freeze(section.get("visible_when"))))
        form = Form(draft.module, draft.name, spec["entity"],
                    Text.of(spec.get("label"), draft.name.replace("_", " ").capitalize()),
                    tuple(sections), bool(spec.get("default")), draft.origin,
                    located(doc, "form", {o: (doc, (o,)) for o in ("default", "sections")
                                          if o in spec}))
        self._definitions[id(draft)] = (draft, form)
        return form

    def view(self, draft: DefinitionDraft) -> View:
        cached = self._definitions.get(id(draft))
        if cached is not None:
            return cached[1]  # type: ignore[return-value]
        spec, doc = draft.spec, draft.doc
        columns = []
        for index, column in enumerate(spec["columns"]):
            where = source_of(doc, ("columns", index))
            if isinstance(column, str):
                columns.append(Column(column, source=where))
            else:
                columns.append(Column(column["field"], Text.of(column.get("label")),
                                      column.get("width"), where))
        sort = tuple(SortKey(key.lstrip("-"), key.startswith("-"))
                     for key in spec.get("sort") or ())
        view = View(draft.module, draft.name, spec["entity"],
                    Text.of(spec.get("label"), draft.name.replace("_", " ").capitalize()),
                    tuple(columns), sort, freeze(spec.get("filter")),
                    tuple(spec.get("quick_filters") or ()), tuple(spec.get("search") or ()),
                    spec.get("page_size", 50), bool(spec.get("default")), draft.origin,
                    located(doc, "view", {o: (doc, (o,)) for o in
                                          ("default", "sort", "filter", "quick_filters", "search")
                                          if o in spec}))
        self._definitions[id(draft)] = (draft, view)
        return view

    def role(self, draft: RoleDraft) -> Role:
        """A role as one scope sees it; an unchanged draft gives the same object everywhere."""
        cached = self._roles.get(id(draft))
        if cached is not None:
            return cached[1]
        spec = draft.spec
        role = Role(draft.name,
                    Text.of(spec.get("label"), draft.name.replace("_", " ").capitalize()),
                    Text.of(spec.get("description")),
                    FrozenDict({k: self.grant(g) for k, g in draft.grants.items()}),
                    source_of(draft.doc, ("role",)))
        self._roles[id(draft)] = (draft, role)
        return role

    def grant(self, draft: GrantDraft) -> Grant:
        """A grant with `default` spread over every action it does not list (in ACTIONS
        order); actions whose scope is `none` are left out: they are not granted."""
        cached = self._grants.get(id(draft))
        if cached is not None:
            return cached[1]
        spec = draft.spec
        default = spec.get("default")
        actions: dict[str, ScopeRule] = {}
        for action in ACTIONS:
            rule = spec.get(action, default)
            if rule is None:
                continue
            scope, when = (rule, None) if isinstance(rule, str) else (rule["scope"],
                                                                      rule.get("when"))
            if scope != "none":
                actions[action] = ScopeRule(scope, freeze(when))
        grant = Grant(draft.entity, FrozenDict(actions), FrozenDict(spec.get("fields") or {}),
                      draft.origin, located_at(draft.doc, draft.path))
        self._grants[id(draft)] = (draft, grant)
        return grant


def match_rules(draft: EntityDraft) -> tuple[MatchRule, ...]:
    """An entity's `duplicates`: a bare key `email` is `{field: email, normalise: exact}`."""
    rules = []
    for index, spec in enumerate(draft.spec.get("duplicates") or ()):
        keys = tuple(MatchKey(k) if isinstance(k, str) else
                     MatchKey(k["field"], k.get("normalise", "exact")) for k in spec["keys"])
        doc, path = draft.where.get(f"duplicates.{spec['rule']}",
                                    (draft.doc, ("duplicates", index)))
        rules.append(MatchRule(spec["rule"], keys, spec.get("action", "review"),
                               freeze(spec.get("when")), located_at(doc, path)))
    return tuple(rules)


def merge_storage(scopes: list[dict[str, Entity]], types: FieldTypeRegistry,
                  sink: DiagnosticSink) -> dict[str, Entity]:
    """The entities as stored: the union of every scope's fields (scopes[0] is tenant-wide)."""
    storage: dict[str, Entity] = {}
    for key, base in scopes[0].items():
        merged: dict[str, Field] = {f.name: f for f in base.fields}
        changed = False
        for scope in scopes[1:]:
            other = scope.get(key)
            if other is None or other is base:
                continue
            for candidate in other.fields:
                current = merged.get(candidate.name)
                if current is None:
                    merged[candidate.name] = candidate
                    changed = True
                elif current is not candidate and current != candidate:
                    merged[candidate.name] = _merge_field(current, candidate, key, types, sink)
                    changed = True
        if changed:
            everywhere = [f for f in merged.values()
                          if all(key in s and s[key].get_field(f.name) for s in scopes)]
            fields = tuple(f if f in everywhere else _not_shared(f) for f in merged.values())
            storage[key] = dataclasses.replace(base, fields=fields)
        else:
            storage[key] = base
    return storage


def _not_shared(field: Field) -> Field:
    """A field only some business units have: the shared table cannot require it or give it
    their default (each unit's own default and requiredness apply in its record service)."""
    return dataclasses.replace(field, required=False, default=None)


def _merge_field(first: Field, second: Field, entity: str, types: FieldTypeRegistry,
                 sink: DiagnosticSink) -> Field:
    field_type = first.type
    if second.type != first.type:
        if second.type in types[first.type].widens_to:
            field_type = second.type
        elif first.type not in types[second.type].widens_to:
            where = second.source
            sink.add(_conflict(where, f"`{entity}.{second.name}` is {a_or_an(first.type)} field "
                               f"in one business unit and {a_or_an(second.type)} field in "
                               "another; they share one table",
                               "give one unit's field a different name"))
            return first
    if second.target != first.target:
        sink.add(_conflict(second.source, f"`{entity}.{second.name}` refers to {first.target} in "
                           f"one business unit and to {second.target} in another", None))
    values = list(first.option_values)
    options = list(first.options)
    for option in second.options:
        if option.value not in values:
            options.append(option)
            values.append(option.value)
    # A limit only carries over from a field already of the final type: widening a unit's
    # string(20) to another unit's text must not cut the text to 20 characters.
    same_type = [f for f in (first, second) if f.type == field_type]
    lengths = [f.max_length for f in same_type if f.max_length is not None]
    if any(f.max_length is None for f in same_type):
        lengths = []
    return dataclasses.replace(
        first, type=field_type, options=tuple(options),
        max_length=max(lengths) if lengths else None,
        required=first.required and second.required, unique=first.unique or second.unique,
        index=first.index or second.index)


def _conflict(where: Source | None, message: str, hint: str | None) -> Diagnostic:
    return Diagnostic("overlay.conflict", message, where.file if where else None,
                      where.line if where else 0, where.column if where else 0, hint=hint)


def relations_of(entities: Mapping[str, Entity]) -> tuple[Relation, ...]:
    """Every stored link between entities, from the side that stores it."""
    relations = []
    for entity in entities.values():
        for f in entity.fields:
            if f.type == "reference" and f.target:
                relations.append(Relation("reference", entity.key, f.name, f.target, f.on_delete))
            elif f.type == "many_to_many" and f.target:
                relations.append(Relation("many_to_many", entity.key, f.name, f.target))
    return tuple(relations)


def content_hash(modules: Mapping[str, Any], units: Mapping[str, Any],
                 scopes: list[ScopeDraft]) -> str:
    """The metadata version: a hash of the resolved definitions, not of file names."""
    def entity_json(draft: EntityDraft) -> list[Any]:
        return [draft.id, draft.spec,
                [[f.name, f.id, f.origin, f.spec] for f in draft.fields.values()]]

    def scope_json(scope: ScopeDraft) -> list[Any]:
        out = [scope.unit, list(scope.modules),
               {k: entity_json(e) for k, e in scope.entities.items()},
               {k: [d.origin, d.spec] for k, d in scope.forms.items()},
               {k: [d.origin, d.spec] for k, d in scope.views.items()}]
        if scope.roles:  # only when there are roles: definitions without any keep their version
            out.append({k: [r.spec, {e: [g.origin, g.spec] for e, g in r.grants.items()}]
                        for k, r in scope.roles.items()})
        automation = automation_json(scope)
        if automation:  # likewise for workflows, rules, calendars and SLA policies
            out.append(automation)
        return out

    payload = {
        "ir": IR_FORMAT,
        "modules": modules,
        "units": units,
        "scopes": [scope_json(s) for s in scopes],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str,
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
