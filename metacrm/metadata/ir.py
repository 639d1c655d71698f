"""The Registry: the compiled, immutable picture of one tenant's definitions.

Generators, views and migrations read only these frozen dataclasses, never YAML.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .formula import Formula

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(Mapping[K, V], Generic[K, V]):
    """An immutable, hashable, picklable mapping that keeps insertion order."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[K, V] | Any = ()) -> None:
        self._data: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (self._data,))


def freeze(value: Any) -> Any:
    """Deep-freeze plain YAML values (dicts become FrozenDict, lists become tuples)."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain-JSON form of a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


ANY_LOCALE = "*"
REGION_SCRIPTS = {"zh-CN": "zh-Hans", "zh-SG": "zh-Hans", "zh-MY": "zh-Hans",
                  "zh-TW": "zh-Hant", "zh-HK": "zh-Hant", "zh-MO": "zh-Hant"}
"""A region tag's script, tried right after the tag itself (zh-CN reads zh-Hans)."""


def locale_chain(locale: str) -> list[str]:
    """The tags to try for `locale`, most specific first: zh-Hant-TW → zh-Hant → zh;
    zh-CN → zh-CN → zh-Hans → zh."""
    parts = locale.split("-")
    chain = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    script = REGION_SCRIPTS.get(locale)
    if script is not None:
        chain.insert(1, script)
    return chain
IR_FORMAT = 2
"""Part of every metadata version: bump it when the compiler starts to produce a different
Registry from the same YAML (so every tenant is re-planned against the new output)."""


@dataclass(frozen=True, slots=True)
class Text:
    """Text shown to people, per locale; plain strings are stored under ``*``."""

    values: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, spec: str | Mapping[str, str] | None, fallback: str = "") -> Text:
        if spec is None:
            return cls(((ANY_LOCALE, fallback),)) if fallback else cls(())
        if isinstance(spec, str):
            return cls(((ANY_LOCALE, spec),))
        values = tuple(spec.items())
        if fallback and ANY_LOCALE not in spec and "en" not in spec:
            values += ((ANY_LOCALE, fallback),)
        return cls(values)

    def merged(self, other: Text) -> Text:
        """This text with `other`'s locales laid over it."""
        if other.values and other.values[0][0] == ANY_LOCALE and len(other.values) == 1:
            return other
        values = dict(self.values)
        values.update(other.values)
        return Text(tuple(values.items()))

    def get(self, locale: str | None = None, default: str = "") -> str:
        """The text for `locale`: the tag, then shorter tags (zh-Hant-TW → zh-Hant → zh);
        a bare language (zh) takes any of its variants; then ``*``, English, the first.
        A script or region never falls back to a sibling (zh-Hans never shows zh-Hant)."""
        values = dict(self.values)
        if not values:
            return default
        if locale:
            for tag in locale_chain(locale):
                if tag in values:
                    return values[tag]
            if "-" not in locale:
                for key, text in values.items():
                    if key.split("-")[0] == locale:
                        return text
        for key in (ANY_LOCALE, "en"):
            if key in values:
                return values[key]
        return next(iter(values.values()))

    def __bool__(self) -> bool:
        return bool(self.values)

    def __str__(self) -> str:
        return self.get()


@dataclass(frozen=True, slots=True)
class Source:
    """Where a definition came from (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Option:
    """One value of an enum or multi_enum field."""

    value: str
    label: Text
    color: str | None = None


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an entity, its type resolved and its options normalised."""

    name: str
    id: str
    type: str
    label: Text
    help: Text = Text(())
    required: bool = False
    unique: bool = False
    index: bool = False
    default: Any = None
    read_only: bool = False
    hidden: bool = False
    min: Any = None
    max: Any = None
    max_length: int | None = None
    pattern: str | None = None
    options: tuple[Option, ...] = ()
    precision: int | None = None
    scale: int | None = None
    currency: str | None = None
    target: str | None = None
    on_delete: str | None = None
    via: str | None = None
    autonumber: str | None = None
    formula: Formula | None = None
    returns: str | None = None
    renamed_from: tuple[str, ...] = ()
    stored: bool = True
    origin: str = "module"
    params: FrozenDict[str, Any] = field(default_factory=FrozenDict)
    source: Source | None = field(default=None, compare=False)

    @property
    def option_values(self) -> tuple[str, ...]:
        return tuple(o.value for o in self.options)

    def option(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)


