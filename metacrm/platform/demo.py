"""Demo data: records generated from ``tenants/<slug>/demo.yaml``, once per tenant.

The file says, per entity, how many records to make and how to fill each field: a Faker
provider (in the locales the file lists), a choice list, a constant, a Jinja template or
a reference to a record generated earlier in the same file. A seed makes every run
produce the same records. Records are written through the record service as the users
named in ``owners`` (their business unit decides which overlay fields exist), so
defaults, autonumbers, audit, workflows and rules apply as they would for people.

A marker row in the tenant's own database (``_metacrm_demo``) makes it idempotent: a
second run finds the marker and adds nothing. ``metacrm demo TENANT`` applies the file;
``metacrm run`` applies it after seeding ``org.yaml``.

    demo: acme
    seed: 2025
    locales: {zh_TW: 3, en_US: 1}
    entities:
      ocrm.account:
        count: 12
        owners: [ming, mei]
        fields:
          name: {faker: company}
          tier: {choice: [strategic, key, standard], weights: [1, 3, 6]}
      ocrm.contact:
        for_each: {entity: ocrm.account, field: account}
        count: [1, 3]
        fields:
          name: {faker: name}
          email: {template: "{{ record.name | lower | replace(' ', '.') }}@example.com"}
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import sqlalchemy as sa

from ..hookspecs import hookimpl
from ..metadata.diagnostics import Diagnostic
from ..metadata.ir import Entity
from ..metadata.loader import Document, LoadError, load_file
from .records import Actor, Conflict, RecordError, RecordService, ValidationFailed

log = logging.getLogger(__name__)

MARKER_TABLE = "_metacrm_demo"
ATTEMPTS = 5
"""How often a record whose values the platform refuses (a duplicate, a unique value
taken) is generated again before the run stops."""
NOT_GENERATED = frozenset({"formula", "autonumber", "children"})
FAKER_NAME = "^[a-z][a-z0-9_]*$"
NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
ENTITY_KEY = {"type": "string", "pattern": "^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$"}
LOCALE = {"type": "string", "pattern": "^[a-z]{2,3}(_[A-Z]{2})?$"}
LOCALES = {"oneOf": [
    {"type": "array", "items": LOCALE, "minItems": 1, "uniqueItems": True},
    {"type": "object", "minProperties": 1, "propertyNames": LOCALE,
     "additionalProperties": {"type": "number", "exclusiveMinimum": 0}}]}
COUNT = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 100_000},
                   {"type": "array", "items": {"type": "integer", "minimum": 0,
                                               "maximum": 100_000},
                    "minItems": 2, "maxItems": 2}]}
GENERATOR = {
    "type": "object", "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "faker": {"type": "string", "pattern": FAKER_NAME,
                  "description": "A Faker provider method, e.g. name, company, email."},
        "args": {"type": "object", "description": "Keyword arguments of the Faker method."},
        "choice": {"type": "array", "minItems": 1},
        "weights": {"type": "array", "items": {"type": "number", "minimum": 0}},
        "value": {"description": "The same value for every record."},
        "template": {"type": "string", "maxLength": 2000},
        "ref": ENTITY_KEY,
        "match": {"type": "object", "propertyNames": NAME,
                  "additionalProperties": NAME},
        "filter": {"type": "object", "propertyNames": NAME},
        "empty": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "oneOf": [{"required": ["faker"]}, {"required": ["choice"]}, {"required": ["value"]},
              {"required": ["template"]}, {"required": ["ref"]}],
}
FIELDS = {"type": "object", "propertyNames": NAME, "additionalProperties": GENERATOR}
DEMO_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "required": ["demo", "entities"], "additionalProperties": False,
    "properties": {
        "demo": {"type": "string", "description": "The tenant's slug."},
        "seed": {"type": "integer"},
        "locales": LOCALES,
        "entities": {"type": "object", "propertyNames": ENTITY_KEY, "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["count"],
            "properties": {
                "count": COUNT,
                "for_each": {"type": "object", "additionalProperties": False,
                             "required": ["entity"],
                             "properties": {"entity": ENTITY_KEY, "field": NAME}},
                "owners": {"type": "array", "items": {"type": "string", "minLength": 1},
                           "minItems": 1},
                "locales": LOCALES,
                "fields": FIELDS,
                "transitions": GENERATOR,
                "units": {"type": "object", "propertyNames": NAME,
                          "additionalProperties": {
                              "type": "object", "additionalProperties": False,
                              "properties": {"fields": FIELDS, "transitions": GENERATOR}}},
            }}},
    },
}


class DemoError(Exception):
    """A demo file that cannot be applied; carries its diagnostics (file:line:col)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.format() for d in diagnostics))


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What a run did: `applied` False means an earlier run's marker was found."""

    applied: bool
    counts: dict[str, int]
    digest: str
    at: dt.datetime | None = None
    status: str = "applied"


