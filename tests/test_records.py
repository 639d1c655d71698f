"""The record service on SQLite and PostgreSQL: defaults, autonumbers, formulas, validation,
uniqueness, references, links, row versions, soft delete, audit, events, bulk upserts,
keyset pagination and expansion."""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("apifixtures")
from apifixtures import CONTACT_POINT, CUSTOMER, TAG, Demo, StatementCounter  # noqa: E402

from metacrm.platform import records  # noqa: E402
from metacrm.platform.events import RecordEvent  # noqa: E402
from metacrm.platform.records import (  # noqa: E402
    Conflict,
    ListQuery,
    NotFound,
    PreconditionFailed,
    RecordError,
    ValidationFailed,
)

pytest_plugins = ["apifixtures"]


def make_tag(demo: Demo, name: str, **values: Any) -> dict[str, Any]:
    return demo.service().create(TAG, {"name": name, **values})


def link_ids(demo: Demo, record_id: int) -> list[int]:
    link = demo.link_table(CUSTOMER, "tags")
    with demo.connection() as connection:
        return sorted(connection.execute(sa.select(link.c.target_id).where(
            link.c.source_id == record_id)).scalars())


# -- create: defaults, autonumbers, formulas -------------------------------------------------

def test_create_fills_defaults_per_business_unit(demo: Demo) -> None:
    admin = demo.service("admin").create(CUSTOMER, {"display_name": "Ann"})
    assert admin["kind"] == "person"
    assert admin["lifetime_value"] == "0.00"
    assert admin["is_vip"] is False
    assert admin["row_version"] == 1
    assert admin["created_by"] == admin["owner"] == demo.user_ids["admin"]
    assert admin["business_unit"] is None
    assert "membership_level" not in admin and "store_code" not in admin

    retail = demo.service("retail").create(CUSTOMER, {"display_name": "Bob"})
    assert retail["membership_level"] == "bronze"
    assert retail["business_unit"] == "retail"
    assert retail["store_code"] is None

    education = demo.service("education").create(CUSTOMER, {"display_name": "Cy"})
    assert "membership_level" not in education
    assert education["school"] is None and education["grade"] is None

    # the unit's default is stored with the row
    with demo.connection() as connection:
        table = demo.table(CUSTOMER)
        stored = connection.execute(sa.select(table.c.membership_level).where(
            table.c.id == retail["id"])).scalar_one()
    assert stored == "bronze"

    tag = make_tag(demo, "vip")
    assert tag["color"] == "#888888"
    explicit = demo.service("retail").create(CUSTOMER, {"display_name": "D",
                                                        "membership_level": "gold"})
    assert explicit["membership_level"] == "gold"


def test_autonumber_counts_up(demo: Demo) -> None:
    service = demo.service()
    year = dt.datetime.now(dt.UTC).year
    numbers = [service.create(CUSTOMER, {"display_name": f"c{i}"})["number"]
               for i in range(3)]
    assert numbers == [f"C-{year}-{n:06d}" for n in (1, 2, 3)]
    # the counter is not fooled by deletes: numbers are never reused
    service.delete(CUSTOMER, 3)
    assert service.create(CUSTOMER, {"display_name": "c4"})["number"] == f"C-{year}-000004"


class _ClockMeta(type):
    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, dt.datetime)


def frozen_datetime(at: dt.datetime) -> type:
    """A `datetime` class whose now() is `at` (isinstance still sees real datetimes)."""

    class Frozen(dt.datetime, metaclass=_ClockMeta):
        @classmethod
        def now(cls, tz: Any = None) -> dt.datetime:  # type: ignore[override]
            return at if tz is None else at.astimezone(tz)

    return Frozen


