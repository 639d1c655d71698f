
"""CSV import for any entity: `metacrm import` and the admin's import page. Header mapping,
per-row errors in the report, dry runs, duplicates, updates by key, the bulk hook, the
audit and import log, permissions, progress, and export → import round trips."""

from __future__ import annotations

import contextvars
import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

pytest.register_assert_rewrite("apifixtures", "customerworld")
from apifixtures import Demo  # noqa: E402
from customerworld import CUSTOMER, MEMBER, ORDER, TAG, make_world  # noqa: E402

from metacrm.cli import main  # noqa: E402
from metacrm.engines.duplicates.tables import MATCH_KEYS, REVIEWS  # noqa: E402
from metacrm.hookspecs import hookimpl  # noqa: E402
from metacrm.platform.importer import Importer, ImportFailed, data_rows, import_csv  # noqa: E402
from metacrm.platform.importer.log import IMPORTS  # noqa: E402
from metacrm.platform.records import Conflict, NotFound  # noqa: E402

pytest_plugins = ["apifixtures", "customerworld"]


def write_csv(path: Path, rows: list[list[Any]], *, bom: bool = False) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(("\ufeff" if bom else "") + buffer.getvalue(), "utf-8")
    return path


def run_import(world: Demo, *args: str) -> Any:
    return CliRunner().invoke(main, ["import", world.slug, *args], env=world.project.env())


def report_rows(path: Path) -> list[tuple[int, str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(int(r["row"]), r["field"], r["message"]) for r in csv.DictReader(handle)]


def count(world: Demo, table: sa.Table | str, *where: Any) -> int:
    if isinstance(table, str):
        table = world.service().system.table(table)
    with world.connection() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table).where(
            *where)).scalar()


def customers(world: Demo) -> list[dict[str, Any]]:
    service = world.service()
    table = world.table(CUSTOMER)
    with world.connection() as connection:
        ids = [r for (r,) in connection.execute(sa.select(table.c.id).order_by(table.c.id))]
    return [service.get(CUSTOMER, i, include_deleted=True) for i in ids]


# -- the command ---------------------------------------------------------------------------------

def test_an_import_creates_records_with_defaults_numbers_audit_and_a_log(world: Demo,
                                                                         tmp_path: Path) -> None:
    tags = [world.service().create(TAG, {"name": n})["id"] for n in ("a", "b")]
    path = write_csv(tmp_path / "people.csv", [
        ["名稱", "E-mail", "phone", "Kind", "city", "VIP", "lifetime_value", "tags", "profile"],
        ["王小明", "wang@example.com", "138 0013 8000", "person", "上海", "yes", "12.50",
         f"{tags[0]};{tags[1]}", '{"source": "fair"}'],
        ["Acme Ltd", "", "", "company", "Shanghai", "", "", "", ""],
    ], bom=True)
    result = run_import(world, CUSTOMER, str(path))
    assert result.exit_code == 0, result.output
    assert "2 rows: created 2, updated 0, rejected 0" in result.output
    first, second = customers(world)
    assert first["display_name"] == "王小明" and first["is_vip"] is True
    assert first["lifetime_value"] == "12.50" and first["profile"] == {"source": "fair"}
    assert world.service().links(CUSTOMER, first["id"])["tags"] == tags
    assert second["kind"] == "company" and second["is_vip"] is False  # defaults
    assert second["lifetime_value"] == "0.00" and second["email"] is None
    assert [first["number"][-6:], second["number"][-6:]] == ["000001", "000002"]
    assert world.service().create(CUSTOMER, {"display_name": "after"})["number"][-6:] == \
        "000003"  # the counter moved past the imported numbers
    (entry,) = world.service().history(CUSTOMER, second["id"])
    assert entry["action"] == "imported" and entry["changes"]["row"]["after"] == 2
    import_id = entry["changes"]["import"]["after"]
    imports = world.service().system.table(IMPORTS)
    with world.connection() as connection:
        log = connection.execute(sa.select(imports)).mappings().one()
    assert log["id"] == import_id and log["file"] == "people.csv"
    assert (log["status"], log["rows"], log["created"], log["rejected"]) == ("done", 2, 2, 0)
    assert not (tmp_path / "people.csv.errors.csv").exists()


