"""Safe schema migrations, on SQLite and PostgreSQL: what the planner allows, what it
refuses (with the number of rows at stake), archiving instead of dropping, atomicity when a
step fails half-way, `metacrm plan`, and two concurrent `metacrm migrate` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dbfixtures import (
    Project,
    catalog_specs,
    catalog_version,
    column_names,
    columns,
    execute,
    fetch,
    insert,
    schema_snapshot,
    table_names,
    tenant_connection,
)

from metacrm.cli import main
from metacrm.generators.catalog import Catalog
from metacrm.platform.migrator import MigrationRefused, migrate, plan_only
from metacrm.platform.runtime import Platform

MODULE = "metadata/modules/crm/module.yaml"
CONTACT = "metadata/modules/crm/entities/contact.yaml"
NOTE = "metadata/modules/crm/entities/note.yaml"
TENANT = "tenants/acme/tenant.yaml"
CONTACT_FIELDS = """
    name: {type: string, max_length: 100, required: true}
    email: {type: email}
    kind: {type: enum, options: [person, company], default: person}
    notes: {type: string, max_length: 200}
"""
LIBRARY = {
    MODULE: "module: crm\nowner: crm-team\n",
    CONTACT: "entity: contact\nfields:\n" + textwrap.indent(textwrap.dedent(CONTACT_FIELDS),
                                                            "  "),
    NOTE: """
        entity: note
        fields:
          body: {type: text}
          contact: {type: reference, to: contact, on_delete: cascade}
        """,
    TENANT: "tenant: acme\nteam: acme-admins\nmodules: [crm]\n",
}


def contact(fields: str, *, name: str = "contact", extra: str = "") -> dict[str, str]:
    """A contact.yaml with these `fields` (YAML lines, dedented)."""
    body = textwrap.indent(textwrap.dedent(fields).strip("\n"), "  ")
    return {CONTACT: f"entity: {name}\n{extra}fields:\n{body}\n"}


def with_fields(*lines: str, drop: tuple[str, ...] = ()) -> str:
    """The base contact fields, minus `drop`, plus `lines`."""
    kept = [line for line in textwrap.dedent(CONTACT_FIELDS).strip().splitlines()
            if line.split(":")[0] not in drop]
    return "\n".join([*kept, *lines])


@pytest.fixture
def acme(make_platform: Project) -> Platform:
    platform = make_platform(LIBRARY)
    report = platform.create_tenant("acme")
    assert report.ok, report.format()
    return platform


def reload_ok(platform: Platform, slug: str = "acme", **options: bool):
    report = platform.reload(slug, **options)
    assert report.ok, report.format()
    return report


def values(platform: Platform, sql: str) -> list[tuple]:
    return fetch(platform, "acme", sql)


def seed(platform: Platform) -> list[int]:
    """Three contacts: two with notes, one without; Bo has no e-mail."""
    return insert(platform.runtime("acme"), "crm.contact",
                  {"name": "Ann", "email": "ann@x.test", "notes": "a" * 150},
                  {"name": "Bo", "notes": "short"},
                  {"name": "Cy", "email": "cy@x.test", "kind": "company"})


# -- additions ---------------------------------------------------------------------------------

def test_add_a_nullable_field(acme: Platform, make_platform: Project) -> None:
    seed(acme)
    make_platform.write(contact(with_fields("city: {type: string, max_length: 80}")))
    report = reload_ok(acme)
    assert [s.action for s in report.plan.steps] == ["add_column"]
    live = columns(acme, "acme", "crm__contact")
    assert live["city"]["nullable"] is True
    assert values(acme, "SELECT name, city FROM crm__contact ORDER BY id") == [
        ("Ann", None), ("Bo", None), ("Cy", None)]
    insert(acme.runtime("acme"), "crm.contact", {"name": "Di", "city": "Tainan"})
    assert values(acme, "SELECT city FROM crm__contact WHERE name = 'Di'") == [("Tainan",)]


def test_add_a_required_field_with_a_default_fills_existing_rows(acme: Platform,
                                                                  make_platform: Project) -> None:
    seed(acme)
    make_platform.write(contact(with_fields(
        "tier: {type: string, max_length: 10, required: true, default: basic}",
        "score: {type: integer, required: true, default: 7}")))
    reload_ok(acme)
    live = columns(acme, "acme", "crm__contact")
    assert live["tier"]["nullable"] is False and live["score"]["nullable"] is False
    assert values(acme, "SELECT tier, score FROM crm__contact ORDER BY id") == [
        ("basic", 7)] * 3
    with pytest.raises(sa.exc.IntegrityError):
        execute(acme, "acme", "UPDATE crm__contact SET tier = NULL")


def test_add_a_required_field_without_a_default_over_rows_is_refused(
        acme: Platform, make_platform: Project) -> None:
    seed(acme)
    make_platform.write(contact(with_fields("tier: {type: string, required: true}")))
    report = acme.reload("acme")
    assert not report.ok
    assert "3 existing row(s)" in report.error
    assert "tier" not in column_names(acme, "acme", "crm__contact")


# -- renames -----------------------------------------------------------------------------------

def test_rename_a_field_keeps_its_data(acme: Platform, make_platform: Project) -> None:
    seed(acme)
    make_platform.write(contact(with_fields(
        "full_name: {type: string, max_length: 100, required: true, renamed_from: name}",
        drop=("name",))))
    report = reload_ok(acme)
    assert [s.action for s in report.plan.steps] == ["rename_column"]
    names = column_names(acme, "acme", "crm__contact")
    assert "full_name" in names and "name" not in names
    assert values(acme, "SELECT full_name FROM crm__contact ORDER BY id") == [
        ("Ann",), ("Bo",), ("Cy",)]


def test_rename_an_entity_renames_its_table_keeping_rows(acme: Platform,
                                                          make_platform: Project) -> None:
    ann, bo, _ = seed(acme)
    insert(acme.runtime("acme"), "crm.note", {"body": "hello", "contact": ann},
           {"body": "bye", "contact": bo})
    make_platform.write(contact(CONTACT_FIELDS, name="person", extra="renamed_from: contact\n"))
    make_platform.write({NOTE: """
        entity: note
        fields:
          body: {type: text}
          contact: {type: reference, to: person, on_delete: cascade}
        """})
    report = reload_ok(acme)
    assert [s.action for s in report.plan.steps] == ["rename_table"]
    tables = table_names(acme, "acme")
    assert "crm__person" in tables and "crm__contact" not in tables
    assert values(acme, "SELECT name FROM crm__person ORDER BY id") == [
        ("Ann",), ("Bo",), ("Cy",)]
    runtime = acme.runtime("acme")
    assert runtime.tables.by_entity["crm.person"].name == "crm__person"
    # the note's foreign key followed the rename: cascade still works
    person = runtime.tables.by_entity["crm.person"]
    with runtime.begin() as connection:
        connection.execute(person.delete().where(person.c.id == ann))
    assert values(acme, "SELECT body FROM crm__note") == [("bye",)]
    with pytest.raises(sa.exc.IntegrityError):
        insert(runtime, "crm.note", {"body": "orphan", "contact": 999_999})


def test_a_new_entity_in_a_reference_cycle_with_an_existing_one(acme: Platform,
                                                                 make_platform: Project) -> None:
    seed(acme)
    make_platform.write(contact(with_fields(
        "account: {type: reference, to: account, on_delete: set_null}")))
    make_platform.write({"metadata/modules/crm/entities/account.yaml": """
        entity: account
        fields:
          title: {type: string, required: true}
          main_contact: {type: reference, to: contact, on_delete: set_null}
          parent: {type: reference, to: account, on_delete: cascade}
        """})
    report = reload_ok(acme)
    assert {s.action for s in report.plan.steps} == {"create_table", "add_column"}
    snapshot = schema_snapshot(acme, "acme")
    assert [fk[1] for fk in snapshot["crm__contact"]["fks"]] == [("account",)]
    assert {fk[1] for fk in snapshot["crm__account"]["fks"]} == {("main_contact",), ("parent",)}
    runtime = acme.runtime("acme")
    [account] = insert(runtime, "crm.account", {"title": "Big", "main_contact": 1})
    [child] = insert(runtime, "crm.account", {"title": "Small", "parent": account})
    execute(acme, "acme", f"UPDATE crm__contact SET account = {account}")
    with pytest.raises(sa.exc.IntegrityError):
        execute(acme, "acme", "UPDATE crm__contact SET account = 999999")
    accounts = runtime.tables.by_entity["crm.account"]
    with runtime.begin() as connection:
        connection.execute(accounts.delete().where(accounts.c.id == account))
    assert values(acme, "SELECT count(*) FROM crm__account") == [(0,)]  # child cascaded
    assert values(acme, "SELECT DISTINCT account FROM crm__contact") == [(None,)]
    assert child


# -- type changes ------------------------------------------------------------------------------

def test_widen_max_length_then_string_to_text_keeps_data(acme: Platform,
                                                         make_platform: Project) -> None:
    seed(acme)
    make_platform.write(contact(with_fields("notes: {type: string, max_length: 500}",
                                            drop=("notes",))))
    report = reload_ok(acme)
    assert [(s.action, s.destructive) for s in report.plan.steps] == [("alter_type", False)]
    assert columns(acme, "acme", "crm__contact")["notes"]["type"].length == 500
    insert(acme.runtime("acme"), "crm.contact", {"name": "Long", "notes": "b" * 480})

    make_platform.write(contact(with_fields("notes: {type: text}", drop=("notes",))))
    reload_ok(acme)
    notes_type = columns(acme, "acme", "crm__contact")["notes"]["type"]
    assert isinstance(notes_type, sa.Text) and notes_type.length is None
    assert values(acme, "SELECT notes FROM crm__contact ORDER BY id") == [
        ("a" * 150,), ("short",), (None,), ("b" * 480,)]


def test_narrowing_max_length_is_refused_while_rows_are_longer(acme: Platform,
                                                               make_platform: Project) -> None:
    seed(acme)
    insert(acme.runtime("acme"), "crm.contact", {"name": "Dee", "notes": "c" * 120})
    before = acme.runtime("acme")
    make_platform.write(contact(with_fields("notes: {type: string, max_length: 100}",
                                            drop=("notes",))))
    the_plan, _ = acme.plan("acme")
    [step] = the_plan.refusals()
    assert step.action == "alter_type" and step.rows == 2 and step.blocked
    report = acme.reload("acme")
    assert not report.ok
    assert "2 row(s) are longer than 100 characters" in report.error
    assert acme.runtime("acme") is before
    assert columns(acme, "acme", "crm__contact")["notes"]["type"].length == 200

    execute(acme, "acme", "UPDATE crm__contact SET notes = 'trimmed' WHERE length(notes) > 100")
    reload_ok(acme)
    assert columns(acme, "acme", "crm__contact")["notes"]["type"].length == 100
    assert values(acme, "SELECT notes FROM crm__contact ORDER BY id") == [
        ("trimmed",), ("short",), (None,), ("trimmed",)]


# -- removals ----------------------------------------------------------------------------------

def test_removing_a_field_holding_data_is_refused_then_archived(acme: Platform,
                                                                make_platform: Project) -> None:
    seed(acme)
    old = acme.runtime("acme")
    old_version = old.version
    make_platform.write(contact(with_fields(drop=("notes",))))

    result = acme.compiler.compile_tenant("acme")
    with pytest.raises(MigrationRefused) as refused:
        migrate(acme.databases.tenant("acme"), acme.desired_specs(result.registry),
                result.registry.version)
    [step] = refused.value.refusals
    assert (step.action, step.column, step.rows) == ("archive_column", "notes", 2)
    assert "2 row(s) hold a value in notes" in str(refused.value)

    report = acme.reload("acme")
    assert not report.ok and report.previous == old_version
    assert "2 row(s) hold a value in notes" in report.error
    assert acme.runtime("acme") is old  # the old runtime keeps serving
    insert(old, "crm.contact", {"name": "Still", "notes": "served"})
    assert catalog_version(acme, "acme") == old_version
    assert [h["status"] for h in acme.store.history("acme")][:1] == ["refused"]

    report = reload_ok(acme, allow_destructive=True)
    names = column_names(acme, "acme", "crm__contact")
    assert "notes" not in names
    [archived] = [n for n in names if n.startswith("archived_notes_")]
    assert values(acme, f"SELECT name, {archived} FROM crm__contact ORDER BY id") == [
        ("Ann", "a" * 150), ("Bo", "short"), ("Cy", None), ("Still", "served")]
    spec = catalog_specs(acme, "acme")["crm.contact"]
    assert [c.name for c in spec.archived] == [archived]
    assert "notes" not in [c.name for c in spec.columns]
    new = acme.runtime("acme")
    assert "notes" not in new.tables.by_entity["crm.contact"].c
    insert(new, "crm.contact", {"name": "After"})

    # a later change that rebuilds the table on SQLite keeps the archived column and its data
    make_platform.write(contact(with_fields(
        "kind: {type: enum, options: [person, company, partner], default: person}",
        "email: {type: email, required: true, default: none@x.test}",
        drop=("notes", "kind", "email"))))
    [note] = insert(new, "crm.note", {"body": "about Ann", "contact": 1})
    report = reload_ok(acme)
    assert {"replace_check", "set_not_null"} <= {s.action for s in report.plan.steps}
    assert values(acme, f"SELECT name, {archived}, email FROM crm__contact ORDER BY id") == [
        ("Ann", "a" * 150, "ann@x.test"), ("Bo", "short", "none@x.test"),
        ("Cy", None, "cy@x.test"), ("Still", "served", "none@x.test"),
        ("After", None, "none@x.test")]
    assert [c.name for c in catalog_specs(acme, "acme")["crm.contact"].archived] == [archived]
    runtime = acme.runtime("acme")  # references into the rebuilt table still hold
    people = runtime.tables.by_entity["crm.contact"]
    with runtime.begin() as connection:
        connection.execute(people.delete().where(people.c.name == "Ann"))
    assert values(acme, f"SELECT count(*) FROM crm__note WHERE id = {note}") == [(0,)]


def test_removed_reference_and_enum_fields_are_archived_without_constraints(
        acme: Platform, make_platform: Project) -> None:
    ann, bo, _ = seed(acme)
    [first, second] = insert(acme.runtime("acme"), "crm.note",
                             {"body": "one", "contact": ann}, {"body": "two", "contact": bo})
    make_platform.write({NOTE: "entity: note\nfields:\n  body: {type: text}\n"})
    make_platform.write(contact(with_fields(drop=("kind",))))
    assert not acme.reload("acme").ok
    reload_ok(acme, allow_destructive=True)

    note_columns = column_names(acme, "acme", "crm__note")
    [archived_ref] = [n for n in note_columns if n.startswith("archived_contact_")]
    contact_columns = column_names(acme, "acme", "crm__contact")
    [archived_kind] = [n for n in contact_columns if n.startswith("archived_kind_")]
    assert values(acme, f"SELECT {archived_kind} FROM crm__contact ORDER BY id") == [
        ("person",), ("person",), ("company",)]
    # no check, index or foreign key is left on the archived columns
    execute(acme, "acme", f"UPDATE crm__contact SET {archived_kind} = 'anything'")
    runtime = acme.runtime("acme")
    people = runtime.tables.by_entity["crm.contact"]
    with runtime.begin() as connection:
        connection.execute(people.delete().where(people.c.id == ann))
    assert values(acme, f"SELECT id, {archived_ref} FROM crm__note ORDER BY id") == [
        (first, ann), (second, bo)]
    snapshot = schema_snapshot(acme, "acme")
    assert snapshot["crm__note"]["fks"] == []
    assert not [i for i in snapshot["crm__note"]["indexes"] if archived_ref in i[1]]
    assert not [c for c in snapshot["crm__contact"]["checks"] if "kind" in c]


def test_removing_an_entity_holding_rows_is_refused_then_archived(
        acme: Platform, make_platform: Project) -> None:
    [ann, *_] = seed(acme)
    insert(acme.runtime("acme"), "crm.note", {"body": "one", "contact": ann},
           {"body": "two"})
    make_platform.remove(NOTE)
    report = acme.reload("acme")
    assert not report.ok
    assert "2 row(s) would no longer be reachable" in report.error
    assert "crm__note" in table_names(acme, "acme")

    reload_ok(acme, allow_destructive=True)
    tables = table_names(acme, "acme")
    [archived] = [t for t in tables if t.startswith("archived_crm__note_")]
    assert "crm__note" not in tables
    assert values(acme, f"SELECT body FROM {archived} ORDER BY id") == [("one",), ("two",)]
    assert "crm.note" not in catalog_specs(acme, "acme")
    people = acme.runtime("acme").tables.by_entity["crm.contact"]
    with acme.runtime("acme").begin() as connection:  # no cascade into archived rows
        connection.execute(people.delete().where(people.c.id == ann))
    assert values(acme, f"SELECT body, contact FROM {archived} ORDER BY id") == [
        ("one", ann), ("two", None)]
    with tenant_connection(acme, "acme") as connection:
        assert Catalog().archived(connection) == [archived]
    assert "crm.note" not in acme.runtime("acme").tables.by_entity

    make_platform.write(LIBRARY)  # back, empty, and removed again at once: a second archive
    reload_ok(acme)
    insert(acme.runtime("acme"), "crm.note", {"body": "three"})
    make_platform.remove(NOTE)
    reload_ok(acme, allow_destructive=True)
    archives = sorted(t for t in table_names(acme, "acme") if t.startswith("archived_crm__note_"))
    assert len(archives) == 2 and archived in archives
    [second] = set(archives) - {archived}
    assert values(acme, f"SELECT body FROM {second}") == [("three",)]
    with tenant_connection(acme, "acme") as connection:
        assert sorted(Catalog().archived(connection)) == archives


def test_a_field_removed_twice_is_archived_twice(acme: Platform, make_platform: Project,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from metacrm.platform import migrator

    monkeypatch.setattr(migrator.time, "strftime", lambda _format: "20250101000000")
    seed(acme)
    make_platform.write(contact(with_fields(drop=("notes",))))
    reload_ok(acme, allow_destructive=True)
    make_platform.write(contact(with_fields(
        "notes: {type: string, max_length: 200, renamed_from: memo}", drop=("notes",))))
    reload_ok(acme)  # a new field of the same name (another stable id)
    execute(acme, "acme", "UPDATE crm__contact SET notes = 'second'")
    make_platform.write(contact(with_fields(drop=("notes",))))
    reload_ok(acme, allow_destructive=True)  # the same stamp as the first archive
    archived = sorted(n for n in column_names(acme, "acme", "crm__contact")
                      if n.startswith("archived_notes_"))
    assert archived == ["archived_notes_20250101000000", "archived_notes_20250101000000_2"]
    kept = {values(acme, f"SELECT {name} FROM crm__contact WHERE id = 2")[0][0]
            for name in archived}
    assert kept == {"short", "second"}
    assert len(catalog_specs(acme, "acme")["crm.contact"].archived) == 2


def test_removing_an_empty_field_needs_no_permission(acme: Platform,
                                                     make_platform: Project) -> None:
    insert(acme.runtime("acme"), "crm.contact", {"name": "Ann"})
    make_platform.write(contact(with_fields(drop=("notes",))))
    report = reload_ok(acme)
    [step] = report.plan.steps
    assert step.action == "archive_column" and not step.destructive
    assert "notes" not in column_names(acme, "acme", "crm__contact")


# -- constraints -------------------------------------------------------------------------------

def test_required_over_empty_values_is_refused_without_a_default(acme: Platform,
                                                                 make_platform: Project) -> None:
    seed(acme)  # Bo has no e-mail
    make_platform.write(contact(with_fields("email: {type: email, required: true}",
                                            drop=("email",))))
    report = acme.reload("acme")
    assert not report.ok
    assert "1 row(s) hold no value" in report.error
    assert columns(acme, "acme", "crm__contact")["email"]["nullable"] is True

    make_platform.write(contact(with_fields(
        "email: {type: email, required: true, default: unknown@x.test}", drop=("email",))))
    report = reload_ok(acme)
    assert [s.action for s in report.plan.steps] == [
        "alter_default", "backfill_default", "set_not_null"]
    assert columns(acme, "acme", "crm__contact")["email"]["nullable"] is False
    assert values(acme, "SELECT email FROM crm__contact ORDER BY id") == [
        ("ann@x.test",), ("unknown@x.test",), ("cy@x.test",)]


def test_unique_over_duplicates_is_blocked(acme: Platform, make_platform: Project) -> None:
    seed(acme)
    [twin] = insert(acme.runtime("acme"), "crm.contact", {"name": "Twin", "email": "ann@x.test"})
    make_platform.write(contact(with_fields("email: {type: email, unique: true}",
                                            drop=("email",))))
    for allow in (False, True):  # blocked: not even allow_destructive applies it
        report = acme.reload("acme", allow_destructive=allow)
        assert not report.ok
        assert "1 value(s) appear more than once" in report.error
    execute(acme, "acme", "UPDATE crm__contact SET deleted_at = CURRENT_TIMESTAMP "
            f"WHERE id = {twin}")  # soft-deleted rows do not count
    reload_ok(acme)
    with pytest.raises(sa.exc.IntegrityError):
        insert(acme.runtime("acme"), "crm.contact", {"name": "Again", "email": "cy@x.test"})


def test_enum_option_added_updates_the_check(acme: Platform, make_platform: Project) -> None:
    seed(acme)
    with pytest.raises(sa.exc.IntegrityError):
        insert(acme.runtime("acme"), "crm.contact", {"name": "P", "kind": "partner"})
    make_platform.write(contact(with_fields(
        "kind: {type: enum, options: [person, company, partner], default: person}",
        drop=("kind",))))
    report = reload_ok(acme)
    assert [s.action for s in report.plan.steps] == ["replace_check"]
    insert(acme.runtime("acme"), "crm.contact", {"name": "P", "kind": "partner"})
    with pytest.raises(sa.exc.IntegrityError):
        insert(acme.runtime("acme"), "crm.contact", {"name": "Q", "kind": "robot"})
    assert values(acme, "SELECT kind FROM crm__contact ORDER BY id") == [
        ("person",), ("person",), ("company",), ("partner",)]


def test_enum_option_removed_while_rows_use_it_is_refused(acme: Platform,
                                                          make_platform: Project) -> None:
    seed(acme)  # Cy is a company
    make_platform.write(contact(with_fields(
        "kind: {type: enum, options: [person, agency], default: person}", drop=("kind",))))
    report = acme.reload("acme")
    assert not report.ok
    assert "1 row(s) hold a removed option" in report.error
    insert(acme.runtime("acme"), "crm.contact", {"name": "Co", "kind": "company"})  # old check

    execute(acme, "acme", "UPDATE crm__contact SET kind = 'person' WHERE kind = 'company'")
    reload_ok(acme)
    with pytest.raises(sa.exc.IntegrityError):
        insert(acme.runtime("acme"), "crm.contact", {"name": "X", "kind": "company"})
    insert(acme.runtime("acme"), "crm.contact", {"name": "Y", "kind": "agency"})


# -- plan --------------------------------------------------------------------------------------

def test_plan_of_an_unchanged_tenant_is_empty(acme: Platform, make_platform: Project) -> None:
    the_plan, diagnostics = acme.plan("acme")
    assert the_plan is not None and the_plan.empty and not the_plan.steps
    assert not [d for d in diagnostics if d.severity == "error"]
    result = CliRunner().invoke(main, ["--root", str(make_platform.root), "plan", "acme"],
                                env=make_platform.env())
    assert result.exit_code == 0, result.output
    assert "nothing to change" in result.output


def test_plan_command_prints_text_and_json(acme: Platform, make_platform: Project) -> None:
    seed(acme)
    version = catalog_version(acme, "acme")
    make_platform.write(contact(with_fields("city: {type: string}", drop=("notes",))))
    runner = CliRunner()
    args = ["--root", str(make_platform.root), "plan", "acme"]

    result = runner.invoke(main, [*args, "--format", "json"], env=make_platform.env())
    assert result.exit_code == 1, result.output  # removing `notes` would lose data
    [the_plan] = json.loads(result.output)
    assert the_plan["tenant"] == "acme" and the_plan["from_version"] == version
    steps = {s["action"]: s for s in the_plan["steps"]}
    assert steps["add_column"]["column"] == "city"
    assert steps["archive_column"]["destructive"] is True
    assert steps["archive_column"]["rows"] == 2

    result = runner.invoke(main, args, env=make_platform.env())
    assert result.exit_code == 1
    assert "add column crm__contact.city" in result.output
    assert "LOSSY archive column crm__contact.notes" in result.output
    assert "2 row(s) hold a value in notes" in result.output
    assert catalog_version(acme, "acme") == version  # planning changed nothing
    assert "city" not in column_names(acme, "acme", "crm__contact")

    make_platform.write(contact(with_fields("city: {type: string}")))
    result = runner.invoke(main, [*args, "--format", "json"], env=make_platform.env())
    assert result.exit_code == 0, result.output
    assert [s["action"] for s in json.loads(result.output)[0]["steps"]] == ["add_column"]


# -- atomicity ---------------------------------------------------------------------------------

class Boom(RuntimeError):
    pass


def _many_step_change(make_platform: Project) -> None:
    make_platform.write(contact(with_fields(
        "full_name: {type: string, max_length: 100, required: true, renamed_from: name}",
        "city: {type: string}",
        "tier: {type: string, required: true, default: basic}",
        "notes: {type: string, max_length: 400}",
        "kind: {type: enum, options: [person, company, partner], default: person}",
        drop=("name", "notes", "kind"))))
    make_platform.write({"metadata/modules/crm/entities/visit.yaml": """
        entity: visit
        fields:
          contact: {type: reference, to: contact, on_delete: cascade}
          at: {type: datetime}
        """})


@pytest.mark.parametrize("fail_at", ["first", "middle", "last"])
def test_a_failure_mid_migration_leaves_the_old_version(acme: Platform, make_platform: Project,
                                                        fail_at: str) -> None:
    seed(acme)
    before_schema = schema_snapshot(acme, "acme")
    before_version = catalog_version(acme, "acme")
    before_rows = values(acme, "SELECT * FROM crm__contact ORDER BY id")
    _many_step_change(make_platform)
    result = acme.compiler.compile_tenant("acme")
    desired = acme.desired_specs(result.registry)
    db = acme.databases.tenant("acme")
    steps = plan_only(db, desired, result.registry.version).steps
    assert len(steps) >= 6
    target = {"first": 1, "middle": len(steps) // 2, "last": len(steps)}[fail_at]
    seen = []

    def before_step(step) -> None:
        seen.append(step.action)
        if len(seen) == target:
            raise Boom(f"injected failure before step {target}: {step.description}")

    with pytest.raises(Boom):
        migrate(db, desired, result.registry.version, before_step=before_step)
    assert len(seen) == target
    assert schema_snapshot(acme, "acme") == before_schema
    assert catalog_version(acme, "acme") == before_version
    assert values(acme, "SELECT * FROM crm__contact ORDER BY id") == before_rows

    report = reload_ok(acme)
    assert report.version == result.registry.version
    assert catalog_version(acme, "acme") == result.registry.version
    assert "crm__visit" in table_names(acme, "acme")
    assert values(acme, "SELECT full_name, tier FROM crm__contact ORDER BY id") == [
        ("Ann", "basic"), ("Bo", "basic"), ("Cy", "basic")]


def test_failure_after_the_last_step_rolls_back_too(acme: Platform,
                                                    make_platform: Project,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Even the catalog write at the very end is inside the one transaction."""
    from metacrm.generators import catalog as catalog_module

    seed(acme)
    before_schema = schema_snapshot(acme, "acme")
    before_version = catalog_version(acme, "acme")
    _many_step_change(make_platform)

    def fail(*_args, **_kwargs) -> None:
        raise Boom("catalog write failed")

    monkeypatch.setattr(catalog_module.Catalog, "set_version", fail)
    report = acme.reload("acme")
    assert not report.ok and "catalog write failed" in report.error
    assert schema_snapshot(acme, "acme") == before_schema
    monkeypatch.undo()
    assert catalog_version(acme, "acme") == before_version
    reload_ok(acme)


