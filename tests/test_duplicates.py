# ruff: noqa: RUF001 - company names are written in CJK with full-width brackets
"""Duplicate detection: normalisers, match keys kept inside every write, `block` and
`review` rules with their conditions, the review queue and candidates through the API and
the admin UI, within the caller's permissions. Imports are in tests/test_import.py."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import phonenumbers
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("apifixtures", "customerworld")
from apifixtures import Demo, StatementCounter, problem_of  # noqa: E402
from customerworld import CUSTOMER, MEMBER  # noqa: E402

from metacrm.engines.duplicates import entity_rules, phone_region  # noqa: E402
from metacrm.engines.duplicates import index as key_index  # noqa: E402
from metacrm.engines.duplicates.normalise import (  # noqa: E402
    NORMALISERS,
    company,
    email,
    exact,
    phone,
    text,
)
from metacrm.engines.duplicates.rules import EntityRules, _compile  # noqa: E402
from metacrm.engines.duplicates.tables import MATCH_KEYS, REVIEWS  # noqa: E402
from metacrm.metadata.ir import NORMALISERS as IR_NORMALISERS  # noqa: E402
from metacrm.metadata.ir import FrozenDict, MatchKey, MatchRule  # noqa: E402

pytest_plugins = ["apifixtures", "customerworld"]


# -- normalisers (no database) -------------------------------------------------------------------

def test_every_normaliser_the_language_names_exists() -> None:
    assert set(NORMALISERS) == set(IR_NORMALISERS)


def test_email_is_trimmed_and_lower_cased_but_keeps_dots_and_tags() -> None:
    assert email("  Wang.XM+crm@Example.COM ") == "wang.xm+crm@example.com"
    assert email("wangxm@example.com") != email("wang.xm@example.com")
    assert email("") is None and email(None) is None and email("   ") is None


def test_text_folds_width_case_and_spaces() -> None:
    assert text("  Ｓｈａｎｇｈａｉ   City ") == text("shanghai city") == "shanghai city"
    assert text("Straße") == text("STRASSE")
    assert text(" ") is None


def test_exact_compares_as_stored() -> None:
    assert exact("A-1") == "A-1" and exact("a-1") != exact("A-1")
    assert exact(True) == "true" and exact(12) == "12" and exact("") is None


@pytest.mark.parametrize(("left", "right"), [
    ("Acme Ltd", "ACME Limited"),
    ("Acme Co., Ltd.", "acme"),
    ("Acme Trading Co Ltd", "ACME TRADING"),
    ("Müller GmbH", "müller"),
    ("阿里巴巴（中國）有限公司", "阿里巴巴(中國)"),
    ("台灣積體電路製造股份有限公司", "台灣積體電路製造"),
    ("株式会社 日立製作所", "日立製作所"),
    ("上海某某公司", "上海某某"),
])
def test_company_names_drop_punctuation_and_legal_forms(left: str, right: str) -> None:
    assert company(left) == company(right)


def test_a_company_name_that_is_only_a_legal_form_stays_a_name() -> None:
    assert company("Limited") == "limited"
    assert company("公司") == "公司"
    assert company("Acme") != company("Acme Holdings Bank")


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("+86 138 0013 8000", None, "+8613800138000"),
    ("138-0013-8000", "CN", "+8613800138000"),
    ("0912 345 678", "TW", "+886912345678"),
    ("+886 0912 345 678", None, "+886912345678"),
    ("(02) 2345-6789", "TW", "+886223456789"),
    ("+8613800138000", "TW", "+8613800138000"),
    ("12345", None, "12345"),
    ("ab", None, None),
])
def test_phone_numbers_become_e164_in_the_tenants_region(raw: str, region: str | None,
                                                         expected: str | None) -> None:
    assert phone(raw, region) == expected


example_numbers = [phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
                   for n in (phonenumbers.example_number(r)
                             for r in sorted(phonenumbers.SUPPORTED_REGIONS)) if n is not None]


@given(st.sampled_from(example_numbers), st.integers(min_value=0, max_value=9),
       st.sampled_from(["", " ", "-"]))
@settings(max_examples=300, deadline=None)
def test_the_e164_fast_path_agrees_with_phonenumbers(number: str, digit: int,
                                                     spacer: str) -> None:
    """A number already in E.164 skips the parser; it must give what the parser gives
    (the last digit varied, so numbers that are not the example ones are tried too)."""
    candidate = number[:-1] + str(digit)
    parsed = phonenumbers.parse(candidate, None)
    expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) \
        if phonenumbers.is_possible_number(parsed) else re.sub(r"\D", "", candidate)
    assert phone(candidate) == expected
    spaced = candidate[:4] + spacer + candidate[4:]
    assert phone(spaced) == expected


REGIONS = sorted(r for r in phonenumbers.SUPPORTED_REGIONS if r != "001")
NUMBER_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
                phonenumbers.PhoneNumberType.TOLL_FREE)


@given(st.sampled_from(REGIONS), st.sampled_from(NUMBER_TYPES),
       st.integers(min_value=0, max_value=10**6), st.sampled_from(["national", "digits",
                                                                    "spaced"]))
@settings(max_examples=600, deadline=None)
def test_the_national_fast_path_agrees_with_phonenumbers(region: str, kind: Any, noise: int,
                                                        style: str) -> None:
    """Local numbers skip the parser when nothing needs stripping; whatever the region,
    number type, digits and way of writing, the result is the parser's."""
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        return
    national = str(example.national_number)
    national = national[:-3] + str(noise % 1000).zfill(3) if len(national) > 4 else national
    number = phonenumbers.parse(national, region)
    written = {"national": phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.NATIONAL), "digits": national,
        "spaced": " ".join(national[i:i + 3] for i in range(0, len(national), 3))}[style]
    from metacrm.engines.duplicates.normalise import _parsed_phone

    assert phone(written, region) == _parsed_phone(written, region)