def test_rows_that_fail_are_reported_and_the_others_imported(world: Demo,
                                                            tmp_path: Path) -> None:
    taken = 'X-1 "quoted", {braced} \\ back'  # array syntax in a value
    world.service().create(CUSTOMER, {"display_name": "Existing", "external_id": taken})
    path = write_csv(tmp_path / "mixed.csv", [
        ["display_name", "email", "is_vip", "lifetime_value", "external_id", "tags"],
        ["Good", "good@example.com", "no", "1", "X-2", ""],
        ["Bad mail", "not-an-email", "maybe", "-5", "", ""],
        ["", "noname@example.com", "", "", "", ""],
        ["Taken", "", "", "", taken, ""],
        ["Twice", "", "", "", "X-2", ""],
        ["No tag", "", "", "", "", "999"],
        ["", "", "", "", "", ""],
        ["Also good", "", "", "", "X-3", ""],
    ])
    report = tmp_path / "errors.csv"
    result = run_import(world, CUSTOMER, str(path), "--report", str(report))
    assert result.exit_code == 1, result.output
    assert "8 rows" not in result.output  # the blank line is not a row
    assert "7 rows: created 2, updated 0, rejected 5" in result.output
    assert [c["display_name"] for c in customers(world)] == ["Existing", "Good", "Also good"]
    rows = report_rows(report)
    assert rows == [
        (2, "email", "'not-an-email' is not a valid e-mail address"),
        (2, "is_vip", "not true or false (write true/false, yes/no or 1/0)"),
        (2, "lifetime_value", "-5 is below the minimum 0"),
        (3, "display_name", "a value is required"),
        (4, "external_id", "another record already has this value"),
        (5, "external_id", "another record already has this value"),
        (6, "tags", "there is no customer.tag with id 999"),
    ]
    assert f"{len(rows)} error(s) listed in {report}" in result.output


def test_a_dry_run_checks_everything_and_writes_nothing(world: Demo, tmp_path: Path) -> None:
    world.service().create(CUSTOMER, {"display_name": "Existing", "email": "e@example.com"})
    path = write_csv(tmp_path / "dry.csv", [
        ["display_name", "email", "external_id"],
        ["One", "E@example.com", "K-1"], ["Two", "", "K-1"], ["", "", ""], ["Three", "x", ""]])
    before = (count(world, world.table(CUSTOMER)), count(world, MATCH_KEYS),
              count(world, world.service().system.audit))
    result = run_import(world, CUSTOMER, str(path), "--dry-run")
    assert result.exit_code == 1
    assert "dry run: 3 rows: would create 1, would update 0, rejected 2" in result.output
    assert before == (count(world, world.table(CUSTOMER)), count(world, MATCH_KEYS),
                      count(world, world.service().system.audit))
    assert count(world, IMPORTS) == 0 and count(world, REVIEWS) == 0
    assert [r[:2] for r in report_rows(tmp_path / "dry.csv.errors.csv")] == [
        (2, "external_id"), (4, "email")]  # a dry run sees a value repeated in the file


def test_duplicate_rules_apply_to_imports(world: Demo, tmp_path: Path) -> None:
    existing = world.service().create(CUSTOMER, {"display_name": "Old",
                                                 "email": "old@example.com"})["id"]
    path = write_csv(tmp_path / "dups.csv", [
        ["display_name", "email", "phone", "kind", "city"],
        ["New old", "OLD@example.com", "", "person", ""],
        ["P1", "", "+8613800138000", "person", ""],
        ["P2", "", "138 0013 8000", "person", ""],
        ["Acme Ltd", "", "", "company", "Shanghai"],
        ["ACME Limited", "", "", "company", "shanghai"]])
    result = run_import(world, CUSTOMER, str(path), "--batch", "2")
    assert result.exit_code == 0, result.output
    assert "3 possible duplicate pairs queued for review" in result.output
    ids = {c["display_name"]: c["id"] for c in customers(world)}
    queue = world.get(world.entity_url(CUSTOMER, tail="/duplicates")).get_json()["items"]
    assert sorted((i["rule"], [r["id"] for r in i["records"]]) for i in queue) == [
        ("company", [ids["Acme Ltd"], ids["ACME Limited"]]),
        ("email", [existing, ids["New old"]]),
        ("phone", [ids["P1"], ids["P2"]])]
    assert count(world, MATCH_KEYS) == 6  # every imported key is kept for later writes
    later = world.service().create(CUSTOMER, {"display_name": "P3", "phone": "13800138000"})
    candidates = world.get(world.entity_url(CUSTOMER, later["id"], "/duplicates")).get_json()
    assert {c["record"]["id"] for c in candidates["items"]} == {ids["P1"], ids["P2"]}


