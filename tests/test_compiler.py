"""Behaviour of the compiler: the demo tenant, overlay order, ownership, stable ids, caching."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import write_files

from metacrm.metadata import sources
from metacrm.metadata.compiler import Compiler, CompileResult
from metacrm.metadata.library import Library, definition_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def make_library(root: Path, files: Mapping[str, str]) -> Library:
    """Write `{relative path: YAML}` below `root` (dedented) and return the library there."""
    write_files(root, files)
    return Library.at(root)


def compiled(result: CompileResult) -> Any:
    assert result.ok, "\n".join(d.format() for d in result.diagnostics)
    assert result.registry is not None
    return result.registry


def codes(result: CompileResult) -> list[str]:
    return [d.code for d in result.diagnostics]


CRM = {
    "metadata/modules/crm/module.yaml": """
        module: crm
        version: 1.0.0
        label: CRM
        owner: crm-team
    """,
    "metadata/modules/crm/entities/lead.yaml": """
        entity: lead
        label: {en: Lead, zh-Hant: 線索}
        fields:
          company: {type: string, max_length: 100, required: true, label: {en: Company}}
          notes: {type: string, max_length: 200}
          body: {type: text}
          source: {type: enum, options: [web, event], default: web}
    """,
}


def tenant_yaml(slug: str, *, team: str | None = None, overlays: list[str] | None = None,
                units: str = "") -> str:
    lines = [f"tenant: {slug}", "modules: [crm]"]
    if team:
        lines.append(f"team: {team}")
    if overlays:
        lines.append(f"overlays: [{', '.join(overlays)}]")
    if units:
        lines.append("business_units:")
        lines.extend("  " + line for line in textwrap.dedent(units).strip().splitlines())
    return "\n".join(lines) + "\n"


def one_overlay(tmp_path: Path, overlay: str, *, team: str | None = "other-team",
                extra: Mapping[str, str] | None = None) -> CompileResult:
    """Compile tenant `solo` with one tenant-wide overlay file over the CRM module."""
    library = make_library(tmp_path, {
        **CRM, "tenants/solo/tenant.yaml": tenant_yaml("solo", team=team, overlays=["ov"]),
        "tenants/solo/ov/lead.yaml": overlay, **(extra or {})})
    return Compiler(library).compile_tenant("solo")


# -- the demo tenant ---------------------------------------------------------------------------

@pytest.fixture
def acme(project_compiler: Compiler) -> Any:
    return compiled(project_compiler.compile_tenant("acme"))


def test_acme_has_a_tenant_scope_and_one_per_unit(acme: Any) -> None:
    assert list(acme.scopes) == ["", "retail", "education"]
    assert acme.scope(None) is acme.scopes[""]
    assert acme.scope("retail").unit == "retail"


def test_acme_retail_sees_store_code_after_display_name_and_birthday_hidden(acme: Any) -> None:
    customer = acme.entity("customer.customer", "retail")
    names = customer.field_names
    assert names[names.index("display_name") + 1] == "store_code"
    assert "membership_level" in names
    assert customer.field("birthday").hidden
    assert customer.field("store_code").origin == "unit:retail"
    assert customer.field("store_code").label.get("zh-Hant") == "所屬門市"
    assert not {"school", "grade"} & set(names)
    assert [v.key for v in acme.scope("retail").views_for("customer.customer")] == [
        "customer.customer_all", "customer.vip_customers", "customer.retail_members"]


def test_acme_education_sees_school_grade_and_its_relabelled_option(acme: Any) -> None:
    customer = acme.entity("customer.customer", "education")
    names = customer.field_names
    assert names[names.index("display_name") + 1] == "school"
    assert "grade" in names
    assert not customer.field("birthday").hidden
    assert not {"store_code", "membership_level"} & set(names)
    person = customer.field("kind").option("person")
    assert person is not None
    assert person.label.get("zh-Hant") == "學員本人"
    assert person.label.get("en") == "Person"  # relabel merges per locale
    assert customer.label.get("zh-Hant") == "學員"
    assert customer.label.get("en") == "Customer"
    tenant_person = acme.scope(None).entities["customer.customer"].field("kind").option("person")
    assert tenant_person.label.get("zh-Hant") == "個人"  # the relabel stays in its unit


def test_acme_tenant_overlay_reaches_every_scope(acme: Any) -> None:
    for scope in acme.scopes.values():
        customer = scope.entities["customer.customer"]
        names = customer.field_names
        assert names[names.index("phone") + 1] == "line_id"
        assert customer.field("line_id").origin == "tenant"
        assert customer.field("city").help.get("zh-Hant") == "請填寫縣市"
        assert customer.field("city").label.get("en") == "City"
    assert "store_code" not in acme.scope(None).entities["customer.customer"].field_names


def test_acme_storage_is_the_union_of_every_scope(acme: Any) -> None:
    stored = acme.entities["customer.customer"]
    seen = {n for s in acme.scopes.values() for n in s.entities["customer.customer"].field_names}
    assert set(stored.field_names) == seen
    assert {"store_code", "membership_level", "school", "grade", "line_id"} <= set(seen)
    assert stored.field_names[:len(acme.scope(None).entities["customer.customer"].fields)] == \
        acme.scope(None).entities["customer.customer"].field_names
    assert not stored.field("birthday").hidden  # hiding is a unit's layout, not storage
    assert stored.field("school").origin == "unit:education"
    assert stored.field("kind").option_values == ("person", "company")


def test_option_union_in_storage(tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM,
        "tenants/duo/tenant.yaml": tenant_yaml("duo", units="""
            north: {overlays: [north]}
            south: {overlays: [south]}
        """),
        "tenants/duo/north/lead.yaml": """
            extend: crm.lead
            fields:
              source: {options: {add: [fair], relabel: {web: Online}}}
        """,
        "tenants/duo/south/lead.yaml": """
            extend: crm.lead
            fields:
              source: {options: {add: [radio, fair]}}
        """,
    })
    registry = compiled(Compiler(library).compile_tenant("duo"))
    north = registry.entity("crm.lead", "north").field("source")
    south = registry.entity("crm.lead", "south").field("source")
    assert north.option_values == ("web", "event", "fair")
    assert south.option_values == ("web", "event", "radio", "fair")
    tenant_wide = registry.scope(None).entities["crm.lead"]
    assert tenant_wide.field("source").option_values == ("web", "event")
    assert registry.entities["crm.lead"].field("source").option_values == (
        "web", "event", "fair", "radio")


def test_sub_unit_inherits_its_parents_overlay(tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM,
        "tenants/tree/tenant.yaml": tenant_yaml("tree", units="""
            branch: {parent: trunk, overlays: [branch]}
            trunk: {overlays: [trunk]}
        """),
        "tenants/tree/trunk/lead.yaml": """
            extend: crm.lead
            fields:
              region: {type: string, max_length: 20}
        """,
        "tenants/tree/branch/lead.yaml": """
            extend: crm.lead
            fields:
              region: {label: Branch region}
              desk: {type: string, max_length: 10}
        """,
    })
    registry = compiled(Compiler(library).compile_tenant("tree"))
    assert list(registry.scopes) == ["", "trunk", "branch"]
    branch = registry.entity("crm.lead", "branch")
    assert branch.field_names[-2:] == ("region", "desk")
    assert branch.field("region").label.get() == "Branch region"
    assert branch.field("region").origin == "unit:trunk"
    assert registry.entity("crm.lead", "trunk").field("region").label.get() == "Region"


# -- sharing and versions ----------------------------------------------------------------------

SHARED_OVERLAY = """
    extend: crm.lead
    label: {zh-Hant: 潛在客戶}
    fields:
      wechat: {type: string, max_length: 64, insert_after: company}