@dataclass(frozen=True, slots=True)
class Index:
    """An index over one or more stored fields."""

    name: str
    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Entity:
    """A record type: its fields in display order plus presentation."""

    module: str
    name: str
    id: str
    label: Text
    fields: tuple[Field, ...]
    plural_label: Text = Text(())
    description: Text = Text(())
    title: str | None = None
    icon: str | None = None
    search: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    renamed_from: tuple[str, ...] = ()
    duplicates: tuple[MatchRule, ...] = ()
    """Duplicate-detection match rules (see docs/language.md#duplicates)."""
    source: Source | None = field(default=None, compare=False)
    _by_name: FrozenDict[str, Field] = field(default_factory=FrozenDict, compare=False,
                                              repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", FrozenDict({f.name: f for f in self.fields}))

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def get_field(self, name: str) -> Field | None:
        return self._by_name.get(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def stored_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.stored)


@dataclass(frozen=True, slots=True)
class FormField:
    field: str
    help: Text = Text(())
    span: int = 1
    visible_when: Any = None
    read_only_when: Any = None
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    label: Text
    fields: tuple[FormField, ...]
    columns: int = 1
    collapsed: bool = False
    visible_when: Any = None


@dataclass(frozen=True, slots=True)
class Form:
    """A form layout for one entity."""

    module: str
    name: str
    entity: str
    label: Text
    sections: tuple[Section, ...]
    default: bool = False
    origin: str = "module"
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.field for s in self.sections for f in s.fields)


@dataclass(frozen=True, slots=True)
class Column:
    field: str
    label: Text = Text(())
    width: int | None = None
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class View:
    """A list view of one entity."""

    module: str
    name: str
    entity: str
    label: Text
    columns: tuple[Column, ...]
    sort: tuple[SortKey, ...] = ()
    filter: Any = None
    quick_filters: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    page_size: int = 50
    default: bool = False
    origin: str = "module"
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True, slots=True)
class Module:
    """A module manifest and the entities it declares."""

    name: str
    version: str
    label: Text
    owner: str
    depends: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    description: Text = Text(())
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Unit:
    """A business unit that shapes definitions with its own overlays."""

    name: str
    label: Text
    parent: str | None = None
    team: str | None = None
    modules: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Relation:
    """A link between entities, seen from the side that stores it."""

    kind: str  # reference | many_to_many
    source: str
    field: str
    target: str
    on_delete: str | None = None



# -- duplicates -----------------------------------------------------------------------------

NORMALISERS = ("exact", "text", "email", "phone", "company")
"""How a match key's field is normalised before comparing (see docs/language.md#duplicates)."""
MATCH_ACTIONS = ("block", "review")


@dataclass(frozen=True, slots=True)
class MatchKey:
    """One field of a match rule and how its value is normalised."""

    field: str
    normalise: str = "exact"


@dataclass(frozen=True, slots=True)
class MatchRule:
    """Records whose normalised keys are all equal are duplicate candidates.

    `block` refuses the write (409 with the candidates); `review` lets it through and
    puts the pair in the review queue. Nothing is ever merged automatically.
    """

    name: str
    keys: tuple[MatchKey, ...]
    action: str = "review"
    when: Any = None  # a condition the new record must meet for the rule to apply
    source: Source | None = field(default=None, compare=False)


# -- workflows ------------------------------------------------------------------------------

APPROVERS = ("role", "manager")


@dataclass(frozen=True, slots=True)
class State:
    """One state of a workflow (a value of its enum field)."""

    name: str
    label: Text = Text(())
    final: bool = False
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Approval:
    """Who must approve a transition before it happens.

    `by: role`: `count` of the users holding one of `roles` (n of m). `by: manager`: the
    record owner's managers up the org tree, `levels` of them, nearest first.
    """

    by: str
    roles: tuple[str, ...] = ()
    count: int = 1
    levels: int = 1


@dataclass(frozen=True, slots=True)
class Transition:
    """A named move between states, with who may take it and what must hold."""

    name: str
    from_states: tuple[str, ...]
    to: str
    label: Text = Text(())
    roles: tuple[str, ...] = ()  # empty: anyone with the `transition` action
    when: Any = None
    requires: tuple[str, ...] = ()
    approval: Approval | None = None
    actions: tuple[FrozenDict[str, Any], ...] = ()  # each {action_name: params}
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Workflow:
    """A state machine over one enum field of one entity."""

    module: str
    name: str
    entity: str
    field: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    initial: str
    label: Text = Text(())
    origin: str = "module"
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"

    def transition(self, name: str) -> Transition | None:
        return next((t for t in self.transitions if t.name == name), None)


# -- automation rules -----------------------------------------------------------------------

TRIGGERS = ("created", "updated", "changed", "deleted", "transitioned", "schedule", "after")


@dataclass(frozen=True, slots=True)
class Trigger:
    """What starts a rule.

    created | updated | deleted: that record event; changed: an update touching one of
    `fields`; transitioned: a workflow transition (`transitions` names, empty: any);
    schedule: a `cron` expression (in the tenant's timezone); after: `delay` (seconds,
    negative = before) relative to the date or datetime `field`.
    """

    kind: str
    fields: tuple[str, ...] = ()
    transitions: tuple[str, ...] = ()
    cron: str | None = None
    field: str | None = None
    delay: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """Automation: when `trigger` fires and `when` holds for the record, run `actions`."""

    module: str
    name: str
    entity: str
    trigger: Trigger
    actions: tuple[FrozenDict[str, Any], ...]  # each {action_name: params}
    when: Any = None
    label: Text = Text(())
    enabled: bool = True
    origin: str = "module"
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"


