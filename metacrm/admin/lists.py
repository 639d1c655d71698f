"""List pages from the YAML views: columns, sort, the view's filter, quick filters, search.

Everything a list asks for becomes one condition document (`all` of the view's filter,
each quick filter and the search's `any` of `contains`) handed to RecordService.list as
ListQuery.filter, so a list obeys exactly the same rules as the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engines.conditions.values import TEXT_TYPES
from ..metadata.ir import Entity, Field, View, thaw
from ..platform.records import ListQuery, NotFound, RecordService
from .display import SYSTEM_COLUMNS
from .i18n import Translator

SORTABLE_SYSTEM = frozenset({"id", "created_at", "updated_at"})
UNSORTABLE_TYPES = frozenset({"json", "multi_enum", "many_to_many", "children", "formula"})
NOT_LISTED = frozenset({"children", "many_to_many", "json", "text"})
DEFAULT_COLUMNS = 6
DEFAULT_PAGE = 50
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
QUICK_PREFIX = "f_"


@dataclass(frozen=True, slots=True)
class ListColumn:
    """One column: a field, a system column or a path through one reference."""

    name: str
    label: str
    field: Field | None = None  # the field shown (the target's field for a path)
    via: Field | None = None  # the reference a path goes through
    sortable: bool = False
    width: int | None = None


@dataclass(frozen=True, slots=True)
class QuickFilter:
    """A one-click filter above the list: the field, the value chosen, its choices."""

    field: Field
    label: str
    value: str
    choices: tuple[tuple[str, str], ...] | None = None
    input_type: str = "text"

    @property
    def param(self) -> str:
        return QUICK_PREFIX + self.field.name


@dataclass(slots=True)
class ListSpec:
    """What one list page shows and asks the record service for."""

    entity: Entity
    views: tuple[View, ...]
    view: View | None
    columns: tuple[ListColumn, ...]
    sort: tuple[tuple[str, bool], ...]
    quick: tuple[QuickFilter, ...]
    search_fields: tuple[Field, ...]
    search: str
    filter: Any
    page_size: int
    expand: tuple[str, ...]
    errors: list[str] = field(default_factory=list)

    def query(self, cursor: str | None = None, *, count: bool = True) -> ListQuery:
        return ListQuery(filter=self.filter, sort=self.sort, limit=self.page_size,
                         cursor=cursor or None, expand=self.expand, count=count)

    @property
    def sort_param(self) -> str:
        return ",".join(("-" if desc else "") + name for name, desc in self.sort)

    def state(self, **changes: Any) -> dict[str, str]:
        """The query parameters of this list (view, sort, filters, search), changed."""
        params: dict[str, str] = {}
        if self.view is not None and self.views and self.view is not self.views[0]:
            params["view"] = self.view.key
        params["sort"] = self.sort_param
        for quick in self.quick:
            if quick.value:
                params[quick.param] = quick.value
        if self.search:
            params["q"] = self.search
        params.update({k: v for k, v in changes.items() if v is not None})
        return {k: v for k, v in params.items() if v != ""}


def ordered_views(views: tuple[View, ...]) -> tuple[View, ...]:
    """The entity's views, the default one first."""
    return tuple(sorted(views, key=lambda v: not v.default))


def resolve_list(service: RecordService, key: str, args: Mapping[str, str],
                 t: Translator) -> ListSpec:
    """The list page for `key` as the request's parameters ask for it."""
    access = service.access(key)
    entity = access.entity
    views = ordered_views(service.scope.views_for(key))
    wanted = args.get("view")
    view = next((v for v in views if v.key == wanted), views[0] if views else None)
    columns = _columns(service, entity, view, t)
    sort = _sort(args.get("sort"), columns, view, entity)
    quick = tuple(_quick(entity, view, args, t))
    search_fields = _search_fields(entity, view)
    search = (args.get("q") or "").strip()
    spec = ListSpec(entity, views, view, columns, sort, quick, search_fields, search, None,
                    view.page_size if view is not None else DEFAULT_PAGE, _expand(columns))
    spec.filter = _filter(spec, view)
    return spec


def _expand(columns: tuple[ListColumn, ...]) -> tuple[str, ...]:
    """The references a page expands: paths go through them, and references show titles."""
    names = [c.via.name if c.via is not None else c.name for c in columns
             if c.via is not None or (c.field is not None and c.field.type == "reference")]
    return tuple(dict.fromkeys(names))


def _visible(entity: Entity, name: str) -> Field | None:
    found = entity.get_field(name)
    return found if found is not None and not found.hidden else None


