"""Users, roles and the org tree on SQLite and PostgreSQL: the `_identity` API (admins only),
passwords and tokens, moving org units, seeding from org.yaml, who may reload definitions
(ownership), and the identity commands of the CLI."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

pytest.register_assert_rewrite("apifixtures")
from apifixtures import CUSTOMER, Demo, problem_of  # noqa: E402
from dbfixtures import Project, catalog_version  # noqa: E402

from metacrm.cli import main  # noqa: E402
from metacrm.platform.app import create_app  # noqa: E402
from metacrm.platform.auth import issue_token  # noqa: E402
from metacrm.platform.identity import IdentityService  # noqa: E402
from metacrm.platform.records import ListQuery, NotFound  # noqa: E402
from metacrm.platform.runtime import Platform  # noqa: E402
from metacrm.platform.seed import SeedError, apply_seed, load_seed  # noqa: E402
from metacrm.platform.systables import system_tables  # noqa: E402

pytest_plugins = ["apifixtures"]

PASSWORD = "correct-horse-battery"
SEED_USERS = {"ming": ["sales_rep"], "ting": ["sales_rep"], "hua": ["sales_manager"],
              "mei": ["sales_rep"], "lin": ["data_steward"], "chen": ["auditor"],
              "wei": ["sales_rep"], "jun": ["sales_rep"], "fang": ["sales_manager"]}


# -- helpers ----------------------------------------------------------------------------------

def ident(demo: Demo, tail: str = "") -> str:
    return demo.url(f"_identity/{tail}".rstrip("/"))


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.get_data(True))
    return response.get_json() if status != 204 else None


def login(demo: Demo, username: str, password: str) -> Any:
    return demo.post(demo.url("_auth/token"), {"username": username, "password": password},
                     who=None)


def add_units(demo: Demo, *units: tuple[str, str, str | None, str | None]) -> None:
    """(name, kind, parent, business unit) per unit, through the API as the admin."""
    for name, kind, parent, business_unit in units:
        body: dict[str, Any] = {"name": name, "label": name.title(), "kind": kind}
        if parent:
            body["parent"] = parent
        if business_unit:
            body["business_unit"] = business_unit
        ok(demo.post(ident(demo, "units"), body), 201)


def add_member(demo: Demo, username: str, roles: Iterable[str],
               units: Iterable[str] = ()) -> int:
    """A user saved through the identity service (as the system), with a bearer token."""
    saved = IdentityService(demo.runtime).save_user(
        {"username": username, "roles": list(roles), "units": list(units)})
    token_for(demo, username, saved["id"])
    return saved["id"]


def token_for(demo: Demo, username: str, user_id: int | None = None) -> str:
    if user_id is None:
        user_id = user_id_of(demo, username)
    with demo.runtime.begin() as connection:
        token = issue_token(connection, user_id, "tests")
    demo.tokens[username] = token
    demo.user_ids[username] = user_id
    return token


def user_id_of(demo: Demo, username: str) -> int:
    users = system_tables().users
    with demo.connection() as connection:
        found = connection.execute(sa.select(users.c.id).where(
            users.c.username == username)).scalar()
    assert found is not None, username
    return int(found)


def count_rows(demo: Demo, table: sa.Table) -> int:
    with demo.connection() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar())


def visible_ids(demo: Demo, who: str, entity: str = CUSTOMER) -> set[int]:
    return {item["id"] for item in demo.service(who).list(entity, ListQuery(limit=500)).items}


def units_by_name(demo: Demo) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in ok(demo.get(ident(demo, "units")))["items"]}


def seed_path(demo: Demo) -> Path:
    """The shipped org.yaml (copied with tenants/acme) seeding the demo's own slug."""
    path = demo.project.root / "tenants" / demo.slug / "org.yaml"
    lines = path.read_text("utf-8").splitlines()
    assert any(line.startswith("org: acme") for line in lines)
    path.write_text("\n".join(f"org: {demo.slug}" if line.startswith("org:") else line
                              for line in lines) + "\n", "utf-8")
    return path


def seed(demo: Demo) -> dict[str, int]:
    return apply_seed(demo.runtime, load_seed(seed_path(demo)))


def cli(project: Project, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--root", str(project.root), *args], env=project.env(),
                              input=input)


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the `occurrence`-th `needle` in `text`."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def identity_snapshot(demo: Demo) -> dict[str, Any]:
    """Every row of the users, roles, org units and memberships tables."""
    tables = system_tables()
    out = {}
    with demo.connection() as connection:
        for table in (tables.users, tables.org_units, tables.user_roles, tables.org_members):
            rows = connection.execute(sa.select(table).order_by(
                *table.primary_key.columns)).mappings().all()
            out[table.name] = [dict(r) for r in rows]
    return out


# -- users, passwords and tokens ----------------------------------------------------------------

