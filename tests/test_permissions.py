"""Permissions in the record service: the matrix of roles, scopes, actions and entities,
field access, conditions on grants, sharing, and headquarters against business units."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from permworld import ENTITIES, USERS, World, build_world, library, table_rows

from metacrm.metadata.ir import SCOPES
from metacrm.platform.orgtree import OrgTree
from metacrm.platform.records import (
    Forbidden,
    ListQuery,
    NotFound,
    RecordError,
    ValidationFailed,
)
from metacrm.platform.systables import runtime_system_tables


@pytest.fixture
def world(make_platform) -> World:
    return build_world(make_platform(library()))


def _live(world: World, entity: str) -> dict[int, dict]:
    return {r["id"]: r for r in table_rows(world, entity) if r["deleted_at"] is None}


def _deleted(world: World, entity: str) -> dict[int, dict]:
    return {r["id"]: r for r in table_rows(world, entity) if r["deleted_at"] is not None}


def _all_ids(service, entity: str, action: str = "read") -> set[int]:
    ids, cursor = set(), None
    while True:
        page = service.list(entity, ListQuery(limit=3, cursor=cursor), action=action)
        ids.update(item["id"] for item in page.items)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


@pytest.mark.parametrize("scope", SCOPES)
def test_permission_matrix(world: World, scope: str) -> None:
    """Every user holding only `scope_<scope>` reaches exactly the records the model says,
    for every action, on both entities."""
    for username in USERS:
        world.grant(username, f"scope_{scope}")
        service = world.service(username)
        for entity in ENTITIES:
            rows = _live(world, entity)
            allowed = {i for i, r in rows.items() if world.expected(scope, username, r)}
            where = f"{username} with {scope} on {entity}"
            if scope == "none":
                with pytest.raises(NotFound):  # no grant at all: the entity is not there
                    service.list(entity, ListQuery())
                continue
            assert _all_ids(service, entity) == allowed, where
            assert _all_ids(service, entity, "export") == allowed, where
            page = service.list(entity, ListQuery(count=True))
            assert page.count == len(allowed), where
            for record_id, row in rows.items():
                if record_id in allowed:
                    assert service.get(entity, record_id)["id"] == record_id
                    changed = service.update(entity, record_id, _change(entity, row))
                    assert changed["row_version"] == row["row_version"] + 1
                    service.assign(entity, record_id, row["owner"])
                    service.delete(entity, record_id)
                    assert service.restore(entity, record_id)["deleted_at"] is None
                else:
                    for call, args in ((service.get, ()),
                                       (service.update, (_change(entity, row),)),
                                       (service.assign, (row["owner"],)),
                                       (service.delete, ())):
                        with pytest.raises(NotFound):
                            call(entity, record_id, *args)
            created = service.create(entity, _new(entity, username))
            assert created["owner"] == world.ids[username]
            assert created["business_unit"] == USERS[username][1]
            world.service(None).delete(entity, created["id"])
        deleted = _deleted(world, "sales.deal")
        for record_id, row in deleted.items():
            if row["title"].endswith("-deleted") and world.expected(scope, username, row):
                service.restore("sales.deal", record_id)
                service.delete("sales.deal", record_id)
            elif row["title"].endswith("-deleted") and scope != "none":
                with pytest.raises(NotFound):
                    service.restore("sales.deal", record_id)


def _change(entity: str, row: dict) -> dict:
    key = "title" if entity == "sales.deal" else "name"
    return {key: row[key] + "!"}


def _new(entity: str, username: str) -> dict:
    return {"title": f"new by {username}"} if entity == "sales.deal" else \
        {"name": f"new by {username}"}


def test_no_roles_sees_no_entity(world: World) -> None:
    world.grant("a")
    service = world.service("a")
    assert service.visible_entities() == []
    for entity in ENTITIES:
        with pytest.raises(NotFound):
            service.list(entity, ListQuery())
        with pytest.raises(NotFound):
            service.create(entity, _new(entity, "a"))


def test_an_action_not_granted_is_forbidden_on_records_the_user_can_read(
        world: World) -> None:
    world.grant("a", "open_only")
    service = world.service("a")
    deal = world.records["sales.deal"][1]  # a won deal: open_only may not update it
    assert service.get("sales.deal", deal["id"])["id"] == deal["id"]
    with pytest.raises(Forbidden) as refused:
        service.update("sales.deal", deal["id"], {"title": "x"})
    assert refused.value.status == 403 and "update" in refused.value.detail
    with pytest.raises(Forbidden):
        service.delete("sales.deal", deal["id"])
    with pytest.raises(Forbidden):
        service.create("sales.deal", {"title": "x"})
    with pytest.raises(Forbidden):
        list(service.export("sales.deal", ListQuery()))
    with pytest.raises(Forbidden):
        service.bulk_upsert("sales.deal", [{"title": "x"}])


def test_roles_add_up(world: World) -> None:
    world.grant("a", "scope_own", "scope_business_unit")
    service = world.service("a")
    rows = _live(world, "sales.deal")
    expected = {i for i, r in rows.items() if world.expected("own", "a", r)
                or world.expected("business_unit", "a", r)}
    assert _all_ids(service, "sales.deal") == expected


# -- fields ----------------------------------------------------------------------------------


def test_hidden_fields_vanish_and_read_only_fields_refuse_changes(world: World) -> None:
    world.grant("a", "limited")
    service = world.service("a")
    deal = world.records["sales.deal"][0]
    record = service.get("sales.deal", deal["id"])
    assert "secret" not in record and "score" not in record
    assert "doubled" not in record  # a formula over a hidden field would reveal it
    assert record["amount"] == deal["amount"] and record["title"] == deal["title"]
    listed = service.list("sales.deal", ListQuery())
    assert all("secret" not in item and "score" not in item for item in listed.items)
    assert "secret" not in service.export_columns("sales.deal")

    with pytest.raises(Forbidden) as refused:
        service.update("sales.deal", deal["id"], {"amount": "99.00"})
    assert refused.value.errors == {"amount": ["your roles may read this field but not "
                                               "change it"]}
    # sending back the value read is not a change
    assert service.update("sales.deal", deal["id"], {"amount": record["amount"],
                                                     "title": "renamed"})["title"] == "renamed"
    with pytest.raises(ValidationFailed) as unknown:
        service.update("sales.deal", deal["id"], {"secret": "guess"})
    assert "secret" in unknown.value.errors
    with pytest.raises(Forbidden):
        service.create("sales.deal", {"title": "t", "amount": "5"})
    created = service.create("sales.deal", {"title": "t"})
    assert created["amount"] == "0.00"  # the default still applies to a read-only field
    full = world.service(None).get("sales.deal", created["id"])
    assert full["secret"] is None and full["doubled"] is None

    with pytest.raises(ValidationFailed):
        service.list("sales.deal", ListQuery(filter={"field": "secret", "op": "eq",
                                                     "value": "secret-a-0"}))
    with pytest.raises(RecordError):
        service.list("sales.deal", ListQuery(sort=(("score", False),)))


def test_history_leaves_out_hidden_fields(world: World) -> None:
    deal = world.records["sales.deal"][0]
    world.service(None).update("sales.deal", deal["id"], {"secret": "new", "title": "t2"})
    world.grant("a", "limited")
    entries = world.service("a").history("sales.deal", deal["id"])
    assert entries and all("secret" not in e["changes"] and "score" not in e["changes"]
                           for e in entries)
    assert any("title" in e["changes"] for e in entries)


def test_grant_conditions_limit_an_action(world: World) -> None:
    world.grant("a", "open_only")
    service = world.service("a")
    deals = {d["title"]: d for d in world.records["sales.deal"]}
    service.update("sales.deal", deals["b-deal-0"]["id"], {"title": "still open"})
    with pytest.raises(Forbidden):
        service.update("sales.deal", deals["b-deal-1"]["id"], {"title": "won already"})


def test_paths_through_references_see_only_readable_targets(world: World) -> None:
    world.grant("a", "account_reader")
    service = world.service("a")
    mine = service.list("sales.deal", ListQuery(filter={
        "field": "account.name", "op": "eq", "value": "a-acct-0"}))
    assert [d["title"] for d in mine.items] == ["a-deal-0"]
    theirs = service.list("sales.deal", ListQuery(filter={
        "field": "account.name", "op": "eq", "value": "b-acct-0"}))
    assert theirs.items == []  # b's account is not a's to read, so it matches nothing
    expanded = service.list("sales.deal", ListQuery(expand=("account",), limit=500)).items
    for deal in expanded:
        owner = world.name_of(deal["owner"])
        if owner == "a":
            assert deal["account"]["name"].startswith("a-acct")
        else:
            assert deal["account"] == {"id": deal["account"]["id"]}
    foreign = next(r for r in world.records["sales.account"] if r["owner"] != world.ids["a"])
    with pytest.raises(ValidationFailed) as refused:  # a record a may not read does not exist
        service.create("sales.deal", {"title": "x", "account": foreign["id"]})
    assert refused.value.errors == {
        "account": [f"there is no sales.account with id {foreign['id']}"]}
    own = next(r for r in world.records["sales.account"] if r["owner"] == world.ids["a"])
    assert service.create("sales.deal", {"title": "y", "account": own["id"]})["account"] == \
        own["id"]


# -- sharing ---------------------------------------------------------------------------------


def test_sharing_a_record_with_a_user_and_with_a_unit(world: World) -> None:
    deals = {d["title"]: d for d in world.records["sales.deal"]}
    target = deals["s-deal-0"]
    world.grant("a", "scope_own")
    world.grant("s", "scope_own")
    world.grant("c", "scope_own")
    a, owner = world.service("a"), world.service("s")
    with pytest.raises(NotFound):
        a.get("sales.deal", target["id"])
    share = owner.share("sales.deal", target["id"], user_id=world.ids["a"])
    assert a.get("sales.deal", target["id"])["title"] == "s-deal-0"
    assert target["id"] in _all_ids(a, "sales.deal")
    with pytest.raises(Forbidden):  # a read share does not let a change it
        a.update("sales.deal", target["id"], {"title": "mine now"})
    owner.unshare("sales.deal", target["id"], share["id"])
    with pytest.raises(NotFound):
        world.service("a").get("sales.deal", target["id"])

    owner.share("sales.deal", target["id"], unit="n1", access="edit")
    c = world.service("c")  # n1b lies under n1: a unit share reaches the subtree
    assert c.update("sales.deal", target["id"], {"title": "edited by c"})["title"] == \
        "edited by c"
    assert target["id"] in _all_ids(c, "sales.deal")
    world.grant("h", "scope_own")
    assert target["id"] not in _all_ids(world.service("h"), "sales.deal")
    shares = owner.shares("sales.deal", target["id"])
    assert [(s["unit"], s["access"]) for s in shares] == [("n1", "edit")]
    with pytest.raises(NotFound):  # only those who may reassign it may share it
        world.service("h").share("sales.deal", target["id"], user_id=world.ids["h"])


# -- headquarters and business units ----------------------------------------------------------


def test_unit_only_keeps_every_grant_inside_the_users_business_unit(make_platform) -> None:
    world = build_world(make_platform(library("unit_only")))
    for username in ("m", "s", "h"):
        world.grant(username, "scope_all")
        seen = _all_ids(world.service(username), "sales.deal")
        rows = _live(world, "sales.deal")
        assert seen == {i for i, r in rows.items()
                        if r["business_unit"] == USERS[username][1]}, username


def test_across_units_lets_headquarters_see_every_unit(world: World) -> None:
    world.grant("h", "scope_all")
    assert _all_ids(world.service("h"), "sales.deal") == set(_live(world, "sales.deal"))


def test_business_unit_comes_from_the_primary_org_unit(world: World) -> None:
    world.grant("a", "scope_business_unit")
    assert world.service("a").actor.unit == "north"
    with world.runtime.begin() as connection:
        users = world.runtime.extras["system_tables"].users
        connection.execute(users.update().where(users.c.id == world.ids["a"]).values(
            business_unit="south"))  # the user record says south; the org tree says north
    assert world.service("a").actor.unit == "north"


def test_scopes_are_sql_not_fetch_then_filter(world: World) -> None:
    """A subtree-scoped list asks the database for the page only: one SELECT whose WHERE
    holds the scope (the subtree's people are looked up once per org-tree version)."""
    world.grant("m", "scope_subtree")
    world.service("m").list("sales.deal", ListQuery(limit=2))  # learns m's subtree
    statements: list[str] = []
    engine = world.runtime.db.engine

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        page = world.service("m").list("sales.deal", ListQuery(limit=2))
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    pages = [s for s in statements if "sales" in s.lower() and "deal" in s.lower()]
    assert len(pages) == 1
    assert ("owner IN" in pages[0] or "owner = ANY" in pages[0]) and "LIMIT" in pages[0].upper()
    assert len(page.items) == 2


def test_a_move_in_the_org_tree_changes_scopes_at_once(world: World) -> None:
    """Moving n1b (c's team) from n1 to south: m no longer reaches c's records, and the
    south user s, given subtree scope on `south`, does; no record changes."""
    world.grant("m", "scope_subtree")
    rows_before = table_rows(world, "sales.deal")
    c_deals = {r["id"] for r in rows_before if r["owner"] == world.ids["c"]
               and r["deleted_at"] is None}
    assert c_deals <= _all_ids(world.service("m"), "sales.deal")
    with world.runtime.begin() as connection:
        tree = OrgTree(connection, runtime_system_tables(world.runtime))
        tree.move("n1b", "south")
    assert not c_deals & _all_ids(world.service("m"), "sales.deal")
    with world.runtime.begin() as connection:
        OrgTree(connection, runtime_system_tables(world.runtime)).place(world.ids["s"], "south")
    world.grant("s", "scope_subtree")
    assert c_deals <= _all_ids(world.service("s"), "sales.deal")
    assert table_rows(world, "sales.deal") == rows_before