"""
UNIT_OVERLAY = """
    extend: crm.lead
    fields:
      source: {options: {add: [store]}}
"""


def two_tenants(root: Path, *, beta_label: str = "潛在客戶") -> Library:
    """Tenants alpha and beta: the same overlays, copied into differently named folders."""
    return make_library(root, {
        **CRM,
        "tenants/alpha/tenant.yaml": tenant_yaml("alpha", overlays=["overlays/common"],
                                                 units="retail: {overlays: [overlays/shop]}"),
        "tenants/alpha/overlays/common/lead.yaml": SHARED_OVERLAY,
        "tenants/alpha/overlays/shop/lead.yaml": UNIT_OVERLAY,
        "tenants/beta/tenant.yaml": tenant_yaml("beta", overlays=["tweaks"],
                                                units="retail: {overlays: [stores/retail]}"),
        "tenants/beta/tweaks/lead_changes.yaml": SHARED_OVERLAY.replace("潛在客戶", beta_label),
        "tenants/beta/stores/retail/x.yaml": UNIT_OVERLAY,
    })


def test_tenants_with_identical_definitions_share_one_registry(tmp_path: Path) -> None:
    compiler = Compiler(two_tenants(tmp_path))
    alpha = compiler.compile_tenant("alpha")
    beta = compiler.compile_tenant("beta")
    assert alpha.tenant is not None and beta.tenant is not None
    assert (alpha.tenant.slug, beta.tenant.slug) == ("alpha", "beta")
    assert compiled(alpha) is compiled(beta)


def test_a_shared_registry_does_not_name_another_tenants_folders(tmp_path: Path) -> None:
    """Overlay folders are tenant configuration, not part of the shared definitions."""
    compiler = Compiler(two_tenants(tmp_path))
    compiler.compile_tenant("alpha")
    beta = compiler.compile_tenant("beta")
    assert beta.tenant is not None
    assert compiled(beta).units["retail"].overlays in ((), beta.tenant.units["retail"].overlays)


def test_a_tenant_differing_by_one_label_gets_another_version(tmp_path: Path) -> None:
    compiler = Compiler(two_tenants(tmp_path, beta_label="線索客戶"))
    alpha = compiled(compiler.compile_tenant("alpha"))
    beta = compiled(compiler.compile_tenant("beta"))
    assert alpha is not beta
    assert alpha.version != beta.version
    assert beta.entity("crm.lead").label.get("zh-Hant") == "線索客戶"


def test_version_is_stable_across_compilers_and_independent_of_paths(tmp_path: Path) -> None:
    first = two_tenants(tmp_path / "one")
    second = two_tenants(tmp_path / "elsewhere" / "two")
    versions = {compiled(Compiler(lib).compile_tenant(slug)).version
                for lib in (first, second, first) for slug in ("alpha", "beta")}
    assert len(versions) == 1
    assert len(next(iter(versions))) == 16


def test_module_description_is_part_of_the_version(tmp_path: Path) -> None:
    """Regression: a changed description used to hand back the old (stale) Registry."""
    library = make_library(tmp_path, {**CRM, "tenants/solo/tenant.yaml": tenant_yaml("solo")})
    compiler = Compiler(library)
    before = compiled(compiler.compile_tenant("solo"))
    manifest = tmp_path / "metadata/modules/crm/module.yaml"
    manifest.write_text(manifest.read_text("utf-8") + "description: Leads and deals\n", "utf-8")
    after = compiled(compiler.compile_tenant("solo"))
    assert after.version != before.version
    assert after.modules["crm"].description.get() == "Leads and deals"


# -- caching -----------------------------------------------------------------------------------

@pytest.fixture
def acme_copy(tmp_path: Path) -> Library:
    """The demo tenant and its modules, copied so the test may touch and change files."""
    shutil.copytree(PROJECT_ROOT / "metadata/modules", tmp_path / "metadata/modules")
    shutil.copytree(PROJECT_ROOT / "tenants/acme", tmp_path / "tenants/acme")
    return Library.at(tmp_path)


class Spy:
    """Counts the DocumentStore's stats and parses (our own cache, not a user component)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stats: Counter[Path] = Counter()
        self.parses: Counter[str] = Counter()
        spy = self

        class CountingOs:
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            @staticmethod
            def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
                spy.stats[Path(path)] += 1
                return os.stat(path, *args, **kwargs)

        real_load_bytes = sources.load_bytes

        def load_bytes(raw: bytes, display: str, *args: Any, **kwargs: Any) -> Any:
            spy.parses[display] += 1
            return real_load_bytes(raw, display, *args, **kwargs)

        monkeypatch.setattr(sources, "os", CountingOs())
        monkeypatch.setattr(sources, "load_bytes", load_bytes)

    def reset(self) -> None:
        self.stats.clear()
        self.parses.clear()