def test_admin_creates_a_user_who_signs_in_with_a_password(demo: Demo) -> None:
    add_units(demo, ("retail-bu", "business_unit", None, "retail"),
              ("taipei", "branch", "retail-bu", None), ("help-desk", "team", None, None))
    created = ok(demo.post(ident(demo, "users"), {
        "username": "alice", "display_name": "Alice Chen", "email": "alice@example.com",
        "password": PASSWORD, "roles": ["sales_rep"], "units": ["taipei", "help-desk"]}), 201)
    assert created["username"] == "alice" and created["display_name"] == "Alice Chen"
    assert created["roles"] == ["sales_rep"] and created["units"] == ["taipei", "help-desk"]
    assert created["has_password"] is True and created["active"] is True
    assert not {"password", "password_hash"} & set(created)

    response = demo.get(ident(demo, f"users/{created['id']}"))
    assert ok(response) == created
    assert PASSWORD not in response.get_data(True) and "$argon2" not in response.get_data(True)
    listed = ok(demo.get(ident(demo, "users")))["items"]
    assert [u["username"] for u in listed] == ["admin", "retail", "education", "alice"]
    assert all("password_hash" not in u for u in listed)

    users = system_tables().users
    with demo.connection() as connection:
        stored = connection.execute(sa.select(users.c.password_hash).where(
            users.c.id == created["id"])).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    issued = ok(login(demo, "alice", PASSWORD), 201)
    assert issued["token_type"] == "Bearer" and issued["token"].startswith("mcrm_")
    demo.tokens["alice"] = issued["token"]
    me = ok(demo.get(demo.url("_me"), who="alice"))
    assert (me["id"], me["username"], me["roles"]) == (created["id"], "alice", ["sales_rep"])
    assert me["business_unit"] == "retail"  # from the primary unit's nearest business unit
    assert len(me["units"]) == 2
    customer = me["permissions"][CUSTOMER]
    assert {"read", "create", "update", "assign"} <= set(customer["actions"])
    assert not {"delete", "restore", "import"} & set(customer["actions"])
    assert {"lifetime_value", "external_id"} <= set(customer["read_only_fields"])
    assert customer["hidden_fields"] == []
    assert "create" not in me["permissions"]["customer.tag"]["actions"]
    # the primary unit (the first) decides: help-desk first means no business unit
    ok(demo.patch(ident(demo, f"users/{created['id']}"), {"units": ["help-desk", "taipei"]}))
    assert ok(demo.get(demo.url("_me"), who="alice"))["business_unit"] is None
    ok(demo.patch(ident(demo, f"users/{created['id']}"), {"units": ["taipei", "help-desk"]}))
    admin = ok(demo.get(demo.url("_me")))
    assert admin["roles"] == ["administrator"] and admin["business_unit"] is None
    assert "delete" in admin["permissions"][CUSTOMER]["actions"]

    # the audit log has the changes under _identity.user, never the password
    audit = system_tables().audit
    with demo.connection() as connection:
        entries = connection.execute(sa.select(audit).where(
            audit.c.entity == "_identity.user", audit.c.record_id == created["id"])
        ).mappings().all()
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("created", demo.user_ids["admin"]), ("updated", demo.user_ids["admin"]),
        ("updated", demo.user_ids["admin"])]
    assert PASSWORD not in json.dumps([e["changes"] for e in entries])


def test_wrong_passwords_and_inactive_users_get_401(demo: Demo) -> None:
    created = ok(demo.post(ident(demo, "users"), {
        "username": "bob", "password": PASSWORD, "roles": ["auditor"]}), 201)
    ok(login(demo, "bob", PASSWORD), 201)
    for username, password in (("bob", PASSWORD + "x"), ("bob", ""), ("nobody", PASSWORD),
                               ("admin", PASSWORD)):  # admin has no password at all
        body = problem_of(login(demo, username, password), 401)
        assert "password" in body["detail"]
    problem_of(demo.post(demo.url("_auth/token"), {"username": "bob"}, who=None), 422)

    demo.tokens["bob"] = ok(login(demo, "bob", PASSWORD), 201)["token"]
    assert ok(demo.get(demo.url("_me"), who="bob"))["username"] == "bob"
    changed = ok(demo.patch(ident(demo, f"users/{created['id']}"), {"active": False}))
    assert changed["active"] is False
    problem_of(login(demo, "bob", PASSWORD), 401)
    problem_of(demo.get(demo.url("_me"), who="bob"), 401)  # the old token stops too

    ok(demo.patch(ident(demo, f"users/{created['id']}"), {"active": True}))
    ok(login(demo, "bob", PASSWORD), 201)
    ok(demo.patch(ident(demo, f"users/{created['id']}"), {"password": "another-secret-1"}))
    problem_of(login(demo, "bob", PASSWORD), 401)
    ok(login(demo, "bob", "another-secret-1"), 201)
    problem_of(demo.patch(ident(demo, f"users/{created['id']}"), {"password": "short"}), 422)


def test_non_admins_cannot_manage_users_or_units(demo: Demo) -> None:
    add_units(demo, ("sales", "team", None, None))
    rep = add_member(demo, "rep", ["sales_rep"], ["sales"])
    before = identity_snapshot(demo)
    admin_id = demo.user_ids["admin"]
    attempts = [
        ("POST", ident(demo, "users"), {"username": "mallory", "roles": ["administrator"]}),
        ("PATCH", ident(demo, f"users/{rep}"), {"roles": ["administrator"]}),
        ("PATCH", ident(demo, f"users/{admin_id}"), {"active": False}),
        ("GET", ident(demo, "users"), None),
        ("GET", ident(demo, f"users/{admin_id}"), None),
        ("POST", ident(demo, "units"), {"name": "rogue", "label": "Rogue", "kind": "team"}),
        ("PATCH", ident(demo, "units/sales"), {"label": "Renamed"}),
        ("DELETE", ident(demo, "units/sales"), None),
    ]
    for method, url, body in attempts:
        problem_of(demo.request(method, url, who="rep", json_body=body), 403)
    assert identity_snapshot(demo) == before

    own = ok(demo.get(ident(demo, f"users/{rep}"), who="rep"))
    assert own["username"] == "rep" and own["roles"] == ["sales_rep"]
    assert own["units"] == ["sales"]