def test_block_rules_reject_rows_from_the_table_and_from_earlier_rows(world: Demo,
                                                                     tmp_path: Path) -> None:
    world.service().create(MEMBER, {"name": "Ann", "email": "ann@example.com"})
    path = write_csv(tmp_path / "members.csv", [
        ["name", "email", "phone", "tier"],
        ["Ann again", "ANN@example.com", "", "basic"],
        ["Bob", "bob@example.com", "+8613800138000", "vip"],
        ["Bob twin", "", "13800138000", "vip"],
        ["Bob basic", "", "13800138000", "basic"],
        ["Bob 2", "BOB@example.com", "", "basic"]])
    for dry in (True, False):
        report = tmp_path / f"members-{dry}.csv"
        result = run_import(world, MEMBER, str(path), "--batch", "2", "--report", str(report),
                            *(["--dry-run"] if dry else []))
        assert result.exit_code == 1, result.output
        assert re.search(r"create[d]? 2, .*rejected 3", result.output), result.output
        rows = report_rows(report)
        assert [(r[0], r[1]) for r in rows] == [(1, "email"), (3, "phone"), (5, "email")]
        assert "duplicate rule `email`" in rows[0][2]
        # nothing of a dry run is written: the earlier row is known from the file itself
        assert ("row 2 of this file" if dry else "shop.member 2") in rows[2][2]
    names = world.get(world.entity_url(MEMBER) + "?sort=id").get_json()["items"]
    assert [n["name"] for n in names] == ["Ann", "Bob", "Bob basic"]


def test_rows_matching_a_key_update_records_through_the_record_service(
        world: Demo, tmp_path: Path) -> None:
    service = world.service()
    kept = service.create(CUSTOMER, {"display_name": "Kept", "external_id": "K-1",
                                     "city": "Taipei"})["id"]
    path = write_csv(tmp_path / "upsert.csv", [
        ["external_id", "display_name", "city"],
        ["K-1", "Kept (renamed)", ""], ["K-2", "Brand new", "Tainan"],
        ["K-1", "", "not a city" * 20]])
    result = run_import(world, CUSTOMER, str(path), "--key", "external_id")
    assert "3 rows: created 1, updated 1, rejected 1" in result.output, result.output
    record = service.get(CUSTOMER, kept)
    assert record["display_name"] == "Kept (renamed)" and record["city"] == "Taipei"
    history = service.history(CUSTOMER, kept)
    assert history[-1]["action"] == "updated"
    assert history[-1]["changes"]["display_name"]["after"] == "Kept (renamed)"
    refused = run_import(world, CUSTOMER, str(path), "--key", "city")
    assert refused.exit_code == 1 and "not a unique field" in refused.output


def test_export_then_import_round_trips(world: Demo, tmp_path: Path,
                                        make_platform: Any) -> None:
    service = world.service()
    service.create(CUSTOMER, {"display_name": "張三", "email": "z@example.com", "kind": "person",
                              "lifetime_value": "1234.50", "is_vip": True, "city": "台北",
                              "birthday": "1990-02-03", "profile": {"a": [1, 2]},
                              "external_id": "Z-1"})
    service.create(CUSTOMER, {"display_name": "Acme, \"Ltd\"", "kind": "company",
                              "do_not_contact": True})
    exported = tmp_path / "export.csv"
    out = CliRunner().invoke(main, ["export", world.slug, CUSTOMER, "--as", "admin",
                                    "--out", str(exported)], env=world.project.env())
    assert out.exit_code == 0, out.output
    other = make_world(world.project)
    result = run_import(other, CUSTOMER, str(exported))
    assert result.exit_code == 0, result.output
    assert "created 2" in result.output
    assert "skipped columns: id, number, value_tier, created_at" in result.output
    fields = ["display_name", "email", "kind", "lifetime_value", "is_vip", "city", "birthday",
              "profile", "external_id", "do_not_contact", "identified", "value_tier"]
    mine = [{f: c[f] for f in fields} for c in customers(world)]
    theirs = [{f: c[f] for f in fields} for c in customers(other)]
    assert mine == theirs
    # the same file again, matched by id, changes nothing and creates nothing
    again = run_import(world, CUSTOMER, str(exported), "--key", "id")
    assert "created 0, updated 2, rejected 0" in again.output, again.output
    assert [c["row_version"] for c in customers(world)] == [1, 1]


