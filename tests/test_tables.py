"""Runtime tables on the live database (SQLite and PostgreSQL): system columns, foreign keys
with their on_delete, link tables, indexes, unique fields that ignore soft-deleted rows and
enum checks enforced by the database itself."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dbfixtures import Project, columns, execute, fetch, insert, inspector, table_names

from metacrm.generators.tables import SYSTEM_COLUMN_NAMES
from metacrm.platform.runtime import Platform, TenantRuntime

LIBRARY = {
    "metadata/modules/crm/module.yaml": "module: crm\nowner: crm-team\n",
    "metadata/modules/crm/entities/company.yaml": """
        entity: company
        indexes:
          - {fields: [name, city], name: ix_company_name_city}
          - {fields: [name, country], unique: true, name: ux_company_name_country}
        fields:
          name: {type: string, max_length: 100, required: true}
          city: {type: string, max_length: 50}
          country: {type: string, max_length: 2}
          email: {type: email, unique: true}
          status: {type: enum, options: [new, active, closed], default: new}
          tags: {type: many_to_many, to: tag}
          primary_contact: {type: reference, to: person, on_delete: set_null}
        """,
    "metadata/modules/crm/entities/tag.yaml": """
        entity: tag
        fields:
          label: {type: string, required: true}
        """,
    "metadata/modules/crm/entities/person.yaml": """
        entity: person
        fields:
          full_name: {type: string, required: true}
          employer: {type: reference, to: company, on_delete: cascade}
          school: {type: reference, to: company, on_delete: restrict}
          club: {type: reference, to: company, on_delete: set_null}
          mentor: {type: reference, to: person, on_delete: set_null}
        """,
    "tenants/acme/tenant.yaml": "tenant: acme\nteam: acme-admins\nmodules: [crm]\n",
}
ENTITY_TABLES = {"crm.company": "crm__company", "crm.tag": "crm__tag",
                 "crm.person": "crm__person"}
LINK_TABLE = "crm__company__tags"


@pytest.fixture
def acme(make_platform: Project) -> tuple[Platform, TenantRuntime]:
    platform = make_platform(LIBRARY)
    report = platform.create_tenant("acme")
    assert report.ok, report.format()
    return platform, platform.runtime("acme")


def _count(platform: Platform, table: str, where: str = "1=1", **params: object) -> int:
    return fetch(platform, "acme", f"SELECT count(*) FROM {table} WHERE {where}", **params)[0][0]


def test_every_entity_table_has_the_system_columns(acme) -> None:
    platform, runtime = acme
    assert {*ENTITY_TABLES.values(), LINK_TABLE} <= table_names(platform, "acme")
    assert set(runtime.tables.by_entity) == set(ENTITY_TABLES)
    for key, table in ENTITY_TABLES.items():
        live = columns(platform, "acme", table)
        assert tuple(live)[: len(SYSTEM_COLUMN_NAMES)] == SYSTEM_COLUMN_NAMES, table
        for required in ("id", "created_at", "updated_at", "row_version"):
            assert live[required]["nullable"] is False, (table, required)
        for optional in ("created_by", "updated_by", "owner", "business_unit", "deleted_at"):
            assert live[optional]["nullable"] is True, (table, optional)
        with inspector(platform, "acme") as (insp, schema):
            assert insp.get_pk_constraint(table, schema=schema)["constrained_columns"] == ["id"]
        # the runtime's SQLAlchemy table and the live one agree
        assert [c.name for c in runtime.tables.by_entity[key].columns] == list(live)


def test_system_columns_are_filled_by_the_database(acme) -> None:
    platform, runtime = acme
    first, second = insert(runtime, "crm.tag", {"label": "a"}, {"label": "b"})
    assert second > first
    rows = fetch(platform, "acme", "SELECT created_at, updated_at, row_version, deleted_at "
                 "FROM crm__tag WHERE id = :id", id=first)
    created_at, updated_at, row_version, deleted_at = rows[0]
    assert created_at is not None and updated_at is not None
    assert row_version == 1 and deleted_at is None


def test_foreign_keys_carry_the_declared_on_delete(acme) -> None:
    platform, _ = acme
    with inspector(platform, "acme") as (insp, schema):
        fks = {fk["constrained_columns"][0]: fk
               for fk in insp.get_foreign_keys("crm__person", schema=schema)}
    assert {c: fk["referred_table"] for c, fk in fks.items()} == {
        "employer": "crm__company", "school": "crm__company", "club": "crm__company",
        "mentor": "crm__person"}
    assert {c: fk["options"].get("ondelete") for c, fk in fks.items()} == {
        "employer": "CASCADE", "school": "RESTRICT", "club": "SET NULL", "mentor": "SET NULL"}


def test_references_in_a_cycle_and_to_the_same_entity(acme) -> None:
    """company -> person -> company, and person -> person: every foreign key exists, even on
    PostgreSQL where one of the cycle's keys must wait for the other table."""
    platform, runtime = acme
    with inspector(platform, "acme") as (insp, schema):
        company_fks = {fk["constrained_columns"][0]: fk["referred_table"]
                       for fk in insp.get_foreign_keys("crm__company", schema=schema)}
        person_fks = {fk["constrained_columns"][0]: fk["referred_table"]
                      for fk in insp.get_foreign_keys("crm__person", schema=schema)}
    assert company_fks == {"primary_contact": "crm__person"}
    assert person_fks["mentor"] == "crm__person"
    [company] = insert(runtime, "crm.company", {"name": "ACME"})
    [boss] = insert(runtime, "crm.person", {"full_name": "Boss", "employer": company})
    [intern] = insert(runtime, "crm.person", {"full_name": "Intern", "mentor": boss})
    table = runtime.tables.by_entity["crm.company"]
    with runtime.begin() as connection:
        connection.execute(table.update().values(primary_contact=boss))
    with pytest.raises(sa.exc.IntegrityError), runtime.begin() as connection:
        connection.execute(table.update().values(primary_contact=999_999))
    person = runtime.tables.by_entity["crm.person"]
    with runtime.begin() as connection:
        connection.execute(person.delete().where(person.c.id == boss))
    assert fetch(platform, "acme", "SELECT primary_contact FROM crm__company") == [(None,)]
    assert fetch(platform, "acme", "SELECT mentor FROM crm__person WHERE id = :id",
                 id=intern) == [(None,)]


