"""Tenant isolation on SQLite and PostgreSQL: two tenants in one platform, and nothing a user
or token of tenant A does ever reads or writes tenant B's data, whichever way a request
names a tenant (path, X-Tenant header, subdomain), whichever ids, keys or references it
guesses, and whichever route it takes (including a property-based sweep)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("apifixtures")
from apifixtures import (  # noqa: E402
    CONTACT_POINT,
    CUSTOMER,
    TAG,
    Demo,
    make_demo,
    problem_of,
    unique_slug,
)
from dbfixtures import Project  # noqa: E402

from metacrm.platform.app import create_app  # noqa: E402
from metacrm.platform.identity import IdentityService  # noqa: E402

pytest_plugins = ["apifixtures"]

MARKER = "zqx-beta-only-7f3a"
"""A string only tenant B's records, users and units hold."""
DOMAIN = "crm.example.test"
PASSWORD = "beta-password-123"
B_CUSTOMERS = 12
A_CUSTOMERS = 3


@dataclass
class Pair:
    a: Demo
    b: Demo
    a_customers: list[int]
    b_customers: list[int]
    a_tags: list[int]
    b_tags: list[int]
    a_points: list[int]
    b_points: list[int]
    b_only_users: list[int]
    host_client: Any  # an app that also finds tenants by subdomain of DOMAIN

    @property
    def b_only_customers(self) -> list[int]:
        return sorted(set(self.b_customers) - set(self.a_customers))

    @property
    def b_only_tags(self) -> list[int]:
        return sorted(set(self.b_tags) - set(self.a_tags))

    @property
    def b_only_points(self) -> list[int]:
        return sorted(set(self.b_points) - set(self.a_points))


def create(demo: Demo, entity: str, body: dict[str, Any]) -> int:
    response = demo.post(demo.entity_url(entity), body)
    assert response.status_code == 201, response.get_data(True)
    return int(response.get_json()["id"])


@pytest.fixture
def pair(make_platform: Project) -> Pair:
    a = make_demo(make_platform, slug=unique_slug("alpha"))
    b = make_demo(make_platform, slug=unique_slug("beta"))
    b_tags = [create(b, TAG, {"name": f"{MARKER}-tag-{i}"}) for i in range(4)]
    b_customers = [create(b, CUSTOMER, {
        "display_name": f"{MARKER} customer {i}", "city": MARKER, "external_id": f"B-{i}",
        "email": f"{MARKER}-{i}@example.com", "profile": {"note": MARKER},
        "tags": b_tags[:2]}) for i in range(B_CUSTOMERS)]
    b_points = [create(b, CONTACT_POINT, {"customer": c, "channel": "email",
                                          "value": f"{MARKER}@example.com"})
                for c in b_customers[:6]]
    a_tags = [create(a, TAG, {"name": "alpha-tag"})]
    a_customers = [create(a, CUSTOMER, {
        "display_name": f"Alpha customer {i}", "city": "Alphaville", "external_id": f"A-{i}",
        "tags": a_tags}) for i in range(A_CUSTOMERS)]
    a_points = [create(a, CONTACT_POINT, {"customer": a_customers[0], "channel": "phone",
                                          "value": "+886900000000"})]
    identity = IdentityService(b.runtime)
    identity.save_unit({"name": "beta-unit", "label": MARKER, "kind": "team"})
    b_only_users = [identity.save_user({
        "username": f"beta-user-{i}", "display_name": f"{MARKER} user {i}",
        "email": f"{MARKER}.{i}@example.com", "password": PASSWORD, "roles": ["auditor"],
        "units": ["beta-unit"]})["id"] for i in range(3)]
    # B's records shared with B's unit and users, one of them with an id A has too
    for record_id, body in ((b_customers[0], {"unit": "beta-unit"}),
                            (b_customers[0], {"user": b_only_users[0], "access": "edit"}),
                            (b_customers[-1], {"user": b_only_users[1]})):
        shared = b.post(b.entity_url(CUSTOMER, record_id, "/shares"), body)
        assert shared.status_code == 201, shared.get_data(True)
    app = create_app(make_platform.settings(base_domain=DOMAIN), a.platform)
    app.testing = True
    assert max(b_customers) > max(a_customers) and max(b_tags) > max(a_tags)
    assert max(b_only_users) > max(a.user_ids.values())
    return Pair(a, b, a_customers, b_customers, a_tags, b_tags, a_points, b_points,
                b_only_users, app.test_client())