@given(st.sampled_from(REGIONS), st.from_regex(r"[1-9][0-9 \-.()]{2,18}", fullmatch=True))
@settings(max_examples=400, deadline=None)
def test_any_digits_agree_with_phonenumbers(region: str, written: str) -> None:
    from metacrm.engines.duplicates.normalise import _parsed_phone

    assert phone(written, region) == _parsed_phone(written.strip(), region)


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_normalising_twice_changes_nothing(value: str) -> None:
    for normalise in (text, email, exact):
        once = normalise(value)
        assert once is None or normalise(once) == once


def test_the_phone_region_comes_from_the_setting_then_the_locale_then_the_timezone() -> None:
    assert phone_region({"phone_region": "hk"}, "zh-Hant-TW", "Asia/Taipei") == "HK"
    assert phone_region({}, "zh-Hant-TW", "Asia/Shanghai") == "TW"
    assert phone_region({}, "en-US", None) == "US"
    assert phone_region({}, "zh-Hant", "Asia/Shanghai") == "CN"
    assert phone_region({}, "zh-Hant", "Asia/Taipei") == "TW"
    assert phone_region({}, "en", None) is None


# -- rules (built by hand and from YAML) ---------------------------------------------------------

def test_rules_built_by_hand_give_keys_only_when_every_field_has_a_value(world: Demo) -> None:
    runtime = world.runtime
    entity = runtime.registry.entities[CUSTOMER]
    by_hand = dataclasses.replace(entity, duplicates=(
        MatchRule("name_city", (MatchKey("display_name", "company"), MatchKey("city", "text"))),
        MatchRule("mail", (MatchKey("email", "email"),), "block")))
    registry = runtime.registry
    scope = dataclasses.replace(registry.scope(None), entities=FrozenDict(
        {**registry.scope(None).entities, CUSTOMER: by_hand}))
    registry = dataclasses.replace(registry, scopes=FrozenDict({**registry.scopes, "": scope}),
                                   entities=FrozenDict({**registry.entities, CUSTOMER: by_hand}))
    fake = dataclasses.replace(runtime, registry=registry, extras={})
    rules = _compile(fake, CUSTOMER)
    assert isinstance(rules, EntityRules) and [r.name for r in rules.rules] == ["name_city",
                                                                                "mail"]
    both = rules.keys({"display_name": "Acme Ltd", "city": " SHANGHAI", "email": None})
    assert set(both) == {"name_city"}
    assert both == rules.keys({"display_name": "ACME limited", "city": "shanghai"})
    assert rules.keys({"display_name": "Acme", "city": None}) == {}
    assert rules.rule("mail").blocks and not rules.rule("name_city").blocks


