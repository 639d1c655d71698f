"""Nothing leaks: no list, get, export, history, filter, expand, count, sort or `fields=`
reveals a record outside the caller's scope or a field their roles hide.

Property tests (hypothesis) over the real REST API (``create_app``) serving the permission
world of ``tests/permworld.py``, on SQLite and PostgreSQL. Each example draws a caller (a
user and a set of roles: one ``scope_*`` role or none, optionally ``limited``, optionally
``account_reader`` or ``open_only``) and a request, then checks the response against a
model read here from the role files (plain YAML), independent of the platform's code:

- every record in the answer (items on every page, CSV rows, expanded references, history)
  is one the caller may reach for that action, and a list, export or count holds exactly
  the records the model selects (the filter evaluated here, NULL rules included);
- a hidden field never shows: not as a key, a CSV column, a history change, an OpenAPI or
  `_meta` property, and its values (the `secret-…` strings) appear nowhere;
- a filter, sort, `fields=`, `expand=` or field parameter naming a hidden field is refused
  exactly as one naming a field that does not exist (same status and body, the name aside);
- a record outside the caller's scope answers 404, exactly like an id that does not exist.

Which fields a set of roles hides (the model): a field is hidden when every role granting
some action on the entity hides it; a role granting nothing on the entity has no say.
A formula over a hidden field is hidden too.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus, urlencode

import pytest
import yaml
from apifixtures import problem_of
from dbfixtures import Project
from flask.testing import FlaskClient
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st
from permworld import SLUG, USERS, World, build_world, library, table_rows

from metacrm.metadata.ir import ACTIONS, SCOPES
from metacrm.platform.app import create_app

DEAL, ACCOUNT = "sales.deal", "sales.account"
SYSTEM = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner",
          "business_unit", "row_version", "deleted_at")
FIELDS = {DEAL: ("title", "amount", "stage", "secret", "score", "assignee", "account",
                 "doubled"),
          ACCOUNT: ("name", "region")}
FORMULAS = {"doubled": "score"}  # formula → the field it reads
REFERENCES = {DEAL: {"account": ACCOUNT}, ACCOUNT: {}}
WHOLE_NUMBERS = frozenset({"score", "owner", "assignee", "account", "id"})
CONDITION_SYSTEM = ("id", "created_at", "updated_at", "created_by", "updated_by", "owner",
                    "business_unit", "row_version")
SORTABLE_SYSTEM = ("id", "created_at", "updated_at")
STAGES = ("open", "won", "lost")
UNKNOWN = "nosuch"
ABSENT_ID = 999_999
GHOSTS = {"secret": "ghost_one", "score": "ghost_two", "doubled": "ghost_three"}
"""For each field a role may hide, a name no entity has: a request naming the hidden field
must be answered exactly as the same request naming its ghost."""

# -- the model: the role files of permworld.library(), read here as plain YAML -----------------


def read_roles() -> tuple[dict[str, dict[str, dict[str, str]]],
                          dict[str, dict[str, frozenset[str]]]]:
    """role → entity → action → scope (only actions granted), and role → entity → the
    fields it hides, by docs/language.md (`default` spreads to the actions not listed;
    `none` grants nothing)."""
    grants: dict[str, dict[str, dict[str, str]]] = {}
    hides: dict[str, dict[str, frozenset[str]]] = {}
    for path, text in library().items():
        if "/roles/" not in path:
            continue
        module = path.split("/")[2]
        role = yaml.safe_load(textwrap.dedent(text))
        for key, grant in (role.get("grants") or {}).items():
            entity = key if "." in key else f"{module}.{key}"
            actions = {}
            for action in ACTIONS:
                rule = grant.get(action, grant.get("default", "none"))
                scope = rule["scope"] if isinstance(rule, dict) else rule
                if scope != "none":
                    actions[action] = scope
            grants.setdefault(role["role"], {})[entity] = actions
            hidden = {f for f, level in (grant.get("fields") or {}).items() if level == "hidden"}
            hides.setdefault(role["role"], {})[entity] = frozenset(hidden)
    return grants, hides


GRANTS, HIDES = read_roles()
EXTRA_ROLES = (None, "account_reader", "open_only")


@dataclass(frozen=True)
class Caller:
    user: str
    roles: tuple[str, ...]
    unit_only: bool = False  # the tenant's `headquarters: unit_only`

    def granting(self, entity: str) -> list[str]:
        return [r for r in self.roles if GRANTS[r].get(entity)]

    def sees(self, entity: str) -> bool:
        """Whether the entity exists for the caller at all (some role grants something)."""
        return bool(self.granting(entity))

    def may(self, entity: str, action: str) -> bool:
        return any(action in GRANTS[r].get(entity, {}) for r in self.roles)

    def reaches(self, world: World, entity: str, action: str, row: Mapping[str, Any]) -> bool:
        if self.unit_only and row["business_unit"] != USERS[self.user][1]:
            return False  # every grant stays inside the user's business unit
        return any(world.expected(GRANTS[r].get(entity, {}).get(action, "none"), self.user, row)
                   for r in self.roles)

    def hidden(self, entity: str) -> frozenset[str]:
        granting = self.granting(entity)
        if not granting:
            return frozenset(FIELDS[entity])
        hidden = set.intersection(*(set(HIDES.get(r, {}).get(entity, ())) for r in granting))
        hidden |= {f for f, source in FORMULAS.items() if source in hidden}
        return frozenset(hidden)

    def visible_fields(self, entity: str) -> list[str]:
        hidden = self.hidden(entity)
        return [f for f in FIELDS[entity] if f not in hidden]


def callers() -> st.SearchStrategy[Caller]:
    """A user and a set of roles; a quarter each: one scope role alone (the scopes), a set
    hiding fields, `account_reader` (deals: all, accounts: own) with or without a scope
    role, and any mix of a scope role, `limited` and `account_reader` or `open_only`."""
    def build(user: str, *roles: str | None) -> Caller:
        return Caller(user, tuple(sorted({r for r in roles if r})))

    users = st.sampled_from(sorted(USERS))
    scope_roles = st.sampled_from([f"scope_{s}" for s in SCOPES])
    return st.one_of(
        st.builds(build, users, scope_roles),
        st.builds(build, users, st.just("limited"), st.sampled_from([None, "scope_none"])),
        st.builds(build, users, st.just("account_reader"), st.none() | scope_roles),
        st.builds(build, users, st.none() | scope_roles, st.sampled_from([None, "limited"]),
                  st.sampled_from(EXTRA_ROLES)))


# -- requests -----------------------------------------------------------------------------


def leaves(condition: Any) -> Iterator[dict[str, Any]]:
    if condition is None:
        return
    if "field" in condition:
        yield condition
    for key in ("all", "any"):
        for child in condition.get(key, ()):
            yield from leaves(child)
    if "not" in condition:
        yield from leaves(condition["not"])


def renamed_condition(condition: Any, names: Mapping[str, str]) -> Any:
    if condition is None:
        return None
    if "field" in condition:
        root, dot, rest = condition["field"].partition(".")
        return {**condition, "field": names.get(root, root) + dot + rest}
    if "not" in condition:
        return {"not": renamed_condition(condition["not"], names)}
    key = "all" if "all" in condition else "any"
    return {key: [renamed_condition(c, names) for c in condition[key]]}


def param_leaf(name: str, op: str, raw: str) -> dict[str, Any]:
    """A field parameter (`score__gte=10`) as the condition it stands for."""
    op = op or "eq"

    def scalar(text: str) -> Any:
        return int(text) if name in WHOLE_NUMBERS else text

    if op in ("in", "not_in"):
        value: Any = [scalar(p) for p in raw.split(",")]
    elif op == "is_empty":
        value = raw == "true"
    else:
        value = scalar(raw)
    return {"field": name, "op": op, "value": value}


@dataclass(frozen=True)
class Req:
    kind: str  # list, get, history, export
    entity: str = DEAL
    record_id: int | None = None
    filter: Any = None
    params: tuple[tuple[str, str, str], ...] = ()  # field parameters: (field, op, raw)
    sort: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    count: bool = False
    include_deleted: bool = False
    limit: int | None = None

    def url(self, cursor: str | None = None) -> str:
        module, name = self.entity.split(".")
        path = f"/t/{SLUG}/api/v1/{module}/{name}"
        path += {"get": f"/{self.record_id}", "history": f"/{self.record_id}/history",
                 "export": "/export"}.get(self.kind, "")
        query: list[tuple[str, str]] = []
        if self.filter is not None:
            query.append(("filter", json.dumps(self.filter)))
        query += [(f"{n}__{op}" if op else n, raw) for n, op, raw in self.params]
        for key in ("sort", "fields", "expand"):
            if getattr(self, key):
                query.append((key, ",".join(getattr(self, key))))
        if self.count:
            query.append(("count", "true"))
        if self.include_deleted:
            query.append(("include_deleted", "true"))
        if self.limit is not None:
            query.append(("limit", str(self.limit)))
        if cursor is not None:
            query.append(("cursor", cursor))
        return path + ("?" + urlencode(query) if query else "")

    def condition(self) -> Any:
        """The filter the request asks for: `filter=` and the field parameters, together."""
        parts = ([self.filter] if self.filter is not None else []) + [
            param_leaf(*p) for p in self.params]
        return None if not parts else parts[0] if len(parts) == 1 else {"all": parts}

    def names(self) -> set[str]:
        """The names of the entity's fields the request mentions (path roots included)."""
        found = {leaf["field"].partition(".")[0] for leaf in leaves(self.filter)}
        found |= {n for n, _, _ in self.params} | {s.lstrip("-") for s in self.sort}
        return found | set(self.fields) | set(self.expand)

    def renamed(self, names: Mapping[str, str]) -> Req:
        def one(name: str) -> str:
            return names.get(name, name)

        return replace(self, filter=renamed_condition(self.filter, names),
                       params=tuple((one(n), op, raw) for n, op, raw in self.params),
                       sort=tuple(("-" if s.startswith("-") else "") + one(s.lstrip("-"))
                                  for s in self.sort),
                       fields=tuple(one(f) for f in self.fields),
                       expand=tuple(one(e) for e in self.expand))

    def refused_for(self, caller: Caller) -> bool:
        """Whether the request names something the caller cannot use (a 4xx, whatever the
        records): a hidden or unknown field, a formula to sort or filter on, a path through
        something that is not a reference, an expand of a field that is not one."""
        visible = caller.visible_fields(self.entity)
        stored = [f for f in visible if f not in FORMULAS]
        for leaf in [*leaves(self.filter), *(param_leaf(*p) for p in self.params)]:
            root, _, rest = leaf["field"].partition(".")
            if root not in stored and root not in CONDITION_SYSTEM:
                return True
            if rest and (root not in REFERENCES[self.entity] or
                         rest not in FIELDS[REFERENCES[self.entity][root]]):
                return True
        if any(s.lstrip("-") not in (*stored, *SORTABLE_SYSTEM) for s in self.sort):
            return True
        if any(f not in (*visible, *SYSTEM) for f in self.fields):
            return True
        return any(e not in REFERENCES[self.entity] for e in self.expand)


