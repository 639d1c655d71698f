"""The REST API through the real app (tenant dispatch, auth, problem+json), on SQLite and
PostgreSQL: status codes and bodies of every route, ETag/If-Match, filters, paging,
business-unit scope, tokens at rest, unexpected errors and concurrent writers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import threading
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

pytest.register_assert_rewrite("apifixtures")
from apifixtures import (  # noqa: E402
    CONTACT_POINT,
    CUSTOMER,
    TAG,
    Demo,
    needs_conditions,
    patch_in_process,
    problem_of,
)

from metacrm.platform.auth import revoke_token  # noqa: E402
from metacrm.platform.events import RecordEvent  # noqa: E402
from metacrm.platform.systables import system_tables  # noqa: E402

pytest_plugins = ["apifixtures"]


def create(demo: Demo, body: dict[str, Any], *, who: str = "admin",
           entity: str = CUSTOMER) -> dict[str, Any]:
    response = demo.post(demo.entity_url(entity), body, who=who)
    assert response.status_code == 201, response.get_data(True)
    return response.get_json()


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.get_data(True)
    return [item["id"] for item in response.get_json()["items"]]


# -- authentication ------------------------------------------------------------------------------

def test_requests_without_a_valid_token_are_401(demo: Demo) -> None:
    url = demo.entity_url()
    problem_of(demo.get(url, who=None), 401)
    problem_of(demo.get(url, who=None, headers={"Authorization": "Basic YTpi"}), 401)
    problem_of(demo.get(url, who=None, headers={"Authorization": "Bearer"}), 401)
    body = problem_of(demo.get(url, who=None, headers={"Authorization": "Bearer mcrm_nope"}),
                      401)
    assert "token" in body["detail"]
    for method, target in (("POST", demo.entity_url()), ("PATCH", demo.entity_url(CUSTOMER, 1)),
                           ("DELETE", demo.entity_url(CUSTOMER, 1)),
                           ("POST", demo.entity_url(CUSTOMER, 1, "/restore")),
                           ("GET", demo.entity_url(CUSTOMER, 1, "/history")),
                           ("POST", demo.entity_url(tail="/bulk"))):
        problem_of(demo.request(method, target, who=None, json_body={}), 401)
    problem_of(demo.get(demo.url("_meta"), who=None), 401)

    revoked = demo.add_user("leaver")
    assert demo.get(url, who="leaver").status_code == 200
    with demo.runtime.begin() as connection:
        assert revoke_token(connection, revoked)
    problem_of(demo.get(url, who="leaver"), 401)

    demo.add_user("late", expires_in=dt.timedelta(seconds=-1))
    problem_of(demo.get(url, who="late"), 401)
    demo.add_user("soon", expires_in=dt.timedelta(hours=1))
    assert demo.get(url, who="soon").status_code == 200

    # the schema and its page are public
    assert demo.get(demo.url("openapi.json"), who=None).status_code == 200
    docs = demo.client.get(f"/t/{demo.slug}/api/docs")
    assert docs.status_code == 200 and docs.mimetype == "text/html"


def test_tokens_are_hashed_at_rest(demo: Demo) -> None:
    tokens = system_tables().tokens
    with demo.connection() as connection:
        stored = connection.execute(sa.select(tokens)).mappings().all()
    assert len(stored) == 3
    hashes = {row["token_hash"] for row in stored}
    for token in demo.tokens.values():
        assert hashlib.sha256(token.encode()).hexdigest() in hashes
        assert all(token not in str(value) for row in stored for value in row.values())
    demo.post(demo.entity_url(), {"display_name": "Ann"})  # writes, audit, everything
    if demo.backend == "sqlite":
        files = demo.project.var_dir.rglob("*.db*")
        content = b"".join(path.read_bytes() for path in files)
        assert content and not any(t.encode() in content for t in demo.tokens.values())
    else:  # every row of every table of the tenant's schema and of the platform store
        schemas = (demo.runtime.db.schema, "metacrm")
        with demo.connection() as connection:
            tables = connection.exec_driver_sql(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN (%s, %s)", schemas).all()
            dump = "|".join(connection.exec_driver_sql(
                f'SELECT coalesce(string_agg(t::text, \'|\'), \'\') FROM "{schema}"."{name}" t'
            ).scalar() for schema, name in tables)
        assert "_metacrm_tokens" in {name for _, name in tables}
        assert dump and not any(t in dump for t in demo.tokens.values())


# -- not found ------------------------------------------------------------------------------------

def test_unknown_tenant_entity_record_and_route_are_404(demo: Demo) -> None:
    body = problem_of(demo.client.get("/t/nosuch/api/v1/customer/customer",
                                      headers=demo.headers()), 404)
    assert body["tenant"] == "nosuch"
    problem_of(demo.client.get("/api/v1/customer/customer",
                               headers=demo.headers(**{"X-Tenant": "nosuch"})), 404)
    # the X-Tenant header reaches a tenant as well as the path prefix does
    assert demo.client.get("/api/v1/customer/customer",
                           headers=demo.headers(**{"X-Tenant": demo.slug})).status_code == 200

    problem_of(demo.get(demo.url("customer/nothing")), 404)
    problem_of(demo.get(demo.url("nothing/customer")), 404)
    problem_of(demo.post(demo.url("nothing/customer"), {"a": 1}), 404)
    problem_of(demo.get(demo.url("nothing")), 404)
    problem_of(demo.get(demo.url("customer/customer/1/nothing")), 404)
    for method, tail in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/restore"),
                         ("GET", "/history")):
        body = problem_of(demo.request(method, demo.entity_url(CUSTOMER, 4242, tail),
                                       json_body={"city": "x"}), 404)
        assert "4242" in body["detail"]
    problem_of(demo.request("PUT", demo.entity_url(CUSTOMER, 1), json_body={}), 405)


# -- bad requests -----------------------------------------------------------------------------

BAD_LIST_QUERIES = [
    "bogus=1", "limit=0", "limit=501", "limit=ten", "cursor=%21%21", "cursor=bm90IGpzb24",
    "count=maybe", "include_deleted=2", "sort=nothing", "sort=-nothing", "fields=nothing",
    "store_code=S1", "filter=%7Bbad", "sort=tags", "sort=value_tier"]


def test_bad_list_parameters_are_400(demo: Demo) -> None:
    create(demo, {"display_name": "A"})
    for query in BAD_LIST_QUERIES:
        body = problem_of(demo.get(demo.entity_url() + "?" + query), 400)
        assert body["detail"], query


def test_bad_bodies(demo: Demo) -> None:
    url = demo.entity_url()
    body = problem_of(demo.post(url, data="{bad json"), 400)
    assert "JSON" in body["detail"]
    problem_of(demo.post(url, data=""), 422)
    problem_of(demo.post(url, data="[1, 2]"), 422)
    problem_of(demo.post(url, data='"text"'), 422)
    record = create(demo, {"display_name": "A"})
    problem_of(demo.patch(demo.entity_url(CUSTOMER, record["id"]), data="{bad"), 400)
    problem_of(demo.patch(demo.entity_url(CUSTOMER, record["id"]), data="[]"), 422)
    problem_of(demo.get(demo.entity_url(CUSTOMER, record["id"]) + "?bogus=1"), 400)
    problem_of(demo.get(demo.entity_url(CUSTOMER, record["id"]) + "?expand=city"), 422)


def test_validation_errors_are_422_with_errors(demo: Demo) -> None:
    body = problem_of(demo.post(demo.entity_url(), {"display_name": 5, "kind": "alien",
                                                    "lifetime_value": -1, "bogus": 1}), 422)
    assert set(body["errors"]) == {"display_name", "kind", "lifetime_value", "bogus"}
    body = problem_of(demo.post(demo.entity_url(), {}), 422)
    assert list(body["errors"]) == ["display_name"]
    body = problem_of(demo.post(demo.entity_url(CONTACT_POINT),
                                {"customer": 99, "channel": "sms", "value": "1"}), 422)
    assert list(body["errors"]) == ["customer"]
    body = problem_of(demo.post(demo.entity_url(), {"display_name": "A", "tags": [0]}), 422)
    assert list(body["errors"]) == ["tags"]


def test_unique_clash_is_409(demo: Demo) -> None:
    create(demo, {"name": "vip"}, entity=TAG)
    body = problem_of(demo.post(demo.entity_url(TAG), {"name": "vip"}), 409)
    assert list(body["errors"]) == ["name"]


# -- create, read, update, delete --------------------------------------------------------------

def test_create_read_update_delete_round_trip(demo: Demo, events: list[RecordEvent]) -> None:
    url = demo.entity_url()
    response = demo.post(url, {"display_name": "Ann", "city": "Taipei"})
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    record = response.get_json()
    assert response.headers["ETag"] == f'"{record["id"]}-1"'
    location = response.headers["Location"]
    assert location == f"/t/{demo.slug}/api/v1/customer/customer/{record['id']}"

    got = demo.get(location)
    assert got.status_code == 200 and got.get_json() == record
    assert got.headers["ETag"] == response.headers["ETag"]

    patched = demo.patch(location, {"city": "Tainan"},
                         headers={"If-Match": got.headers["ETag"]})
    assert patched.status_code == 200, patched.get_data(True)
    assert patched.get_json()["city"] == "Tainan"
    assert patched.headers["ETag"] == f'"{record["id"]}-2"'

    stale = problem_of(demo.patch(location, {"city": "Keelung"},
                                  headers={"If-Match": got.headers["ETag"]}), 412)
    assert stale["current_version"] == 2
    problem_of(demo.patch(location, {"city": "Keelung"}, headers={"If-Match": "garbage"}), 412)
    problem_of(demo.patch(location, {"city": "Keelung"},
                          headers={"If-Match": f'"{record["id"] + 1}-2"'}), 412)
    problem_of(demo.patch(location, {"city": "Keelung", "row_version": 1}), 412)
    weak = demo.patch(location, {"city": "Hsinchu"},
                      headers={"If-Match": "W/" + patched.headers["ETag"]})
    assert weak.status_code == 200 and weak.get_json()["row_version"] == 3
    no_match = demo.patch(location, {"city": "Kaohsiung"})  # last writer wins without one
    assert no_match.status_code == 200 and no_match.get_json()["row_version"] == 4

    problem_of(demo.delete(location, headers={"If-Match": got.headers["ETag"]}), 412)
    deleted = demo.delete(location, headers={"If-Match": no_match.headers["ETag"]})
    assert deleted.status_code == 204 and deleted.get_data() == b""
    problem_of(demo.get(location), 404)
    problem_of(demo.delete(location), 404)
    problem_of(demo.patch(location, {"city": "x"}), 404)

    history = demo.get(location + "/history")
    assert history.status_code == 200
    assert [e["action"] for e in history.get_json()["items"]] == [
        "created", "updated", "updated", "updated", "deleted"]
    assert "foo" in problem_of(demo.get(location + "/history?foo=1"), 400)["detail"]

    restored = demo.post(location + "/restore")
    assert restored.status_code == 200
    assert restored.get_json()["deleted_at"] is None
    assert restored.headers["ETag"] == f'"{record["id"]}-6"'
    problem_of(demo.post(location + "/restore"), 404)
    assert [e.kind for e in events] == ["created", "updated", "updated", "updated", "deleted",
                                       "restored"]


def test_bulk_endpoint(demo: Demo) -> None:
    url = demo.entity_url(tail="/bulk")
    existing = create(demo, {"display_name": "Old", "external_id": "E1"})
    response = demo.post(url, {"key": "external_id", "records": [
        {"external_id": "E1", "display_name": "New name"},
        {"external_id": "E2", "display_name": "Second"},
        {"external_id": "E3", "kind": "alien"}]})
    assert response.status_code == 200, response.get_data(True)
    body = response.get_json()
    assert body["updated"] == [existing["id"]] and len(body["created"]) == 1
    assert list(body["errors"]) == ["2"] and body["errors"]["2"]["status"] == 422
    problem_of(demo.post(url, {"records": "nope"}), 422)
    problem_of(demo.post(url, {"records": [], "other": 1}), 422)
    problem_of(demo.post(url, {"records": [], "key": 5}), 422)
    problem_of(demo.post(url, {"records": [], "key": "city"}), 422)
    problem_of(demo.post(url, {"records": [{}] * 1001}), 422)


# -- lists: filters, sort, fields, expand, count, deleted, cursors ----------------------------

@pytest.fixture
def people(demo: Demo) -> dict[str, int]:
    rows = [("Ann", "Taipei", "100", True, "person"), ("Bob", "Tainan", "5", False, "company"),
            ("Cy", "Taipei", "50", False, "person"), ("Di", None, "0", False, "person"),
            ("Ed", "Keelung", "1000", True, "company")]
    made = {}
    for name, city, value, vip, kind in rows:
        made[name] = create(demo, {"display_name": name, "city": city, "lifetime_value": value,
                                   "is_vip": vip, "kind": kind})["id"]
    return made


def test_sort_fields_count_and_include_deleted(demo: Demo, people: dict[str, int]) -> None:
    url = demo.entity_url()
    assert ids(demo.get(url)) == sorted(people.values())
    assert ids(demo.get(url + "?sort=-display_name")) == [people[n] for n in
                                                          ("Ed", "Di", "Cy", "Bob", "Ann")]
    assert ids(demo.get(url + "?sort=city,-lifetime_value")) == [
        people[n] for n in ("Ed", "Bob", "Ann", "Cy", "Di")]
    assert ids(demo.get(url + "?sort=-city")) == [people[n] for n in
                                                  ("Ann", "Cy", "Bob", "Ed", "Di")]
    assert ids(demo.get(url + "?sort=-id")) == sorted(people.values(), reverse=True)

    fields = demo.get(url + "?fields=display_name,city&limit=2").get_json()
    assert all(set(item) == {"id", "row_version", "display_name", "city"}
               for item in fields["items"])
    assert "count" not in fields
    # id and row_version always come along: they are what a client needs to write back
    assert demo.get(url + "?fields=deleted_at&limit=1").get_json()["items"] == [
        {"id": people["Ann"], "row_version": 1, "deleted_at": None}]

    counted = demo.get(url + "?count=true&limit=2").get_json()
    assert (counted["count"], counted["count_exact"], len(counted["items"])) == (5, True, 2)

    demo.delete(demo.entity_url(CUSTOMER, people["Bob"]))
    assert people["Bob"] not in ids(demo.get(url))
    with_deleted = demo.get(url + "?include_deleted=true&count=1").get_json()
    assert people["Bob"] in [item["id"] for item in with_deleted["items"]]
    assert with_deleted["count"] == 5
    assert demo.get(url + "?count=false").get_json().get("count") is None


def test_cursor_pagination_across_pages(demo: Demo, people: dict[str, int]) -> None:
    for i in range(6):
        create(demo, {"display_name": f"Zed {i}", "city": "Taipei" if i % 2 else None})
    url = demo.entity_url() + "?sort=city,-display_name&limit=3"
    seen: list[int] = []
    next_url = url
    pages = 0
    while next_url:
        body = demo.get(next_url).get_json()
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        next_url = f"{url}&cursor={quote(cursor)}" if cursor else None
    assert pages == 4
    everything = demo.get(demo.entity_url() + "?sort=city,-display_name&limit=500")
    assert seen == ids(everything) and len(seen) == len(set(seen)) == 11


def test_expand(demo: Demo) -> None:
    customer = create(demo, {"display_name": "Ann"})
    point = create(demo, {"customer": customer["id"], "channel": "email",
                          "value": "ann@example.com"}, entity=CONTACT_POINT)
    one = demo.get(demo.entity_url(CONTACT_POINT, point["id"]) + "?expand=customer")
    assert one.get_json()["customer"]["display_name"] == "Ann"
    listed = demo.get(demo.entity_url(CONTACT_POINT) + "?expand=customer&fields=value")
    assert listed.get_json()["items"] == [
        {"id": point["id"], "row_version": 1, "value": "ann@example.com",
         "customer": demo.get(demo.entity_url(CUSTOMER, customer["id"])).get_json()}]
    problem_of(demo.get(demo.entity_url(CONTACT_POINT) + "?expand=channel"), 422)


@needs_conditions
def test_filter_parameter(demo: Demo, people: dict[str, int]) -> None:
    url = demo.entity_url()

    def where(condition: Any) -> list[int]:
        return ids(demo.get(url + "?filter=" + quote(json.dumps(condition))))

    assert where({"field": "city", "op": "eq", "value": "Taipei"}) == [people["Ann"],
                                                                       people["Cy"]]
    assert where({"any": [{"field": "is_vip", "op": "eq", "value": True},
                          {"field": "lifetime_value", "op": "gte", "value": 50}]}) == [
        people["Ann"], people["Cy"], people["Ed"]]
    assert where({"not": {"field": "city", "op": "is_empty", "value": True}}) == [
        people[n] for n in ("Ann", "Bob", "Cy", "Ed")]
    assert where({"all": []}) == sorted(people.values())
    body = problem_of(demo.get(url + "?filter=" + quote(json.dumps(
        {"field": "nothing", "op": "eq", "value": 1}))), 422)
    assert "filter" in body["errors"]
    problem_of(demo.get(url + "?filter=" + quote(json.dumps(
        {"field": "city", "op": "between", "value": 1}))), 422)
    problem_of(demo.get(url + "?filter=" + quote(json.dumps(
        {"field": "kind", "op": "eq", "value": "alien"}))), 422)
    problem_of(demo.get(url + "?filter=null"), 422)
    problem_of(demo.get(url + "?filter=%5B%5D"), 422)


@needs_conditions
def test_field_parameters(demo: Demo, people: dict[str, int]) -> None:
    url = demo.entity_url()
    assert ids(demo.get(url + "?city=Taipei")) == [people["Ann"], people["Cy"]]
    assert ids(demo.get(url + "?city=Taipei&is_vip=true")) == [people["Ann"]]
    assert ids(demo.get(url + "?lifetime_value__gte=50")) == [people[n] for n in
                                                              ("Ann", "Cy", "Ed")]
    assert ids(demo.get(url + "?kind__in=company")) == [people["Bob"], people["Ed"]]
    assert ids(demo.get(url + "?city__is_empty=true")) == [people["Di"]]
    assert ids(demo.get(url + "?display_name__starts_with=A")) == [people["Ann"]]
    assert ids(demo.get(url + f"?id__in={people['Bob']},{people['Di']}")) == [
        people["Bob"], people["Di"]]
    assert ids(demo.get(url + "?lifetime_value__between=5,100&sort=-lifetime_value")) == [
        people[n] for n in ("Ann", "Cy", "Bob")]
    assert ids(demo.get(url + "?city=Taipei&limit=1&sort=-display_name")) == [people["Cy"]]
    problem_of(demo.get(url + "?city__bogus=1"), 422)
    problem_of(demo.get(url + "?kind=alien"), 422)
    problem_of(demo.get(url + "?id=abc"), 400)
    problem_of(demo.get(url + "?lifetime_value__between=1"), 400)
    problem_of(demo.get(url + "?school=X"), 400)  # a field of another unit


@needs_conditions
def test_unit_fields_filter_in_their_unit_only(demo: Demo) -> None:
    url = demo.entity_url()
    shop = create(demo, {"display_name": "Shop", "store_code": "S1"}, who="retail")
    create(demo, {"display_name": "Other", "store_code": "S2"}, who="retail")
    pupil = create(demo, {"display_name": "Pupil", "school": "NTU"}, who="education")
    assert ids(demo.get(url + "?store_code=S1", who="retail")) == [shop["id"]]
    assert ids(demo.get(url + "?filter=" + quote(json.dumps(
        {"field": "store_code", "op": "starts_with", "value": "S"})), who="retail")) == [
        shop["id"], shop["id"] + 1]
    assert ids(demo.get(url + "?school=NTU", who="education")) == [pupil["id"]]
    problem_of(demo.get(url + "?store_code=S1", who="education"), 400)
    problem_of(demo.get(url + "?filter=" + quote(json.dumps(
        {"field": "store_code", "op": "eq", "value": "S1"})), who="education"), 422)


# -- business units ---------------------------------------------------------------------------

def test_business_unit_scope(demo: Demo) -> None:
    url = demo.entity_url()
    retail = create(demo, {"display_name": "Shopper", "store_code": "S1"}, who="retail")
    assert retail["store_code"] == "S1" and retail["membership_level"] == "bronze"
    assert "school" not in retail
    got = demo.get(demo.entity_url(CUSTOMER, retail["id"]), who="retail").get_json()
    assert got["store_code"] == "S1"
    patched = demo.patch(demo.entity_url(CUSTOMER, retail["id"]), {"store_code": "S2"},
                         who="retail")
    assert patched.get_json()["store_code"] == "S2"

    body = problem_of(demo.post(url, {"display_name": "Pupil", "store_code": "S1"},
                                who="education"), 422)
    assert list(body["errors"]) == ["store_code"]
    problem_of(demo.patch(demo.entity_url(CUSTOMER, retail["id"]), {"store_code": "S3"},
                          who="education"), 422)
    pupil = create(demo, {"display_name": "Pupil", "school": "NTU", "grade": 3},
                   who="education")
    assert pupil["school"] == "NTU" and "store_code" not in pupil
    seen_by_education = demo.get(demo.entity_url(CUSTOMER, retail["id"]),
                                 who="education").get_json()
    assert "store_code" not in seen_by_education and "school" in seen_by_education
    problem_of(demo.post(url, {"display_name": "X", "school": "NTU"}, who="retail"), 422)
    admin_view = demo.get(url, who="admin").get_json()["items"]
    assert all("store_code" not in item and "school" not in item for item in admin_view)

    meta = {who: demo.get(demo.url("_meta"), who=who).get_json() for who in
            ("admin", "retail", "education")}
    assert meta["retail"]["unit"] == "retail" and meta["admin"]["unit"] is None
    fields = {who: json.dumps(m["entities"][CUSTOMER]) for who, m in meta.items()}
    assert "store_code" in fields["retail"] and "store_code" not in fields["education"]
    assert "school" in fields["education"] and "school" not in fields["retail"]
    assert "school" not in fields["admin"]
    if_sorted = demo.get(url + "?sort=store_code", who="retail")
    assert if_sorted.status_code == 200
    problem_of(demo.get(url + "?sort=store_code", who="education"), 400)
    problem_of(demo.get(url + "?fields=store_code", who="education"), 400)


# -- unexpected errors ------------------------------------------------------------------------

def test_failing_subscriber_does_not_fail_the_request(demo: Demo,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A listener fails after the write committed: the client still gets its 201 (a 500
    would make it retry and create the record twice); the error is logged."""

    def broken(_: RecordEvent) -> None:
        raise RuntimeError("listener bug")

    demo.platform.subscribe(broken)
    with caplog.at_level(logging.ERROR):
        response = demo.post(demo.entity_url(), {"display_name": "Ann"})
    assert response.status_code == 201
    assert demo.get(response.headers["Location"]).status_code == 200
    assert "listener bug" in caplog.text


