"""The unified view `GET …/<id>/360`: the record with every record of every enabled module
that references it, each list within the caller's permissions, capped, counted and linked
to its full list; for any entity."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("apifixtures", "customerworld")
from apifixtures import Demo, StatementCounter, problem_of  # noqa: E402
from customerworld import (  # noqa: E402
    CAMPAIGN,
    CONSENT,
    CONTACT_POINT,
    CUSTOMER,
    NOTE,
    ORDER,
    TAG,
)

pytest_plugins = ["apifixtures", "customerworld"]


def _view(world: Demo, entity: str, record_id: int, query: str = "", who: str = "admin",
          status: int = 200) -> dict[str, Any]:
    response = world.get(world.entity_url(entity, record_id, f"/360{query}"), who=who)
    if status != 200:
        return problem_of(response, status)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_the_view_gathers_every_referencing_record(world: Demo) -> None:
    service = world.service()
    tag = service.create(TAG, {"name": "gold"})["id"]
    customer = service.create(CUSTOMER, {"display_name": "Lin", "tags": [tag]})["id"]
    other = service.create(CUSTOMER, {"display_name": "Other"})["id"]
    orders = [service.create(ORDER, {"customer": customer, "reference": f"o{i}"})["id"]
              for i in range(3)]
    service.create(ORDER, {"customer": other, "reference": "not theirs"})
    note = service.create(NOTE, {"customer": other, "referred_by": customer})["id"]
    consent = service.create(CONSENT, {"customer": customer, "channel": "email",
                                       "status": "granted"})["id"]
    campaign = service.create(CAMPAIGN, {"name": "Spring", "members": [customer, other]})["id"]
    gone = service.create(ORDER, {"customer": customer, "reference": "deleted"})["id"]
    service.delete(ORDER, gone)
    view = _view(world, CUSTOMER, customer)
    assert view["record"]["id"] == customer and view["record"]["display_name"] == "Lin"
    related = view["related"]
    assert set(related) == {ORDER, CONSENT, CONTACT_POINT, CAMPAIGN, f"{NOTE}.customer",
                            f"{NOTE}.referred_by"}
    assert [i["id"] for i in related[ORDER]["items"]] == orders[::-1]  # newest first
    assert related[ORDER]["count"] == 3 and related[ORDER]["field"] == "customer"
    assert [i["id"] for i in related[f"{NOTE}.referred_by"]["items"]] == [note]
    assert related[f"{NOTE}.customer"]["items"] == []
    assert [i["id"] for i in related[CONSENT]["items"]] == [consent]
    assert [i["id"] for i in related[CAMPAIGN]["items"]] == [campaign]
    assert related[CAMPAIGN]["url"] is None  # a many_to_many has no list filter
    assert related[CONTACT_POINT] == {**related[CONTACT_POINT], "items": [], "count": 0}


def test_lists_are_capped_with_a_count_and_a_link_to_the_rest(world: Demo) -> None:
    service = world.service()
    customer = service.create(CUSTOMER, {"display_name": "Many"})["id"]
    ids = [service.create(ORDER, {"customer": customer, "reference": f"o{i}"})["id"]
           for i in range(7)]
    group = _view(world, CUSTOMER, customer, "?limit=3&entities=shop.order")["related"]
    assert list(group) == [ORDER]
    orders = group[ORDER]
    assert [i["id"] for i in orders["items"]] == ids[::-1][:3]
    assert orders["count"] == 7 and orders["next_cursor"]
    url = orders["url"]
    assert url.endswith(f"/api/v1/shop/order?customer={customer}&sort=-id")
    rest = world.get(f"{url}&limit=10&cursor={orders['next_cursor']}").get_json()
    assert [i["id"] for i in rest["items"]] == ids[::-1][3:]


def test_each_list_obeys_the_callers_permissions(world: Demo) -> None:
    rep = world.service("rep")
    customer = rep.create(CUSTOMER, {"display_name": "Shared", "profile": {"x": 1}})["id"]
    mine = rep.create(CONTACT_POINT, {"customer": customer, "channel": "sms",
                                      "value": "+8613800138000"})["id"]
    world.service().create(CONTACT_POINT, {"customer": customer, "channel": "email",
                                           "value": "hidden@example.com"})  # no unit
    world.service().create(CONSENT, {"customer": customer, "channel": "sms"})
    world.service().create(ORDER, {"customer": customer, "reference": "o"})
    view = _view(world, CUSTOMER, customer, who="rep")
    related = view["related"]
    assert ORDER not in related and CAMPAIGN not in related  # no grant on shop.*
    assert [i["id"] for i in related[CONTACT_POINT]["items"]] == [mine]
    assert related[CONTACT_POINT]["count"] == 1
    assert related[CONSENT]["items"] == [] and related[CONSENT]["count"] == 0
    clerk = _view(world, CUSTOMER, customer, who="clerk")["related"]
    assert clerk[ORDER]["count"] == 1  # shop_clerk reads every order
    _view(world, CUSTOMER, customer, who="rep2", status=404)  # another unit's customer
    admin = _view(world, CUSTOMER, customer)["related"]
    assert admin[CONTACT_POINT]["count"] == 2 and admin[CONSENT]["count"] == 1


def test_hidden_fields_stay_hidden_in_the_view(world: Demo) -> None:
    service = world.service()
    customer = service.create(CUSTOMER, {"display_name": "P", "profile": {"secret": 1}})["id"]
    with world.runtime.begin() as connection:
        from metacrm.platform.auth import create_user, issue_token, set_roles

        user = create_user(connection, "auditor")
        set_roles(connection, user, ["auditor"])
        world.tokens["auditor"] = issue_token(connection, user, "tests")
    view = _view(world, CUSTOMER, customer, who="auditor")
    assert "profile" not in view["record"] and view["record"]["display_name"] == "P"


def test_it_works_for_any_entity(world: Demo) -> None:
    service = world.service()
    tag = service.create(TAG, {"name": "t"})["id"]
    customers = [service.create(CUSTOMER, {"display_name": f"C{i}", "tags": [tag]})["id"]
                 for i in range(2)]
    view = _view(world, TAG, tag)
    assert [i["id"] for i in view["related"][CUSTOMER]["items"]] == customers[::-1]
    order = service.create(ORDER, {"customer": customers[0]})["id"]
    assert _view(world, ORDER, order)["related"] == {}


def test_bad_requests_and_missing_records(world: Demo) -> None:
    service = world.service()
    customer = service.create(CUSTOMER, {"display_name": "X"})["id"]
    _view(world, CUSTOMER, customer, "?limit=0", status=400)
    _view(world, CUSTOMER, customer, "?limit=101", status=400)
    _view(world, CUSTOMER, customer, "?colour=red", status=400)
    _view(world, CUSTOMER, 999_999, status=404)
    service.delete(CUSTOMER, customer)
    _view(world, CUSTOMER, customer, status=404)
    problem_of(world.get(world.entity_url("shop.nothing", 1, "/360")), 404)


def test_the_number_of_queries_does_not_grow_with_the_related_records(world: Demo) -> None:
    service = world.service()
    small = service.create(CUSTOMER, {"display_name": "small"})["id"]
    large = service.create(CUSTOMER, {"display_name": "large"})["id"]
    service.create(ORDER, {"customer": small})
    for i in range(40):
        service.create(ORDER, {"customer": large, "reference": str(i)})
        service.create(CONSENT, {"customer": large, "channel": "email"})
    _view(world, CUSTOMER, small)  # the first request of a token does a little more
    counter = StatementCounter(world.runtime.db.engine)
    try:
        counts = []
        for record in (small, large):
            with counter.counting() as statements:
                _view(world, CUSTOMER, record)
            counts.append(len(statements))
    finally:
        counter.close()
    assert counts[0] == counts[1], counts