def test_unknown_columns_and_missing_rights_stop_the_import_before_any_row(
        world: Demo, tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [["display_name", "emial"], ["A", "a@example.com"]])
    result = run_import(world, CUSTOMER, str(bad))
    assert result.exit_code == 1 and "unknown column(s) `emial`" in result.output
    good = write_csv(tmp_path / "good.csv", [["display_name"], ["A"]])
    for who in ("rep", "manager"):  # sales reps have no `import`; managers have `import: none`
        refused = run_import(world, CUSTOMER, str(good), "--as", who)
        assert refused.exit_code == 1 and "import" in refused.output, refused.output
    assert count(world, world.table(CUSTOMER)) == 0
    empty = tmp_path / "empty.csv"
    empty.write_text("", "utf-8")
    assert "the file is empty" in run_import(world, CUSTOMER, str(empty)).output
    assert run_import(world, CUSTOMER, str(good), "--as", "steward").exit_code == 0
    audit = world.service().history(CUSTOMER, 1)
    assert audit[0]["actor"] == world.user_ids["steward"]


def test_an_import_as_a_user_keeps_to_their_unit_and_fields(world: Demo,
                                                            tmp_path: Path) -> None:
    service = world.service("steward")
    path = write_csv(tmp_path / "orders.csv", [["reference", "customer"], ["o1", "1"]])
    customer = service.create(CUSTOMER, {"display_name": "C"})["id"]
    assert customer == 1
    with pytest.raises(NotFound):  # no grant at all on orders: the entity is not there
        import_csv(world.service("rep"), ORDER, path)
    with pytest.raises(ImportFailed, match="import"):
        import_csv(world.service("rep"), CUSTOMER, path)
    result = import_csv(world.service("clerk"), ORDER, path)
    assert (result.created, result.rejected) == (0, 1)  # the clerk cannot read customer 1
    assert result.first_errors[0].field == "customer"
    clerk_customer = world.service("clerk").create(CUSTOMER, {"display_name": "Mine"})["id"]
    write_csv(path, [["reference", "customer"], ["o2", str(clerk_customer)]])
    result = import_csv(world.service("clerk"), ORDER, path)
    assert result.created == 1
    order = world.service().get(ORDER, 1)
    assert order["business_unit"] == "retail" and order["owner"] == world.user_ids["clerk"]