def test_on_delete_cascade_restrict_and_set_null_with_real_rows(acme) -> None:
    platform, runtime = acme
    company = runtime.tables.by_entity["crm.company"]
    person = runtime.tables.by_entity["crm.person"]
    employer, school, club = insert(runtime, "crm.company", {"name": "Employer"},
                                    {"name": "School"}, {"name": "Club"})
    worker, pupil, member = insert(runtime, "crm.person",
                                   {"full_name": "Worker", "employer": employer},
                                   {"full_name": "Pupil", "school": school},
                                   {"full_name": "Member", "club": club})

    with runtime.begin() as connection:  # cascade: the child goes with its parent
        connection.execute(company.delete().where(company.c.id == employer))
    assert _count(platform, "crm__person", "id = :id", id=worker) == 0

    with pytest.raises(sa.exc.IntegrityError), runtime.begin() as connection:  # restrict
        connection.execute(company.delete().where(company.c.id == school))
    assert _count(platform, "crm__company", "id = :id", id=school) == 1
    assert _count(platform, "crm__person", "id = :id", id=pupil) == 1

    with runtime.begin() as connection:  # set_null: the child stays, unlinked
        connection.execute(company.delete().where(company.c.id == club))
    with runtime.connect() as connection:
        kept = connection.execute(sa.select(person.c.club).where(person.c.id == member)).one()
    assert kept == (None,)

    with pytest.raises(sa.exc.IntegrityError), runtime.begin() as connection:
        connection.execute(person.insert().values(full_name="Ghost", employer=999_999))