def deal_leaves(world: World, rows: Mapping[str, Mapping[int, Mapping[str, Any]]]
                ) -> st.SearchStrategy[dict[str, Any]]:
    deals, accounts = rows[DEAL].values(), rows[ACCOUNT].values()
    titles = sorted(d["title"] for d in deals)
    secrets = sorted(d["secret"] for d in deals if d["secret"])
    names = sorted(a["name"] for a in accounts)
    user_ids = sorted(world.ids.values())
    account_ids = sorted(rows[ACCOUNT])

    def leaf(field: str, ops: tuple[str, ...], values: st.SearchStrategy[Any]
             ) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(lambda op, value: {"field": field, "op": op, "value": value},
                         st.sampled_from(ops), values)

    def some(items: list[Any]) -> st.SearchStrategy[list[Any]]:
        return st.lists(st.sampled_from(items), min_size=1, max_size=3, unique=True)

    return st.one_of(
        leaf("title", ("eq", "ne"), st.sampled_from([*titles, "nope"])),
        leaf("title", ("contains", "starts_with"),
             st.sampled_from(["-deal-", "a-", "b-deal", "-0", "deleted", "nope"])),
        leaf("title", ("in", "not_in"), some(titles)),
        leaf("stage", ("eq", "ne"), st.sampled_from(STAGES)),
        leaf("stage", ("in", "not_in"), some(list(STAGES))),
        leaf("secret", ("eq", "ne"), st.sampled_from(secrets)),
        leaf("secret", ("contains", "starts_with"), st.sampled_from(["secret-a", "-1"])),
        leaf("score", ("gte", "lt", "eq"), st.integers(0, 60)),
        st.builds(lambda low, width: {"field": "score", "op": "between",
                                      "value": [low, low + width]},
                  st.integers(0, 50), st.integers(0, 15)),
        leaf("amount", ("gte", "gt"), st.sampled_from(["0", "1"])),
        leaf("assignee", ("eq", "ne"), st.sampled_from(user_ids)),
        leaf("owner", ("eq", "ne"), st.sampled_from(user_ids)),
        leaf("owner", ("in", "not_in"), some(user_ids)),
        leaf("account", ("eq", "ne"), st.sampled_from(account_ids)),
        st.builds(lambda field, value: {"field": field, "op": "is_empty", "value": value},
                  st.sampled_from(["secret", "score", "assignee", "account", "title"]),
                  st.booleans()),
        account_paths(names),
        leaf("doubled", ("eq",), st.integers(0, 100)),
        leaf(UNKNOWN, ("eq",), st.just("x")),
        leaf("account.nosuch", ("eq",), st.just("x")),
    )