def yaml_files(library: Library) -> list[Path]:
    """The definition files a tenant compile reads (org.yaml and demo.yaml are data)."""
    return definition_files(library.root / "metadata") + [
        p for p in definition_files(library.tenants_dir)
        if p.name not in ("org.yaml", "demo.yaml")]


def test_cold_compile_parses_each_file_once(acme_copy: Library,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    compiled(Compiler(acme_copy).compile_tenant("acme"))
    files = yaml_files(acme_copy)
    assert sorted(spy.parses) == sorted(acme_copy.display(p) for p in files)
    assert set(spy.parses.values()) == {1}


def test_warm_compile_returns_the_cached_result_for_one_stat_per_file(
        acme_copy: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = Compiler(acme_copy)
    first = compiler.compile_tenant("acme")
    spy = Spy(monkeypatch)
    second = compiler.compile_tenant("acme")
    assert second is first
    assert not spy.parses
    files = yaml_files(acme_copy)
    assert spy.stats == Counter({p: 1 for p in files})


def test_touching_a_file_without_changing_it_keeps_the_version(
        acme_copy: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = Compiler(acme_copy)
    first = compiled(compiler.compile_tenant("acme"))
    target = acme_copy.tenants_dir / "acme/overlays/retail/customer.yaml"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    spy = Spy(monkeypatch)
    again = compiled(compiler.compile_tenant("acme"))
    assert again is first
    assert not spy.parses


def test_changing_a_file_changes_the_version(acme_copy: Library) -> None:
    compiler = Compiler(acme_copy)
    first = compiled(compiler.compile_tenant("acme"))
    target = acme_copy.tenants_dir / "acme/overlays/retail/customer.yaml"
    target.write_text(target.read_text("utf-8").replace("所屬門市", "門市代號"), "utf-8")
    second = compiled(compiler.compile_tenant("acme"))
    assert second.version != first.version
    assert second.entity("customer.customer", "retail").field("store_code").label.get(
        "zh-Hant") == "門市代號"
    target.write_text(target.read_text("utf-8").replace("門市代號", "所屬門市"), "utf-8")
    assert compiled(compiler.compile_tenant("acme")).version == first.version


def test_a_new_file_in_an_overlay_folder_is_picked_up(acme_copy: Library) -> None:
    compiler = Compiler(acme_copy)
    first = compiled(compiler.compile_tenant("acme"))
    make_library(acme_copy.root, {"tenants/acme/overlays/retail/zz_extra.yaml": """
        extend: customer.customer
        fields:
          loyalty_card: {type: string, max_length: 30}
    """})
    second = compiled(compiler.compile_tenant("acme"))
    assert second.version != first.version
    assert "loyalty_card" in second.entity("customer.customer", "retail").field_names


# -- overlay order -----------------------------------------------------------------------------

def test_unit_overlay_applies_after_tenant_overlay(tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM,
        "tenants/solo/tenant.yaml": tenant_yaml("solo", overlays=["tenant_ov"],
                                                units="shop: {overlays: [unit_ov]}"),
        "tenants/solo/tenant_ov/lead.yaml": """
            extend: crm.lead
            fields:
              notes: {label: {en: Tenant notes, zh-Hant: 備註}, default: tenant}
        """,
        "tenants/solo/unit_ov/lead.yaml": """
            extend: crm.lead
            fields:
              notes: {label: {en: Shop notes}, default: shop}
        """,
    })
    registry = compiled(Compiler(library).compile_tenant("solo"))
    tenant_notes = registry.scope(None).entities["crm.lead"].field("notes")
    shop_notes = registry.entity("crm.lead", "shop").field("notes")
    assert (tenant_notes.label.get("en"), tenant_notes.default) == ("Tenant notes", "tenant")
    assert (shop_notes.label.get("en"), shop_notes.default) == ("Shop notes", "shop")
    assert shop_notes.label.get("zh-Hant") == "備註"  # locales the unit did not set survive


def test_later_file_wins_within_a_folder_and_folders_apply_in_listed_order(
        tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM,
        # `zz` is listed first, so `aa` (applied second) wins despite sorting before it
        "tenants/solo/tenant.yaml": tenant_yaml("solo", overlays=["zz", "aa"]),
        "tenants/solo/zz/a.yaml": "extend: crm.lead\nfields:\n  notes: {label: zz-a}\n",
        "tenants/solo/zz/b.yaml": "extend: crm.lead\nfields:\n  notes: {label: zz-b}\n"
                                  "  body: {label: zz-b}\n",
        "tenants/solo/aa/a.yaml": "extend: crm.lead\nfields:\n  notes: {label: aa-a}\n",
    })
    lead = compiled(Compiler(library).compile_tenant("solo")).entity("crm.lead")
    assert lead.field("notes").label.get() == "aa-a"
    assert lead.field("body").label.get() == "zz-b"


# -- ownership ---------------------------------------------------------------------------------

MAX_LENGTH = """
    extend: crm.lead
    fields:
      notes: {max_length: 500}
"""


def test_the_owner_team_may_change_max_length(tmp_path: Path) -> None:
    result = one_overlay(tmp_path, MAX_LENGTH, team="crm-team")
    assert compiled(result).entity("crm.lead").field("notes").max_length == 500


def test_an_overlay_may_name_the_owner_team_itself(tmp_path: Path) -> None:
    result = one_overlay(tmp_path, "team: crm-team\n" + textwrap.dedent(MAX_LENGTH))
    assert compiled(result).entity("crm.lead").field("notes").max_length == 500


def test_another_team_may_not_change_max_length(tmp_path: Path) -> None:
    result = one_overlay(tmp_path, MAX_LENGTH, team="other-team")
    assert result.registry is None
    [problem] = result.diagnostics
    assert problem.code == "overlay.not-owner"
    assert (problem.file, problem.line, problem.column) == ("tenants/solo/ov/lead.yaml", 3, 11)
    assert "`other-team`" in problem.message and "`crm-team`" in problem.message
    assert problem.path == ("fields", "notes", "max_length")


def test_a_units_own_team_decides_for_its_overlays(tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM,
        "tenants/solo/tenant.yaml": tenant_yaml("solo", team="admins", units="""
            owners: {team: crm-team, overlays: [owners]}
            others: {overlays: [others]}
        """),
        "tenants/solo/owners/lead.yaml": MAX_LENGTH,
        "tenants/solo/others/lead.yaml": MAX_LENGTH,
    })
    result = Compiler(library).compile_tenant("solo")
    assert [(d.code, d.file) for d in result.diagnostics] == [
        ("overlay.not-owner", "tenants/solo/others/lead.yaml")]
    assert "team `admins`" in result.diagnostics[0].message


