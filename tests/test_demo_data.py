"""Demo data (`tenants/<slug>/demo.yaml`, metacrm.platform.demo) on SQLite and PostgreSQL:
the shipped acme file, every generator, determinism, idempotence, refusals that say
where, and the `metacrm demo` command."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from dbfixtures import Project
from hypothesis import given
from hypothesis import strategies as st
from salesworld import ACCOUNT, CONTACT, LEAD, OPPORTUNITY, TASK, seed_org

from metacrm.cli import main
from metacrm.platform.demo import DemoError, apply_demo, demo_status, load_demo
from metacrm.platform.jobs import jobs_of
from metacrm.platform.records import Actor, ListQuery, RecordService

if TYPE_CHECKING:  # imported at run time by pytest_plugins (assertion rewriting)
    from apifixtures import Demo

pytest_plugins = ["apifixtures"]

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def seeded(make_platform: Project) -> Demo:
    from apifixtures import make_demo

    demo = make_demo(make_platform)
    seed_org(demo)
    return demo


def write_demo(demo: Demo, text: str, name: str = "demo.yaml") -> Path:
    path = demo.project.root / "tenants" / demo.slug / name
    path.write_text(textwrap.dedent(text).replace("{slug}", demo.slug), "utf-8")
    return path


def records(demo: Demo, entity: str, unit: str | None = None) -> list[dict[str, Any]]:
    """Every record (as the system); with `unit`, that unit's records with its fields."""
    service = RecordService(demo.runtime, Actor(None, unit), operators=demo.platform.operators)
    found = service.list(entity, ListQuery(limit=500, sort=(("id", False),))).items
    return found if unit is None else [r for r in found if r["business_unit"] == unit]


def shipped_demo(demo: Demo) -> Path:
    """The shipped acme demo.yaml (copied with tenants/acme) for the demo's slug."""
    path = demo.project.root / "tenants" / demo.slug / "demo.yaml"
    text = path.read_text("utf-8")
    if "\ndemo: acme\n" in text:
        path.write_text(text.replace("\ndemo: acme\n", f"\ndemo: {demo.slug}\n"), "utf-8")
    return path


def test_the_shipped_demo_fills_both_business_units_once(seeded: Demo) -> None:
    result = apply_demo(seeded.runtime, load_demo(shipped_demo(seeded)))
    jobs_of(seeded.platform).drain()
    assert result.applied
    counts = result.counts
    assert {k: counts[k] for k in ("customer.customer", ACCOUNT, LEAD, "ocrm.activity",
                                   TASK)} == {
        "customer.customer": 48, ACCOUNT: 18, LEAD: 40, "ocrm.activity": 60, TASK: 24}
    assert 18 <= counts[CONTACT] <= 54 and 0 < counts[OPPORTUNITY] <= 54
    customers = records(seeded, "customer.customer")
    assert len(customers) == 48
    names = [c["display_name"] for c in customers]
    chinese = [n for n in names if CJK.search(n)]
    assert len(names) / 2 < len(chinese) < len(names)  # mostly zh_TW, some en_US
    by_unit = {c["business_unit"] for c in customers}
    assert by_unit == {"retail", "education"}
    assert all(c["store_code"] for c in records(seeded, "customer.customer", "retail"))
    assert all(c["school"] for c in records(seeded, "customer.customer", "education"))
    leads = records(seeded, LEAD)
    statuses = {lead["status"] for lead in leads}
    assert {"new", "contacted", "qualified"} <= statuses
    for lead in leads:
        if lead["status"] == "converted":  # the workflow's convert action ran
            assert lead["converted_account"] and lead["converted_opportunity"]
    assert any(lead["source"] == "store_walk_in" for lead in records(seeded, LEAD, "retail"))
    assert all(lead["program"] for lead in records(seeded, LEAD, "education"))
    stages = {deal["stage"] for deal in records(seeded, OPPORTUNITY)}
    assert len(stages) >= 4
    contacts = records(seeded, CONTACT)
    accounts = {a["id"]: a for a in records(seeded, ACCOUNT)}
    for contact in contacts:  # for_each (and convert): contacts are owned like accounts
        assert contact["owner"] == accounts[contact["account"]]["owner"]
    # the marker: a second run adds nothing
    again = apply_demo(seeded.runtime, load_demo(shipped_demo(seeded)))
    assert not again.applied and again.counts == counts and again.status == "applied"
    assert len(records(seeded, "customer.customer")) == 48
    status = demo_status(seeded.runtime)
    assert status is not None and status.applied and status.counts == counts