# -- the marker table ---------------------------------------------------------------------------


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return [sa.Table(
        MARKER_TABLE, metadata,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False))]


# -- loading and checking ---------------------------------------------------------------------


def demo_file(directory: Path) -> Path:
    return directory / "demo.yaml"


def load_demo(path: Path) -> Document:
    """The demo document, checked against its schema; DemoError lists every problem."""
    try:
        doc = load_file(path)
    except LoadError as exc:
        raise DemoError(exc.diagnostics) from exc
    validator = jsonschema.Draft202012Validator(DEMO_SCHEMA)
    problems = [doc.diagnostic("demo.schema", _schema_message(error),
                               tuple(error.absolute_path))
                for error in sorted(validator.iter_errors(doc.data), key=lambda e: e.path)]
    if problems:
        raise DemoError(problems)
    return doc


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "oneOf" and error.validator_value is GENERATOR["oneOf"]:
        return ("a field takes exactly one of `faker`, `choice`, `value`, `template` or "
                "`ref` (with their options)")
    return error.message


@dataclass(slots=True)
class _Plan:
    """One entity of the file, checked against the Registry and the tenant's users."""

    key: str
    spec: Mapping[str, Any]
    owners: list[tuple[int, str | None, str]]  # (user id, business unit, username)
    fields: dict[str | None, dict[str, Mapping[str, Any]]]  # per unit (None: every unit)
    transitions: dict[str | None, Mapping[str, Any]]  # per unit: which transitions to take
    locales: tuple[tuple[str, ...], tuple[float, ...]]


def _locales(spec: Any, default: tuple[tuple[str, ...], tuple[float, ...]]
             ) -> tuple[tuple[str, ...], tuple[float, ...]]:
    if spec is None:
        return default
    if isinstance(spec, Mapping):
        return tuple(spec), tuple(float(w) for w in spec.values())
    return tuple(spec), tuple(1.0 for _ in spec)