def _columns(service: RecordService, entity: Entity, view: View | None,
             t: Translator) -> tuple[ListColumn, ...]:
    if view is None:
        fields = [f for f in entity.fields if not f.hidden and f.type not in NOT_LISTED]
        titled = [f for f in fields if entity.title and "{" + f.name + "}" in entity.title]
        chosen = list(dict.fromkeys([*titled, *fields]))[:DEFAULT_COLUMNS]
        return tuple(_field_column(f, t, None, None) for f in chosen)
    columns = []
    for column in view.columns:
        label = t.text(column.label) if column.label else None
        name = column.field
        if "." in name:
            made = _path_column(service, entity, name, label, t, column.width)
            if made is not None:
                columns.append(made)
            continue
        found = _visible(entity, name)
        if found is not None:
            columns.append(_field_column(found, t, label, column.width))
        elif name in SYSTEM_COLUMNS and entity.get_field(name) is None:
            columns.append(ListColumn(name, label or t(f"col_{name}"), None, None,
                                      name in SORTABLE_SYSTEM, column.width))
    return tuple(columns)


def _field_column(found: Field, t: Translator, label: str | None,
                  width: int | None) -> ListColumn:
    sortable = found.stored and found.type not in UNSORTABLE_TYPES
    return ListColumn(found.name, label or t.text(found.label, found.name), found, None,
                      sortable, width)


def _path_column(service: RecordService, entity: Entity, path: str, label: str | None,
                 t: Translator, width: int | None) -> ListColumn | None:
    """A column through one reference (`customer.city`), when the visitor sees both ends."""
    first, _, rest = path.partition(".")
    via = _visible(entity, first)
    if via is None or via.type != "reference" or "." in rest or via.target is None:
        return None
    try:
        target = service.access(via.target).entity
    except NotFound:
        return None
    shown = _visible(target, rest)
    if shown is None and rest not in SYSTEM_COLUMNS:
        return None
    text = t.text(shown.label, rest) if shown is not None else t(f"col_{rest}")
    return ListColumn(path, label or f"{t.text(via.label, first)} · {text}", shown, via,
                      False, width)


def _sort(raw: str | None, columns: tuple[ListColumn, ...], view: View | None,
          entity: Entity) -> tuple[tuple[str, bool], ...]:
    """The sort asked for (one sortable column), else the view's (keys the visitor may see),
    else newest first."""
    sortable = {c.name for c in columns if c.sortable}
    keys = [(k.field, k.descending) for k in (view.sort if view is not None else ())
            if k.field in SYSTEM_COLUMNS or _visible(entity, k.field) is not None]
    default = tuple(keys) or (("created_at", True),)
    if raw:
        name = raw.lstrip("-")
        if name in sortable or name in {k for k, _ in default}:
            return ((name, raw.startswith("-")),)
    return default


def _quick(entity: Entity, view: View | None, args: Mapping[str, str],
           t: Translator) -> list[QuickFilter]:
    found = []
    for name in view.quick_filters if view is not None else ():
        quick_field = _visible(entity, name)
        if quick_field is None or not quick_field.stored:
            continue
        value = (args.get(QUICK_PREFIX + name) or "").strip()
        label = t.text(quick_field.label, name)
        if quick_field.type in ("enum", "multi_enum"):
            choices = tuple((o.value, t.text(o.label, o.value)) for o in quick_field.options)
            found.append(QuickFilter(quick_field, label, value, choices, "select"))
        elif quick_field.type == "boolean":
            found.append(QuickFilter(quick_field, label, value,
                                     (("true", t("yes")), ("false", t("no"))), "select"))
        else:
            kind = {"date": "date", "integer": "number", "reference": "number",
                    "user": "number"}.get(quick_field.type, "text")
            found.append(QuickFilter(quick_field, label, value, None, kind))
    return found


def _search_fields(entity: Entity, view: View | None) -> tuple[Field, ...]:
    names = (view.search if view is not None and view.search else ()) or entity.search
    fields = (_visible(entity, n) for n in names)
    return tuple(f for f in fields if f is not None and f.stored and f.type in TEXT_TYPES)


def _filter(spec: ListSpec, view: View | None) -> Any:
    """One condition document: the view's filter, the quick filters and the search."""
    parts: list[Any] = []
    if view is not None and view.filter is not None:
        parts.append(thaw(view.filter))
    for quick in spec.quick:
        if not quick.value:
            continue
        value = _quick_value(quick.field, quick.value)
        if value is None:
            spec.errors.append(f"{quick.label}: {quick.value!r}")
            continue
        op = "contains" if quick.field.type == "multi_enum" else "eq"
        parts.append({"field": quick.field.name, "op": op, "value": value})
    if spec.search and spec.search_fields:
        parts.append({"any": [{"field": f.name, "op": "contains", "value": spec.search}
                              for f in spec.search_fields]})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"all": parts}


def _quick_value(quick_field: Field, raw: str) -> Any:
    """A quick filter's text as the condition language's value (None: not valid)."""
    if quick_field.type == "boolean":
        lowered = raw.lower()
        return True if lowered in TRUE_WORDS else False if lowered in FALSE_WORDS else None
    if quick_field.type in ("integer", "reference", "user"):
        try:
            return int(raw)
        except ValueError:
            return None
    return raw