SMALL = """\
    demo: {slug}
    seed: 7
    locales: {zh_TW: 1, en_US: 1}
    entities:
      ocrm.account:
        count: 6
        owners: [ming, mei]
        fields:
          name: {faker: company}
          tier: {choice: [strategic, key], weights: [0, 1]}
          employees: {faker: random_int, args: {min: 10, max: 20}}
          website: {value: "https://acme.example"}
          city: {faker: city, empty: 1}
      ocrm.contact:
        for_each: {entity: ocrm.account, field: account}
        count: [2, 2]
        fields:
          name: {faker: name}
          job_title: {template: "contact {{ n }} of {{ parent.name }}"}
      ocrm.opportunity:
        count: 4
        owners: [ming, mei]
        fields:
          account: {ref: ocrm.account, match: {owner: owner}}
          contact: {ref: ocrm.contact, match: {account: account}}
          name: {template: "{{ related.account.name }} / {{ related.contact.name }}"}
          amount: {faker: pydecimal, args: {left_digits: 4, right_digits: 4, positive: true}}
          close_date: {faker: date_between, args: {start_date: "-1d", end_date: "+1d"}}
        transitions: {value: [qualify, propose]}
        units:
          retail:
            fields:
              store_code: {choice: [S1, S2]}
          education:
            fields:
              program: {value: coding}
              intake: {value: "2026-09-01"}
            transitions: {value: [qualify, enrol]}
    """


def test_every_generator_reference_and_unit(seeded: Demo) -> None:
    result = apply_demo(seeded.runtime, load_demo(write_demo(seeded, SMALL)))
    assert result.counts == {ACCOUNT: 6, CONTACT: 12, OPPORTUNITY: 4}
    accounts = records(seeded, ACCOUNT)
    ids = {name: seeded_id(seeded, name) for name in ("ming", "mei")}
    for account in accounts:
        assert account["tier"] == "key"  # weight 0 never chosen
        assert 10 <= account["employees"] <= 20
        assert account["website"] == "https://acme.example" and account["city"] is None
        assert account["owner"] in ids.values()
        unit = "retail" if account["owner"] == ids["ming"] else "education"
        assert account["business_unit"] == unit
    by_id = {a["id"]: a for a in accounts}
    contacts = records(seeded, CONTACT)
    assert sorted(c["account"] for c in contacts) == sorted(
        a["id"] for a in accounts for _ in range(2))
    for contact in contacts:  # made for its parent, owned like it
        parent = by_id[contact["account"]]
        assert contact["owner"] == parent["owner"]
        assert contact["job_title"].endswith(f" of {parent['name']}")
    contacts_by_id = {c["id"]: c for c in contacts}
    deals = records(seeded, OPPORTUNITY, "retail") + records(seeded, OPPORTUNITY, "education")
    assert len(deals) == 4
    for deal in deals:
        account = by_id[deal["account"]]
        contact = contacts_by_id[deal["contact"]]
        assert account["owner"] == deal["owner"]  # match: {owner: owner}
        assert contact["account"] == account["id"]  # match: {account: account}
        assert deal["name"] == f"{account['name']} / {contact['name']}"
        if deal["business_unit"] == "retail":
            assert deal["store_code"] in ("S1", "S2") and deal["stage"] == "proposal"
        else:
            assert (deal["program"], deal["stage"]) == ("coding", "won")  # enrol
        assert re.fullmatch(r"\d{1,4}\.\d{2}", str(deal["amount"]))  # money's scale