def _check(runtime: Any, doc: Document, fakers: _Fakers) -> list[_Plan]:
    """Every entity, field, owner, reference and Faker provider the file names must exist;
    all problems are collected before anything is written."""
    from .auth import user_by_name
    from .permissions import load_principal
    from .systables import runtime_system_tables

    data = doc.data
    problems: list[Diagnostic] = []
    if data["demo"] != runtime.slug:
        problems.append(doc.diagnostic("demo.tenant", f"this file is for `{data['demo']}`, "
                                       f"not `{runtime.slug}`", ("demo",)))
    registry = runtime.registry
    default_locales = _locales(data.get("locales"), (("en_US",), (1.0,)))
    for locale in default_locales[0]:
        if not fakers.known(locale):
            problems.append(doc.diagnostic("demo.locale", f"Faker has no locale `{locale}`",
                                           ("locales",)))
    plans: list[_Plan] = []
    seen: list[str] = []
    tables = runtime_system_tables(runtime)
    with runtime.connect() as connection:
        for key, spec in data["entities"].items():
            where: tuple[Any, ...] = ("entities", key)
            if key not in registry.entities:
                problems.append(doc.diagnostic("demo.unknown-entity", f"`{key}` is not an "
                                               "entity of the tenant's modules", where,
                                               key=True))
                continue
            owners = []
            for index, username in enumerate(spec.get("owners") or ()):
                user = user_by_name(connection, username)
                if user is None:
                    problems.append(doc.diagnostic(
                        "demo.unknown-user", f"`{username}` is not a user of the tenant "
                        "(seed org.yaml first)", (*where, "owners", index)))
                    continue
                principal = load_principal(connection, tables, user, registry.units)
                owners.append((user.id, principal.business_unit, username))
            parent = spec.get("for_each")
            if parent is not None:
                problems.extend(_check_parent(doc, registry, key, parent, seen, where))
            if parent is None and isinstance(spec["count"], list):
                problems.append(doc.diagnostic("demo.count", "a range `[low, high]` is a "
                                               "count per parent record: it needs `for_each`",
                                               (*where, "count")))
            fields: dict[str | None, dict[str, Mapping[str, Any]]] = {
                None: dict(spec.get("fields") or {})}
            walks: dict[str | None, Mapping[str, Any]] = {}
            if spec.get("transitions") is not None:
                walks[None] = spec["transitions"]
                problems.extend(_check_walk(doc, registry, key, None, spec["transitions"],
                                            (*where, "transitions")))
            locales = _locales(spec.get("locales"), default_locales)
            problems.extend(_check_fields(doc, registry.scope(None).entities[key],
                                          fields[None], seen, fakers, locales[0],
                                          (*where, "fields")))
            for unit, unit_spec in (spec.get("units") or {}).items():
                if unit not in registry.units:
                    problems.append(doc.diagnostic("demo.unknown-unit", f"`{unit}` is not a "
                                                   "business unit of the tenant",
                                                   (*where, "units", unit), key=True))
                    continue
                fields[unit] = dict(unit_spec.get("fields") or {})
                if unit_spec.get("transitions") is not None:
                    walks[unit] = unit_spec["transitions"]
                    problems.extend(_check_walk(doc, registry, key, unit,
                                                unit_spec["transitions"],
                                                (*where, "units", unit, "transitions")))
                problems.extend(_check_fields(doc, registry.scope(unit).entities[key],
                                              fields[unit], seen, fakers, locales[0],
                                              (*where, "units", unit, "fields")))
            for locale in locales[0]:
                if not fakers.known(locale):
                    problems.append(doc.diagnostic("demo.locale", f"Faker has no locale "
                                                   f"`{locale}`", (*where, "locales")))
            plans.append(_Plan(key, spec, owners, fields, walks, locales))
            seen.append(key)
    if problems:
        raise DemoError(problems)
    return plans


def _check_walk(doc: Document, registry: Any, key: str, unit: str | None,
                spec: Mapping[str, Any], where: tuple[Any, ...]) -> list[Diagnostic]:
    """`transitions` picks a list of transitions (by name, or {transition, values}) that
    each must be a transition of the entity's workflow in that unit."""
    workflow = registry.scope(unit).workflow_for(key)
    if workflow is None:
        return [doc.diagnostic("demo.no-workflow", f"{key} has no workflow"
                               + (f" in {unit}" if unit else ""), where, key=True)]
    if "choice" in spec:
        walks, place = spec["choice"], "choice"
    elif "value" in spec:
        walks, place = [spec["value"]], "value"
    else:
        return [doc.diagnostic("demo.transitions", "`transitions` takes `choice` (a list of "
                               "lists of transitions) or `value` (one list)", where)]
    problems = []
    names = {t.name for t in workflow.transitions}
    for number, walk in enumerate(walks):
        at = (*where, place) if place == "value" else (*where, place, number)
        if not isinstance(walk, list):
            problems.append(doc.diagnostic("demo.transitions", "each choice is a list of "
                                           "transitions", at))
            continue
        for position, step in enumerate(walk):
            name = step.get("transition") if isinstance(step, Mapping) else step
            if name not in names:
                problems.append(doc.diagnostic(
                    "demo.unknown-transition", f"`{name}` is not a transition of "
                    f"{workflow.key}" + (f" in {unit}" if unit else "") + "; it has "
                    + ", ".join(sorted(names)), (*at, position)))
    return problems