class _Watcher:
    """Records each `records_imported` call and what its connection sees."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int], int]] = []

    @hookimpl
    def records_imported(self, entity: str, record_ids: list[int], connection: Any,
                         service: Any) -> None:
        table = service.runtime.tables.by_entity[entity]
        visible = connection.execute(sa.select(sa.func.count()).select_from(table).where(
            table.c.id.in_(record_ids))).scalar()
        self.calls.append((entity, list(record_ids), visible))


def test_plugins_see_each_batch_through_the_bulk_hook(world: Demo, tmp_path: Path) -> None:
    watcher = _Watcher()
    world.platform.plugins.register(watcher)
    try:
        path = write_csv(tmp_path / "five.csv", [["display_name"]] + [[f"N{i}"]
                                                                      for i in range(5)])
        progress: list[int] = []
        result = import_csv(world.service(), CUSTOMER, path, batch_size=2,
                            progress=progress.append)
    finally:
        world.platform.plugins.unregister(watcher)
    assert result.created == 5 and progress == [2, 2, 1]
    assert [(e, len(ids), seen) for e, ids, seen in watcher.calls] == [
        (CUSTOMER, 2, 2), (CUSTOMER, 2, 2), (CUSTOMER, 1, 1)]
    assert sorted(i for _, ids, _ in watcher.calls for i in ids) == \
        [c["id"] for c in customers(world)]


IMPORT_TAG: contextvars.ContextVar[str] = contextvars.ContextVar("import_tag", default="")


def test_the_writer_thread_runs_in_the_callers_context(world: Demo, tmp_path: Path) -> None:
    """Context variables (e.g. the workflow engine's bypass) set around an import hold
    where its batches are written."""
    seen: list[str] = []

    class Reader:
        @hookimpl
        def records_imported(self, entity: str, record_ids: list[int], connection: Any,
                             service: Any) -> None:
            seen.append(IMPORT_TAG.get())

    reader = Reader()
    world.platform.plugins.register(reader)
    token = IMPORT_TAG.set("migration")
    try:
        path = write_csv(tmp_path / "two.csv", [["display_name"], ["A"], ["B"]])
        import_csv(world.service(), CUSTOMER, path, batch_size=1)
    finally:
        IMPORT_TAG.reset(token)
        world.platform.plugins.unregister(reader)
    assert seen == ["migration", "migration"]


def test_a_failing_plugin_rolls_back_only_its_batch(world: Demo, tmp_path: Path) -> None:
    class Refuser:
        @hookimpl
        def records_imported(self, entity: str, record_ids: list[int], connection: Any,
                             service: Any) -> None:
            if len(record_ids) == 1:
                raise Conflict("the plugin said no")

    refuser = Refuser()
    world.platform.plugins.register(refuser)
    try:
        path = write_csv(tmp_path / "three.csv", [["display_name"], ["A"], ["B"], ["C"]])
        result = import_csv(world.service(), CUSTOMER, path, batch_size=2,
                            report=tmp_path / "r.csv")
    finally:
        world.platform.plugins.unregister(refuser)
    assert (result.created, result.rejected) == (2, 1)
    assert report_rows(tmp_path / "r.csv") == [
        (3, "", "the batch could not be written: the plugin said no")]
    assert [c["display_name"] for c in customers(world)] == ["A", "B"]


def test_the_progress_count_comes_from_the_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", [["a"], ["1"], ["2"]])
    assert data_rows(path) == 2
    path.write_text("a\n1\n2", "utf-8")
    assert data_rows(path) == 2


def test_the_importer_reads_any_iterable_of_lines(world: Demo) -> None:
    lines = io.StringIO("display_name,email\nA,a@example.com\n")
    result = Importer(world.service(), CUSTOMER).run(lines)
    assert result.created == 1 and result.rows_per_second > 0


# -- the admin page ------------------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def admin_client(world: Demo, username: str) -> tuple[Any, str]:
    from test_duplicates import admin_session

    return admin_session(world, username)


def test_the_admin_import_page_checks_and_imports_an_upload(world: Demo) -> None:
    client, token = admin_client(world, "steward")
    base = f"/t/{world.slug}/admin/customer/customer"
    listing = client.get(f"{base}/").get_data(as_text=True)
    assert f'href="{base}/import"' in listing and 'id="import-csv"' in listing
    page = client.get(f"{base}/import")
    assert page.status_code == 200 and 'name="dry_run"' in page.get_data(as_text=True)
    upload = "display_name,email\nGood,good@example.com\n,missing@example.com\n"

    def post(dry: bool, with_token: bool = True) -> Any:
        data = {"file": (io.BytesIO(upload.encode()), "people.csv"), "key": ""}
        if with_token:
            data["csrf_token"] = token
        if dry:
            data["dry_run"] = "on"
        return client.post(f"{base}/import", data=data, content_type="multipart/form-data")

    checked = post(dry=True)
    text = checked.get_data(as_text=True)
    assert checked.status_code == 200, text[:2000]
    assert 'data-created="1"' in text and 'data-rejected="1"' in text
    assert 'data-dry-run="true"' in text and 'id="download-report"' in text
    assert "a value is required" in text
    assert count(world, world.table(CUSTOMER)) == 0
    assert post(dry=False, with_token=False).status_code == 400
    imported = post(dry=False).get_data(as_text=True)
    assert 'data-created="1"' in imported and 'data-dry-run="false"' in imported
    assert [c["display_name"] for c in customers(world)] == ["Good"]
    missing = client.post(f"{base}/import", data={"csrf_token": token},
                          content_type="multipart/form-data")
    assert missing.status_code == 422


def test_the_import_page_is_only_for_those_who_may_import(world: Demo) -> None:
    client, _ = admin_client(world, "rep")
    base = f"/t/{world.slug}/admin/customer/customer"
    assert 'id="import-csv"' not in client.get(f"{base}/").get_data(as_text=True)
    assert client.get(f"{base}/import").status_code == 403