def test_the_customer_modules_rules_come_from_its_yaml(world: Demo) -> None:
    rules = entity_rules(world.runtime, CUSTOMER)
    assert rules is not None and rules.region == "CN"  # zh-Hant in Asia/Shanghai
    assert {r.name: (r.fields, r.rule.action) for r in rules.rules} == {
        "email": (("email",), "review"), "phone": (("phone",), "review"),
        "company": (("display_name", "city"), "review")}
    person = {"kind": "person", "display_name": "Acme", "city": "Shanghai"}
    assert "company" not in rules.keys(person)  # `when: kind = company`
    assert "company" in rules.keys({**person, "kind": "company"})


# -- detection through the API ---------------------------------------------------------------------

def _create(world: Demo, entity: str, body: dict[str, Any], who: str = "admin",
            status: int = 201) -> dict[str, Any]:
    response = world.post(world.entity_url(entity), body, who=who)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def _queue(world: Demo, who: str = "admin", status: str = "open") -> list[tuple[str, list[int]]]:
    response = world.get(world.entity_url(CUSTOMER, tail=f"/duplicates?status={status}"),
                         who=who)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(item["rule"], [r["id"] for r in item["records"]])
            for item in response.get_json()["items"]]


def _candidates(world: Demo, record_id: int, who: str = "admin") -> dict[int, list[str]]:
    response = world.get(world.entity_url(CUSTOMER, record_id, "/duplicates"), who=who)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {item["record"]["id"]: item["rules"] for item in response.get_json()["items"]}


def test_a_review_rule_saves_the_record_and_queues_the_pair(world: Demo) -> None:
    first = _create(world, CUSTOMER, {"display_name": "Wang", "email": "Wang@Example.com",
                                      "phone": "138 0013 8000"})
    second = _create(world, CUSTOMER, {"display_name": "Wang Xiaoming",
                                       "email": "wang@example.COM", "phone": "+8613800138000"})
    third = _create(world, CUSTOMER, {"display_name": "Li", "email": "li@example.com"})
    assert _queue(world) == [("email", [first["id"], second["id"]])]
    assert _candidates(world, second["id"]) == {first["id"]: ["email", "phone"]}
    assert _candidates(world, third["id"]) == {}
    body = world.get(world.entity_url(CUSTOMER, second["id"], "/duplicates")).get_json()
    assert body["items"][0]["review"]["status"] == "open"
    assert body["items"][0]["record"]["display_name"] == "Wang"


def test_the_company_rule_needs_a_company_with_the_same_name_and_city(world: Demo) -> None:
    acme = _create(world, CUSTOMER, {"kind": "company", "display_name": "Acme Co., Ltd.",
                                     "city": "Shanghai"})
    _create(world, CUSTOMER, {"kind": "company", "display_name": "ACME", "city": "Beijing"})
    _create(world, CUSTOMER, {"kind": "person", "display_name": "Acme", "city": "Shanghai"})
    same = _create(world, CUSTOMER, {"kind": "company", "display_name": "ACME Limited",
                                     "city": " shanghai "})
    assert _queue(world) == [("company", [acme["id"], same["id"]])]


def test_a_block_rule_refuses_the_write_and_names_the_candidates(world: Demo) -> None:
    first = _create(world, MEMBER, {"name": "Ann", "email": "ann@example.com"})
    refused = problem_of(world.post(world.entity_url(MEMBER), {
        "name": "Ann B", "email": "ANN@example.com"}), 409)
    assert refused["candidates"] == [first["id"]] and refused["rules"] == ["email"]
    assert "email" in refused["errors"] and "ann" not in refused["detail"].lower().split(":")[0]
    listed = world.get(world.entity_url(MEMBER) + "?count=true").get_json()
    assert listed["count"] == 1  # nothing was written
    other = _create(world, MEMBER, {"name": "Bob", "email": "bob@example.com"})
    problem_of(world.patch(world.entity_url(MEMBER, other["id"]),
                           {"email": "Ann@Example.com"}), 409)
    assert world.patch(world.entity_url(MEMBER, other["id"]),
                       {"name": "Bobby"}).status_code == 200


def test_a_rules_condition_decides_whether_it_applies(world: Demo) -> None:
    _create(world, MEMBER, {"name": "A", "phone": "+8613800138000", "tier": "vip"})
    _create(world, MEMBER, {"name": "B", "phone": "138-0013-8000", "tier": "basic"})
    problem_of(world.post(world.entity_url(MEMBER), {"name": "C", "phone": "13800138000",
                                                     "tier": "vip"}), 409)
    basic = world.get(world.entity_url(MEMBER) + "?name=B").get_json()["items"][0]
    problem_of(world.patch(world.entity_url(MEMBER, basic["id"]), {"tier": "vip"}), 409)