def _check_parent(doc: Document, registry: Any, key: str, parent: Mapping[str, Any],
                  seen: list[str], where: tuple[Any, ...]) -> list[Diagnostic]:
    problems = []
    if parent["entity"] not in seen:
        problems.append(doc.diagnostic("demo.order", f"`for_each` names `{parent['entity']}`,"
                                       " which is not generated earlier in this file",
                                       (*where, "for_each", "entity")))
    name = parent.get("field")
    if name is not None:
        found = registry.scope(None).entities[key].get_field(name)
        if found is None or found.type != "reference" or found.target != parent["entity"]:
            problems.append(doc.diagnostic("demo.for-each-field", f"`{name}` is not a reference"
                                           f" field of {key} to {parent['entity']}",
                                           (*where, "for_each", "field")))
    return problems


def _check_fields(doc: Document, entity: Entity, fields: Mapping[str, Mapping[str, Any]],
                  seen: list[str], fakers: _Fakers, locales: Sequence[str],
                  where: tuple[Any, ...]) -> list[Diagnostic]:
    problems = []
    for name, spec in fields.items():
        at = (*where, name)
        found = entity.get_field(name)
        if found is None:
            problems.append(doc.diagnostic("demo.unknown-field", f"`{name}` is not a field of "
                                           f"{entity.key} here", at, key=True))
            continue
        if found.type in NOT_GENERATED or found.read_only:
            problems.append(doc.diagnostic("demo.not-writable", f"`{name}` of {entity.key} is "
                                           "not written by people (computed or read-only)",
                                           at, key=True))
        if "faker" in spec and not fakers.provides(spec["faker"], locales):
            problems.append(doc.diagnostic("demo.faker", f"Faker has no provider "
                                           f"`{spec['faker']}` in every locale of "
                                           f"{entity.key} ({', '.join(locales)})",
                                           (*at, "faker")))
        if "ref" in spec:
            if spec["ref"] not in seen:
                problems.append(doc.diagnostic("demo.order", f"`{spec['ref']}` is not generated "
                                               "earlier in this file", (*at, "ref")))
            if found.type not in ("reference", "many_to_many") or found.target != spec["ref"]:
                problems.append(doc.diagnostic("demo.ref", f"`{name}` of {entity.key} does not "
                                               f"refer to {spec['ref']}", (*at, "ref")))
        weights = spec.get("weights")
        if weights is not None and len(weights) != len(spec.get("choice") or ()):
            problems.append(doc.diagnostic("demo.weights", "`weights` needs one weight per "
                                           "choice", (*at, "weights")))
    return problems


# -- generating ---------------------------------------------------------------------------------


class _Fakers:
    """One Faker per locale, built on first use and reseeded per entity."""

    def __init__(self) -> None:
        self._by_locale: dict[str, Any] = {}

    def get(self, locale: str) -> Any:
        found = self._by_locale.get(locale)
        if found is None:
            from faker import Faker

            found = self._by_locale[locale] = Faker(locale)
        return found

    def known(self, locale: str) -> bool:
        from faker.config import AVAILABLE_LOCALES

        return locale in AVAILABLE_LOCALES

    def provides(self, name: str, locales: Sequence[str]) -> bool:
        """A public method of one of Faker's providers in every locale (not the
        generator's own plumbing such as `seed` or `add_provider`)."""
        if name.startswith("_"):
            return False
        return all(any(callable(getattr(p, name, None)) for p in self.get(loc).get_providers())
                   for loc in locales if self.known(loc))