def test_the_owner_may_widen_string_to_text(tmp_path: Path) -> None:
    overlay = "extend: crm.lead\nfields:\n  notes: {type: text}\n"
    notes = compiled(one_overlay(tmp_path, overlay, team="crm-team")).entity(
        "crm.lead").field("notes")
    assert notes.type == "text"


def test_another_team_may_not_widen(tmp_path: Path) -> None:
    overlay = "extend: crm.lead\nfields:\n  notes: {type: text}\n"
    result = one_overlay(tmp_path, overlay, team="other-team")
    assert codes(result) == ["overlay.not-owner"]
    assert "widen the type" in result.diagnostics[0].message


def test_nobody_may_narrow_text_to_string(tmp_path: Path) -> None:
    overlay = "extend: crm.lead\nfields:\n  body: {type: string}\n"
    result = one_overlay(tmp_path, overlay, team="crm-team")
    assert codes(result) == ["overlay.type-change"]
    assert result.diagnostics[0].line == 3


def test_any_team_may_add_fields_options_labels_defaults_and_hiding(tmp_path: Path) -> None:
    overlay = """
        extend: crm.lead
        fields:
          notes: {label: Remarks, help: Anything else, hidden: true, default: "-"}
          source: {options: {add: [fair], relabel: {web: Website}}, default: event}
          company: {required: true, max_length: 100}
          budget: {type: money, currency: EUR}
    """
    lead = compiled(one_overlay(tmp_path, overlay, team="other-team")).entity("crm.lead")
    assert lead.field("notes").hidden and lead.field("notes").label.get() == "Remarks"
    assert lead.field("source").option_values == ("web", "event", "fair")
    assert lead.field("source").option("web").label.get() == "Website"
    assert lead.field("source").default == "event"
    assert lead.field("budget").origin == "tenant"