def test_keys_follow_updates_deletes_and_restores(world: Demo) -> None:
    a = _create(world, CUSTOMER, {"display_name": "A", "email": "a@example.com"})
    b = _create(world, CUSTOMER, {"display_name": "B", "email": "b@example.com"})
    assert _candidates(world, b["id"]) == {}
    world.patch(world.entity_url(CUSTOMER, b["id"]), {"email": "A@example.com"})
    assert _candidates(world, b["id"]) == {a["id"]: ["email"]}
    world.patch(world.entity_url(CUSTOMER, b["id"]), {"email": "b2@example.com"})
    assert _candidates(world, b["id"]) == {}
    world.patch(world.entity_url(CUSTOMER, b["id"]), {"email": "a@example.com"})
    assert world.delete(world.entity_url(CUSTOMER, a["id"])).status_code == 204
    assert _candidates(world, b["id"]) == {}
    with world.connection() as connection:
        keys = key_index.stored_keys(connection, world.service().system, CUSTOMER, a["id"])
    assert keys == {}  # a deleted record holds no keys
    world.post(world.entity_url(CUSTOMER, a["id"], "/restore"))
    assert _candidates(world, b["id"]) == {a["id"]: ["email"]}
    assert _queue(world) == [("email", [a["id"], b["id"]])]  # one pair, however often


def test_restoring_a_record_a_block_rule_now_refuses_is_refused(world: Demo) -> None:
    first = _create(world, MEMBER, {"name": "A", "email": "a@example.com"})
    world.delete(world.entity_url(MEMBER, first["id"]))
    _create(world, MEMBER, {"name": "A2", "email": "a@example.com"})
    problem_of(world.post(world.entity_url(MEMBER, first["id"], "/restore")), 409)


def test_a_dismissed_pair_is_not_asked_again(world: Demo) -> None:
    a = _create(world, CUSTOMER, {"display_name": "A", "email": "a@example.com"})
    b = _create(world, CUSTOMER, {"display_name": "B", "email": "a@example.com"})
    review = world.get(world.entity_url(CUSTOMER, tail="/duplicates")).get_json()["items"][0]
    dismissed = world.post(world.entity_url(CUSTOMER, tail=f"/duplicates/{review['id']}"
                                                           "/dismiss"))
    assert dismissed.status_code == 200 and dismissed.get_json()["status"] == "dismissed"
    assert dismissed.get_json()["resolved_by"] == world.user_ids["admin"]
    world.patch(world.entity_url(CUSTOMER, b["id"]), {"email": "x@example.com"})
    world.patch(world.entity_url(CUSTOMER, b["id"]), {"email": "A@example.com"})
    assert _queue(world) == []
    assert _queue(world, status="dismissed") == [("email", [a["id"], b["id"]])]
    problem_of(world.post(world.entity_url(CUSTOMER, tail="/duplicates/999999/dismiss")), 404)
    problem_of(world.get(world.entity_url(CUSTOMER, tail="/duplicates?status=gone")), 422)
    problem_of(world.get(world.entity_url(CUSTOMER, tail="/duplicates?colour=red")), 400)


def test_the_queue_shows_only_pairs_whose_records_the_caller_may_read(world: Demo) -> None:
    retail = [_create(world, CUSTOMER, {"display_name": f"R{i}", "email": "r@example.com"},
                      who="rep")["id"] for i in range(2)]
    education = [_create(world, CUSTOMER, {"display_name": f"E{i}", "email": "e@example.com"},
                         who="rep2")["id"] for i in range(2)]
    mixed = _create(world, CUSTOMER, {"display_name": "M", "email": "r@example.com"},
                    who="rep2")["id"]
    assert _queue(world, who="rep") == [("email", retail)]
    assert _queue(world, who="rep2") == [("email", education)]
    assert len(_queue(world, who="admin")) == 4  # r0-r1, e0-e1, r0-m, r1-m
    assert _candidates(world, retail[0], who="rep") == {retail[1]: ["email"]}
    assert set(_candidates(world, mixed, who="admin")) == set(retail)
    problem_of(world.get(world.entity_url(CUSTOMER, retail[0], "/duplicates"), who="rep2"),
               404)
    review = world.get(world.entity_url(CUSTOMER, tail="/duplicates")).get_json()["items"][0]
    problem_of(world.post(world.entity_url(CUSTOMER, tail=f"/duplicates/{review['id']}"
                                                          "/dismiss"), who="rep2"), 404)