@dataclass(slots=True)
class _Made:
    """The records generated so far, per entity: their values, id, owner and unit."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def of(self, key: str) -> list[dict[str, Any]]:
        return self.records.setdefault(key, [])


class _Generator:
    def __init__(self, runtime: Any, seed: int, fakers: _Fakers) -> None:
        from jinja2 import ChainableUndefined, pass_context
        from jinja2.sandbox import SandboxedEnvironment

        self.runtime = runtime
        self.seed = seed
        self.fakers = fakers
        self.zone = ZoneInfo(runtime.config.timezone)
        self.jinja = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)
        self._templates: dict[str, Any] = {}
        self._rng = random.Random(seed)

        @pass_context  # never folded into a constant when the template compiles
        def pick(_context: Any, items: Any) -> Any:
            items = list(items)
            return self._rng.choice(items) if items else None

        self.jinja.filters["random"] = pick  # seeded, unlike Jinja's own

    def rng(self, key: str) -> random.Random:
        return random.Random(f"{self.seed}:{key}")

    def values(self, plan: _Plan, rng: random.Random, faker: Any, entity: Entity,
               context: dict[str, Any]) -> dict[str, Any]:
        """One record's values: the file's fields for every unit, then the owner's unit's."""
        specs = dict(plan.fields[None])
        specs.update(plan.fields.get(context["unit"]) or {})
        # templates last (in the order written), so they can use every other field
        specs = {**{k: v for k, v in specs.items() if "template" not in v},
                 **{k: v for k, v in specs.items() if "template" in v}}
        self._rng = rng
        record: dict[str, Any] = context["record"]
        related: dict[str, Any] = context["related"]
        for name, spec in specs.items():
            found = entity.get_field(name)
            if found is None:
                continue
            if spec.get("empty") and rng.random() < spec["empty"]:
                continue
            value = self._one(spec, rng, faker, context, name)
            if "ref" in spec:
                related[name] = value
                value = None if value is None else value["id"]
                if found.type == "many_to_many":
                    value = [] if value is None else [value]
            value = _coerce(found, value, self.zone)
            if value is not None:
                record[name] = value
        return record

    def walk(self, spec: Mapping[str, Any], rng: random.Random,
             context: dict[str, Any]) -> list[Any]:
        """The transitions one record takes after it is made."""
        steps = self._one(spec, rng, None, context, "transitions")
        return list(steps or ())

    def _one(self, spec: Mapping[str, Any], rng: random.Random, faker: Any,
             context: dict[str, Any], name: str) -> Any:
        if "value" in spec:
            return spec["value"]
        if "choice" in spec:
            return rng.choices(spec["choice"], weights=spec.get("weights"))[0]
        if "faker" in spec:
            return getattr(faker, spec["faker"])(**dict(spec.get("args") or {}))
        if "template" in spec:
            template = self._templates.get(spec["template"])
            if template is None:
                template = self._templates[spec["template"]] = \
                    self.jinja.from_string(spec["template"])
            return template.render(**context).strip()
        ours = {**context["record"], "owner": context["owner_id"],
                "business_unit": context["unit"]}
        candidates = [r for r in map(_visible, context["made"].of(spec["ref"]))
                      if all(r.get(k) == v for k, v in (spec.get("filter") or {}).items())
                      and all(r.get(theirs) == ours.get(mine)
                              for theirs, mine in (spec.get("match") or {}).items())]
        return rng.choice(candidates) if candidates else None


def _visible(made: Mapping[str, Any]) -> dict[str, Any]:
    """A generated record as `ref`, `match` and templates see it: its values, id, owner
    (user id) and business unit."""
    return {**made["values"], "id": made["id"], "owner": made["owner"],
            "business_unit": made["unit"]}


def _coerce(found: Any, value: Any, zone: ZoneInfo) -> Any:
    """A generated value in the form the record service takes for the field's type."""
    if value is None:
        return None
    kind = found.type
    if kind in ("string", "text", "email", "phone", "url") and not isinstance(value, str):
        value = str(value)
    if kind == "phone":  # Faker's extensions and letters are not phone characters
        value = re.sub(r"\s*(x|ext\.?)\s*\d+$", "", value).strip()
        plus = "+" if value.startswith("+") else ""
        value = plus + re.sub(r"[^0-9() ./-]", "", value).strip()
    if kind in ("string", "text", "email", "phone", "url") and found.max_length:
        value = value[:found.max_length]
    if kind == "integer":
        return int(decimal.Decimal(str(value)))
    if kind in ("decimal", "money"):
        scale = found.scale if found.scale is not None else 2
        return str(decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-scale)))
    if kind == "boolean" and isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if kind == "date":
        if isinstance(value, dt.datetime):
            value = value.date()
        return value.isoformat() if isinstance(value, dt.date) else value
    if kind == "datetime":
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time(9, 0))
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=zone)
            return value.isoformat()
    if kind == "multi_enum" and not isinstance(value, list):
        return [value]
    return value