def b_state(pair: Pair) -> dict[str, Any]:
    """Every row of B's entity and system tables but tokens (a login to B, from anyone,
    is allowed to add one): nothing else of B may change."""
    b = pair.b
    runtime = b.runtime
    tables = [runtime.tables.by_entity[key] for key in (CUSTOMER, TAG, CONTACT_POINT)]
    tables.append(b.link_table(CUSTOMER, "tags"))
    from metacrm.platform.systables import system_tables

    system = system_tables()
    tables += [system.users, system.org_units, system.org_members,
               system.user_roles, system.shares, system.audit]
    out = {}
    with b.connection() as connection:
        for table in tables:
            order = list(table.primary_key.columns)
            rows = connection.execute(sa.select(table).order_by(*order)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def no_marker(response: Any) -> None:
    text = response.get_data(as_text=True)
    assert MARKER not in text, (response.status_code, text[:500])
    assert MARKER.encode() not in response.data


def a_token(pair: Pair, who: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {pair.a.tokens[who]}"}


ROUTES_ON_B = [
    ("GET", "customer/customer", None),
    ("GET", "customer/customer?count=true", None),
    ("GET", "customer/customer/1", None),
    ("GET", "customer/customer/1/history", None),
    ("GET", "customer/customer/1/shares", None),
    ("GET", "customer/customer/export", None),
    ("GET", "customer/contact_point/1", None),
    ("GET", "customer/tag", None),
    ("GET", "_meta", None),
    ("GET", "_me", None),
    ("GET", "_identity/users", None),
    ("GET", "_identity/users/1", None),
    ("GET", "_identity/units", None),
    ("GET", "_identity/roles", None),
    ("POST", "customer/customer", {"display_name": "intruder"}),
    ("POST", "customer/customer/bulk", {"records": [{"display_name": "intruder"}]}),
    ("PATCH", "customer/customer/1", {"display_name": "intruder"}),
    ("DELETE", "customer/customer/1", None),
    ("POST", "customer/customer/1/restore", None),
    ("POST", "customer/customer/1/assign", {"owner": 1}),
    ("POST", "customer/customer/1/shares", {"user": 1, "access": "edit"}),
    ("POST", "_identity/users", {"username": "intruder", "roles": ["administrator"]}),
    ("PATCH", "_identity/users/1", {"roles": ["administrator"], "active": False}),
    ("POST", "_identity/units", {"name": "intruders", "label": "x", "kind": "team"}),
    ("POST", "_metadata/reload", None),
]


def on_b(pair: Pair, way: str, method: str, tail: str, body: Any,
         headers: dict[str, str]) -> Any:
    """A request to tenant B's `api/v1/<tail>`, naming B by path, header or subdomain."""
    data = json.dumps(body) if body is not None else None
    headers = {**headers, **({"Content-Type": "application/json"} if data else {})}
    if way == "path":
        return pair.a.client.open(f"/t/{pair.b.slug}/api/v1/{tail}", method=method,
                                  data=data, headers=headers)
    if way == "header":
        return pair.a.client.open(f"/api/v1/{tail}", method=method, data=data,
                                  headers={**headers, "X-Tenant": pair.b.slug})
    return pair.host_client.open(f"/api/v1/{tail}", method=method, data=data,
                                 headers=headers, base_url=f"http://{pair.b.slug}.{DOMAIN}")


# -- naming the other tenant ---------------------------------------------------------------

@pytest.mark.parametrize("way", ["path", "header", "subdomain"])
def test_a_token_of_tenant_a_is_401_wherever_tenant_b_is_named(pair: Pair, way: str) -> None:
    before = b_state(pair)
    for who in ("admin", "retail"):
        for method, tail, body in ROUTES_ON_B:
            response = on_b(pair, way, method, tail, body, a_token(pair, who))
            problem_of(response, 401)
            no_marker(response)
    assert b_state(pair) == before
    # B's own token is served the same way, so the 401s above are about the token
    response = on_b(pair, way, "GET", "customer/customer", None,
                    {"Authorization": f"Bearer {pair.b.tokens['admin']}"})
    assert response.status_code == 200 and MARKER in response.get_data(True)


def test_the_path_prefix_wins_over_a_header_or_host_naming_tenant_b(pair: Pair) -> None:
    a = pair.a
    url = f"/t/{a.slug}/api/v1/customer/customer"
    for response in (
            a.client.get(url, headers={**a_token(pair), "X-Tenant": pair.b.slug}),
            pair.host_client.get(url, headers=a_token(pair),
                                 base_url=f"http://{pair.b.slug}.{DOMAIN}"),
            pair.host_client.get("/api/v1/customer/customer",
                                 headers={**a_token(pair), "X-Tenant": a.slug},
                                 base_url=f"http://{pair.b.slug}.{DOMAIN}")):
        assert response.status_code == 200, response.get_data(True)
        assert sorted(i["id"] for i in response.get_json()["items"]) == pair.a_customers
        no_marker(response)


# -- guessed ids, keys and references ------------------------------------------------------

def test_ids_that_exist_only_in_b_are_404_in_a(pair: Pair) -> None:
    a = pair.a
    before = b_state(pair)
    assert pair.b_only_customers
    for record_id in pair.b_only_customers:
        for method, tail, body in (("GET", "", None), ("PATCH", "", {"city": "x"}),
                                   ("DELETE", "", None), ("POST", "/restore", None),
                                   ("GET", "/history", None), ("GET", "/shares", None),
                                   ("POST", "/shares", {"user": 1}),
                                   ("POST", "/assign", {"owner": 1})):
            response = a.request(method, a.entity_url(CUSTOMER, record_id, tail),
                                 json_body=body)
            problem_of(response, 404)
            no_marker(response)
    for entity, ids in ((TAG, pair.b_only_tags), (CONTACT_POINT, pair.b_only_points)):
        for record_id in ids:
            problem_of(a.get(a.entity_url(entity, record_id)), 404)
            problem_of(a.patch(a.entity_url(entity, record_id), {}), 404)
    for user_id in pair.b_only_users:
        response = a.get(a.url(f"_identity/users/{user_id}"))
        problem_of(response, 404)
        no_marker(response)
    problem_of(a.get(a.url("_identity/units/beta-unit")), 404)
    assert b_state(pair) == before


def test_references_to_ids_only_b_has_are_422_in_a(pair: Pair) -> None:
    a = pair.a
    before = b_state(pair)
    b_customer, b_tag = pair.b_only_customers[0], pair.b_only_tags[0]
    body = problem_of(a.post(a.entity_url(CONTACT_POINT), {
        "customer": b_customer, "channel": "email", "value": "x@example.com"}), 422)
    assert "customer" in body["errors"]
    body = problem_of(a.patch(a.entity_url(CONTACT_POINT, pair.a_points[0]),
                              {"customer": b_customer}), 422)
    assert "customer" in body["errors"]
    body = problem_of(a.post(a.entity_url(CUSTOMER), {"display_name": "x",
                                                      "tags": [b_tag]}), 422)
    assert "tags" in body["errors"]
    body = problem_of(a.patch(a.entity_url(CUSTOMER, pair.a_customers[0]),
                              {"tags": [*pair.a_tags, b_tag]}), 422)
    assert "tags" in body["errors"]
    b_user = pair.b_only_users[0]
    target = pair.a_customers[0]
    problem_of(a.post(a.entity_url(CUSTOMER, target, "/assign"), {"owner": b_user}), 422)
    problem_of(a.post(a.entity_url(CUSTOMER, target, "/shares"), {"user": b_user}), 422)
    problem_of(a.post(a.entity_url(CUSTOMER, target, "/shares"), {"unit": "beta-unit"}), 422)
    problem_of(a.post(a.url("_identity/users"), {"username": "x", "units": ["beta-unit"]}), 422)
    assert a.post(a.url("_identity/units"), {"name": "alpha-unit", "label": "A",
                                             "kind": "team"}).status_code == 201
    problem_of(a.patch(a.url("_identity/units/alpha-unit"), {"manager": b_user}), 422)
    with a.connection() as connection:
        links = connection.execute(sa.select(a.link_table(CUSTOMER, "tags"))).all()
    assert {tag for _, tag in links} == set(pair.a_tags)
    assert b_state(pair) == before


def test_bulk_with_b_ids_and_keys_creates_in_a_only(pair: Pair) -> None:
    a = pair.a
    before = b_state(pair)
    b_customer = pair.b_only_customers[0]
    response = a.post(a.entity_url(tail="/bulk"), {"key": "external_id", "records": [
        {"external_id": "B-0", "display_name": "Alpha's own B-0"},
        {"id": b_customer, "display_name": "claims a B id"},
        {"external_id": "A-0", "display_name": "Alpha renamed"},
        {"external_id": "B-1", "display_name": "with B's tag", "tags": [pair.b_only_tags[0]]},
    ]})
    assert response.status_code == 200, response.get_data(True)
    result = response.get_json()
    no_marker(response)
    assert result["updated"] == [pair.a_customers[0]]
    assert len(result["created"]) == 1
    assert set(result["errors"]) == {"1", "3"}
    assert "id" in result["errors"]["1"]["errors"]  # an id is never written, B's or not
    assert "tags" in result["errors"]["3"]["errors"]
    items = a.get(a.entity_url() + "?limit=500").get_json()["items"]
    by_external = {i["external_id"]: i for i in items}
    assert by_external["B-0"]["display_name"] == "Alpha's own B-0"
    assert by_external["A-0"]["display_name"] == "Alpha renamed"
    assert len(items) == A_CUSTOMERS + len(result["created"])
    assert all(MARKER not in json.dumps(i) for i in items)
    assert b_state(pair) == before


# -- every way of reading in A shows only A ------------------------------------------------

def test_lists_counts_exports_history_and_shares_in_a_show_only_a(pair: Pair) -> None:
    a = pair.a
    response = a.get(a.entity_url() + "?count=true&limit=500")
    body = response.get_json()
    assert sorted(i["id"] for i in body["items"]) == pair.a_customers
    assert body["count"] == A_CUSTOMERS
    no_marker(response)
    for entity, ids in ((TAG, pair.a_tags), (CONTACT_POINT, pair.a_points)):
        response = a.get(a.entity_url(entity) + "?count=true")
        assert sorted(i["id"] for i in response.get_json()["items"]) == ids
        assert response.get_json()["count"] == len(ids)
        no_marker(response)
    response = a.get(a.entity_url() + "?city=" + MARKER)
    assert response.status_code == 200 and response.get_json()["items"] == []

    response = a.get(a.entity_url(tail="/export"))
    assert response.status_code == 200
    no_marker(response)
    rows = list(csv.DictReader(io.StringIO(response.get_data(True))))
    assert sorted(int(r["id"]) for r in rows) == pair.a_customers

    for record_id in pair.a_customers:
        for tail in ("/history", "/shares", ""):
            response = a.get(a.entity_url(CUSTOMER, record_id, tail))
            assert response.status_code == 200, response.get_data(True)
            no_marker(response)
        assert a.get(a.entity_url(CUSTOMER, record_id, "/shares")).get_json()["items"] == []

    for record_id in pair.a_points:
        response = a.get(a.entity_url(CONTACT_POINT, record_id) + "?expand=customer")
        assert response.status_code == 200, response.get_data(True)
        assert response.get_json()["customer"]["id"] == pair.a_customers[0]
        no_marker(response)
    response = a.get(a.entity_url(CONTACT_POINT) + "?expand=customer&limit=500")
    assert response.status_code == 200
    no_marker(response)

    response = a.get(a.url("_identity/users"))
    assert [u["username"] for u in response.get_json()["items"]] == [
        "admin", "retail", "education"]
    no_marker(response)
    response = a.get(a.url("_identity/units"))
    assert response.get_json()["items"] == []  # B has one, A none
    for tail in ("_meta", "_me", "_identity/roles", "openapi.json"):
        response = a.get(a.url(tail))
        assert response.status_code == 200
        no_marker(response)


def test_assigning_and_sharing_in_a_reach_only_a(pair: Pair) -> None:
    a = pair.a
    before = b_state(pair)
    target = pair.a_customers[1]
    retail = a.user_ids["retail"]
    response = a.post(a.entity_url(CUSTOMER, target, "/assign"), {"owner": retail})
    assert response.status_code == 200 and response.get_json()["owner"] == retail
    response = a.post(a.entity_url(CUSTOMER, target, "/shares"), {"user": retail})
    assert response.status_code == 201, response.get_data(True)
    shares = a.get(a.entity_url(CUSTOMER, target, "/shares")).get_json()["items"]
    assert [s["user"] for s in shares] == [retail]
    assert b_state(pair) == before


def test_b_credentials_do_not_sign_in_to_a(pair: Pair) -> None:
    a, b = pair.a, pair.b
    good = {"username": "beta-user-0", "password": PASSWORD}
    response = b.post(b.url("_auth/token"), good, who=None)
    assert response.status_code == 201, response.get_data(True)
    b_token = response.get_json()["token"]
    response = a.post(a.url("_auth/token"), good, who=None)
    problem_of(response, 401)
    no_marker(response)
    # B's fresh token means nothing in A either
    for url in (a.entity_url(), a.url("_me"), a.url("_identity/users")):
        response = a.client.get(url, headers={"Authorization": f"Bearer {b_token}"})
        problem_of(response, 401)
        no_marker(response)
    # and A's users (same usernames as B's, no passwords) get no token from B
    problem_of(b.post(b.url("_auth/token"), {"username": "admin", "password": PASSWORD},
                      who=None), 401)


# -- a property: nothing of B in any response from A ---------------------------------------

TAILS = ["", "/history", "/shares", "/restore", "/assign", "/shares/1"]
BODIES = [None, {}, {"display_name": "probe"}, {"city": MARKER[:4]}, {"owner": 5},
          {"user": 5}, {"unit": "beta-unit"}, {"records": [{"external_id": "B-2"}],
                                                "key": "external_id"},
          {"customer": 9, "channel": "email", "value": "p@example.com"},
          {"tags": [3, 4]}, {"username": "beta-user-1", "password": PASSWORD}]


@st.composite
def requests(draw: Any, pair: Pair) -> tuple[str, str, Any, str, str]:
    record_id = draw(st.sampled_from([*pair.a_customers, *pair.b_only_customers, 0, 2**62])
                     | st.integers(min_value=1, max_value=40))
    route = draw(st.sampled_from([
        f"customer/customer/{record_id}" + draw(st.sampled_from(TAILS)),
        f"customer/contact_point/{record_id}",
        f"customer/tag/{record_id}",
        "customer/customer", "customer/customer?count=true&limit=500",
        f"customer/customer?filter=%7B%22field%22%3A%22id%22%2C%22op%22%3A%22eq%22%2C"
        f"%22value%22%3A{record_id}%7D",
        "customer/contact_point?expand=customer", "customer/customer/export",
        f"customer/contact_point/{record_id}?expand=customer",
        "customer/customer/bulk", "customer/contact_point", "customer/tag",
        f"_identity/users/{record_id}", "_identity/users", "_identity/units",
        "_identity/units/beta-unit", "_me", "_meta", "_auth/token",
    ]))
    method = draw(st.sampled_from(["GET", "GET", "POST", "PATCH", "DELETE"]))
    body = draw(st.sampled_from(BODIES))
    way = draw(st.sampled_from(["a-path", "a-path+b-header", "a-header", "a-path+b-host",
                                "b-path", "b-header", "b-host"]))
    who = draw(st.sampled_from(["admin", "retail", "education", "none"]))
    return method, route, body, way, who


def test_no_response_from_a_ever_holds_b_data(pair: Pair) -> None:
    a, b = pair.a, pair.b

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(requests(pair))
    def check(drawn: tuple[str, str, Any, str, str]) -> None:
        method, route, body, way, who = drawn
        seen.append((way, method, route))
        headers = {} if who == "none" else a_token(pair, who)
        data = json.dumps(body) if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        kwargs: dict[str, Any] = {"method": method, "data": data}
        client = a.client
        if way.startswith("a-path"):
            url = f"/t/{a.slug}/api/v1/{route}"
        elif way == "b-path":
            url = f"/t/{b.slug}/api/v1/{route}"
        else:
            url = f"/api/v1/{route}"
        if way == "a-path+b-header":
            headers["X-Tenant"] = b.slug
        elif way == "a-header":
            headers["X-Tenant"] = a.slug
        elif way == "b-header":
            headers["X-Tenant"] = b.slug
        if way in ("a-path+b-host", "b-host"):
            client = pair.host_client
            kwargs["base_url"] = f"http://{b.slug}.{DOMAIN}"
        response = client.open(url, headers=headers, **kwargs)
        no_marker(response)
        assert response.status_code != 500, response.get_data(True)
        if way.startswith("b-") and route != "_auth/token":
            assert response.status_code in (401, 404, 405), (url, response.status_code)

    seen: list[tuple[str, str, str]] = []
    before = b_state(pair)
    check()
    assert len(seen) >= 40
    assert b_state(pair) == before