def test_the_queue_pages_with_a_cursor(world: Demo) -> None:
    for i in range(5):
        _create(world, CUSTOMER, {"display_name": f"P{i}", "phone": "+8613800138000"})
    seen, url = [], world.entity_url(CUSTOMER, tail="/duplicates?limit=3")
    while url:
        body = world.get(url).get_json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        url = world.entity_url(CUSTOMER, tail=f"/duplicates?limit=3&cursor={cursor}") \
            if cursor else None
    assert len(seen) == len(set(seen)) == 10  # every pair of five records, once


def test_a_key_shared_by_many_records_queues_at_most_the_first_fifty(world: Demo) -> None:
    from metacrm.engines.duplicates import MAX_CANDIDATES

    service = world.service()
    ids = [service.create(CUSTOMER, {"display_name": f"S{i}", "phone": "+862155550000"})["id"]
           for i in range(MAX_CANDIDATES + 3)]
    reviews = service.system.table(REVIEWS)
    with world.connection() as connection:
        queued = connection.execute(sa.select(sa.func.count()).select_from(reviews).where(
            sa.or_(reviews.c.record_a == ids[-1], reviews.c.record_b == ids[-1]))).scalar()
    assert queued == MAX_CANDIDATES


def test_finding_candidates_is_one_indexed_query(world: Demo) -> None:
    service = world.service()
    record = service.create(CUSTOMER, {"display_name": "Q", "email": "q@example.com",
                                       "phone": "+8613900000000"})
    service.create(CUSTOMER, {"display_name": "Q2", "email": "q@example.com"})
    rules = entity_rules(world.runtime, CUSTOMER)
    counter = StatementCounter(world.runtime.db.engine)
    try:
        with world.connection() as connection, counter.counting() as statements:
            found = key_index.candidates(connection, service.system, CUSTOMER,
                                         rules.keys(record), record["id"])
    finally:
        counter.close()
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(found) == 1 and len(queries) == 1
    with world.connection() as connection:
        primary = sa.inspect(connection).get_pk_constraint(MATCH_KEYS,
                                                           schema=world.runtime.db.schema)
    assert primary["constrained_columns"] == ["key", "record_id"]  # looked up by key


# -- every way in: the admin UI ------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def admin_session(world: Demo, username: str = "steward") -> tuple[Any, str]:
    """A test client signed in to the admin as `username`, and its CSRF token."""
    from metacrm.platform.passwords import hash_password
    from metacrm.platform.systables import runtime_system_tables

    users = runtime_system_tables(world.runtime).users
    with world.runtime.begin() as connection:
        connection.execute(users.update().where(users.c.username == username).values(
            password_hash=hash_password("pw-for-tests"), locale="en"))
    client = world.app.test_client()
    base = f"/t/{world.slug}/admin"
    token = CSRF.search(client.get(f"{base}/login").get_data(as_text=True)).group(1)
    response = client.post(f"{base}/login", data={"username": username,
                                                  "password": "pw-for-tests",
                                                  "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    token = CSRF.search(client.get(f"{base}/").get_data(as_text=True)).group(1)
    return client, token


def test_a_record_created_in_the_admin_is_checked_too(world: Demo) -> None:
    first = _create(world, CUSTOMER, {"display_name": "Web", "email": "web@example.com"})
    client, token = admin_session(world)
    response = client.post(f"/t/{world.slug}/admin/customer/customer/new", data={
        "csrf_token": token, "kind": "person", "display_name": "Admin-made",
        "email": "WEB@example.com"})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    pairs = _queue(world)
    assert len(pairs) == 1 and pairs[0][0] == "email" and pairs[0][1][0] == first["id"]
    member = _create(world, MEMBER, {"name": "M", "email": "m@example.com"})
    client, token = admin_session(world, "admin")
    refused = client.post(f"/t/{world.slug}/admin/shop/member/new", data={
        "csrf_token": token, "name": "M2", "email": "m@example.com", "tier": "basic"})
    assert refused.status_code in (409, 422), refused.status_code
    assert str(member["id"]) in refused.get_data(as_text=True)