# -- applying -----------------------------------------------------------------------------------


def apply_demo(runtime: Any, doc: Document, *, again: bool = False) -> DemoResult:
    """Generate and write the file's records once; a second call finds the marker and
    writes nothing (`again`: write another set anyway). Record events reach the platform
    serving `runtime`, so rules and workflows treat demo records like any others."""
    from .systables import runtime_system_tables

    digest = doc.digest
    fakers = _Fakers()
    plans = _check(runtime, doc, fakers)
    marker = runtime_system_tables(runtime).table(MARKER_TABLE)
    name = "demo.yaml"
    now = dt.datetime.now(dt.UTC)
    with runtime.begin() as connection:
        found = connection.execute(sa.select(marker).where(marker.c.name == name)).first()
        if found is not None and not again:
            return DemoResult(False, dict(found.counts), found.digest, found.at, found.status)
        if found is None:
            try:
                connection.execute(marker.insert().values(name=name, digest=digest,
                                                          status="running", counts={},
                                                          at=now))
            except sa.exc.IntegrityError:  # another process claimed it first
                connection.rollback()
                return DemoResult(False, {}, digest, None, "running")
        else:
            connection.execute(marker.update().where(marker.c.name == name).values(
                status="running", digest=digest, at=now))
    counts: dict[str, int] = {}
    try:
        _generate(runtime, doc, plans, fakers, counts)
    except BaseException:
        with runtime.begin() as connection:
            connection.execute(marker.update().where(marker.c.name == name).values(
                status="failed", counts=counts, at=dt.datetime.now(dt.UTC)))
        raise
    with runtime.begin() as connection:
        connection.execute(marker.update().where(marker.c.name == name).values(
            status="applied", counts=counts, at=dt.datetime.now(dt.UTC)))
    return DemoResult(True, counts, digest, now)


