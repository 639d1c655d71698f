"""Merging two records: survivorship, references and links moved, the loser soft-deleted,
the merge log keeping the loser's data, audit and events, identified records, permissions,
and all of it in one transaction."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

pytest.register_assert_rewrite("apifixtures", "customerworld")
from apifixtures import Demo, problem_of  # noqa: E402
from customerworld import CAMPAIGN, CONSENT, CONTACT_POINT, CUSTOMER, NOTE, ORDER, TAG  # noqa: E402

from metacrm.engines.duplicates import merge_records  # noqa: E402
from metacrm.engines.duplicates.tables import MERGES, REVIEWS  # noqa: E402
from metacrm.hookspecs import hookimpl  # noqa: E402
from metacrm.platform.events import RecordEvent  # noqa: E402
from metacrm.platform.records import Conflict  # noqa: E402

pytest_plugins = ["apifixtures", "customerworld"]


def _merge(world: Demo, winner: int, body: dict[str, Any], who: str = "admin",
           status: int = 200) -> dict[str, Any]:
    response = world.post(world.entity_url(CUSTOMER, winner, "/merge"), body, who=who)
    if status != 200:
        return problem_of(response, status)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _history(world: Demo, entity: str, record_id: int) -> list[dict[str, Any]]:
    return world.service().history(entity, record_id)


@pytest.fixture
def pair(world: Demo) -> dict[str, Any]:
    """Two customers that are one person, with records pointing at each."""
    service = world.service()
    tags = [service.create(TAG, {"name": n})["id"] for n in ("a", "b", "c")]
    winner = service.create(CUSTOMER, {"display_name": "Wang Xiaoming", "email": "w@example.com",
                                       "city": None, "tags": tags[:2], "is_vip": False})
    loser = service.create(CUSTOMER, {
        "display_name": "Wang X.", "email": "W@example.com", "city": "Shanghai",
        "phone": "+8613800138000", "external_id": "CRM-7", "profile": {"vip_since": 2019},
        "tags": tags[1:], "is_vip": True})
    orders = [service.create(ORDER, {"customer": loser["id"], "reference": f"o{i}"})["id"]
              for i in range(3)]
    kept = service.create(ORDER, {"customer": winner["id"], "reference": "w"})["id"]
    note = service.create(NOTE, {"customer": winner["id"], "referred_by": loser["id"]})["id"]
    consent = service.create(CONSENT, {"customer": loser["id"], "channel": "sms"})["id"]
    point = service.create(CONTACT_POINT, {"customer": loser["id"], "channel": "email",
                                           "value": "w@example.com"})["id"]
    both = service.create(CAMPAIGN, {"name": "both", "members": [winner["id"], loser["id"]]})
    only = service.create(CAMPAIGN, {"name": "loser only", "members": [loser["id"]]})
    gone = service.create(ORDER, {"customer": loser["id"], "reference": "deleted"})["id"]
    service.delete(ORDER, gone)
    return {"winner": winner["id"], "loser": loser["id"], "tags": tags, "orders": orders,
            "kept": kept, "note": note, "consent": consent, "point": point,
            "campaigns": (both["id"], only["id"]), "deleted_order": gone}


def test_a_merge_keeps_the_winner_fills_its_gaps_and_moves_everything(
        world: Demo, pair: dict[str, Any]) -> None:
    world.service().update(CUSTOMER, pair["loser"], {"do_not_contact": True})
    body = _merge(world, pair["winner"], {"loser": pair["loser"],
                                          "fields": {"is_vip": "loser"}})
    record = body["record"]
    assert record["id"] == pair["winner"]
    assert record["display_name"] == "Wang Xiaoming"  # the winner's value survives
    assert record["email"] == "w@example.com"
    assert record["city"] == "Shanghai"  # the winner had none: the loser's
    assert record["phone"] == "+8613800138000" and record["external_id"] == "CRM-7"
    assert record["profile"] == {"vip_since": 2019}
    assert record["is_vip"] is True  # chosen explicitly
    assert record["do_not_contact"] is True  # a flag set on either record stays set
    assert world.service().links(CUSTOMER, pair["winner"])["tags"] == sorted(pair["tags"])
    moved = body["merge"]["moved"]
    assert moved == {"shop.order.customer": 4, "shop.note.referred_by": 1,
                     "customer.consent.customer": 1, "customer.contact_point.customer": 1,
                     "shop.campaign.members": 2}
    service = world.service()
    for order in [*pair["orders"], pair["kept"]]:
        assert service.get(ORDER, order)["customer"] == pair["winner"]
    deleted = service.get(ORDER, pair["deleted_order"], include_deleted=True)
    assert deleted["customer"] == pair["winner"]  # restored later, it points at the winner
    note = service.get(NOTE, pair["note"])
    assert note["customer"] == note["referred_by"] == pair["winner"]
    assert service.get(CONSENT, pair["consent"])["customer"] == pair["winner"]
    for campaign in pair["campaigns"]:
        assert service.links(CAMPAIGN, campaign)["members"] == [pair["winner"]]
    problem_of(world.get(world.entity_url(CUSTOMER, pair["loser"])), 404)
    loser = service.get(CUSTOMER, pair["loser"], include_deleted=True)
    assert loser["deleted_at"] is not None
    assert loser["external_id"] is None  # it let go of its unique value for the winner


def test_the_merge_log_keeps_the_losers_data_and_the_choices(world: Demo,
                                                             pair: dict[str, Any]) -> None:
    _merge(world, pair["winner"], {"loser": pair["loser"], "fields": {"city": "winner"}})
    log = world.get(world.entity_url(CUSTOMER, pair["winner"], "/merges?loser_data=true"))
    assert log.status_code == 200
    (entry,) = log.get_json()["items"]
    assert (entry["winner"], entry["loser"]) == (pair["winner"], pair["loser"])
    assert entry["actor"] == world.user_ids["admin"]
    assert entry["fields"]["city"] == "winner" and entry["fields"]["phone"] == "loser"
    assert entry["fields"]["tags"] == "union"
    data = entry["loser_record"]
    assert data["display_name"] == "Wang X." and data["external_id"] == "CRM-7"
    assert data["city"] == "Shanghai" and data["profile"] == {"vip_since": 2019}
    assert data["tags"] == pair["tags"][1:]
    assert world.service().get(CUSTOMER, pair["winner"])["city"] is None
    by_loser = world.get(world.entity_url(CUSTOMER, pair["loser"], "/merges")).get_json()
    assert [i["id"] for i in by_loser["items"]] == [entry["id"]]
    assert "loser_record" not in by_loser["items"][0]


def test_audit_entries_tell_the_story(world: Demo, pair: dict[str, Any]) -> None:
    _merge(world, pair["winner"], {"loser": pair["loser"]})
    merged = _history(world, CUSTOMER, pair["winner"])[-1]
    assert merged["action"] == "merged" and merged["actor"] == world.user_ids["admin"]
    assert merged["changes"]["merged_from"]["after"] == pair["loser"]
    assert merged["changes"]["city"] == {"before": None, "after": "Shanghai"}
    deleted = _history(world, CUSTOMER, pair["loser"])[-1]
    assert deleted["action"] == "deleted"
    assert deleted["changes"]["merged_into"]["after"] == pair["winner"]
    moved = _history(world, ORDER, pair["orders"][0])[-1]
    assert moved["action"] == "updated"
    assert moved["changes"]["customer"] == {"before": pair["loser"], "after": pair["winner"]}


def test_record_events_go_out_after_the_merge(world: Demo, pair: dict[str, Any]) -> None:
    seen: list[RecordEvent] = []
    world.platform.subscribe(seen.append)
    _merge(world, pair["winner"], {"loser": pair["loser"]})
    kinds = {(e.entity, e.record_id, e.kind) for e in seen}
    assert (CUSTOMER, pair["winner"], "updated") in kinds
    assert (CUSTOMER, pair["loser"], "deleted") in kinds
    assert {(ORDER, o, "updated") for o in pair["orders"]} <= kinds
    winner_event = next(e for e in seen if e.record_id == pair["winner"] and
                        e.entity == CUSTOMER)
    assert winner_event.changes["city"] == (None, "Shanghai")


def test_the_review_pair_is_closed_and_the_losers_other_pairs_move(world: Demo) -> None:
    service = world.service()
    a = service.create(CUSTOMER, {"display_name": "A", "email": "same@example.com"})["id"]
    b = service.create(CUSTOMER, {"display_name": "B", "email": "same@example.com"})["id"]
    c = service.create(CUSTOMER, {"display_name": "C", "phone": "+8613700000000"})["id"]
    service.update(CUSTOMER, b, {"phone": "+8613700000000"})  # pairs a-b, b-c
    _merge(world, a, {"loser": b})
    reviews = service.system.table(REVIEWS)
    with world.connection() as connection:
        rows = {(r.record_a, r.record_b): r.status for r in connection.execute(
            sa.select(reviews))}
    assert rows[(a, b)] == "merged"
    assert rows[(a, c)] == "open"  # b's pair with c now concerns the winner
    assert (b, c) not in rows


def test_two_identified_records_merge_only_when_forced_by_someone_who_may_say_so(
        world: Demo) -> None:
    service = world.service()
    one = service.create(CUSTOMER, {"display_name": "A", "identified": True})["id"]
    two = service.create(CUSTOMER, {"display_name": "A.", "identified": True})["id"]
    manager = world.service("manager")
    for record_id in (one, two):  # the sales manager's own (their roles reach them)
        service.assign(CUSTOMER, record_id, world.user_ids["manager"])
    refused = _merge(world, one, {"loser": two}, status=409)
    assert "identified" in refused["detail"] and "force" in refused["detail"]
    refused = _merge(world, one, {"loser": two, "force": True}, who="manager", status=403)
    assert "identified" in refused["detail"]  # identified is read-only for sales managers
    _merge(world, one, {"loser": two, "force": "yes"}, status=422)
    done = _merge(world, one, {"loser": two, "force": True}, who="steward")
    assert done["record"]["identified"] is True
    assert manager.get(CUSTOMER, one)["identified"] is True
    three = service.create(CUSTOMER, {"display_name": "B", "identified": True})["id"]
    four = service.create(CUSTOMER, {"display_name": "B."})["id"]
    _merge(world, three, {"loser": four})  # one verified identity: nothing to refuse


def test_merging_needs_update_on_the_winner_and_delete_on_the_loser(world: Demo) -> None:
    mine = world.service("rep").create(CUSTOMER, {"display_name": "Mine"})["id"]
    also = world.service("rep").create(CUSTOMER, {"display_name": "Also mine"})["id"]
    theirs = world.service("rep2").create(CUSTOMER, {"display_name": "Theirs"})["id"]
    refused = _merge(world, mine, {"loser": also}, who="rep", status=403)
    assert "delete" in refused["detail"]  # sales reps may not delete customers
    _merge(world, mine, {"loser": theirs}, who="manager", status=404)  # not in their reach
    _merge(world, theirs, {"loser": mine}, who="rep2", status=403)  # no `delete` at all
    _merge(world, mine, {"loser": also}, who="steward")


def test_bad_merge_requests_are_refused_with_reasons(world: Demo) -> None:
    service = world.service()
    a = service.create(CUSTOMER, {"display_name": "A"})["id"]
    b = service.create(CUSTOMER, {"display_name": "B"})["id"]
    assert "itself" in _merge(world, a, {"loser": a}, status=422)["detail"]
    errors = _merge(world, a, {"loser": b, "fields": {"nope": "loser", "city": "both",
                                                      "value_tier": "loser"}},
                    status=422)["errors"]
    assert set(errors) == {"nope", "city", "value_tier"}
    _merge(world, a, {"loser": "b"}, status=422)
    _merge(world, a, {}, status=422)
    _merge(world, a, {"loser": b, "colour": "red"}, status=422)
    _merge(world, a, {"loser": 999_999}, status=404)
    service.delete(CUSTOMER, b)
    _merge(world, a, {"loser": b}, status=404)
    problem_of(world.post(world.entity_url(CUSTOMER, a, "/merge?x=1"), {"loser": b}), 400)


class _Refuser:
    """A plugin refusing any write of a note (to see the merge roll back whole)."""

    @hookimpl
    def record_writing(self, event: RecordEvent, connection: Any, service: Any) -> None:
        if event.entity == NOTE:
            raise Conflict("notes are frozen today")


def test_a_refused_step_rolls_the_whole_merge_back(world: Demo,
                                                  pair: dict[str, Any]) -> None:
    refuser = _Refuser()
    world.platform.plugins.register(refuser)
    try:
        refused = _merge(world, pair["winner"], {"loser": pair["loser"]}, status=409)
    finally:
        world.platform.plugins.unregister(refuser)
    assert refused["detail"] == "notes are frozen today"
    service = world.service()
    assert service.get(CUSTOMER, pair["loser"])["deleted_at"] is None
    assert service.get(CUSTOMER, pair["winner"])["city"] is None
    assert service.get(ORDER, pair["orders"][0])["customer"] == pair["loser"]
    with world.connection() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(
            service.system.table(MERGES))).scalar() == 0


def test_merging_works_for_any_entity(world: Demo) -> None:
    service = world.service()
    a = service.create(TAG, {"name": "vip"})["id"]
    b = service.create(TAG, {"name": "VIP!"})["id"]
    customer = service.create(CUSTOMER, {"display_name": "T", "tags": [a, b]})["id"]
    other = service.create(CUSTOMER, {"display_name": "U", "tags": [b]})["id"]
    result = merge_records(service, TAG, a, b)
    assert result.moved == {"customer.customer.tags": 2}
    assert service.links(CUSTOMER, customer)["tags"] == [a]
    assert service.links(CUSTOMER, other)["tags"] == [a]