def test_an_unexpected_error_is_a_500_problem_without_traceback(
        demo: Demo, caplog: pytest.LogCaptureFixture) -> None:
    table = demo.table(CONTACT_POINT)  # nothing refers to it
    db = demo.runtime.db
    with db.begin() as connection:  # the database loses a table behind the app's back
        qualified = f'"{db.schema}"."{table.name}"' if db.schema else f'"{table.name}"'
        connection.exec_driver_sql(f"DROP TABLE {qualified}")
    with caplog.at_level(logging.ERROR):
        response = demo.get(demo.entity_url(CONTACT_POINT))
    body = problem_of(response, 500)
    assert body["title"] == "Internal error"
    assert table.name not in response.get_data(as_text=True)  # no SQL, no internals
    assert "unexpected error" in caplog.text


# -- concurrent writers -----------------------------------------------------------------------

def check_one_winner(demo: Demo, record_id: int, statuses: list[tuple[str, int]]) -> None:
    winners = [value for value, status in statuses if status == 200]
    assert sorted(status for _, status in statuses) == [200] + [412] * (len(statuses) - 1), \
        statuses
    final = demo.get(demo.entity_url(CUSTOMER, record_id)).get_json()
    assert final["city"] == winners[0]
    assert final["row_version"] == 2
    history = demo.get(demo.entity_url(CUSTOMER, record_id, "/history")).get_json()["items"]
    assert [e["action"] for e in history] == ["created", "updated"]
    assert history[1]["changes"] == {"city": {"before": None, "after": winners[0]}}