def test_all_overlay_problems_are_reported_in_one_run(tmp_path: Path) -> None:
    overlay = """
        extend: crm.lead
        fields:
          company: {max_length: 50, required: false}
          body: {type: integer}
          source: {options: {add: [web]}}
          nope: {label: Nope}
    """
    result = one_overlay(tmp_path, overlay)
    assert codes(result) == ["overlay.not-owner", "overlay.not-owner", "overlay.type-change",
                             "overlay.option-exists", "overlay.unknown-field"]
    assert [d.line for d in result.diagnostics] == [3, 3, 4, 5, 6]


# -- stable ids --------------------------------------------------------------------------------

def lead_ids(tmp_path: Path, lead: str, overlay: str | None = None) -> dict[str, str]:
    files = {**CRM, "metadata/modules/crm/entities/lead.yaml": lead,
             "tenants/solo/tenant.yaml": tenant_yaml(
                 "solo", team="crm-team", overlays=["ov"] if overlay else None)}
    if overlay:
        files["tenants/solo/ov/lead.yaml"] = overlay
    registry = compiled(Compiler(make_library(tmp_path, files)).compile_tenant("solo"))
    [entity] = [e for e in registry.entities.values()]
    return {"": entity.id, **{f.name: f.id for f in entity.fields}}