# -- calendars and service levels -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Calendar:
    """Business hours: per weekday (0 = Monday) a list of (start, end) "HH:MM" spans,
    in `timezone`, minus `holidays` (ISO dates)."""

    module: str
    name: str
    timezone: str
    hours: FrozenDict[int, tuple[tuple[str, str], ...]]
    holidays: tuple[str, ...] = ()
    label: Text = Text(())
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True, slots=True)
class SlaClock:
    """One clock of a policy: runs from `start` until `stop` holds, in business time.

    `start`: `created` or a condition; `stop`: a condition (e.g. first_response_at set);
    `targets`: seconds of business time per value of the policy's `by` field (key "" is
    the default).
    """

    name: str
    stop: Any
    targets: FrozenDict[str, int]
    start: Any = None  # None: from creation
    field: str | None = None  # a datetime field that records when the clock failed


@dataclass(frozen=True, slots=True)
class EscalationLevel:
    """At `at` (fraction of the target, 1.0 = breached) notify or reassign up the tree."""

    at: float
    levels_up: int = 1
    actions: tuple[FrozenDict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Service-level clocks over one entity's records, in a calendar's business time."""

    module: str
    name: str
    entity: str
    calendar: str
    clocks: tuple[SlaClock, ...]
    when: Any = None  # which records the policy covers
    by: str | None = None  # the field whose value picks the targets (e.g. priority)
    pause_when: Any = None  # while it holds, every clock of the record is paused
    warn_at: float = 0.8
    escalations: tuple[EscalationLevel, ...] = ()
    label: Text = Text(())
    origin: str = "module"
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}"


ACTIONS = ("read", "create", "update", "delete", "restore", "export", "import", "transition",
           "assign")
"""What a role may do to an entity's records; each action is granted with a scope."""
SCOPES = ("none", "own", "assigned", "team", "subtree", "business_unit", "all")
"""How far a grant reaches, narrowest first (see docs/permissions.md)."""
FIELD_ACCESS = ("hidden", "read", "write")


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """One action's reach: a scope, optionally narrowed by a condition on the record."""

    scope: str
    when: Any = None  # a condition document (frozen), or None


@dataclass(frozen=True, slots=True)
class Grant:
    """What one role may do to one entity: actions with scopes, and per-field access.

    Actions not listed are not granted; fields not listed are writable (``write``).
    """

    entity: str
    actions: FrozenDict[str, ScopeRule]
    fields: FrozenDict[str, str] = field(default_factory=FrozenDict)
    origin: str = "module"
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Role:
    """A role: the grants it carries on each entity, as one scope (unit) sees them."""

    name: str
    label: Text
    description: Text = Text(())
    grants: FrozenDict[str, Grant] = field(default_factory=FrozenDict)
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Scope:
    """What one business unit (or the tenant as a whole, unit None) sees."""

    unit: str | None
    modules: tuple[str, ...]
    entities: FrozenDict[str, Entity]
    forms: FrozenDict[str, Form]
    views: FrozenDict[str, View]
    roles: FrozenDict[str, Role] = field(default_factory=FrozenDict)
    workflows: FrozenDict[str, Workflow] = field(default_factory=FrozenDict)
    rules: FrozenDict[str, Rule] = field(default_factory=FrozenDict)
    calendars: FrozenDict[str, Calendar] = field(default_factory=FrozenDict)
    sla_policies: FrozenDict[str, SlaPolicy] = field(default_factory=FrozenDict)

    def workflow_for(self, entity: str) -> Workflow | None:
        """The workflow over `entity`'s records in this scope (at most one per entity)."""
        return next((w for w in self.workflows.values() if w.entity == entity), None)

    def rules_for(self, entity: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules.values() if r.entity == entity and r.enabled)

    def forms_for(self, entity: str) -> tuple[Form, ...]:
        return tuple(f for f in self.forms.values() if f.entity == entity)

    def views_for(self, entity: str) -> tuple[View, ...]:
        return tuple(v for v in self.views.values() if v.entity == entity)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Registry:
    """One compiled set of definitions; `version` is its content hash."""

    version: str
    modules: FrozenDict[str, Module]
    entities: FrozenDict[str, Entity]
    scopes: FrozenDict[str, Scope]
    units: FrozenDict[str, Unit]
    relations: tuple[Relation, ...] = ()

    def scope(self, unit: str | None = None) -> Scope:
        """The definitions as `unit` sees them (None: the tenant as a whole)."""
        return self.scopes[unit or ""]

    def entity(self, key: str, unit: str | None = None) -> Entity:
        """An entity as stored (unit None) or as `unit` sees it."""
        return self.entities[key] if unit is None else self.scope(unit).entities[key]

    def incoming(self, key: str) -> tuple[Relation, ...]:
        """Relations whose target is entity `key` (records that reference it)."""
        return tuple(r for r in self.relations if r.target == key)