def test_concurrent_patches_with_one_version_in_threads(demo: Demo) -> None:
    record = create(demo, {"display_name": "Contended"})
    url = demo.entity_url(CUSTOMER, record["id"])
    etag = f'"{record["id"]}-1"'
    workers = 8
    barrier = threading.Barrier(workers)
    statuses: list[tuple[str, int]] = []
    lock = threading.Lock()

    def patch(value: str) -> None:
        client = demo.app.test_client()
        barrier.wait(timeout=30)
        response = client.patch(url, data=json.dumps({"city": value}),
                                headers=demo.headers(**{"If-Match": etag,
                                                        "Content-Type": "application/json"}))
        with lock:
            statuses.append((value, response.status_code))

    threads = [threading.Thread(target=patch, args=(f"city-{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    check_one_winner(demo, record["id"], statuses)


@pytest.mark.slow
def test_concurrent_patches_with_one_version_in_processes(demo: Demo) -> None:
    record = create(demo, {"display_name": "Contended"})
    url = demo.entity_url(CUSTOMER, record["id"])
    etag = f'"{record["id"]}-1"'
    workers = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    results = context.Queue()
    project = demo.project
    processes = [context.Process(target=patch_in_process, args=(
        str(project.root), str(project.var_dir), project.backend.database_url, demo.slug,
        demo.tokens["admin"], url, etag, f"city-{i}", barrier, results))
        for i in range(workers)]
    for process in processes:
        process.start()
    try:
        statuses = [results.get(timeout=180) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes)
    check_one_winner(demo, record["id"], statuses)



WEIRD_FILTERS = ["null", "[]", "1", '"city"', "true", '{"field": "city"}', '{"all": "x"}',
                 '{"all": [1]}', '{"field": "city", "op": "eq", "value": {"a": 1}}',
                 '{"field": "city", "op": "eq", "value": "\\u0000"}',
                 '{"field": "city", "op": "eq", "value": "\\ud800"}',
                 '{"field": "id", "op": "in", "value": [99999999999999999999999]}',
                 '{"field": "id", "op": "eq", "value": 1e400}',
                 '{"field": "lifetime_value", "op": "gt", "value": "NaN"}',
                 '{"field": "created_at", "op": "older_than", "value": "9999999d"}',
                 '{"field": "birthday", "op": "eq", "value": "2020-02-30"}',
                 '{"field": "tags", "op": "eq", "value": 1}',
                 '{"not": ' * 200 + '{"field": "city", "op": "is_empty"}' + "}" * 200,
                 "[" * 50000 + "]" * 50000]


def test_malformed_input_is_a_4xx_never_a_500(demo: Demo) -> None:
    """Inputs that once reached the database raw: each is refused with a problem."""
    record = create(demo, {"display_name": "A", "profile": {"nested": [1, {"b": None}]}})
    assert record["profile"] == {"nested": [1, {"b": None}]}
    url = demo.entity_url()
    for text in WEIRD_FILTERS:
        response = demo.get(url + "?filter=" + quote(text))
        assert 400 <= response.status_code < 500, (text[:80], response.get_data(True))
        problem_of(response, response.status_code)
    weird = [
        ("GET", url + "?city=%00", None),
        ("GET", url + "?id__in=", None),
        ("GET", url + "?lifetime_value__gte=abc", None),
        ("GET", url + "?created_at__older_than=forever", None),
        ("GET", url + "?sort=profile", None),
        ("GET", url + "?cursor=" + quote("WyJcdWQ4MDAiXQ"), None),
        ("GET", url + "/99999999999999999999", None),
        ("PATCH", url + "/99999999999999999999", '{"city": "x"}'),
        ("DELETE", url + "/99999999999999999999", None),
        ("POST", url + "/99999999999999999999/restore", None),
        ("GET", url + "/99999999999999999999/history", None),
        ("POST", url, '{"display_name": "\\u0000"}'),
        ("POST", url, '{"display_name": "\\ud800"}'),
        ("POST", url, '{"display_name": "A", "profile": {"x": NaN}}'),
        ("POST", url, '{"display_name": "A", "profile": [Infinity]}'),
        ("POST", url, '{"display_name": "A", "profile": "\\u0000"}'),
        ("POST", url, '{"display_name": "A", "tags": [99999999999999999999]}'),
        ("POST", url, '{"display_name": "A", "lifetime_value": 1e400}'),
        ("POST", url, '{"display_name": "A", "lifetime_value": "123456789012345678901"}'),
        ("POST", url, "[" * 100000 + "]" * 100000),
        ("POST", url, b"\xff\xfe\x00garbage"),
        ("POST", demo.entity_url(CONTACT_POINT),
         '{"customer": 99999999999999999999, "channel": "sms", "value": "1"}'),
        ("POST", demo.entity_url(tail="/bulk"),
         '{"key": "external_id", "records": [{"external_id": {"a": 1}}, '
         '{"external_id": "\\u0000"}, {"external_id": 5}]}'),
        ("POST", demo.entity_url(TAG), '{"name": "t", "uuid": 5}'),
    ]
    for method, target, body in weird:
        response = demo.request(method, target, data=body)
        assert response.status_code < 500, (method, target, response.get_data(True))
        if response.status_code >= 400:
            problem_of(response, response.status_code)
        elif method == "POST" and target.endswith("/bulk"):
            assert set(response.get_json()["errors"]) == {"0", "1", "2"}