def test_renamed_field_keeps_its_id_and_a_new_field_gets_a_new_one(tmp_path: Path) -> None:
    before = lead_ids(tmp_path / "v1", """
        entity: lead
        fields:
          company: {type: string}
          phone: {type: phone}
    """)
    after = lead_ids(tmp_path / "v2", """
        entity: lead
        fields:
          organisation: {type: string, renamed_from: company}
          mobile: {type: phone, renamed_from: [phone]}
          email: {type: email}
    """)
    assert after["organisation"] == before["company"] == "crm.lead.company"
    assert after["mobile"] == before["phone"]
    assert after["email"] == "crm.lead.email"
    assert after["email"] not in before.values()


def test_renamed_entity_keeps_its_id_and_its_fields_ids(tmp_path: Path) -> None:
    before = lead_ids(tmp_path / "v1", "entity: lead\nfields:\n  company: {type: string}\n")
    after = lead_ids(tmp_path / "v2", """
        entity: prospect
        renamed_from: lead
        fields:
          company: {type: string}
    """, overlay="extend: crm.prospect\nfields:\n  vat: {type: string}\n")
    assert after[""] == before[""] == "crm.lead"
    assert after["company"] == before["company"]
    assert after["vat"] == "crm.lead.vat"


def test_several_renames_root_the_id_at_the_first_name(tmp_path: Path) -> None:
    ids = lead_ids(tmp_path, """
        entity: lead
        fields:
          mobile: {type: phone, renamed_from: [cell, telephone]}
    """)
    assert ids["mobile"] == "crm.lead.telephone"


def test_a_new_field_may_not_reuse_a_renamed_fields_id(tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM, "metadata/modules/crm/entities/lead.yaml": """
            entity: lead
            fields:
              organisation: {type: string, renamed_from: company}
        """,
        "tenants/solo/tenant.yaml": tenant_yaml("solo", overlays=["ov"]),
        "tenants/solo/ov/lead.yaml": "extend: crm.lead\nfields:\n  company: {type: string}\n",
    })
    result = Compiler(library).compile_tenant("solo")
    assert result.registry is None
    [problem] = [d for d in result.diagnostics if d.code == "id.duplicate-field"]
    assert "`crm.lead.company` takes the stable id of `organisation`" in problem.message
    assert problem.file == "tenants/solo/ov/lead.yaml" and problem.line == 3


def test_a_partial_overlay_label_keeps_the_default_for_other_locales(tmp_path: Path) -> None:
    overlay = "extend: crm.lead\nfields:\n  notes: {label: {zh-Hant: 備註}}\n"
    notes = compiled(one_overlay(tmp_path, overlay)).entity("crm.lead").field("notes")
    assert notes.label.get("zh-Hant") == "備註"
    assert notes.label.get("en") == "Notes"


def test_storage_widened_to_text_drops_the_string_limit(tmp_path: Path) -> None:
    library = make_library(tmp_path, {
        **CRM,
        "tenants/duo/tenant.yaml": tenant_yaml("duo", team="crm-team", units="""
            short: {overlays: [short]}
            long: {overlays: [long]}
        """),
        "tenants/duo/short/lead.yaml": "extend: crm.lead\nfields:\n"
                                       "  memo: {type: string, max_length: 20}\n",
        "tenants/duo/long/lead.yaml": "extend: crm.lead\nfields:\n  memo: {type: text}\n",
    })
    memo = compiled(Compiler(library).compile_tenant("duo")).entities["crm.lead"].field("memo")
    assert memo.type == "text"
    assert memo.max_length is None
