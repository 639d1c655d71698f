"""Hot reload on SQLite and PostgreSQL: compile → migrate → swap, the old runtime staying
usable; invalid definitions keep the old version; other processes converge on the version
in the database; the file watcher; and memory staying flat over hundreds of reloads."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
import weakref

import pytest
import sqlalchemy as sa
from dbfixtures import Project, catalog_version, column_names, fetch, insert

from metacrm.platform.app import create_app
from metacrm.platform.runtime import Platform
from metacrm.platform.watcher import watch

MODULE = "metadata/modules/crm/module.yaml"
COMPANY = "metadata/modules/crm/entities/company.yaml"
LIBRARY = {
    MODULE: "module: crm\nowner: crm-team\n",
    COMPANY: """
        entity: company
        label: Company
        fields:
          name: {type: string, required: true}
        """,
    "tenants/acme/tenant.yaml": "tenant: acme\nteam: acme-admins\nmodules: [crm]\n",
}
WITH_CITY = """
    entity: company
    label: Company
    fields:
      name: {type: string, required: true}
      city: {type: string}
    """


@pytest.fixture
def acme(make_platform: Project) -> Platform:
    platform = make_platform(LIBRARY)
    report = platform.create_tenant("acme")
    assert report.ok, report.format()
    return platform


def test_reload_swaps_the_runtime_and_the_old_one_stays_usable(acme: Platform,
                                                                make_platform: Project) -> None:
    old = acme.runtime("acme")
    insert(old, "crm.company", {"name": "Before"})
    make_platform.write({COMPANY: WITH_CITY})
    report = acme.reload("acme")
    assert report.ok and report.changed and report.previous == old.version
    new = acme.runtime("acme")
    assert new is not old and new.registry is not old.registry
    assert new.version == report.version != old.version
    assert new.tables.metadata is not old.tables.metadata
    assert "city" in new.tables.by_entity["crm.company"].c
    assert "city" not in old.tables.by_entity["crm.company"].c
    assert [f.name for f in old.registry.entities["crm.company"].fields] == ["name"]
    assert [f.name for f in new.registry.entities["crm.company"].fields] == ["name", "city"]

    # a request still holding the old runtime finishes on it
    insert(old, "crm.company", {"name": "During"})
    with old.connect() as connection:
        table = old.tables.by_entity["crm.company"]
        assert connection.execute(sa.select(table.c.name).order_by(table.c.id)).scalars().all(
            ) == ["Before", "During"]
    insert(new, "crm.company", {"name": "After", "city": "Taipei"})
    assert fetch(acme, "acme", "SELECT name, city FROM crm__company ORDER BY id") == [
        ("Before", None), ("During", None), ("After", "Taipei")]

    again = acme.reload("acme")  # nothing changed: the same runtime is kept
    assert again.ok and not again.changed and acme.runtime("acme") is new


def test_invalid_yaml_keeps_the_old_version_serving(acme: Platform,
                                                   make_platform: Project) -> None:
    old = acme.runtime("acme")
    make_platform.write({COMPANY: "entity: company\nfields:\n  name: {type: string\n"})
    report = acme.reload("acme")
    assert not report.ok and report.previous == old.version
    [error] = [d for d in report.diagnostics if d.severity == "error"]
    assert error.file == COMPANY and error.line >= 3 and error.code.startswith("yaml")
    assert acme.runtime("acme") is old
    assert catalog_version(acme, "acme") == old.version
    insert(old, "crm.company", {"name": "Still serving"})


def test_an_invalid_definition_keeps_the_old_version_serving(acme: Platform,
                                                             make_platform: Project) -> None:
    old = acme.runtime("acme")
    client = create_app(make_platform.settings(), acme).test_client()
    assert client.get("/t/acme/").json["version"] == old.version
    make_platform.write({COMPANY: """
        entity: company
        fields:
          name: {type: string, required: true, max_lenght: 20}
          city: {type: strin}
        """})
    report = acme.reload("acme")
    assert not report.ok and report.version is None and report.previous == old.version
    errors = [d for d in report.diagnostics if d.severity == "error"]
    assert len(errors) >= 2  # every problem at once
    assert {d.file for d in errors} == {COMPANY}
    assert all(d.line > 0 for d in errors)
    assert any("max_lenght" in d.message for d in errors)
    assert f"kept version {old.version}" in report.format()
    assert COMPANY in report.format()

    assert acme.runtime("acme") is old
    assert catalog_version(acme, "acme") == old.version
    assert client.get("/t/acme/").json["version"] == old.version
    insert(old, "crm.company", {"name": "Still serving"})

    make_platform.write({COMPANY: WITH_CITY})  # fixed: the next reload goes through
    report = acme.reload("acme")
    assert report.ok and report.previous == old.version
    assert acme.runtime("acme").version == report.version != old.version


def test_a_second_platform_converges_on_the_migrated_version(acme: Platform,
                                                             make_platform: Project) -> None:
    other = make_platform(check_interval=0)  # another process on the same database
    before = other.runtime("acme")
    assert before.version == acme.runtime("acme").version
    make_platform.write({COMPANY: WITH_CITY})
    report = acme.reload("acme")
    assert report.ok and report.changed

    after = other.runtime("acme")
    assert after.version == report.version
    assert after is not before and "city" in after.tables.by_entity["crm.company"].c
    assert [h["status"] for h in other.store.history("acme")].count("applied") == 2
    insert(after, "crm.company", {"name": "From the other process", "city": "Hsinchu"})
    assert other.runtime("acme") is after  # checked again: still the same version


def test_a_slow_checker_keeps_its_runtime_until_the_interval_passes(
        acme: Platform, make_platform: Project) -> None:
    other = make_platform(check_interval=3600)
    before = other.runtime("acme")
    make_platform.write({COMPANY: WITH_CITY})
    assert acme.reload("acme").ok
    assert other.runtime("acme") is before  # not checked again yet
    other.check_interval = 0
    assert other.runtime("acme").version != before.version


def test_the_watcher_reloads_after_a_file_change(acme: Platform,
                                                 make_platform: Project) -> None:
    old = acme.runtime("acme")
    reports = []

    def wait_for(version_count: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len({r.version for r in reports
                                                  if r.ok and r.changed}) < version_count:
            time.sleep(0.05)

    observer = watch(acme, reports.append, delay=0.1)
    try:
        time.sleep(0.2)  # let the observer settle before the change
        make_platform.write({COMPANY: WITH_CITY})
        wait_for(1)
        first = acme.runtime("acme")
        # an editor saving by rename: a temporary file moved onto the definition
        target = make_platform.root / COMPANY
        temporary = target.with_name(".company.yaml.swp")
        temporary.write_text(target.read_text() + "  zip: {type: string}\n", "utf-8")
        os.replace(temporary, target)
        wait_for(2)
    finally:
        observer.stop()
        observer.join(5)
    assert all(r.ok for r in reports), [r.format() for r in reports]
    assert first.version != old.version and "city" in first.tables.by_entity["crm.company"].c
    latest = acme.runtime("acme")
    assert latest.version != first.version, [r.format() for r in reports]
    assert {"city", "zip"} <= set(column_names(acme, "acme", "crm__company"))


# -- memory ------------------------------------------------------------------------------------

ENTITIES = 20


def twenty_entities(revision: int) -> dict[str, str]:
    """20 entities; the first one's label carries `revision`, so every version is new."""
    files = {MODULE: "module: crm\nowner: crm-team\n",
             "tenants/acme/tenant.yaml": "tenant: acme\nteam: acme-admins\nmodules: [crm]\n"}
    for n in range(ENTITIES):
        label = f"Entity {n} rev {revision}" if n == 0 else f"Entity {n}"
        files[f"metadata/modules/crm/entities/e{n:02}.yaml"] = f"""
            entity: e{n:02}
            label: "{label}"
            fields:
              name: {{type: string, max_length: 100, required: true}}
              email: {{type: email, unique: true}}
              status: {{type: enum, options: [new, active, closed], default: new}}
              amount: {{type: money, currency: TWD}}
              owner_ref: {{type: reference, to: e{(n + 1) % ENTITIES:02}, on_delete: set_null}}
            """
    return files