def test_autonumber_restarts_every_year(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    service = demo.service()

    def create_at(year: int) -> str:
        clock = type("clock", (), {**{k: getattr(dt, k) for k in dir(dt)
                                       if not k.startswith("__")},
                                   "datetime": frozen_datetime(
                                       dt.datetime(year, 6, 1, 12, tzinfo=dt.UTC))})
        monkeypatch.setattr(records, "dt", clock)
        try:
            return service.create(CUSTOMER, {"display_name": f"y{year}"})["number"]
        finally:
            monkeypatch.setattr(records, "dt", dt)

    assert [create_at(2030), create_at(2030), create_at(2031), create_at(2030)] == [
        "C-2030-000001", "C-2030-000002", "C-2031-000001", "C-2030-000003"]


def test_formula_is_computed_on_read(demo: Demo) -> None:
    service = demo.service()
    record = service.create(CUSTOMER, {"display_name": "F", "lifetime_value": "20000"})
    assert record["value_tier"] == "silver"
    assert service.get(CUSTOMER, record["id"])["value_tier"] == "silver"
    updated = service.update(CUSTOMER, record["id"], {"lifetime_value": 150000})
    assert updated["value_tier"] == "gold"
    assert service.list(CUSTOMER, ListQuery()).items[0]["value_tier"] == "gold"
    assert "value_tier" not in [c.name for c in demo.table(CUSTOMER).c]
    with pytest.raises(ValidationFailed) as caught:
        service.update(CUSTOMER, record["id"], {"value_tier": "standard"})
    assert "value_tier" in caught.value.errors


# -- validation -------------------------------------------------------------------------------

INVALID = [
    # (who, entity, body, field named in errors)
    ("admin", CUSTOMER, {"display_name": 5}, "display_name"),
    ("admin", CUSTOMER, {"display_name": None}, "display_name"),
    ("admin", CUSTOMER, {}, "display_name"),
    ("admin", CUSTOMER, {"display_name": "x" * 201}, "display_name"),
    ("admin", CUSTOMER, {"display_name": "A", "kind": "alien"}, "kind"),
    ("admin", CUSTOMER, {"display_name": "A", "email": "not-an-email"}, "email"),
    ("admin", CUSTOMER, {"display_name": "A", "lifetime_value": -1}, "lifetime_value"),
    ("admin", CUSTOMER, {"display_name": "A", "lifetime_value": "NaN"}, "lifetime_value"),
    ("admin", CUSTOMER, {"display_name": "A", "lifetime_value": True}, "lifetime_value"),
    ("admin", CUSTOMER, {"display_name": "A", "birthday": "31/01/2000"}, "birthday"),
    ("admin", CUSTOMER, {"display_name": "A", "is_vip": "yes"}, "is_vip"),
    ("admin", CUSTOMER, {"display_name": "A", "tags": "1"}, "tags"),
    ("admin", CUSTOMER, {"display_name": "A", "tags": [0]}, "tags"),
    ("admin", CUSTOMER, {"display_name": "A", "nickname": "x"}, "nickname"),
    ("admin", CUSTOMER, {"display_name": "A", "number": "C-1"}, "number"),
    ("admin", CUSTOMER, {"display_name": "A", "value_tier": "gold"}, "value_tier"),
    ("admin", CUSTOMER, {"display_name": "A", "id": 7}, "id"),
    ("admin", CUSTOMER, {"display_name": "A", "row_version": 1}, "row_version"),
    ("admin", CUSTOMER, {"display_name": "A", "created_at": "2020-01-01T00:00:00Z"},
     "created_at"),
    ("admin", CUSTOMER, {"display_name": "A", "store_code": "S1"}, "store_code"),
    ("retail", CUSTOMER, {"display_name": "A", "school": "X"}, "school"),
    ("retail", CUSTOMER, {"display_name": "A", "grade": 3}, "grade"),
    ("retail", CUSTOMER, {"display_name": "A", "membership_level": "platinum"},
     "membership_level"),
    ("retail", CUSTOMER, {"display_name": "A", "store_code": "x" * 21}, "store_code"),
    ("education", CUSTOMER, {"display_name": "A", "store_code": "S1"}, "store_code"),
    ("education", CUSTOMER, {"display_name": "A", "membership_level": "gold"},
     "membership_level"),
    ("education", CUSTOMER, {"display_name": "A", "grade": 13}, "grade"),
    ("education", CUSTOMER, {"display_name": "A", "grade": 0}, "grade"),
    ("education", CUSTOMER, {"display_name": "A", "grade": 2.5}, "grade"),
    ("admin", TAG, {"name": "t", "color": "red"}, "color"),
    ("admin", TAG, {"name": "t", "uuid": "not-a-uuid"}, "uuid"),
    ("admin", CONTACT_POINT, {"customer": 1, "channel": "fax", "value": "1"}, "channel"),
    ("admin", CONTACT_POINT, {"customer": "1", "channel": "sms", "value": "1"}, "customer"),
]


def test_create_validation_names_the_field(demo: Demo) -> None:
    """One invalid value at a time (types, required, options, lengths, patterns, ranges,
    unknown, read-only and other units' fields): a 422 naming exactly that field."""
    wrong = []
    for who, entity, body, field in INVALID:
        try:
            demo.service(who).create(entity, body)
        except ValidationFailed as exc:
            messages = exc.errors.get(field)
            if isinstance(messages, dict):  # a list's items are reported by position
                messages = [m for item in messages.values() for m in item]
            if exc.status != 422 or set(exc.errors) != {field} or not messages or \
                    not all(isinstance(m, str) for m in messages):
                wrong.append((who, entity, body, exc.errors))
        else:
            wrong.append((who, entity, body, "accepted"))
    assert wrong == []
    assert demo.service().list(CUSTOMER, ListQuery(include_deleted=True)).items == []


def test_validation_collects_every_field_and_writes_nothing(demo: Demo,
                                                            events: list[RecordEvent]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        demo.service().create(CUSTOMER, {"display_name": 5, "kind": "alien", "bogus": 1,
                                         "lifetime_value": -3})
    assert set(caught.value.errors) == {"display_name", "kind", "bogus", "lifetime_value"}
    assert demo.service().list(CUSTOMER, ListQuery(include_deleted=True)).items == []
    assert events == []
    with pytest.raises(ValidationFailed):
        demo.service().create(CUSTOMER, ["not", "an", "object"])


def test_update_validates_and_keeps_required_fields(demo: Demo) -> None:
    service = demo.service("education")
    record = service.create(CUSTOMER, {"display_name": "A", "grade": 3})
    for body, field in [({"display_name": None}, "display_name"), ({"grade": 99}, "grade"),
                        ({"store_code": "S"}, "store_code"), ({"number": "X"}, "number"),
                        ({"row_version": "one"}, "row_version")]:
        with pytest.raises(ValidationFailed) as caught:
            service.update(CUSTOMER, record["id"], body)
        assert field in caught.value.errors
    assert service.get(CUSTOMER, record["id"])["row_version"] == 1
    # a partial update needs no required field
    assert service.update(CUSTOMER, record["id"], {"grade": 4})["display_name"] == "A"


def test_uuid_and_json_values_round_trip(demo: Demo) -> None:
    service = demo.service()
    tag = make_tag(demo, "t", uuid="E3E70682-C209-1CAC-A29F-6FBED82C07CD")
    assert tag["uuid"] == "e3e70682-c209-1cac-a29f-6fbed82c07cd"
    with pytest.raises(Conflict) as caught:
        make_tag(demo, "u", uuid="e3e70682c2091caca29f6fbed82c07cd")
    assert list(caught.value.errors) == ["uuid"]
    profile = {"source": "import", "scores": [1, 2.5, None], "ok": True}
    record = service.create(CUSTOMER, {"display_name": "J", "profile": profile})
    assert record["profile"] == profile
    assert service.update(CUSTOMER, record["id"], {"profile": profile})["row_version"] == 1
    assert service.update(CUSTOMER, record["id"], {"profile": {"ok": 1}})["row_version"] == 2
    for bad in ({"x": float("nan")}, ["\x00"], {"\ud800": 1}):
        with pytest.raises(ValidationFailed) as caught:
            service.update(CUSTOMER, record["id"], {"profile": bad})
        assert list(caught.value.errors) == ["profile"]


# -- uniqueness and references ---------------------------------------------------------------

def test_unique_clash_is_a_conflict_naming_the_field(demo: Demo,
                                                     events: list[RecordEvent]) -> None:
    service = demo.service()
    make_tag(demo, "vip")
    before = len(events)
    with pytest.raises(Conflict) as caught:
        make_tag(demo, "vip")
    assert caught.value.status == 409
    assert list(caught.value.errors) == ["name"]
    assert len(events) == before

    first = service.create(CUSTOMER, {"display_name": "A", "external_id": "E1"})
    second = service.create(CUSTOMER, {"display_name": "B", "external_id": "E2"})
    with pytest.raises(Conflict) as caught:
        service.create(CUSTOMER, {"display_name": "C", "external_id": "E1"})
    assert list(caught.value.errors) == ["external_id"]
    with pytest.raises(Conflict) as caught:
        service.update(CUSTOMER, second["id"], {"external_id": "E1"})
    assert list(caught.value.errors) == ["external_id"]
    assert service.get(CUSTOMER, second["id"])["external_id"] == "E2"
    assert service.get(CUSTOMER, first["id"])["row_version"] == 1
    # the failed create did not use up an autonumber... or if it did, nothing was written
    assert len(service.list(CUSTOMER, ListQuery(include_deleted=True)).items) == 2


def test_references_to_missing_or_deleted_records_are_422(demo: Demo) -> None:
    service = demo.service()
    with pytest.raises(ValidationFailed) as caught:
        service.create(CONTACT_POINT, {"customer": 999, "channel": "sms", "value": "1"})
    assert list(caught.value.errors) == ["customer"]

    customer = service.create(CUSTOMER, {"display_name": "A"})
    point = service.create(CONTACT_POINT, {"customer": customer["id"], "channel": "sms",
                                           "value": "+886900000000"})
    assert point["customer"] == customer["id"]
    other = service.create(CUSTOMER, {"display_name": "B"})
    service.delete(CUSTOMER, other["id"])
    with pytest.raises(ValidationFailed) as caught:
        service.create(CONTACT_POINT, {"customer": other["id"], "channel": "sms", "value": "1"})
    assert list(caught.value.errors) == ["customer"]
    with pytest.raises(ValidationFailed) as caught:
        service.update(CONTACT_POINT, point["id"], {"customer": other["id"]})
    assert list(caught.value.errors) == ["customer"]

    tag = make_tag(demo, "t")
    gone = make_tag(demo, "gone")
    service.delete(TAG, gone["id"])
    with pytest.raises(ValidationFailed) as caught:
        service.create(CUSTOMER, {"display_name": "C", "tags": [tag["id"], 999, gone["id"]]})
    assert list(caught.value.errors) == ["tags"]
    assert "999" in caught.value.errors["tags"][0]
    assert str(gone["id"]) in caught.value.errors["tags"][0]


def test_many_to_many_ids_go_to_the_link_table(demo: Demo, events: list[RecordEvent]) -> None:
    service = demo.service()
    t1, t2, t3 = (make_tag(demo, name)["id"] for name in ("a", "b", "c"))
    record = service.create(CUSTOMER, {"display_name": "A", "tags": [t2, t1, t2]})
    assert link_ids(demo, record["id"]) == [t1, t2]
    assert events[-1].changes["tags"] == (None, [t1, t2])

    updated = service.update(CUSTOMER, record["id"], {"tags": [t3, t2]})
    assert link_ids(demo, record["id"]) == [t2, t3]
    assert updated["row_version"] == 2
    assert events[-1].kind == "updated"
    assert events[-1].changes == {"tags": ([t1, t2], [t2, t3])}
    # the same set again (any order, repeated ids) changes nothing: no new version, no event
    count = len(events)
    again = service.update(CUSTOMER, record["id"], {"tags": [t3, t2, t3]})
    assert again["row_version"] == 2 and len(events) == count
    assert [e["action"] for e in service.history(CUSTOMER, record["id"])] == [
        "created", "updated"]

    service.update(CUSTOMER, record["id"], {"tags": []})
    assert link_ids(demo, record["id"]) == []
    # an update that does not mention tags leaves them alone
    service.update(CUSTOMER, record["id"], {"tags": [t1]})
    service.update(CUSTOMER, record["id"], {"city": "Taipei"})
    assert link_ids(demo, record["id"]) == [t1]


# -- updates, row versions ---------------------------------------------------------------------

def test_update_changes_only_changed_fields(demo: Demo, events: list[RecordEvent]) -> None:
    service = demo.service()
    record = service.create(CUSTOMER, {"display_name": "A", "city": "Taipei",
                                       "lifetime_value": "10"})
    updated = service.update(CUSTOMER, record["id"], {"city": "Tainan", "display_name": "A",
                                                      "lifetime_value": 10})
    assert updated["row_version"] == 2
    assert updated["city"] == "Tainan"
    assert updated["updated_at"] >= record["updated_at"]
    assert events[-1].changes == {"city": ("Taipei", "Tainan")}
    assert events[-1].changed_fields == {"city"}
    entry = service.history(CUSTOMER, record["id"])[-1]
    assert entry["changes"] == {"city": {"before": "Taipei", "after": "Tainan"}}

    count = len(events)
    same = service.update(CUSTOMER, record["id"], {"city": "Tainan", "lifetime_value": "10.00"})
    assert same["row_version"] == 2
    assert len(events) == count
    assert len(service.history(CUSTOMER, record["id"])) == 2


def test_stale_version_is_a_precondition_failure(demo: Demo,
                                                 events: list[RecordEvent]) -> None:
    service = demo.service()
    record = service.create(CUSTOMER, {"display_name": "A"})
    service.update(CUSTOMER, record["id"], {"city": "X"}, expected_version=1)
    count = len(events)
    with pytest.raises(PreconditionFailed) as caught:
        service.update(CUSTOMER, record["id"], {"city": "Y"}, expected_version=1)
    assert caught.value.status == 412
    assert caught.value.extra["current_version"] == 2
    with pytest.raises(PreconditionFailed) as caught:
        service.update(CUSTOMER, record["id"], {"city": "Y", "row_version": 1})
    assert caught.value.extra["current_version"] == 2
    with pytest.raises(PreconditionFailed):
        service.delete(CUSTOMER, record["id"], expected_version=1)
    assert len(events) == count
    current = service.get(CUSTOMER, record["id"])
    assert (current["city"], current["row_version"]) == ("X", 2)
    assert service.update(CUSTOMER, record["id"], {"city": "Z", "row_version": 2}
                          )["row_version"] == 3


# -- soft delete and restore -----------------------------------------------------------------

def test_soft_delete_and_restore(demo: Demo, events: list[RecordEvent]) -> None:
    service = demo.service()
    keep = service.create(CUSTOMER, {"display_name": "keep"})
    record = service.create(CUSTOMER, {"display_name": "gone"})
    service.delete(CUSTOMER, record["id"])
    assert events[-1].kind == "deleted"
    with pytest.raises(NotFound):
        service.get(CUSTOMER, record["id"])
    assert [r["id"] for r in service.list(CUSTOMER, ListQuery()).items] == [keep["id"]]
    everything = service.list(CUSTOMER, ListQuery(include_deleted=True)).items
    assert [r["id"] for r in everything] == [keep["id"], record["id"]]
    deleted = service.get(CUSTOMER, record["id"], include_deleted=True)
    assert deleted["deleted_at"] is not None and deleted["row_version"] == 2
    with pytest.raises(NotFound):
        service.update(CUSTOMER, record["id"], {"city": "X"})
    with pytest.raises(NotFound):
        service.delete(CUSTOMER, record["id"])
    with pytest.raises(NotFound):
        service.delete(CUSTOMER, 12345)

    restored = service.restore(CUSTOMER, record["id"])
    assert restored["deleted_at"] is None and restored["row_version"] == 3
    assert events[-1].kind == "restored"
    assert service.get(CUSTOMER, record["id"])["display_name"] == "gone"
    with pytest.raises(NotFound):
        service.restore(CUSTOMER, record["id"])
    # a restored record's unique value is checked again
    service.update(CUSTOMER, record["id"], {"external_id": "X1"})
    service.delete(CUSTOMER, record["id"])
    service.create(CUSTOMER, {"display_name": "new", "external_id": "X2"})


def test_history_has_one_entry_per_change(demo: Demo) -> None:
    retail = demo.service("retail")
    admin = demo.service("admin")
    record = retail.create(CUSTOMER, {"display_name": "A", "store_code": "S1"})
    admin.update(CUSTOMER, record["id"], {"city": "Taipei"})
    retail.update(CUSTOMER, record["id"], {"store_code": "S2", "city": "Tainan"})
    admin.delete(CUSTOMER, record["id"])
    retail.restore(CUSTOMER, record["id"])
    entries = admin.history(CUSTOMER, record["id"])
    assert [e["action"] for e in entries] == ["created", "updated", "updated", "deleted",
                                             "restored"]
    assert [e["actor"] for e in entries] == [demo.user_ids[u] for u in (
        "retail", "admin", "retail", "admin", "retail")]
    created = entries[0]["changes"]
    assert created["display_name"] == {"before": None, "after": "A"}
    assert created["store_code"] == {"before": None, "after": "S1"}
    assert created["membership_level"] == {"before": None, "after": "bronze"}
    assert created["number"]["after"].startswith("C-")
    assert entries[1]["changes"] == {"city": {"before": None, "after": "Taipei"}}
    assert entries[2]["changes"] == {"store_code": {"before": "S1", "after": "S2"},
                                     "city": {"before": "Taipei", "after": "Tainan"}}
    assert entries[3]["changes"]["deleted_at"]["before"] is None
    assert entries[3]["changes"]["deleted_at"]["after"] is not None
    assert entries[4]["changes"]["deleted_at"]["after"] is None
    assert all(e["entity"] == CUSTOMER and e["record_id"] == record["id"] for e in entries)
    assert admin.history(CUSTOMER, 999) == []


# -- events -------------------------------------------------------------------------------------

def test_events_are_emitted_after_commit(demo: Demo) -> None:
    seen: list[tuple[RecordEvent, dict[str, Any] | None]] = []

    def look(event: RecordEvent) -> None:
        # a separate connection sees the change: the transaction has committed
        try:
            found = demo.service(None, emit=False).get(event.entity, event.record_id,
                                                       include_deleted=True)
        except NotFound:
            found = None
        seen.append((event, found))

    demo.platform.subscribe(look)
    service = demo.service("retail")
    record = service.create(CUSTOMER, {"display_name": "A", "store_code": "S1"})
    service.update(CUSTOMER, record["id"], {"store_code": "S2"})
    service.delete(CUSTOMER, record["id"])
    service.restore(CUSTOMER, record["id"])
    assert [e.kind for e, _ in seen] == ["created", "updated", "deleted", "restored"]
    assert all(found is not None for _, found in seen)
    created, updated = seen[0][0], seen[1][0]
    assert created.tenant == demo.slug and created.entity == CUSTOMER
    assert created.actor == demo.user_ids["retail"]
    assert created.version == demo.runtime.version
    assert created.record["store_code"] == "S1"
    assert created.changes["display_name"] == (None, "A")
    assert updated.changes == {"store_code": ("S1", "S2")}
    assert updated.record["row_version"] == 2
    assert seen[1][1]["row_version"] == 2  # committed before the event
    assert seen[2][1]["deleted_at"] is not None


def test_no_event_when_the_transaction_fails(demo: Demo, events: list[RecordEvent],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    service = demo.service()
    record = service.create(CUSTOMER, {"display_name": "A"})
    count = len(events)

    def broken_audit(*_: Any, **__: Any) -> None:
        raise RuntimeError("the audit table is on fire")

    monkeypatch.setattr(records.RecordService, "_audit", broken_audit)
    with pytest.raises(RuntimeError):
        service.create(CUSTOMER, {"display_name": "B"})
    with pytest.raises(RuntimeError):
        service.update(CUSTOMER, record["id"], {"city": "X"})
    with pytest.raises(RuntimeError):
        service.delete(CUSTOMER, record["id"])
    monkeypatch.undo()
    assert len(events) == count
    # nothing of the failed transactions was written (the counter, the row, the update)
    items = service.list(CUSTOMER, ListQuery(include_deleted=True)).items
    assert [(r["display_name"], r["city"], r["row_version"], r["deleted_at"])
            for r in items] == [("A", None, 1, None)]
    year = dt.datetime.now(dt.UTC).year
    assert service.create(CUSTOMER, {"display_name": "C"})["number"] == f"C-{year}-000002"


def test_a_failing_subscriber_does_not_undo_a_committed_write(demo: Demo) -> None:
    delivered: list[str] = []

    def broken(_: RecordEvent) -> None:
        raise RuntimeError("subscriber bug")

    demo.platform.subscribe(lambda e: delivered.append(e.kind))
    demo.platform.subscribe(broken)
    record = demo.service().create(CUSTOMER, {"display_name": "A"})  # does not raise
    updated = demo.service().update(CUSTOMER, record["id"], {"city": "X"})
    assert delivered == ["created", "updated"]
    assert demo.service().get(CUSTOMER, record["id"]) == updated


# -- bulk upsert --------------------------------------------------------------------------------

def test_bulk_upsert_by_a_unique_key(demo: Demo) -> None:
    service = demo.service()
    existing = service.create(CUSTOMER, {"display_name": "Old", "external_id": "E1"})
    result = service.bulk_upsert(CUSTOMER, [
        {"external_id": "E1", "display_name": "Updated"},
        {"external_id": "E2", "display_name": "New"},
        {"external_id": "E3", "display_name": "Bad", "kind": "alien"},
        "not an object",
        {"display_name": "No key"},
        {"external_id": "E2", "city": "Again"},
    ], key="external_id")
    assert result.updated == [existing["id"], result.created[0]]
    assert len(result.created) == 2
    assert set(result.errors) == {2, 3}
    assert result.errors[2]["status"] == 422 and "kind" in result.errors[2]["errors"]
    assert result.errors[3]["status"] == 422
    assert service.get(CUSTOMER, existing["id"])["display_name"] == "Updated"
    new = service.get(CUSTOMER, result.created[0])
    assert (new["display_name"], new["city"], new["row_version"]) == ("New", "Again", 2)

    with pytest.raises(ValidationFailed) as caught:
        service.bulk_upsert(CUSTOMER, [{"display_name": "x"}], key="city")
    assert "key" in caught.value.errors
    plain = service.bulk_upsert(TAG, [{"name": "a"}, {"name": "a"}])
    assert len(plain.created) == 1 and plain.errors[1]["status"] == 409


# -- keyset pagination ----------------------------------------------------------------------------

SORTABLE = ["display_name", "city", "birthday", "lifetime_value", "is_vip", "kind",
            "created_at", "id"]
texts = st.sampled_from(["", "a", "ab", "b", "ba", "bb"])
rows = st.fixed_dictionaries({
    "display_name": texts,
    "city": st.none() | texts,
    "birthday": st.none() | st.sampled_from([dt.date(1990, 1, 1), dt.date(2000, 2, 29),
                                             dt.date(2000, 3, 1)]),
    "lifetime_value": st.none() | st.sampled_from([Decimal("0"), Decimal("1.50"),
                                                   Decimal("10"), Decimal("100.25")]),
    "is_vip": st.booleans(),
    "kind": st.sampled_from(["person", "company"]),
    "deleted": st.sampled_from([False, False, False, True]),
})
sorts = st.lists(st.tuples(st.sampled_from(SORTABLE), st.booleans()), max_size=3,
                 unique_by=lambda t: t[0])


def python_order(items: list[dict[str, Any]], sort: list[tuple[str, bool]]) -> list[int]:
    """Ids in the order the API promises: each key NULLs last, then ids ascending."""

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for name, desc in sort:
            if name == "id":
                return (a["id"] > b["id"]) - (a["id"] < b["id"]) if not desc else \
                    (a["id"] < b["id"]) - (a["id"] > b["id"])
            x, y = a[name], b[name]
            if x is None and y is None:
                continue
            if x is None or y is None:
                return 1 if x is None else -1
            if x != y:
                return (1 if x > y else -1) * (-1 if desc else 1)
        return (a["id"] > b["id"]) - (a["id"] < b["id"])

    return [r["id"] for r in sorted(items, key=functools.cmp_to_key(compare))]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.lists(rows, max_size=22), sort=sorts, page=st.integers(1, 7))
def test_keyset_pagination_visits_every_record_once(demo: Demo, data: list[dict[str, Any]],
                                                    sort: list[tuple[str, bool]],
                                                    page: int) -> None:
    table = demo.table(CUSTOMER)
    with demo.runtime.begin() as connection:
        connection.execute(table.delete())
        now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        for index, row in enumerate(data):
            values = {k: v for k, v in row.items() if k != "deleted"}
            connection.execute(table.insert().values(
                **values, row_version=1, created_at=now + dt.timedelta(seconds=index % 3),
                updated_at=now, deleted_at=now if row["deleted"] else None))
        stored = [dict(r) for r in connection.execute(sa.select(table)).mappings()]
    for item in stored:  # the Python side compares the values the database returns
        if isinstance(item["created_at"], dt.datetime) and item["created_at"].tzinfo is None:
            item["created_at"] = item["created_at"].replace(tzinfo=dt.UTC)
    alive = [r for r in stored if r["deleted_at"] is None]
    expected = python_order(alive, sort)

    service = demo.service(emit=False)
    seen: list[int] = []
    cursor = None
    for _ in range(len(alive) + 2):
        result = service.list(CUSTOMER, ListQuery(sort=tuple(sort), limit=page, cursor=cursor))
        assert len(result.items) <= page
        seen.extend(item["id"] for item in result.items)
        cursor = result.next_cursor
        if cursor is None:
            break
    assert cursor is None, "pagination did not end"
    assert len(seen) == len(set(seen)), "a record appeared on two pages"
    assert seen == expected


def test_bad_cursors_are_refused(demo: Demo) -> None:
    service = demo.service()
    for i in range(3):
        service.create(CUSTOMER, {"display_name": f"c{i}", "birthday": f"2000-01-0{i + 1}"})
    by_birthday = (("birthday", False),)
    page = service.list(CUSTOMER, ListQuery(sort=by_birthday, limit=1))
    assert page.next_cursor
    bad = ["!!!", "bm90IGpzb24", records.encode_cursor([1]),
           records.encode_cursor([0, "yesterday", 1]),
           records.encode_cursor([0, "2000-01-01", "one"]),
           records.encode_cursor([0, "2000-01-01", True])]
    for cursor in bad:
        with pytest.raises(RecordError) as caught:
            service.list(CUSTOMER, ListQuery(sort=by_birthday, limit=1, cursor=cursor))
        assert caught.value.status == 400, cursor
    # a cursor of one sort does not fit another
    with pytest.raises(RecordError):
        service.list(CUSTOMER, ListQuery(sort=(*by_birthday, ("city", False)), limit=1,
                                         cursor=page.next_cursor))
    for unsortable in ("store_code", "profile", "tags", "value_tier"):  # another unit's,
        with pytest.raises(RecordError):  # JSON, links, computed
            service.list(CUSTOMER, ListQuery(sort=((unsortable, False),)))


# -- expand and statement counts -----------------------------------------------------------------

def statements(found: list[str]) -> list[str]:
    """Queries only: transaction control (BEGIN, COMMIT, SET) is not a query."""
    return [s for s in found if s.split(None, 1)[0].upper() not in (
        "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET")]


def test_expand_returns_the_referenced_record_in_one_query(
        demo: Demo, statement_counter: StatementCounter) -> None:
    service = demo.service()
    customers = [service.create(CUSTOMER, {"display_name": f"c{i}"}) for i in range(3)]
    points = [service.create(CONTACT_POINT, {"customer": customers[i % 3]["id"],
                                             "channel": "sms", "value": str(i)})
              for i in range(7)]
    service.delete(CUSTOMER, customers[2]["id"])  # its points keep a bare reference

    with statement_counter.counting() as found:
        plain = service.get(CONTACT_POINT, points[0]["id"])
    assert len(statements(found)) == 1
    assert plain["customer"] == customers[0]["id"]

    with statement_counter.counting() as found:
        one = service.get(CONTACT_POINT, points[0]["id"], expand=["customer"])
    assert len(statements(found)) == 2, found
    assert one["customer"]["id"] == customers[0]["id"]
    assert one["customer"]["display_name"] == "c0"
    assert one["customer"]["value_tier"] == "standard"

    with statement_counter.counting() as found:
        page = service.list(CONTACT_POINT, ListQuery(expand=("customer",), limit=100))
    assert len(statements(found)) == 2, found
    by_id = {item["id"]: item for item in page.items}
    assert by_id[points[1]["id"]]["customer"]["display_name"] == "c1"
    assert by_id[points[2]["id"]]["customer"] == {"id": customers[2]["id"]}

    with statement_counter.counting() as found:
        service.list(CONTACT_POINT, ListQuery(limit=100))
    assert len(statements(found)) == 1
    with statement_counter.counting() as found:
        counted = service.list(CONTACT_POINT, ListQuery(expand=("customer",), count=True))
    assert len(statements(found)) == 3 and counted.count == 7

    with pytest.raises(ValidationFailed):
        service.get(CONTACT_POINT, points[0]["id"], expand=["channel"])


def test_fields_selects_and_count_is_capped(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    service = demo.service()
    for i in range(5):
        service.create(CUSTOMER, {"display_name": f"c{i}", "city": "X"})
    page = service.list(CUSTOMER, ListQuery(fields=("display_name",), count=True, limit=2))
    assert all(set(item) == {"id", "row_version", "display_name"} for item in page.items)
    assert (page.count, page.count_exact) == (5, True)
    monkeypatch.setattr(records, "COUNT_CAP", 3)
    capped = service.list(CUSTOMER, ListQuery(count=True, limit=2))
    assert (capped.count, capped.count_exact) == (3, False)


def test_a_time_with_an_offset_is_stored_as_the_same_instant(demo: Demo) -> None:
    """SQLite keeps no offset: 10:30+08:00 must come back as 02:30Z, as on PostgreSQL."""
    service = demo.service()
    customer = service.create(CUSTOMER, {"display_name": "Offset"})
    point = service.create(CONTACT_POINT, {
        "customer": customer["id"], "channel": "email", "value": "o@example.com",
        "consent_at": "2026-01-02T10:30:00+08:00"})
    assert point["consent_at"] == "2026-01-02T02:30:00+00:00"
    assert service.get(CONTACT_POINT, point["id"])["consent_at"] == "2026-01-02T02:30:00+00:00"
    found = service.list(CONTACT_POINT, ListQuery(filter={
        "field": "consent_at", "op": "eq", "value": "2026-01-02T02:30:00Z"}))
    assert [p["id"] for p in found.items] == [point["id"]]