def _generate(runtime: Any, doc: Document, plans: Sequence[_Plan], fakers: _Fakers,
              counts: dict[str, int]) -> None:
    platform = runtime.platform
    emit = None if platform is None else platform.emit
    operators = None if platform is None else platform.operators
    generator = _Generator(runtime, int(doc.data.get("seed", 0)), fakers)
    made = _Made()
    services: dict[tuple[int | None, str | None], RecordService] = {}

    def service(owner: int | None, unit: str | None) -> RecordService:
        found = services.get((owner, unit))
        if found is None:
            found = services[(owner, unit)] = RecordService(
                runtime, Actor(owner, unit), emit=emit, operators=operators)
        return found

    for plan in plans:
        rng = generator.rng(plan.key)
        by_locale = {}
        for locale in plan.locales[0]:
            faker = fakers.get(locale)
            faker.seed_instance(f"{generator.seed}:{plan.key}:{locale}")
            by_locale[locale] = faker
        parent_spec = plan.spec.get("for_each")
        for index, parent in enumerate(_slots(plan, rng, made)):
            if plan.owners:
                owner, unit, username = rng.choice(plan.owners)
            elif parent is not None:
                owner, unit, username = parent["owner"], parent["unit"], parent["username"]
            else:
                owner, unit, username = None, None, None
            entity = runtime.registry.scope(unit).entities[plan.key]
            locale = rng.choices(plan.locales[0], weights=plan.locales[1])[0]
            for attempt in range(ATTEMPTS):
                record: dict[str, Any] = {}
                if parent is not None and parent_spec.get("field"):
                    record[parent_spec["field"]] = parent["id"]
                context = {"record": record, "related": {}, "made": made, "n": index + 1,
                           "owner": username, "owner_id": owner, "unit": unit,
                           "locale": locale, "faker": by_locale[locale],
                           "parent": None if parent is None else _visible(parent)}
                values = generator.values(plan, rng, by_locale[locale], entity, context)
                try:
                    saved = service(owner, unit).create(plan.key, values)
                except (Conflict, ValidationFailed) as exc:
                    if attempt == ATTEMPTS - 1:
                        raise DemoError([doc.diagnostic(
                            "demo.refused", f"{plan.key} record {index + 1} was refused "
                            f"{ATTEMPTS} times; last: {_refusal(exc)}", ("entities", plan.key),
                            key=True)]) from exc
                    continue
                except RecordError as exc:
                    raise DemoError([doc.diagnostic(
                        "demo.refused", f"{plan.key} record {index + 1}: {_refusal(exc)}",
                        ("entities", plan.key), key=True)]) from exc
                walk = plan.transitions.get(unit) or plan.transitions.get(None)
                if walk is not None:
                    steps = generator.walk(walk, rng, context)
                    _walk(runtime, doc, plan.key, saved["id"], steps, Actor(owner, unit))
                made.of(plan.key).append({"id": saved["id"], "values": values,
                                          "owner": owner, "unit": unit,
                                          "username": username})
                counts[plan.key] = counts.get(plan.key, 0) + 1
                break


def _walk(runtime: Any, doc: Document, key: str, record_id: int,
          steps: Sequence[Any], actor: Actor) -> None:
    """Take the transitions in order, as the record's owner acting as the system."""
    from ..engines.workflows import take_transition

    for step in steps:
        name, values = (step.get("transition"), step.get("values")) \
            if isinstance(step, Mapping) else (step, None)
        try:
            take_transition(runtime.platform, runtime, key, record_id, name, actor=actor,
                            values=values)
        except RecordError as exc:
            raise DemoError([doc.diagnostic(
                "demo.transition-refused", f"{key} {record_id}: transition `{name}` was "
                f"refused: {_refusal(exc)}", ("entities", key), key=True)]) from exc


def _slots(plan: _Plan, rng: random.Random, made: _Made) -> list[dict[str, Any] | None]:
    """One entry per record to make: its parent record (for_each) or None."""
    count = plan.spec["count"]
    parent_spec = plan.spec.get("for_each")
    if parent_spec is None:
        return [None] * int(count)
    low, high = (count, count) if isinstance(count, int) else count
    slots: list[dict[str, Any] | None] = []
    for parent in made.of(parent_spec["entity"]):
        slots.extend([parent] * rng.randint(min(low, high), max(low, high)))
    return slots


def _refusal(exc: RecordError) -> str:
    details = "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in exc.errors.items())
    return f"{exc.detail}" + (f" ({details})" if details else "")


def demo_status(runtime: Any) -> DemoResult | None:
    """The tenant's demo marker, if a run has started."""
    from .systables import runtime_system_tables

    marker = runtime_system_tables(runtime).table(MARKER_TABLE)
    with runtime.connect() as connection:
        found = connection.execute(sa.select(marker)).first()
    if found is None:
        return None
    return DemoResult(found.status == "applied", dict(found.counts), found.digest, found.at,
                      found.status)