@pytest.mark.slow
def test_two_hundred_reloads_do_not_grow_memory(make_platform: Project) -> None:
    """200 reloads of a 20-entity definition, each one a new version, grow memory by less
    than 5 MiB, and the replaced Registry objects are collected.

    Runs on both backends: each leg takes about 40 s of CPU (tracemalloc slows the
    reloads down about twice), so it stays in the default run.
    """
    platform = make_platform(twenty_entities(0))
    assert platform.create_tenant("acme").ok
    revision = 0

    def reload_once() -> None:
        nonlocal revision
        revision += 1
        make_platform.write({"metadata/modules/crm/entities/e00.yaml":
                             twenty_entities(revision)["metadata/modules/crm/entities/e00.yaml"]})
        report = platform.reload("acme")
        assert report.ok and report.changed, report.format()

    tracemalloc.start()
    try:
        for _ in range(20):  # warm-up: caches, pools and lazy imports reach their size
            reload_once()
        gc.collect()
        baseline = tracemalloc.take_snapshot()
        old_registries = []
        for _ in range(200):
            old_registries.append(weakref.ref(platform.runtime("acme").registry))
            reload_once()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(baseline, "filename"))
    top = after.compare_to(baseline, "lineno")[:5]
    assert growth < 5 * 1024 * 1024, f"grew {growth / 1024:.0f} KiB; top: {top}"
    alive = [ref for ref in old_registries[:-1] if ref() is not None]
    assert not alive, f"{len(alive)} replaced registries are still alive"