# -- concurrency -------------------------------------------------------------------------------

RACER = """
import sys, time, pathlib
from metacrm.cli import main
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
main(sys.argv[3:])
"""


def test_two_concurrent_migrate_runs_serialize(acme: Platform, make_platform: Project,
                                               tmp_path: Path) -> None:
    runtime = acme.runtime("acme")
    insert(runtime, "crm.contact", *({"name": f"n{i}", "notes": "x" * 50} for i in range(2000)))
    make_platform.write(contact(with_fields(
        "tier: {type: string, required: true, default: basic}",
        "notes: {type: string, max_length: 300}", drop=("notes",))))
    version = acme.compiler.compile_tenant("acme").registry.version
    env = {**os.environ, **make_platform.env()}
    go = tmp_path / "go"
    procs = []
    for n in range(2):
        ready = tmp_path / f"ready{n}"
        procs.append((ready, subprocess.Popen(
            [sys.executable, "-c", RACER, str(ready), str(go),
             "--root", str(make_platform.root), "migrate", "acme"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    deadline = time.monotonic() + 60
    while not all(r.exists() for r, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both processes start migrating at once
    outputs = [p.communicate(timeout=120)[0] for _, p in procs]
    assert [p.returncode for _, p in procs] == [0, 0], outputs

    history = acme.store.history("acme")
    applied = [h for h in history if h["to_version"] == version and h["status"] == "applied"]
    assert len(applied) == 1, (version, [(h["to_version"], h["status"]) for h in history],
                               outputs)
    assert catalog_version(acme, "acme") == version
    live = columns(acme, "acme", "crm__contact")
    assert live["tier"]["nullable"] is False and live["notes"]["type"].length == 300
    assert values(acme, "SELECT count(*), min(tier), max(tier) FROM crm__contact") == [
        (2000, "basic", "basic")]
    assert acme.store.get("acme").metadata_version == version


def test_processes_starting_on_a_fresh_installation_at_once(make_platform: Project,
                                                           tmp_path: Path) -> None:
    """Every process brings the platform store up to date on start, and `tenant create`
    provisions the tenant's schema: run at once, they queue and exactly one migrates."""
    make_platform.write(LIBRARY)
    env = {**os.environ, **make_platform.env()}
    go = tmp_path / "go"
    procs = []
    for n in range(4):
        ready = tmp_path / f"ready{n}"
        procs.append((ready, subprocess.Popen(
            [sys.executable, "-c", RACER, str(ready), str(go),
             "--root", str(make_platform.root), "tenant", "create", "acme"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    deadline = time.monotonic() + 60
    while not all(r.exists() for r, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for _, p in procs]
    assert [p.returncode for _, p in procs] == [0] * len(procs), outputs
    platform = make_platform()
    version = platform.compiler.compile_tenant("acme").registry.version
    assert [t.slug for t in platform.store.list()] == ["acme"]
    assert [h["status"] for h in platform.store.history("acme")] == ["applied"]
    assert catalog_version(platform, "acme") == version
    assert {"crm__contact", "crm__note"} <= table_names(platform, "acme")