def account_paths(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Conditions through `account`: `account.name` and `account.region`."""
    def leaf(field: str, ops: tuple[str, ...], values: st.SearchStrategy[Any]
             ) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(lambda op, value: {"field": field, "op": op, "value": value},
                         st.sampled_from(ops), values)

    return st.one_of(
        leaf("account.name", ("eq", "ne"), st.sampled_from([*names, "nope"])),
        leaf("account.name", ("in", "not_in"),
             st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)),
        leaf("account.name", ("contains", "starts_with"),
             st.sampled_from(["a-acct", "-acct-0", "acct", "s-", "m-acct-1"])),
        leaf("account.name", ("is_empty",), st.booleans()),
        leaf("account.region", ("is_empty",), st.booleans()),
    )


def conditions(leaf: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda item: {"not": item}, inner)), max_leaves=3)


def deal_params(world: World, rows: Mapping[str, Mapping[int, Mapping[str, Any]]]
                ) -> st.SearchStrategy[tuple[tuple[str, str, str], ...]]:
    deals = rows[DEAL].values()
    choices = [
        *(("title", "", d["title"]) for d in deals),
        ("title", "contains", "-deal-1"), ("title", "starts_with", "b-"),
        ("stage", "", "open"), ("stage", "in", "open,lost"), ("stage", "ne", "won"),
        ("score", "gte", "10"), ("score", "lt", "25"), ("score", "is_empty", "true"),
        *(("secret", "", d["secret"]) for d in deals if d["secret"]),
        ("secret", "contains", "secret-a"), ("doubled", "", "2"),
        *(("owner", "", str(i)) for i in world.ids.values()),
        ("assignee", "is_empty", "true"), ("assignee", "is_empty", "false"),
        ("amount", "gte", "0"), ("account", "", "3"), (UNKNOWN, "", "x"),
    ]
    return st.lists(st.sampled_from(choices), max_size=2).map(tuple)


def names_from(valid: list[str], risky: list[str], max_size: int
               ) -> st.SearchStrategy[tuple[str, ...]]:
    """None, some valid names, or a mix with names that may be refused (hidden, unknown,
    not sortable): the mix is a third of the draws, so most requests get answered."""
    def lists(names: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
        return st.lists(st.sampled_from(names), min_size=1, max_size=max_size,
                        unique_by=lambda n: n.lstrip("-")).map(tuple)

    return st.one_of(st.just(()), lists(valid), lists(valid + risky))


def deal_lists(world: World, rows: Mapping[str, Mapping[int, Mapping[str, Any]]]
               ) -> st.SearchStrategy[Req]:
    return st.builds(
        Req, st.sampled_from(["list", "list", "export"]), st.just(DEAL), st.none(),
        st.none() | conditions(deal_leaves(world, rows)),
        st.just(()) | deal_params(world, rows),
        names_from(["title", "-title", "stage", "-amount", "assignee", "account",
                    "created_at", "-id"], ["score", "-score", "secret", "doubled", UNKNOWN], 2),
        names_from(["title", "stage", "amount", "account", "owner", "business_unit"],
                   ["secret", "score", "doubled", UNKNOWN], 3),
        EXPANDS, st.booleans(), st.booleans(), LIMITS)


def deal_gets(rows: Mapping[str, Mapping[int, Mapping[str, Any]]]
              ) -> st.SearchStrategy[Req]:
    return st.builds(lambda record_id, expand: Req("get", DEAL, record_id, expand=expand),
                     st.sampled_from([*sorted(rows[DEAL]), ABSENT_ID]), EXPANDS)


EXPANDS = st.sampled_from([(), (), ("account",), ("account",), ("secret",), (UNKNOWN,)])
LIMITS = st.sampled_from([None, 2, 5])


def requests(world: World, rows: Mapping[str, Mapping[int, Mapping[str, Any]]]
             ) -> st.SearchStrategy[Req]:
    account_filter = st.none() | conditions(st.one_of(
        st.builds(lambda name: {"field": "name", "op": "eq", "value": name},
                  st.sampled_from(sorted(a["name"] for a in rows[ACCOUNT].values()))),
        st.builds(lambda text: {"field": "name", "op": "contains", "value": text},
                  st.sampled_from(["a-", "-acct-1", "s"])),
        st.builds(lambda value: {"field": "region", "op": "is_empty", "value": value},
                  st.booleans()),
        st.builds(lambda owner: {"field": "owner", "op": "eq", "value": owner},
                  st.sampled_from(sorted(world.ids.values()))),
        st.just({"field": UNKNOWN, "op": "eq", "value": "x"})))
    account_lists = st.builds(
        Req, st.sampled_from(["list", "export"]), st.just(ACCOUNT), st.none(),
        account_filter, st.just(()), names_from(["name", "-name", "region"], [UNKNOWN], 1),
        names_from(["name", "region", "owner"], [UNKNOWN], 2),
        st.sampled_from([(), (), ("account",)]), st.booleans(), st.booleans(), LIMITS)
    singles = st.one_of(
        deal_gets(rows),
        st.builds(lambda record_id: Req("history", DEAL, record_id),
                  st.sampled_from([*sorted(rows[DEAL]), ABSENT_ID])),
        st.builds(lambda kind, record_id: Req(kind, ACCOUNT, record_id),
                  st.sampled_from(["get", "history"]),
                  st.sampled_from([*sorted(rows[ACCOUNT]), ABSENT_ID])))
    deals = deal_lists(world, rows)
    return st.one_of(deals, deals, singles, account_lists)


# -- serving the world -----------------------------------------------------------------------


@dataclass
class Served:
    world: World
    client: FlaskClient
    rows: dict[str, dict[int, dict[str, Any]]]  # entity → id → row (deleted ones too)

    def as_caller(self, caller: Caller) -> None:
        self.world.grant(caller.user, *caller.roles)

    def get(self, caller: Caller, url: str) -> Any:
        return self.client.get(url, headers={
            "Authorization": f"Bearer {self.world.tokens[caller.user]}"})

    # -- the model's answers --------------------------------------------------------------

    def value_at(self, caller: Caller, entity: str, row: Mapping[str, Any], path: str) -> Any:
        """A condition's field on `row`: through a reference, the target's field when the
        target is live and the caller may read it (else no value)."""
        root, _, rest = path.partition(".")
        if not rest:
            return row.get(root)
        target_id = row.get(root)
        target = self.rows[REFERENCES[entity][root]].get(target_id) if target_id else None
        if target is None or target["deleted_at"] is not None or \
                not caller.reaches(self.world, REFERENCES[entity][root], "read", target):
            return None
        return target.get(rest)

    def matches(self, caller: Caller, entity: str, condition: Any,
                row: Mapping[str, Any]) -> bool:
        if condition is None:
            return True
        if "all" in condition:
            return all(self.matches(caller, entity, c, row) for c in condition["all"])
        if "any" in condition:
            return any(self.matches(caller, entity, c, row) for c in condition["any"])
        if "not" in condition:
            return not self.matches(caller, entity, condition["not"], row)
        return holds(condition["op"], self.value_at(caller, entity, row, condition["field"]),
                     condition["value"])

    def selected(self, caller: Caller, req: Req) -> list[int]:
        """The ids a list (or export) must answer, in no particular order."""
        action = "export" if req.kind == "export" else "read"
        condition = req.condition()
        return [i for i, row in self.rows[req.entity].items()
                if (req.include_deleted or row["deleted_at"] is None)
                and caller.reaches(self.world, req.entity, action, row)
                and self.matches(caller, req.entity, condition, row)]

    def readable_target(self, caller: Caller, entity: str, target_id: int) -> bool:
        row = self.rows[entity].get(target_id)
        return row is not None and row["deleted_at"] is None and \
            caller.reaches(self.world, entity, "read", row)

    def strings_of(self, entity: str, ids: Any, caller: Caller) -> set[str]:
        """The record strings (titles, secrets, account names) of `ids` the caller sees."""
        found = set()
        for i in ids:
            row = self.rows[entity][i]
            for name in ("title", "secret", "name"):
                if row.get(name) and name not in caller.hidden(entity):
                    found.add(row[name])
        return found

    def all_strings(self) -> set[str]:
        return {r[n] for entity in (DEAL, ACCOUNT) for r in self.rows[entity].values()
                for n in ("title", "secret", "name") if r.get(n)}


def holds(op: str, value: Any, wanted: Any) -> bool:
    """One test of the condition language, by docs/conditions.md (NULL rules included)."""
    if value is None:
        return op in ("ne", "not_in") or (op == "is_empty" and wanted is True)
    if op == "is_empty":
        return (value == "") is wanted
    if isinstance(value, Decimal):
        wanted = [Decimal(str(w)) for w in wanted] if isinstance(wanted, list) \
            else Decimal(str(wanted))
    return {
        "eq": lambda: value == wanted, "ne": lambda: value != wanted,
        "in": lambda: value in wanted, "not_in": lambda: value not in wanted,
        "contains": lambda: wanted in value, "starts_with": lambda: value.startswith(wanted),
        "gte": lambda: value >= wanted, "gt": lambda: value > wanted,
        "lt": lambda: value < wanted, "between": lambda: wanted[0] <= value <= wanted[1],
    }[op]()


def serve(make_platform: Project, headquarters: str = "across_units") -> Served:
    platform = make_platform(library(headquarters))
    world = build_world(platform)
    app = create_app(make_platform.settings(), platform)
    app.testing = True
    rows = {e: {r["id"]: r for r in table_rows(world, e)} for e in (DEAL, ACCOUNT)}
    return Served(world, app.test_client(), rows)


@pytest.fixture
def served(make_platform: Project) -> Served:
    return serve(make_platform)


@pytest.fixture
def served_unit_only(make_platform: Project) -> Served:
    return serve(make_platform, "unit_only")


# -- checking one response ---------------------------------------------------------------------


def output_keys(caller: Caller, entity: str) -> set[str]:
    return {*SYSTEM, *caller.visible_fields(entity)}


def cursor_text(cursor: str | None) -> str:
    if cursor is None:
        return ""
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


def assert_no_strings(served: Served, text: str, allowed: set[str], where: str) -> None:
    leaked = sorted(s for s in served.all_strings() - allowed if s in text)
    assert not leaked, f"{where}: record data the caller may not see: {leaked}"


def assert_refusal(served: Served, caller: Caller, req: Req, response: Any,
                   statuses: tuple[int, ...]) -> None:
    """A problem+json refusal carrying no record data (but what the request itself sent)."""
    assert response.status_code in statuses, (response.status_code, response.get_data(True))
    body = problem_of(response, response.status_code)
    assert "items" not in body
    assert "hidden" not in str(body.get("detail", "")).lower(), body
    sent = {s for s in served.all_strings() if s in unquote_plus(req.url())}
    assert_no_strings(served, response.get_data(as_text=True), sent, "refusal")


def check_expanded(served: Served, caller: Caller, req: Req, item: Mapping[str, Any],
                   row: Mapping[str, Any]) -> None:
    for name in req.expand:
        target_entity = REFERENCES[req.entity][name]
        value, target_id = item.get(name), row[name]
        if target_id is None:
            assert value is None, (name, value)
        elif served.readable_target(caller, target_entity, target_id):
            assert set(value) == output_keys(caller, target_entity), value
            assert value["id"] == target_id
            assert value["name"] == served.rows[target_entity][target_id]["name"]
        else:  # a target the caller may not read shows only the id they already hold
            assert value == {"id": target_id}, value


def check_item(served: Served, caller: Caller, req: Req, item: Mapping[str, Any],
               expected_keys: set[str]) -> None:
    assert set(item) == expected_keys, sorted(set(item) ^ expected_keys)
    check_expanded(served, caller, req, item, served.rows[req.entity][item["id"]])


def item_keys(caller: Caller, req: Req) -> set[str]:
    if req.fields:
        return {*req.fields, "id", "row_version", *req.expand}
    return output_keys(caller, req.entity)


def check_list(served: Served, caller: Caller, req: Req) -> None:
    expected = served.selected(caller, req)
    allowed = served.strings_of(req.entity, expected, caller)
    if "account" in req.expand:
        allowed |= served.strings_of(ACCOUNT, [
            a for a in served.rows[ACCOUNT] if served.readable_target(caller, ACCOUNT, a)],
            caller)
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(50):
        response = served.get(caller, req.url(cursor))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        for item in body["items"]:
            check_item(served, caller, req, item, item_keys(caller, req))
            seen.append(item["id"])
        if req.count:
            assert (body["count"], body["count_exact"]) == (len(expected), True), \
                (body["count"], sorted(expected))
        else:
            assert "count" not in body
        cursor = body["next_cursor"]
        assert_no_strings(served, response.get_data(as_text=True) + cursor_text(cursor),
                          allowed, "list")
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), seen
    assert sorted(seen) == sorted(expected)


def export_header(caller: Caller, req: Req) -> list[str]:
    if req.fields:
        return list(req.fields)
    visible = caller.visible_fields(req.entity)
    return ["id", *visible, *(n for n in SYSTEM if n != "id")]


def check_export(served: Served, caller: Caller, req: Req, response: Any) -> None:
    expected = served.selected(caller, req)
    text = response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(text)))
    header, lines = table[0], table[1:]
    assert header == export_header(caller, req)
    assert not set(header) & caller.hidden(req.entity)
    records = [dict(zip(header, line, strict=True)) for line in lines]
    assert len(records) == len(expected)
    if "id" in header:
        assert sorted(int(r["id"]) for r in records) == sorted(expected)
        for record in records:
            row = served.rows[req.entity][int(record["id"])]
            for name in req.expand:
                if name in record:
                    item = {name: json.loads(record[name]) if record[name] else None}
                    check_expanded(served, caller, req, item, row)
    key = "title" if req.entity == DEAL else "name"
    if key in header:
        assert sorted(r[key] for r in records) == sorted(
            served.rows[req.entity][i][key] for i in expected)
    allowed = served.strings_of(req.entity, expected, caller)
    if "account" in req.expand:
        allowed |= served.strings_of(ACCOUNT, [
            a for a in served.rows[ACCOUNT] if served.readable_target(caller, ACCOUNT, a)],
            caller)
    assert_no_strings(served, text, allowed, "export")


def check_single(served: Served, caller: Caller, req: Req, response: Any) -> None:
    row = served.rows[req.entity][req.record_id]  # type: ignore[index]
    body = response.get_json()
    if req.kind == "get":
        check_item(served, caller, req, body, output_keys(caller, req.entity))
        allowed = served.strings_of(req.entity, [row["id"]], caller)
        if req.expand and row.get("account") and \
                served.readable_target(caller, ACCOUNT, row["account"]):
            allowed |= served.strings_of(ACCOUNT, [row["account"]], caller)
    else:
        assert body["items"], body
        for entry in body["items"]:
            assert (entry["entity"], entry["record_id"]) == (req.entity, row["id"])
            assert not set(entry["changes"]) & caller.hidden(req.entity), entry
        allowed = served.strings_of(req.entity, [row["id"]], caller)
    assert_no_strings(served, response.get_data(as_text=True), allowed, req.kind)


def normalised(response: Any, names: Mapping[str, str]) -> tuple[int, str]:
    """Status and body, with ghost names put back and 'did you mean' hints left out."""
    text = response.get_data(as_text=True)
    for name, ghost in names.items():
        text = text.replace(ghost, name)
    return response.status_code, re.sub(r"; did you mean `[^`]*`\?", "", text)


def check(served: Served, caller: Caller, req: Req) -> None:
    """One request as one caller, against the model."""
    served.as_caller(caller)
    response = served.get(caller, req.url())
    if currently_in_test_context():  # shown with a failing example
        note(f"caller={caller} request={req} url={unquote_plus(req.url())}")
        note(f"-> {response.status_code} {response.get_data(as_text=True)[:2000]}")
        event(f"{req.kind} {req.entity} -> {response.status_code}")
    if not caller.sees(req.entity):  # exactly as an entity that does not exist
        assert_refusal(served, caller, req, response, (404,))
        ghost = f"{req.entity.split('.')[0]}.{GHOSTS['secret']}"
        twin = served.get(caller, replace(req, entity=ghost).url())
        assert normalised(response, {}) == normalised(twin, {req.entity: ghost})
        return
    hidden = caller.hidden(req.entity)
    if req.kind in ("get", "history"):
        row = served.rows[req.entity].get(req.record_id)  # type: ignore[arg-type]
        reached = row is not None and (req.kind == "history" or row["deleted_at"] is None) \
            and caller.reaches(served.world, req.entity, "read", row)
        if not reached:  # outside the caller's scope: exactly as an id that does not exist
            assert_refusal(served, caller, req, response, (404,))
            absent = served.get(caller, replace(req, record_id=ABSENT_ID).url())
            expected = normalised(absent, {})[1].replace(str(ABSENT_ID), str(req.record_id))
            assert normalised(response, {}) == (404, expected)
        elif req.refused_for(caller):
            assert_refusal(served, caller, req, response, (400, 422))
        else:
            assert response.status_code == 200, response.get_data(as_text=True)
            check_single(served, caller, req, response)
    elif req.refused_for(caller):
        statuses = (400, 403, 422) if req.kind == "export" else (400, 422)
        assert_refusal(served, caller, req, response, statuses)
    elif req.kind == "export" and not caller.may(req.entity, "export"):
        assert_refusal(served, caller, req, response, (403,))
    elif req.kind == "export":
        assert response.status_code == 200, response.get_data(as_text=True)
        check_export(served, caller, req, response)
    else:
        check_list(served, caller, req)
    named = {n: GHOSTS[n] for n in req.names() & hidden}
    if named:  # a hidden field is refused exactly as a field that does not exist
        twin = served.get(caller, req.renamed(named).url())
        assert normalised(response, named) == normalised(twin, named)


# -- the properties -------------------------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(data=st.data())
def test_no_request_reveals_a_record_or_field_outside_the_callers_scope(
        served: Served, data: st.DataObject) -> None:
    caller = data.draw(callers(), "caller")
    req = data.draw(requests(served.world, served.rows), "request")
    check(served, caller, req)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_unit_only_headquarters_keeps_every_answer_inside_the_unit(
        served_unit_only: Served, data: st.DataObject) -> None:
    """`headquarters: unit_only`: the same requests, every grant cut to the caller's unit."""
    served = served_unit_only
    caller = replace(data.draw(callers(), "caller"), unit_only=True)
    req = data.draw(requests(served.world, served.rows), "request")
    check(served, caller, req)


@PROPERTY
@given(data=st.data())
def test_naming_a_hidden_field_is_refused_like_naming_no_field(
        served: Served, data: st.DataObject) -> None:
    """Every request here names `secret`, `score` or `doubled` somewhere; callers with
    `limited` (and no other role granting on deals) have them hidden."""
    user = data.draw(st.sampled_from(sorted(USERS)), "user")
    caller = data.draw(st.sampled_from([
        Caller(user, ("limited",)), Caller(user, ("limited", "scope_none")),
        Caller(user, ("limited", "scope_own")), Caller(user, ("scope_own",))]), "caller")
    name = data.draw(st.sampled_from(sorted(GHOSTS)), "hidden name")
    value = {"secret": "secret-b-0", "score": 10, "doubled": 20}[name]
    op = data.draw(st.sampled_from(["eq", "ne", "is_empty"]), "op")
    leaf = {"field": name, "op": op, "value": True if op == "is_empty" else value}
    where = data.draw(st.sampled_from(["filter", "not", "any", "param", "sort", "-sort",
                                       "fields", "expand"]), "where")
    base = data.draw(deal_lists(served.world, served.rows) | deal_gets(served.rows),
                     "request")
    if base.kind == "get":
        req = replace(base, expand=(name,))
    elif where == "filter":
        req = replace(base, filter=leaf)
    elif where in ("not", "any"):
        other = {"field": "stage", "op": "eq", "value": "open"}
        req = replace(base, filter={"not": leaf} if where == "not" else {"any": [other, leaf]})
    elif where == "param":
        req = replace(base, params=((name, "" if op == "eq" else op,
                                     "true" if op == "is_empty" else str(value)),))
    elif where in ("sort", "-sort"):
        req = replace(base, sort=(("-" if where == "-sort" else "") + name,))
    elif where == "fields":
        req = replace(base, fields=("title", name))
    else:
        req = replace(base, expand=(name,))
    check(served, caller, req)


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_paths_through_account_match_only_readable_accounts(
        served: Served, data: st.DataObject) -> None:
    """With accounts readable only as `own` (account_reader, optionally widened by a scope
    role), `account.name` never matches through an account the caller cannot read: such a
    deal behaves as one without an account (docs/conditions.md: no value)."""
    user = data.draw(st.sampled_from(sorted(USERS)), "user")
    scope = data.draw(st.sampled_from((None, "none", "own", "team", "assigned")), "scope")
    roles = ("account_reader",) + ((f"scope_{scope}",) if scope else ())
    caller = Caller(user, tuple(sorted(roles)))
    names = sorted(a["name"] for a in served.rows[ACCOUNT].values())
    leaf = data.draw(account_paths(names), "path condition")
    shape = data.draw(st.sampled_from(["leaf", "not", "and-stage", "or-stage"]), "shape")
    stage = {"field": "stage", "op": "eq", "value": "open"}
    condition = {"leaf": leaf, "not": {"not": leaf}, "and-stage": {"all": [leaf, stage]},
                 "or-stage": {"any": [leaf, stage]}}[shape]
    req = Req("list", DEAL, filter=condition, count=True,
              limit=data.draw(st.sampled_from([None, 3])),
              expand=data.draw(st.sampled_from([(), ("account",)])))
    check(served, caller, req)
    if leaf["op"] in ("eq", "in", "contains", "starts_with") and shape == "leaf":
        for deal_id in served.selected(caller, req):  # the model, checked against itself
            account = served.rows[DEAL][deal_id]["account"]
            assert served.readable_target(caller, ACCOUNT, account)


# -- the documents: OpenAPI and _meta, for every set of roles --------------------------------


def role_sets() -> list[tuple[str, ...]]:
    found = set()
    for scope in (None, *SCOPES):
        for limited in (False, True):
            for extra in EXTRA_ROLES:
                roles = {f"scope_{scope}" if scope else None, "limited" if limited else None,
                         extra}
                found.add(tuple(sorted(r for r in roles if r)))
    return sorted(found)


@pytest.mark.parametrize("user", ["a", "h"])
def test_openapi_meta_and_me_show_only_the_callers_view(served: Served, user: str) -> None:
    failures = []
    for roles in role_sets():
        caller = Caller(user, roles)
        served.as_caller(caller)
        for url in (f"/t/{SLUG}/api/v1/openapi.json", f"/t/{SLUG}/api/v1/_meta"):
            response = served.get(caller, url)
            assert response.status_code == 200, response.get_data(as_text=True)
            text, body = response.get_data(as_text=True), response.get_json()
            for entity in (DEAL, ACCOUNT):
                hidden = caller.hidden(entity)
                module, name = entity.split(".")
                if url.endswith("openapi.json"):
                    schemas = body["components"]["schemas"]
                    if not caller.sees(entity):
                        if f"{module}__{name}" in schemas or any(
                                f"/{module}/{name}" in p for p in body["paths"]):
                            failures.append((roles, url, entity, "entity shown"))
                        continue
                    shown = set(schemas[f"{module}__{name}"]["properties"])
                    if shown != output_keys(caller, entity):
                        failures.append((roles, url, entity, sorted(shown)))
                    for suffix in ("__create", "__update"):
                        props = set(schemas[f"{module}__{name}{suffix}"]["properties"])
                        if props & hidden:
                            failures.append((roles, url, entity + suffix, sorted(props)))
                else:
                    if not caller.sees(entity):
                        if entity in body["entities"]:
                            failures.append((roles, url, entity, "entity shown"))
                        continue
                    shown = set(body["entities"][entity]["fields"])
                    if shown != set(caller.visible_fields(entity)):
                        failures.append((roles, url, entity, sorted(shown)))
            hidden_names = caller.hidden(DEAL) if caller.sees(DEAL) else frozenset(GHOSTS)
            named = sorted(n for n in hidden_names & set(GHOSTS)
                           if re.search(rf"\b{n}\b", text))
            if named:
                failures.append((roles, url, "mentions", named))
        # _me names what is hidden from the caller (by design), and nothing else
        me = served.get(caller, f"/t/{SLUG}/api/v1/_me").get_json()["permissions"]
        model = {e: {"actions": [a for a in ACTIONS if caller.may(e, a)],
                     "hidden_fields": sorted(caller.hidden(e))}
                 for e in (DEAL, ACCOUNT) if caller.sees(e)}
        answer = {e: {k: v for k, v in p.items() if k != "read_only_fields"}
                  for e, p in me.items()}
        if answer != model:
            failures.append((roles, "_me", answer, model))
    assert not failures, "\n".join(map(str, failures))


# -- edge cases, deterministic -------------------------------------------------------------


def test_count_with_a_cursor_counts_the_whole_scoped_set(served: Served) -> None:
    cases = [("a", ("scope_team",)), ("m", ("scope_subtree",)), ("s", ("scope_business_unit",)),
             ("h", ("scope_business_unit",)), ("b", ("scope_assigned",)),
             ("c", ("limited", "scope_own")), ("a", ("limited",))]
    for user, roles in cases:
        caller = Caller(user, roles)
        for req in (Req("list", count=True, limit=2),
                    Req("list", count=True, limit=2, include_deleted=True),
                    Req("list", count=True, limit=1, filter={"field": "stage", "op": "eq",
                                                               "value": "open"}),
                    Req("list", count=True, limit=2, sort=("-title",)),
                    Req("list", ACCOUNT, count=True, limit=3)):
            served.as_caller(caller)
            check_list(served, caller, req)  # every page: the count of every page together
            # a cursor from another caller's listing does not widen this caller's count
            served.as_caller(Caller(user, ("scope_all",)))
            wide = served.get(Caller(user, ("scope_all",)), req.url()).get_json()
            served.as_caller(caller)
            if wide["next_cursor"]:
                body = served.get(caller, req.url(wide["next_cursor"])).get_json()
                assert body["count"] == len(served.selected(caller, req))
                ids = {i["id"] for i in body["items"]}
                assert ids <= set(served.selected(caller, req)), (caller, req)


def test_include_deleted_stays_inside_the_scope(served: Served) -> None:
    caller = Caller("a", ("scope_own",))
    served.as_caller(caller)
    deleted = {i for i, r in served.rows[DEAL].items() if r["deleted_at"] is not None}
    mine = {i for i in deleted if served.world.name_of(served.rows[DEAL][i]["owner"]) == "a"}
    assert len(mine) == 1 and len(deleted) == len(USERS)
    for req in (Req("list", include_deleted=True, count=True, limit=2),
                Req("list", include_deleted=True, filter={"field": "title", "op": "contains",
                                                          "value": "deleted"}),
                Req("export", include_deleted=True)):
        check(served, caller, req)
        if req.filter:
            assert sorted(served.selected(caller, req)) == sorted(mine)
    for record_id in sorted(deleted):
        check(served, caller, Req("get", record_id=record_id))  # deleted: 404 for everyone
        check(served, caller, Req("history", record_id=record_id))  # own: 200; others: 404


def test_export_needs_the_export_grant(served: Served) -> None:
    """Roles that read every deal but grant no export: 403, and no record in the answer."""
    for user in sorted(USERS):
        for roles in (("account_reader",), ("open_only",), ("account_reader", "scope_none")):
            caller = Caller(user, roles)
            served.as_caller(caller)
            for req in (Req("export"), Req("export", fields=("title",)),
                        Req("export", include_deleted=True),
                        Req("export", filter={"field": "title", "op": "eq",
                                              "value": "a-deal-0"})):
                response = served.get(caller, req.url())
                assert_refusal(served, caller, req, response, (403,))
                assert response.get_json()["action"] == "export"
            list_req = Req("list", limit=5)  # while listing them is fine
            check(served, caller, list_req)
            assert len(served.selected(caller, list_req)) == len(USERS) * 2
        caller = Caller(user, ("limited",))  # limited exports every deal, hidden fields out
        served.as_caller(caller)
        check(served, caller, Req("export"))


def test_a_role_granting_nothing_on_deals_does_not_unhide_fields(served: Served) -> None:
    """`scope_none` grants no action on deals; adding it to `limited` must not give back the
    fields `limited` hides (it would: a grant with no actions counts as `write` on every
    field in the union of field access)."""
    caller = Caller("a", ("limited", "scope_none"))
    served.as_caller(caller)
    deal = next(i for i, r in served.rows[DEAL].items() if r["title"] == "b-deal-0")
    response = served.get(caller, Req("get", record_id=deal).url())
    assert response.status_code == 200
    assert not {"secret", "score", "doubled"} & set(response.get_json())
    assert "secret-b-0" not in response.get_data(as_text=True)
    for req in (Req("list"), Req("export"), Req("history", record_id=deal),
                Req("list", filter={"field": "secret", "op": "eq", "value": "secret-b-0"}),
                Req("list", sort=("score",)), Req("list", fields=("secret",))):
        check(served, caller, req)