def seeded_id(demo: Demo, username: str) -> int:
    from metacrm.platform.auth import user_by_name

    with demo.runtime.connect() as connection:
        return user_by_name(connection, username).id


def test_the_same_seed_makes_the_same_records(make_platform: Project) -> None:
    from apifixtures import make_demo

    made = []
    for _ in range(2):
        demo = make_demo(make_platform)
        seed_org(demo)
        apply_demo(demo.runtime, load_demo(write_demo(demo, SMALL)))
        made.append([(c["name"], c["job_title"]) for c in records(demo, CONTACT)]
                    + [(d["name"], str(d["amount"])) for d in records(demo, OPPORTUNITY)])
    assert made[0] == made[1]
    other = make_demo(make_platform)
    seed_org(other)
    apply_demo(other.runtime, load_demo(write_demo(other, SMALL.replace("seed: 7",
                                                                        "seed: 8"))))
    assert [(c["name"], c["job_title"]) for c in records(other, CONTACT)] != made[0][:12]


BROKEN = """\
    demo: {slug}
    entities:
      ocrm.account:
        count: 2
        owners: [ming, nobody]
        fields:
          name: {faker: no_such_provider}
          nickname: {value: x}
          number: {value: A-1}
      ocrm.lead:
        count: [1, 2]
        fields:
          company: {value: X}
          contact_name: {value: Y}
          converted_account: {ref: ocrm.opportunity}
        transitions: {value: [contact, fly]}
      ocrm.nothing:
        count: 1
    """


def test_a_broken_demo_file_says_where_and_writes_nothing(seeded: Demo) -> None:
    path = write_demo(seeded, BROKEN)
    with pytest.raises(DemoError) as caught:
        apply_demo(seeded.runtime, load_demo(path))
    found = {d.code: d for d in caught.value.diagnostics}
    assert set(found) == {"demo.unknown-user", "demo.faker", "demo.unknown-field",
                          "demo.not-writable", "demo.count", "demo.order", "demo.ref",
                          "demo.unknown-transition", "demo.unknown-entity"}
    assert (found["demo.unknown-user"].line, found["demo.unknown-user"].column) == (5, 20)
    assert "nobody" in found["demo.unknown-user"].message
    assert found["demo.unknown-field"].line == 8 and "nickname" in \
        found["demo.unknown-field"].message
    assert "fly" in found["demo.unknown-transition"].message
    assert found["demo.unknown-entity"].line == 17
    assert all(d.file.endswith("demo.yaml") for d in caught.value.diagnostics)
    assert demo_status(seeded.runtime) is None and records(seeded, ACCOUNT) == []
    # a schema problem is caught before the tenant is even looked at
    write_demo(seeded, "demo: {slug}\nentities:\n  ocrm.account: {count: -1, colour: red}\n")
    with pytest.raises(DemoError) as caught:
        load_demo(path)
    assert {d.code for d in caught.value.diagnostics} == {"demo.schema"}
    write_demo(seeded, "demo: someone-else\nentities: {}\n")
    with pytest.raises(DemoError) as caught:
        apply_demo(seeded.runtime, load_demo(path))
    assert [d.code for d in caught.value.diagnostics] == ["demo.tenant"]


def test_refused_values_are_generated_again_then_the_run_stops(seeded: Demo) -> None:
    path = write_demo(seeded, """\
        demo: {slug}
        seed: 3
        entities:
          customer.tag:
            count: 2
            fields:
              name: {choice: [red, blue]}
        """)
    assert apply_demo(seeded.runtime, load_demo(path)).counts == {"customer.tag": 2}
    assert sorted(t["name"] for t in records(seeded, "customer.tag")) == ["blue", "red"]
    # a third unique name cannot be found: the run stops, says why, and is marked failed
    write_demo(seeded, """\
        demo: {slug}
        entities:
          customer.tag:
            count: 1
            fields:
              name: {choice: [red, blue]}
        """)
    with pytest.raises(DemoError) as caught:
        apply_demo(seeded.runtime, load_demo(path), again=True)
    assert [d.code for d in caught.value.diagnostics] == ["demo.refused"]
    assert "refused 5 times" in caught.value.diagnostics[0].message
    status = demo_status(seeded.runtime)
    assert status is not None and status.status == "failed"
    assert not apply_demo(seeded.runtime, load_demo(path)).applied  # told, not repeated