def test_unknown_roles_units_and_duplicate_usernames_are_refused(demo: Demo) -> None:
    users = system_tables().users
    before = count_rows(demo, users)
    body = problem_of(demo.post(ident(demo, "users"), {
        "username": "carol", "roles": ["sales_rep", "wizard"]}), 422)
    assert "wizard" in body["detail"] and "sales_rep" not in body["detail"]
    assert "roles" in body["errors"]
    body = problem_of(demo.post(ident(demo, "users"), {
        "username": "carol", "roles": ["sales_rep"], "units": ["atlantis"]}), 422)
    assert "atlantis" in body["detail"]
    assert count_rows(demo, users) == before  # nothing half-created

    ok(demo.post(ident(demo, "users"), {"username": "carol", "roles": ["sales_rep"]}), 201)
    body = problem_of(demo.post(ident(demo, "users"), {"username": "carol"}), 409)
    assert "carol" in body["detail"]
    problem_of(demo.post(ident(demo, "users"), {"roles": []}), 422)
    problem_of(demo.post(ident(demo, "users"), {"username": "dave", "colour": "red"}), 422)
    problem_of(demo.patch(ident(demo, "users/987654"), {"display_name": "x"}), 404)
    assert count_rows(demo, users) == before + 1


MALFORMED = {
    "empty username": ("PATCH", "bob", {"username": ""}),
    "username too long": ("PATCH", "bob", {"username": "x" * 151}),
    "display name null": ("PATCH", "bob", {"display_name": None}),
    "active not boolean": ("PATCH", "bob", {"active": "yes"}),
    "email a list": ("POST", None, {"username": "eve", "email": ["eve@example.com"]}),
    "locale too long": ("POST", None, {"username": "fay", "locale": "x" * 40}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_user_body_is_422_and_changes_nothing(demo: Demo, case: str) -> None:
    method, target, body = MALFORMED[case]
    bob = ok(demo.post(ident(demo, "users"), {"username": "bob", "roles": []}), 201)
    before = identity_snapshot(demo)
    url = ident(demo, f"users/{bob['id']}" if target else "users")
    problem_of(demo.request(method, url, json_body=body), 422)
    assert identity_snapshot(demo) == before


def test_an_over_long_unit_name_is_422(demo: Demo) -> None:
    before = identity_snapshot(demo)
    problem_of(demo.post(ident(demo, "units"), {"name": "n" * 101, "label": "x",
                                                "kind": "team"}), 422)
    assert identity_snapshot(demo) == before


def test_a_unit_parent_that_is_not_a_name_is_422(demo: Demo) -> None:
    add_units(demo, ("sales", "team", None, None))
    before = identity_snapshot(demo)
    problem_of(demo.patch(ident(demo, "units/sales"), {"parent": 5}), 422)
    problem_of(demo.post(ident(demo, "units"), {"name": "x", "label": "x", "kind": "team",
                                                "parent": ["sales"]}), 422)
    assert identity_snapshot(demo) == before


def test_a_user_id_beyond_the_id_range_is_404(demo: Demo) -> None:
    problem_of(demo.get(ident(demo, f"users/{2**64}")), 404)
    problem_of(demo.patch(ident(demo, f"users/{2**64}"), {"display_name": "x"}), 404)


def test_a_long_token_name_is_kept_short_or_refused(demo: Demo) -> None:
    ok(demo.post(ident(demo, "users"), {"username": "pat", "password": PASSWORD}), 201)
    response = demo.post(demo.url("_auth/token"), {"username": "pat", "password": PASSWORD,
                                                   "name": "n" * 300}, who=None)
    assert response.status_code in (201, 422), response.get_data(True)


def test_an_admin_cannot_take_administrator_from_themselves(demo: Demo) -> None:
    admin_id = demo.user_ids["admin"]
    body = problem_of(demo.patch(ident(demo, f"users/{admin_id}"), {"roles": ["sales_rep"]}),
                      422)
    assert "administrator" in body["detail"]
    problem_of(demo.patch(ident(demo, f"users/{admin_id}"), {"roles": []}), 422)
    problem_of(demo.patch(ident(demo, f"users/{admin_id}"), {"active": False}), 422)
    assert ok(demo.get(ident(demo, f"users/{admin_id}")))["roles"] == ["administrator"]
    # keeping it while adding another role is fine; another admin may take it away
    changed = ok(demo.patch(ident(demo, f"users/{admin_id}"),
                            {"roles": ["administrator", "auditor"]}))
    assert changed["roles"] == ["administrator", "auditor"]
    retail_id = demo.user_ids["retail"]
    assert ok(demo.patch(ident(demo, f"users/{retail_id}"), {"roles": ["auditor"]})
              )["roles"] == ["auditor"]
    problem_of(demo.get(ident(demo, "users"), who="retail"), 403)


def test_roles_list_every_declared_role_with_its_grants(demo: Demo) -> None:
    roles = {r["name"]: r for r in ok(demo.get(ident(demo, "roles")))["items"]}
    assert set(roles) == {"administrator", "auditor", "data_steward", "sales_manager",
                          "sales_rep", "agent", "supervisor"}  # customer, ocrm, service
    assert roles["administrator"]["builtin"] is True
    rep = roles["sales_rep"]
    assert rep["label"] == "Sales rep"
    assert rep["grants"][CUSTOMER]["actions"]["read"] == "business_unit"
    assert rep["grants"][CUSTOMER]["fields"] == {"lifetime_value": "read",
                                                 "external_id": "read", "identified": "read"}
    assert roles["auditor"]["grants"][CUSTOMER]["fields"] == {"profile": "hidden"}


# -- the org tree -----------------------------------------------------------------------------

ORG_TREE = (("grp", "group", None, None),
            ("retail-bu", "business_unit", "grp", "retail"),
            ("north", "region", "retail-bu", None),
            ("taipei", "branch", "north", None),
            ("taipei-1", "team", "taipei", None),
            ("south-area", "region", "retail-bu", None),
            ("south", "region", "south-area", None),
            ("kaohsiung", "branch", "south", None))


@dataclass
class OrgWorld:
    demo: Demo
    customers: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def org_world(demo: Demo) -> OrgWorld:
    add_units(demo, *ORG_TREE)
    add_member(demo, "ming", ["sales_rep"], ["taipei-1"])
    add_member(demo, "ting", ["sales_rep"], ["taipei"])
    add_member(demo, "kao", ["sales_rep"], ["kaohsiung"])
    add_member(demo, "hua", ["sales_manager"], ["north"])
    add_member(demo, "nan", ["sales_manager"], ["south"])
    world = OrgWorld(demo)
    for who in ("ming", "ting", "kao"):
        world.customers[who] = demo.service(who).create(
            CUSTOMER, {"display_name": f"{who}'s customer"})["id"]
    return world


def record_state(demo: Demo) -> list[tuple[Any, ...]]:
    table = demo.table(CUSTOMER)
    with demo.connection() as connection:
        return [tuple(r) for r in connection.execute(sa.select(
            table.c.id, table.c.row_version, table.c.updated_at, table.c.updated_by,
            table.c.owner, table.c.business_unit).order_by(table.c.id))]


def test_moving_a_branch_rewrites_the_subtree_paths_only(org_world: OrgWorld) -> None:
    demo = org_world.demo
    before = units_by_name(demo)
    records_before = record_state(demo)
    audit = system_tables().audit
    with demo.connection() as connection:
        audit_before = connection.execute(sa.select(sa.func.count()).where(
            audit.c.entity == CUSTOMER)).scalar()

    moved = ok(demo.patch(ident(demo, "units/taipei"), {"parent": "south"}))
    south = before["south"]
    assert moved["parent"] == "south"
    assert moved["path"] == f"{south['path']}{before['taipei']['id']}/"
    assert moved["depth"] == south["depth"] + 1 == before["taipei"]["depth"] + 1

    after = units_by_name(demo)
    assert after["taipei-1"]["path"] == f"{moved['path']}{before['taipei-1']['id']}/"
    assert after["taipei-1"]["depth"] == before["taipei-1"]["depth"] + 1
    assert after["taipei-1"]["parent"] == "taipei"
    for name in ("grp", "retail-bu", "north", "south-area", "south", "kaohsiung"):
        assert after[name] == before[name], name
    for name, unit in after.items():  # every path is its parent's path plus its own id
        parent = after[unit["parent"]] if unit["parent"] else None
        assert unit["path"] == f"{parent['path'] if parent else '/'}{unit['id']}/", name
        assert unit["depth"] == (parent["depth"] + 1 if parent else 0), name
    detail = ok(demo.get(ident(demo, "units/taipei")))
    assert detail["subtree"] == ["taipei", "taipei-1"]
    assert detail["members"] == [demo.user_ids["ting"]]
    assert detail["effective_business_unit"] == "retail"

    assert record_state(demo) == records_before  # no entity record changed
    with demo.connection() as connection:
        assert connection.execute(sa.select(sa.func.count()).where(
            audit.c.entity == CUSTOMER)).scalar() == audit_before
        actions = connection.execute(sa.select(audit.c.action).where(
            audit.c.entity == "_identity.unit", audit.c.record_id == before["taipei"]["id"])
            .order_by(audit.c.id)).scalars().all()
    assert actions == ["created", "updated"]


def test_a_subtree_manager_sees_a_moved_branch_only_after_the_move(
        org_world: OrgWorld) -> None:
    demo, customers = org_world.demo, org_world.customers
    taipei_side = {customers["ming"], customers["ting"]}
    assert visible_ids(demo, "hua") == taipei_side
    assert visible_ids(demo, "nan") == {customers["kao"]}
    with pytest.raises(NotFound):
        demo.service("nan").get(CUSTOMER, customers["ming"])

    ok(demo.patch(ident(demo, "units/taipei"), {"parent": "south"}))

    assert visible_ids(demo, "hua") == set()
    assert visible_ids(demo, "nan") == taipei_side | {customers["kao"]}
    assert demo.service("nan").get(CUSTOMER, customers["ming"])["display_name"] == \
        "ming's customer"
    with pytest.raises(NotFound):
        demo.service("hua").get(CUSTOMER, customers["ting"])
    # the same answers through the API
    for who, expected in (("hua", set()), ("nan", taipei_side | {customers["kao"]})):
        items = ok(demo.get(demo.entity_url() + "?limit=500", who=who))["items"]
        assert {item["id"] for item in items} == expected

    ok(demo.patch(ident(demo, "units/taipei"), {"parent": "north"}))  # and back again
    assert visible_ids(demo, "hua") == taipei_side
    assert visible_ids(demo, "nan") == {customers["kao"]}


def test_a_unit_cannot_move_under_its_own_subtree_or_become_a_root(
        org_world: OrgWorld) -> None:
    demo = org_world.demo
    before = units_by_name(demo)
    for name, parent in (("north", "taipei-1"), ("north", "taipei"), ("taipei", "taipei"),
                         ("grp", "kaohsiung")):
        body = problem_of(demo.patch(ident(demo, f"units/{name}"), {"parent": parent}), 422)
        assert name in body["detail"]
    problem_of(demo.patch(ident(demo, "units/taipei"), {"parent": None}), 422)
    problem_of(demo.patch(ident(demo, "units/taipei"), {"parent": "atlantis"}), 422)
    problem_of(demo.post(ident(demo, "units"), {"name": "x", "label": "X", "kind": "tribe"}),
               422)
    problem_of(demo.post(ident(demo, "units"), {"name": "north", "label": "N",
                                                "kind": "region"}), 422)
    problem_of(demo.post(ident(demo, "units"), {"name": "y", "label": "Y", "kind": "team",
                                                "business_unit": "nowhere"}), 422)
    assert units_by_name(demo) == before


def test_deleting_a_unit_with_members_or_sub_units_is_409(org_world: OrgWorld) -> None:
    demo = org_world.demo
    body = problem_of(demo.delete(ident(demo, "units/taipei-1")), 409)
    assert "taipei-1" in body["detail"]
    problem_of(demo.delete(ident(demo, "units/south-area")), 409)  # has sub-units
    assert "taipei-1" in units_by_name(demo)

    add_units(demo, ("spare", "team", "kaohsiung", None))
    assert ok(demo.delete(ident(demo, "units/spare")), 204) is None
    problem_of(demo.get(ident(demo, "units/spare")), 404)
    assert "spare" not in units_by_name(demo)


def test_an_unknown_unit_is_404_for_every_method(demo: Demo) -> None:
    problem_of(demo.get(ident(demo, "units/atlantis")), 404)
    problem_of(demo.patch(ident(demo, "units/atlantis"), {"label": "A"}), 404)
    problem_of(demo.delete(ident(demo, "units/atlantis")), 404)


# -- seeding from org.yaml --------------------------------------------------------------------

def test_the_shipped_org_seed_creates_units_and_users_with_roles(demo: Demo) -> None:
    counts = seed(demo)
    assert counts == {"units": 16, "users": 9}
    units = units_by_name(demo)
    assert len(units) == 16
    assert units["acme"]["parent"] is None and units["acme"]["kind"] == "group"
    assert units["retail-taipei-1"]["parent"] == "retail-taipei"
    assert units["retail-taipei-1"]["depth"] == 4
    assert units["retail-taipei-1"]["effective_business_unit"] == "retail"
    assert units["edu-taipei"]["effective_business_unit"] == "education"
    assert units["hq"]["effective_business_unit"] is None
    assert units["retail-north"]["manager"] == user_id_of(demo, "hua")

    users = {u["username"]: u for u in IdentityService(demo.runtime).users()}
    for username, roles in SEED_USERS.items():
        assert users[username]["roles"] == roles, username
        assert users[username]["has_password"] is False
    assert users["ming"]["units"] == ["retail-taipei-1"]
    assert users["ming"]["display_name"] == "王小明"
    assert users["chen"]["email"] == "chen@acme.example"
    token_for(demo, "ming")
    token_for(demo, "mei")
    assert ok(demo.get(demo.url("_me"), who="ming"))["business_unit"] == "retail"
    assert ok(demo.get(demo.url("_me"), who="mei"))["business_unit"] == "education"


def test_seeding_twice_changes_nothing(demo: Demo) -> None:
    seed(demo)
    first = identity_snapshot(demo)
    assert seed(demo) == {"units": 16, "users": 9}
    assert identity_snapshot(demo) == first


BROKEN_SEEDS = {
    "unknown role": ("""\
        org: {slug}
        units:
          top: {{label: Top, kind: group}}
        users:
          zoe: {{name: Zoe, units: [top], roles: [sales_rep, wizard]}}
        """, "seed.unknown-role", "wizard"),
    "unknown parent": ("""\
        org: {slug}
        units:
          top: {{label: Top, kind: group}}
          child:
            label: Child
            kind: team
            parent: nowhere
        """, "seed.unknown-unit", "nowhere"),
    "unknown member unit": ("""\
        org: {slug}
        units:
          top: {{label: Top, kind: group}}
        users:
          zoe: {{name: Zoe, units: [top, elsewhere], roles: []}}
        """, "seed.unknown-unit", "elsewhere"),
    "bad kind": ("""\
        org: {slug}
        units:
          top: {{label: Top, kind: group}}
          odd: {{label: Odd, kind: tribe}}
        """, "seed.schema", "tribe"),
    "wrong tenant": ("""\
        org: somebody-else
        units:
          top: {{label: Top, kind: group}}
        """, "seed.tenant", "somebody-else"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SEEDS))
def test_a_broken_seed_says_where_and_changes_nothing(demo: Demo, case: str) -> None:
    template, code, needle = BROKEN_SEEDS[case]
    text = textwrap.dedent(template).format(slug=demo.slug)
    path = demo.project.root / "broken-org.yaml"
    path.write_text(text, "utf-8")
    before = identity_snapshot(demo)
    with pytest.raises(SeedError) as caught:
        apply_seed(demo.runtime, load_seed(path))
    [diagnostic] = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert diagnostic.code == code
    assert diagnostic.file == str(path)
    assert (diagnostic.line, diagnostic.column) == position(text, needle)
    assert needle in diagnostic.message or code == "seed.schema"
    assert f"{path}:{diagnostic.line}:{diagnostic.column}" in str(caught.value)
    assert identity_snapshot(demo) == before


def test_a_seed_with_a_yaml_syntax_error_names_the_line_and_column(demo: Demo) -> None:
    text = f"org: {demo.slug}\nunits:\n  top: {{label: Top, kind: group}}\n" \
           "  bad: label: Bad\n"
    path = demo.project.root / "syntax-org.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(SeedError) as caught:
        load_seed(path)
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.file == str(path) and diagnostic.code.startswith("yaml")
    assert (diagnostic.line, diagnostic.column) == position(text, ": Bad")


def test_a_parent_cycle_in_a_seed_names_the_file_and_line(demo: Demo) -> None:
    text = f"org: {demo.slug}\nunits:\n  a: {{label: A, kind: team, parent: b}}\n" \
           "  b: {label: B, kind: team, parent: a}\n"
    path = demo.project.root / "cycle-org.yaml"
    path.write_text(text, "utf-8")
    before = identity_snapshot(demo)
    with pytest.raises(SeedError) as caught:
        apply_seed(demo.runtime, load_seed(path))
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.code == "seed.cycle"
    assert diagnostic.file == str(path)
    assert diagnostic.line in (3, 4) and diagnostic.column > 1  # one of the two parents
    assert identity_snapshot(demo) == before


def test_a_seed_moving_a_unit_under_its_own_subtree_is_a_seed_error(demo: Demo) -> None:
    path = demo.project.root / "org-1.yaml"
    path.write_text(f"org: {demo.slug}\nunits:\n  top: {{label: Top, kind: group}}\n"
                    "  mid: {label: Mid, kind: region, parent: top}\n", "utf-8")
    apply_seed(demo.runtime, load_seed(path))
    before = identity_snapshot(demo)
    text = f"org: {demo.slug}\nunits:\n  fresh: {{label: Fresh, kind: team}}\n" \
           "  top: {label: Top, kind: group, parent: mid}\nusers:\n  zed: {roles: [auditor]}\n"
    path.write_text(text, "utf-8")
    with pytest.raises(SeedError) as caught:
        apply_seed(demo.runtime, load_seed(path))
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.file == str(path)
    assert (diagnostic.line, diagnostic.column) == position(text, "mid}")
    assert identity_snapshot(demo) == before  # not half applied: no `fresh`, no `zed`


def test_org_seed_through_the_cli(demo: Demo) -> None:
    seed_path(demo)
    result = cli(demo.project, "org", "seed", demo.slug)
    assert result.exit_code == 0, result.output
    assert f"{demo.slug}: 16 org units and 9 users" in result.output
    first = identity_snapshot(demo)
    result = cli(demo.project, "org", "seed", demo.slug)
    assert result.exit_code == 0, result.output
    assert identity_snapshot(demo) == first

    bad = demo.project.root / "bad-org.yaml"
    text = f"org: {demo.slug}\nusers:\n  zoe: {{roles: [wizard]}}\n"
    bad.write_text(text, "utf-8")
    result = cli(demo.project, "org", "seed", demo.slug, str(bad))
    assert result.exit_code != 0
    line, column = position(text, "wizard")
    assert f"{bad}:{line}:{column}" in result.output and "wizard" in result.output
    assert identity_snapshot(demo) == first


# -- ownership: who may reload definitions --------------------------------------------------

MODULE = "metadata/modules/crm/module.yaml"
COMPANY = "metadata/modules/crm/entities/company.yaml"
ROLE = "metadata/modules/crm/roles/clerk.yaml"
TENANT_OVERLAY = "tenants/acme/overlays/tenant/company.yaml"
RETAIL_OVERLAY = "tenants/acme/overlays/retail/company.yaml"
OWNED_LIBRARY = {
    MODULE: "module: crm\nowner: crm-team\n",
    COMPANY: """
        entity: company
        label: Company
        fields:
          name: {type: string, required: true}
        """,
    ROLE: """
        role: clerk
        label: Clerk
        grants:
          crm.company: {read: all}
        """,
    "tenants/acme/tenant.yaml": """
        tenant: acme
        team: acme-admins
        modules: [crm]
        overlays: [overlays/tenant]
        business_units:
          retail: {team: retail-team, overlays: [overlays/retail]}
        """,
    TENANT_OVERLAY: """
        extend: crm.company
        fields:
          vat: {type: string}
        """,
    RETAIL_OVERLAY: """
        extend: crm.company
        fields:
          store_code: {type: string}
        """,
}
OWNED_UNITS = {"crm-team": None, "retail-team": None, "retail-north": "retail-team",
               "acme-admins": None, "elsewhere": None}
OWNED_USERS = {"crm_dev": ["crm-team"], "retail_dev": ["retail-north"],
               "tenant_dev": ["acme-admins"], "outsider": ["elsewhere"],
               "all_rounder": ["crm-team", "retail-team"]}


@dataclass
class OwnedWorld:
    project: Project
    platform: Platform
    client: Any
    tokens: dict[str, str]

    def reload(self, who: str) -> Any:
        return self.client.post("/t/acme/api/v1/_metadata/reload",
                                headers={"Authorization": f"Bearer {self.tokens[who]}"})

    @property
    def serving(self) -> str:
        return self.client.get("/t/acme/").get_json()["version"]


@pytest.fixture
def owned(make_platform: Project) -> OwnedWorld:
    platform = make_platform(OWNED_LIBRARY, check_interval=0)
    report = platform.create_tenant("acme")
    assert report.ok, report.format()
    runtime = platform.runtime("acme")
    identity = IdentityService(runtime)
    for name, parent in OWNED_UNITS.items():
        identity.save_unit({"name": name, "label": name, "kind": "team",
                            **({"parent": parent} if parent else {})})
    tokens = {}
    for username, units in OWNED_USERS.items():
        saved = identity.save_user({"username": username, "roles": [], "units": units})
        with runtime.begin() as connection:
            tokens[username] = issue_token(connection, saved["id"], "tests")
    client = create_app(make_platform.settings(), platform).test_client()
    return OwnedWorld(make_platform, platform, client, tokens)


def refused(world: OwnedWorld, who: str, *needles: str) -> None:
    version = world.serving
    body = problem_of(world.reload(who), 403)
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    assert world.serving == version
    assert world.platform.runtime("acme").version == version
    assert catalog_version(world.platform, "acme") == version


def accepted(world: OwnedWorld, who: str) -> dict[str, Any]:
    version = world.serving
    body = ok(world.reload(who))
    assert body["ok"] is True and body["changed"] is True
    assert body["previous"] == version and body["version"] != version
    assert world.serving == body["version"]
    assert catalog_version(world.platform, "acme") == body["version"]
    return body


def test_a_module_change_needs_a_maintainer_of_the_module_team(owned: OwnedWorld) -> None:
    owned.project.write({COMPANY: """
        entity: company
        label: Company
        fields:
          name: {type: string, required: true}
          city: {type: string}
        """})
    for who in ("outsider", "retail_dev", "tenant_dev"):
        refused(owned, who, "module crm", "crm-team")
    accepted(owned, "crm_dev")
    runtime = owned.platform.runtime("acme")
    assert "city" in runtime.tables.by_entity["crm.company"].c


def test_a_module_role_change_needs_the_module_team(owned: OwnedWorld) -> None:
    owned.project.write({ROLE: """
        role: clerk
        label: Clerk
        grants:
          crm.company: {read: all, create: all}
        """})
    refused(owned, "outsider", "module crm", "crm-team")
    accepted(owned, "crm_dev")


def test_a_module_role_relabel_needs_the_module_team(owned: OwnedWorld) -> None:
    owned.project.write({ROLE: """
        role: clerk
        label: Counter clerk
        grants:
          crm.company: {read: all}
        """})
    refused(owned, "outsider", "module crm", "crm-team")
    accepted(owned, "crm_dev")


def test_a_business_unit_overlay_change_needs_that_units_team(owned: OwnedWorld) -> None:
    owned.project.write({RETAIL_OVERLAY: """
        extend: crm.company
        fields:
          store_code: {type: string}
          region: {type: string}
        """})
    for who in ("outsider", "crm_dev", "tenant_dev"):
        refused(owned, who, "business unit retail", "retail-team")
    accepted(owned, "retail_dev")  # a member of a unit below retail-team


def test_a_business_unit_overlay_relabel_needs_that_units_team(owned: OwnedWorld) -> None:
    owned.project.write({RETAIL_OVERLAY: """
        extend: crm.company
        label: Store customer
        fields:
          store_code: {type: string}
        """})
    refused(owned, "outsider", "business unit retail", "retail-team")
    accepted(owned, "retail_dev")


def test_a_tenant_overlay_change_needs_the_tenant_team(owned: OwnedWorld) -> None:
    owned.project.write({TENANT_OVERLAY: """
        extend: crm.company
        fields:
          vat: {type: string}
          website: {type: string}
        """})
    for who in ("outsider", "crm_dev", "retail_dev"):
        refused(owned, who, "tenant", "acme-admins")
    accepted(owned, "tenant_dev")


def test_a_tenant_overlay_relabelling_a_module_field_needs_the_tenant_team(
        owned: OwnedWorld) -> None:
    owned.project.write({TENANT_OVERLAY: """
        extend: crm.company
        fields:
          vat: {type: string}
          name: {label: Registered name}
        """})
    refused(owned, "crm_dev", "tenant", "acme-admins")
    accepted(owned, "tenant_dev")


def test_changes_of_several_owners_need_every_team(owned: OwnedWorld) -> None:
    owned.project.write({COMPANY: """
        entity: company
        label: Company
        fields:
          name: {type: string, required: true}
          city: {type: string}
        """, RETAIL_OVERLAY: """
        extend: crm.company
        fields:
          store_code: {type: string}
          region: {type: string}
        """})
    body = problem_of(owned.reload("crm_dev"), 403)
    assert "retail-team" in body["detail"] and "crm-team" not in body["detail"]
    body = problem_of(owned.reload("retail_dev"), 403)
    assert "crm-team" in body["detail"] and "retail-team" not in body["detail"]
    accepted(owned, "all_rounder")


def test_an_unchanged_reload_is_allowed_to_anyone(owned: OwnedWorld) -> None:
    version = owned.serving
    body = ok(owned.reload("outsider"))
    assert body["ok"] is True and body["changed"] is False and body["version"] == version
    problem_of(owned.client.post("/t/acme/api/v1/_metadata/reload"), 401)


def test_an_invalid_change_is_422_with_diagnostics_and_keeps_serving(
        owned: OwnedWorld) -> None:
    version = owned.serving
    owned.project.write({COMPANY: "entity: company\nfields:\n  name: {type: string\n"})
    body = problem_of(owned.reload("crm_dev"), 422)
    errors = [d for d in body["diagnostics"] if d["severity"] == "error"]
    assert errors and errors[0]["file"] == COMPANY and errors[0]["line"] >= 3
    assert errors[0]["code"].startswith("yaml")
    assert owned.serving == version
    assert catalog_version(owned.platform, "acme") == version


# -- the CLI ----------------------------------------------------------------------------------

def test_user_role_and_org_commands(demo: Demo) -> None:
    project, slug = demo.project, demo.slug
    result = cli(project, "org", "add", slug, "group", "--kind", "group", "--label", "Group")
    assert result.exit_code == 0, result.output
    result = cli(project, "org", "add", slug, "shops", "--kind", "business_unit", "--parent",
                 "group", "--business-unit", "retail")
    assert result.exit_code == 0, result.output
    for name, parent in (("north", "shops"), ("south", "shops")):
        result = cli(project, "org", "add", slug, name, "--kind", "region", "--parent", parent)
        assert result.exit_code == 0, result.output
    result = cli(project, "org", "add", slug, "taipei", "--kind", "branch", "--parent",
                 "north")
    assert result.exit_code == 0, result.output
    units = units_by_name(demo)
    assert result.output.strip() == f"taipei at {units['taipei']['path']} (branch)"
    result = cli(project, "org", "add", slug, "taipei", "--parent", "north")
    assert result.exit_code != 0 and "taipei" in result.output

    result = cli(project, "org", "list", slug)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "group (group): Group", "  shops (business_unit): shops [retail]",
        "    north (region): north", "      taipei (branch): taipei",
        "    south (region): south"]

    result = cli(project, "user", "create", slug, "ming", "--name", "Ming", "--role",
                 "sales_rep", "--role", "auditor", "--org-unit", "taipei", "--password",
                 input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    ming = user_id_of(demo, "ming")
    assert f"user ming (id {ming}) in {slug}: auditor, sales_rep" in result.output
    demo.tokens["ming"] = ok(login(demo, "ming", PASSWORD), 201)["token"]
    me = ok(demo.get(demo.url("_me"), who="ming"))
    assert me["roles"] == ["auditor", "sales_rep"] and me["business_unit"] == "retail"
    result = cli(project, "user", "create", slug, "zed", "--role", "wizard")
    assert result.exit_code != 0 and "wizard" in result.output
    result = cli(project, "user", "create", slug, "zed", "--org-unit", "atlantis")
    assert result.exit_code != 0 and "atlantis" in result.output

    result = cli(project, "user", "list", slug)
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines()}
    assert set(lines) == {"admin", "retail", "education", "ming"}
    assert "roles: auditor, sales_rep" in lines["ming"] and "units: taipei" in lines["ming"]
    assert "roles: administrator" in lines["admin"]

    result = cli(project, "org", "move", slug, "taipei", "south")
    assert result.exit_code == 0, result.output
    moved = units_by_name(demo)["taipei"]
    assert moved["parent"] == "south"
    assert result.output.strip() == f"taipei at {moved['path']} (branch)"
    result = cli(project, "org", "move", slug, "shops", "taipei")
    assert result.exit_code != 0 and "subtree" in result.output
    assert units_by_name(demo)["shops"]["parent"] == "group"

    result = cli(project, "role", "list", slug)
    assert result.exit_code == 0, result.output
    assert "sales_rep: Sales rep" in result.output
    assert "  customer.customer: read=business_unit, create=all, update=own, assign=own; " \
           "fields: lifetime_value=read, external_id=read" in result.output
    result = cli(project, "role", "list", slug, "--format", "json")
    assert result.exit_code == 0, result.output
    roles = {r["name"]: r for r in json.loads(result.output)}
    assert set(roles) == {"administrator", "auditor", "data_steward", "sales_manager",
                          "sales_rep", "agent", "supervisor"}  # customer, ocrm, service
    assert roles["auditor"]["grants"][CUSTOMER]["fields"] == {"profile": "hidden"}


def csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def test_export_as_a_user_gives_exactly_their_rows_and_columns(demo: Demo,
                                                               tmp_path: Path) -> None:
    seed(demo)
    for who in ("ming", "ting", "mei", "hua", "chen"):
        token_for(demo, who)
    mine = {}
    for who, name in (("ming", "Ming A"), ("ming", "Ming B"), ("ting", "Ting A"),
                      ("mei", "Mei A"), ("admin", "Admin A")):
        record = demo.service(who).create(CUSTOMER, {
            "display_name": name, "profile": {"note": f"PRIVATE-{name}"}})
        mine.setdefault(who, set()).add(record["id"])
    everyone = set().union(*mine.values())

    expected = {"hua": mine["ming"] | mine["ting"], "chen": everyone}
    for who, ids in expected.items():
        out = tmp_path / f"{who}.csv"
        result = cli(demo.project, "export", demo.slug, CUSTOMER, "--as", who, "--out",
                     str(out))
        assert result.exit_code == 0, result.output
        assert f"{len(ids)} rows to {out}" in result.output
        header, rows = csv_rows(out.read_text("utf-8"))
        assert {int(r["id"]) for r in rows} == ids
        listed = ok(demo.get(demo.entity_url() + "?limit=500", who=who))["items"]
        assert {item["id"] for item in listed} == ids
        response = demo.get(demo.entity_url(tail="/export"), who=who)
        assert response.status_code == 200
        api_header, api_rows = csv_rows(response.get_data(True))
        assert api_header == header
        assert {int(r["id"]) for r in api_rows} == ids
    chen_text = (tmp_path / "chen.csv").read_text("utf-8")
    chen_header, _ = csv_rows(chen_text)
    assert "profile" not in chen_header and "PRIVATE-" not in chen_text
    assert "display_name" in chen_header
    hua_header, _ = csv_rows((tmp_path / "hua.csv").read_text("utf-8"))
    assert "profile" in hua_header and "store_code" in hua_header  # retail's own field

    result = cli(demo.project, "export", demo.slug, CUSTOMER, "--as", "nobody")
    assert result.exit_code != 0 and "nobody" in result.output