def test_many_to_many_gets_a_link_table(acme) -> None:
    platform, runtime = acme
    with inspector(platform, "acme") as (insp, schema):
        assert [c["name"] for c in insp.get_columns(LINK_TABLE, schema=schema)] == [
            "source_id", "target_id"]
        assert sorted(insp.get_pk_constraint(LINK_TABLE, schema=schema)[
            "constrained_columns"]) == ["source_id", "target_id"]
        fks = {fk["constrained_columns"][0]: (fk["referred_table"], fk["options"]["ondelete"])
               for fk in insp.get_foreign_keys(LINK_TABLE, schema=schema)}
    assert fks == {"source_id": ("crm__company", "CASCADE"),
                   "target_id": ("crm__tag", "CASCADE")}

    link = runtime.tables.by_id["crm.company.tags"]
    assert link.name == LINK_TABLE
    [company] = insert(runtime, "crm.company", {"name": "ACME"})
    red, blue = insert(runtime, "crm.tag", {"label": "red"}, {"label": "blue"})
    with runtime.begin() as connection:
        connection.execute(link.insert(), [{"source_id": company, "target_id": red},
                                           {"source_id": company, "target_id": blue}])
    with pytest.raises(sa.exc.IntegrityError), runtime.begin() as connection:
        connection.execute(link.insert().values(source_id=company, target_id=red))
    tag = runtime.tables.by_entity["crm.tag"]
    with runtime.begin() as connection:
        connection.execute(tag.delete().where(tag.c.id == red))
    assert fetch(platform, "acme", f"SELECT target_id FROM {LINK_TABLE}") == [(blue,)]


def test_declared_indexes_and_unique_fields_exist(acme) -> None:
    platform, _ = acme
    with inspector(platform, "acme") as (insp, schema):
        indexes = {i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                   for i in insp.get_indexes("crm__company", schema=schema)}
        person_indexes = {tuple(i["column_names"])
                          for i in insp.get_indexes("crm__person", schema=schema)}
    assert indexes["ix_company_name_city"] == (("name", "city"), False)
    assert indexes["ux_company_name_country"] == (("name", "country"), True)
    assert indexes["uq_crm__company__email"] == (("email",), True)
    # references are indexed
    assert {("employer",), ("school",), ("club",), ("mentor",)} <= person_indexes


def test_unique_field_ignores_soft_deleted_rows(acme) -> None:
    platform, runtime = acme
    gone = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    insert(runtime, "crm.company", {"name": "Old", "email": "a@x.test", "deleted_at": gone})
    insert(runtime, "crm.company", {"name": "New", "email": "a@x.test"})  # allowed
    with pytest.raises(sa.exc.IntegrityError):
        insert(runtime, "crm.company", {"name": "Twin", "email": "a@x.test"})
    assert _count(platform, "crm__company", "email = :e", e="a@x.test") == 2

    # a declared unique index ignores soft-deleted rows the same way
    insert(runtime, "crm.company", {"name": "Same", "country": "TW", "deleted_at": gone})
    insert(runtime, "crm.company", {"name": "Same", "country": "TW"})
    with pytest.raises(sa.exc.IntegrityError):
        insert(runtime, "crm.company", {"name": "Same", "country": "TW"})


def test_enum_check_rejects_values_outside_the_options(acme) -> None:
    platform, runtime = acme
    [plain] = insert(runtime, "crm.company", {"name": "Default"})
    insert(runtime, "crm.company", {"name": "Closed", "status": "closed"})
    assert fetch(platform, "acme", "SELECT status FROM crm__company WHERE id = :id",
                 id=plain) == [("new",)]  # the declared default, filled by the database
    with pytest.raises(sa.exc.IntegrityError):
        insert(runtime, "crm.company", {"name": "Bogus", "status": "bogus"})
    with pytest.raises(sa.exc.IntegrityError):  # also for raw SQL that bypasses the API
        execute(platform, "acme", "UPDATE crm__company SET status = 'bogus'")
    assert _count(platform, "crm__company", "status = 'bogus'") == 0


def test_required_fields_are_not_null_in_the_database(acme) -> None:
    _, runtime = acme
    with pytest.raises(sa.exc.IntegrityError):
        insert(runtime, "crm.company", {"city": "Taipei"})