def cli(project: Project, *args: str) -> Any:
    return CliRunner().invoke(main, ["--root", str(project.root), *args], env=project.env())


def test_the_demo_command_generates_once(seeded: Demo) -> None:
    write_demo(seeded, """\
        demo: {slug}
        seed: 1
        entities:
          ocrm.lead:
            count: 3
            owners: [ming]
            fields:
              company: {faker: company}
              contact_name: {faker: name}
              source: {value: store_walk_in}
        """)
    first = cli(seeded.project, "demo", seeded.slug)
    assert first.exit_code == 0, first.output
    assert f"{seeded.slug}: demo data generated: 3 ocrm.lead" in first.output
    # the rules' follow-ups ran: retail's walk-in rule made a call-back task per lead
    assert len(records(seeded, TASK)) == 3
    second = cli(seeded.project, "demo", seeded.slug)
    assert second.exit_code == 0 and "nothing added" in second.output
    assert len(records(seeded, LEAD)) == 3
    third = cli(seeded.project, "demo", seeded.slug, "--again")
    assert third.exit_code == 0 and "generated" in third.output
    assert len(records(seeded, LEAD)) == 6
    missing = cli(seeded.project, "demo", seeded.slug, "nowhere.yaml")
    assert missing.exit_code != 0
    bad = write_demo(seeded, "demo: {slug}\nentities:\n  ocrm.lead: {count: 1, owners: [x]}\n",
                     "bad.yaml")
    refused = cli(seeded.project, "demo", seeded.slug, str(bad))
    assert refused.exit_code == 1 and "bad.yaml:3:" in refused.output
    assert "demo.unknown-user" in refused.output


# -- shaping generated values (no database) -------------------------------------------------------

_TYPES = None


def field_types() -> Any:
    global _TYPES
    if _TYPES is None:
        from metacrm.metadata.fieldtypes import FieldTypeRegistry
        from metacrm.plugins import make_plugin_manager

        _TYPES = FieldTypeRegistry.from_plugins(make_plugin_manager(load_entrypoints=False))
    return _TYPES


def shaped(kind: str, value: Any, **spec: Any) -> Any:
    """`value` shaped for a field of type `kind`, after checking the type accepts it."""
    import types
    from zoneinfo import ZoneInfo

    from metacrm.platform.demo import _coerce

    field = types.SimpleNamespace(type=kind, max_length=spec.get("max_length"),
                                  scale=spec.get("scale"))
    out = _coerce(field, value, ZoneInfo("Asia/Taipei"))
    problem = field_types()[kind].check_value(out, spec)
    assert problem is None, (kind, value, out, problem)
    return out


@given(st.one_of(st.integers(-10**9, 10**9), st.decimals(-10**6, 10**6, places=6),
                 st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)))
def test_numbers_are_shaped_to_the_field(value: Any) -> None:
    money = shaped("money", value, scale=2)
    assert re.fullmatch(r"-?\d+\.\d{2}", money)
    assert isinstance(shaped("integer", value), int)


@given(st.text(max_size=60))
def test_text_and_phones_are_shaped_to_the_field(value: Any) -> None:
    assert len(shaped("string", value, max_length=20)) <= 20
    phone = shaped("phone", f"+886 {value} x123", max_length=32)
    assert "x123" not in phone and len(phone) <= 32


@given(st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)))
def test_dates_and_times_become_iso_text_in_the_tenants_zone(value: dt.datetime) -> None:
    assert shaped("date", value) == value.date().isoformat()
    stamped = dt.datetime.fromisoformat(shaped("datetime", value))
    from zoneinfo import ZoneInfo

    assert stamped.utcoffset() == value.replace(tzinfo=ZoneInfo("Asia/Taipei")).utcoffset()
    assert stamped.replace(tzinfo=None) == value
