"""Roles in YAML: module roles, merging across modules, overlay replacement per entity,
unit inheritance, the version, the tenant's `permissions` setting and every role diagnostic."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from metacrm.cli import main
from metacrm.metadata.compiler import Compiler, CompileResult
from metacrm.metadata.ir import ACTIONS, FIELD_ACCESS, SCOPES, FrozenDict, Registry, ScopeRule
from metacrm.metadata.kinds import builtin_kinds
from metacrm.metadata.library import Library
from metacrm.metadata.schemas import static_schema

WriteLibrary = Callable[[Mapping[str, str]], Library]  # the conftest fixture's type

CUSTOMER = {
    "metadata/modules/customer/module.yaml": """
        module: customer
        owner: customer-team
        """,
    "metadata/modules/customer/entities/customer.yaml": """
        entity: customer
        naming: {autonumber: "C-{#####}"}
        fields:
          name: {type: string, required: true}
          status: {type: enum, options: [open, closed], default: open}
          credit_limit: {type: money, currency: CNY}
          vip_level: {type: integer}
          score: {type: formula, returns: integer, expression: "vip_level * 10"}
        """,
}
SALES = {
    "metadata/modules/sales/module.yaml": """
        module: sales
        owner: sales-team
        depends: [customer]
        """,
    "metadata/modules/sales/entities/deal.yaml": """
        entity: deal
        fields:
          customer: {type: reference, to: customer.customer}
          amount: {type: money, currency: CNY}
          stage: {type: enum, options: [open, won, lost], default: open}
        """,
}
SALES_REP = """
    role: sales_rep
    label: {en: Sales rep, zh-Hant: 業務代表}
    description: {en: Works own and team customers.}
    grants:
      customer:
        read: subtree
        create: all
        update: {scope: own, when: {field: status, op: ne, value: closed}}
        delete: none
        default: team
        fields:
          credit_limit: hidden
          vip_level: read
    """
DEAL_REP = """
    role: sales_rep
    label: {en: Deal maker}
    grants:
      sales.deal: {read: own, update: own}
    """


def tenant(*, overlays: str = "", units: str = "", extra: str = "") -> str:
    text = "tenant: acme\nteam: acme-admins\nmodules: [customer, sales]\n"
    if overlays:
        text += f"overlays: [{overlays}]\n"
    if units:
        text += "business_units:\n" + "".join(f"  {line}\n" for line in units.splitlines())
    return text + extra


def library(write_library: WriteLibrary, files: Mapping[str, str],
            tenant_yaml: str | None = None) -> Library:
    return write_library({**CUSTOMER, **SALES,
                          "tenants/acme/tenant.yaml": tenant_yaml or tenant(), **files})


def compiled(result: CompileResult) -> Registry:
    assert result.ok, "\n".join(d.format() for d in result.diagnostics)
    assert result.registry is not None
    return result.registry


def compile_acme(lib: Library) -> CompileResult:
    return Compiler(lib).compile_tenant("acme")


def errors(result: CompileResult) -> list[tuple[str, str, int]]:
    return [(d.code, d.file or "", d.line) for d in result.diagnostics]


# -- the IR ----------------------------------------------------------------------------------

def test_a_module_role_compiles_with_default_spread_over_unlisted_actions(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/customer/roles/sales_rep.yaml": SALES_REP})
    registry = compiled(compile_acme(lib))
    role = registry.scope().roles["sales_rep"]
    assert role.label.get("zh-Hant") == "業務代表"
    assert role.description.get("en") == "Works own and team customers."
    assert role.source is not None and role.source.file.endswith("roles/sales_rep.yaml")
    assert list(role.grants) == ["customer.customer"]
    grant = role.grants["customer.customer"]
    assert grant.entity == "customer.customer" and grant.origin == "customer"
    # every granted action listed explicitly, in ACTIONS order; `delete: none` left out
    assert list(grant.actions) == [a for a in ACTIONS if a != "delete"]
    assert grant.actions["read"] == ScopeRule("subtree")  # shorthand
    assert grant.actions["create"] == ScopeRule("all")
    assert grant.actions["update"] == ScopeRule(
        "own", FrozenDict({"field": "status", "op": "ne", "value": "closed"}))
    assert isinstance(grant.actions["update"].when, FrozenDict)  # frozen
    for action in ("restore", "export", "import", "transition", "assign"):
        assert grant.actions[action] == ScopeRule("team")
    assert dict(grant.fields) == {"credit_limit": "hidden", "vip_level": "read"}
    hash(role)  # the IR stays hashable


def test_without_default_unlisted_actions_are_not_granted(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/customer/roles/viewer.yaml": """
        role: viewer
        grants:
          customer.customer: {read: all, export: {scope: business_unit}}
        """})
    role = compiled(compile_acme(lib)).scope().roles["viewer"]
    grant = role.grants["customer.customer"]
    assert dict(grant.actions) == {"read": ScopeRule("all"), "export": ScopeRule("business_unit")}
    assert dict(grant.fields) == {}
    assert role.label.get() == "Viewer"  # default label: the name, capitalised


def test_the_same_role_from_two_modules_merges_their_grants(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/roles/sales_rep.yaml": SALES_REP,
        "metadata/modules/sales/roles/sales_rep.yaml": DEAL_REP,
    })
    role = compiled(compile_acme(lib)).scope().roles["sales_rep"]
    assert list(role.grants) == ["customer.customer", "sales.deal"]  # module order
    assert role.grants["sales.deal"].origin == "sales"
    assert dict(role.grants["sales.deal"].actions) == {"read": ScopeRule("own"),
                                                       "update": ScopeRule("own")}
    assert role.label.get("en") == "Sales rep"  # the first module's label wins


def test_a_later_module_gives_the_label_when_the_first_has_none(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/roles/sales_rep.yaml":
            "role: sales_rep\ngrants:\n  customer: {read: all}\n",
        "metadata/modules/sales/roles/sales_rep.yaml": DEAL_REP,
    })
    role = compiled(compile_acme(lib)).scope().roles["sales_rep"]
    assert role.label.get("en") == "Deal maker"


def test_an_overlay_replaces_the_grant_of_each_entity_it_lists(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/roles/sales_rep.yaml": SALES_REP,
        "metadata/modules/sales/roles/sales_rep.yaml": DEAL_REP,
        "tenants/acme/overlays/tenant/sales_rep.yaml": """
            role: sales_rep
            label: {zh-Hant: 業務}
            grants:
              customer.customer: {read: all, fields: {vip_level: hidden}}
            """,
    }, tenant(overlays="overlays/tenant"))
    role = compiled(compile_acme(lib)).scope().roles["sales_rep"]
    customer = role.grants["customer.customer"]
    assert dict(customer.actions) == {"read": ScopeRule("all")}  # replaced whole, not merged
    assert dict(customer.fields) == {"vip_level": "hidden"}
    assert customer.origin == "tenant"
    assert role.grants["sales.deal"].origin == "sales"  # untouched
    assert role.label.get("zh-Hant") == "業務" and role.label.get("en") == "Sales rep"


def test_an_overlay_may_define_a_new_role_and_revoke_with_an_empty_grant(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/sales/roles/sales_rep.yaml": DEAL_REP,
        "tenants/acme/overlays/tenant/roles.yaml": """
            role: sales_rep
            grants:
              sales.deal: {}
            """,
        "tenants/acme/overlays/tenant/auditor.yaml": """
            role: auditor
            grants:
              customer.customer: {read: all}
              sales.deal: {read: all, export: all}
            """,
    }, tenant(overlays="overlays/tenant"))
    scope = compiled(compile_acme(lib)).scope()
    assert dict(scope.roles["sales_rep"].grants["sales.deal"].actions) == {}
    auditor = scope.roles["auditor"]
    assert list(auditor.grants) == ["customer.customer", "sales.deal"]
    assert {g.origin for g in auditor.grants.values()} == {"tenant"}


UNITS = """\
retail: {overlays: [overlays/retail]}
stores_north: {parent: retail, overlays: [overlays/north]}
education: {}"""


def test_units_inherit_roles_and_a_unit_override_stays_in_the_unit(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/roles/sales_rep.yaml": SALES_REP,
        "metadata/modules/sales/roles/sales_rep.yaml": DEAL_REP,
        "tenants/acme/overlays/tenant/sales_rep.yaml":
            "role: sales_rep\ngrants:\n  customer.customer: {read: all}\n",
        "tenants/acme/overlays/retail/sales_rep.yaml": """
            role: sales_rep
            label: Retail rep
            grants:
              sales.deal: {default: business_unit}
            """,
        "tenants/acme/overlays/north/sales_rep.yaml": """
            role: sales_rep
            grants:
              customer.customer: {read: own}
            """,
    }, tenant(overlays="overlays/tenant", units=UNITS))
    registry = compiled(compile_acme(lib))
    top, retail = registry.scope().roles["sales_rep"], registry.scope("retail").roles["sales_rep"]
    north = registry.scope("stores_north").roles["sales_rep"]
    education = registry.scope("education").roles["sales_rep"]

    # the parent scope is unchanged by its units
    assert top.grants["sales.deal"].origin == "sales"
    assert dict(top.grants["sales.deal"].actions) == {"read": ScopeRule("own"),
                                                      "update": ScopeRule("own")}
    assert top.label.get() == "Sales rep"
    # retail: its own deal grant, the tenant's customer grant (the very same object)
    assert retail.grants["sales.deal"].origin == "unit:retail"
    assert dict(retail.grants["sales.deal"].actions) == {
        a: ScopeRule("business_unit") for a in ACTIONS}
    assert retail.grants["customer.customer"] is top.grants["customer.customer"]
    assert retail.label.get() == "Retail rep"
    # stores_north: retail's deal grant inherited, its own customer grant
    assert north.grants["sales.deal"] is retail.grants["sales.deal"]
    assert north.grants["customer.customer"].origin == "unit:stores_north"
    assert dict(north.grants["customer.customer"].actions) == {"read": ScopeRule("own")}
    assert dict(retail.grants["customer.customer"].actions) == {"read": ScopeRule("all")}
    # a unit without role overlays shares the tenant's Role object
    assert education is top


# -- the version --------------------------------------------------------------------------------

def _rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text, "utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_changing_a_grant_changes_the_version(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/customer/roles/sales_rep.yaml": SALES_REP})
    compiler = Compiler(lib)
    first = compiled(compiler.compile_tenant("acme"))
    role_file = lib.root / "metadata/modules/customer/roles/sales_rep.yaml"
    text = role_file.read_text("utf-8")
    _rewrite(role_file, text.replace("read: subtree", "read: all"))
    second = compiled(compiler.compile_tenant("acme"))
    assert second.version != first.version
    assert second.scope().roles["sales_rep"].grants["customer.customer"].actions["read"] == \
        ScopeRule("all")
    _rewrite(role_file, text.replace("vip_level: read", "vip_level: hidden"))
    assert compiled(compiler.compile_tenant("acme")).version not in (first.version,
                                                                    second.version)
    _rewrite(role_file, text)
    assert compiled(compiler.compile_tenant("acme")).version == first.version


def test_an_overlay_grant_is_part_of_the_version(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "tenants/acme/overlays/retail/r.yaml": "role: clerk\ngrants:\n  sales.deal: {read: own}\n",
    }, tenant(units="retail: {overlays: [overlays/retail]}"))
    compiler = Compiler(lib)
    first = compiled(compiler.compile_tenant("acme"))
    assert "clerk" in first.scope("retail").roles and "clerk" not in first.scope().roles
    path = lib.root / "tenants/acme/overlays/retail/r.yaml"
    _rewrite(path, path.read_text("utf-8").replace("own", "team"))
    second = compiled(compiler.compile_tenant("acme"))
    assert second.version != first.version
    assert second.scope("retail").roles["clerk"].grants["sales.deal"].origin == "unit:retail"


# -- the tenant's permissions setting --------------------------------------------------------

@pytest.mark.parametrize(("extra", "expected"), [
    ("", "across_units"),
    ("permissions: {}\n", "across_units"),
    ("permissions: {headquarters: across_units}\n", "across_units"),
    ("permissions: {headquarters: unit_only}\n", "unit_only"),
])
def test_headquarters_setting(write_library: WriteLibrary, extra: str, expected: str) -> None:
    result = compile_acme(library(write_library, {}, tenant(extra=extra)))
    assert result.ok and result.tenant is not None
    assert result.tenant.headquarters == expected


def test_an_unknown_headquarters_mode_is_a_schema_error(write_library: WriteLibrary) -> None:
    result = compile_acme(library(write_library, {}, tenant(
        extra="permissions: {headquarters: everywhere, branches: x}\n")))
    assert not result.ok
    found = {(d.code, d.line) for d in result.diagnostics}
    assert ("schema.not-allowed", 4) in found and ("schema.unknown-key", 4) in found


# -- the schema ---------------------------------------------------------------------------------

def test_role_kind_is_registered_with_its_folder() -> None:
    kind = next(k for k in builtin_kinds() if k.name == "role")
    assert (kind.key, kind.schema, kind.folder) == ("role", "role.json", "roles")


def test_role_schema_lists_exactly_the_ir_actions_scopes_and_field_access() -> None:
    schema = static_schema("role.json")
    grant = schema["$defs"]["grant"]["properties"]
    assert [k for k in grant if k not in ("default", "fields")] == list(ACTIONS)
    assert schema["$defs"]["scope"]["enum"] == list(SCOPES)
    assert grant["fields"]["additionalProperties"]["enum"] == list(FIELD_ACCESS)
    assert schema["additionalProperties"] is False


def test_schema_command_writes_the_role_schema(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    schema = json.loads((tmp_path / "role.schema.json").read_text("utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "condition" in schema["$defs"] and "identifier" in schema["$defs"]
    tenant_schema = json.loads((tmp_path / "tenant.schema.json").read_text("utf-8"))
    assert tenant_schema["properties"]["permissions"]["properties"]["headquarters"]["enum"] == [
        "across_units", "unit_only"]


def test_schema_problems_in_a_role_are_reported_with_hints(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/customer/roles/bad.yaml": """
        role: bad
        grants:
          customer:
            reed: all
            update: everyone
            delete: {scope: own, if: x}
            fields: {name: invisible}
        """})
    result = compile_acme(lib)
    found = {(d.code, d.line): d for d in result.diagnostics}
    assert found[("schema.unknown-key", 4)].hint == "did you mean `read`?"
    assert "choose one of: none, own" in found[("schema.not-allowed", 5)].message
    assert ("schema.unknown-key", 6) in found
    assert "choose one of: hidden, read, write" in found[("schema.not-allowed", 7)].message
    assert len(result.diagnostics) == 4


# -- diagnostics --------------------------------------------------------------------------------

def test_a_module_may_not_grant_on_another_modules_entity(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/sales/roles/sales_rep.yaml": """
        role: sales_rep
        grants:
          sales.deal: {read: own}
          customer.customer: {read: own}
        """})
    result = compile_acme(lib)
    assert errors(result) == [("role.foreign-entity",
                               "metadata/modules/sales/roles/sales_rep.yaml", 4)]
    assert "grant it in `customer`'s roles folder" in (result.diagnostics[0].hint or "")
    assert result.diagnostics[0].column == 3


def test_one_module_may_define_a_role_once(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/roles/a.yaml": "role: rep\ngrants:\n  customer: {read: own}\n",
        "metadata/modules/customer/roles/b.yaml": "role: rep\ngrants:\n  customer: {read: all}\n",
    })
    result = compile_acme(lib)
    assert errors(result) == [("role.duplicate", "metadata/modules/customer/roles/b.yaml", 1)]
    assert "metadata/modules/customer/roles/a.yaml:1" in result.diagnostics[0].message


def test_administrator_is_reserved(write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/roles/admin.yaml":
            "role: administrator\ngrants:\n  customer: {read: all}\n",
        "tenants/acme/overlays/tenant/admin.yaml": "role: administrator\n",
    }, tenant(overlays="overlays/tenant"))
    result = compile_acme(lib)
    assert errors(result) == [("role.reserved", "metadata/modules/customer/roles/admin.yaml", 1),
                              ("role.reserved", "tenants/acme/overlays/tenant/admin.yaml", 1)]


def test_unknown_entity_field_and_bad_condition(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"tenants/acme/overlays/tenant/rep.yaml": """
        role: rep
        grants:
          sales.dael: {read: all}
          crm.lead: {read: all}
          sales.deal:
            read: all
            update:
              scope: own
              when:
                all:
                  - {field: stage, op: equals, value: open}
                  - {field: amont, op: gt, value: 0}
            fields:
              amount: read
              amuont: hidden
          customer: {read: all}
        """}, tenant(overlays="overlays/tenant"))
    result = compile_acme(lib)
    file = "tenants/acme/overlays/tenant/rep.yaml"
    assert errors(result) == [("role.unknown-entity", file, 3), ("role.unknown-entity", file, 4),
                              ("role.bad-condition", file, 11), ("role.bad-condition", file, 12),
                              ("role.unknown-field", file, 15), ("overlay.bare-entity", file, 16)]
    by_line = {d.line: d for d in result.diagnostics}
    assert by_line[3].hint == "did you mean `sales.deal`?"
    assert "module `crm` is not enabled here" in (by_line[4].hint or "")
    assert "unknown operator `equals`" in by_line[11].message
    assert "`amont` is not a field of sales.deal" in by_line[12].message
    assert by_line[15].hint == "did you mean `amount`?"
    assert by_line[16].hint == "write `customer.customer:`"


def test_write_on_a_field_nobody_can_write_is_a_warning(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/customer/roles/rep.yaml": """
        role: rep
        grants:
          customer:
            read: all
            fields:
              score: write
              number: write
              name: write
              vip_level: read
        """})
    result = compile_acme(lib)
    assert result.ok  # a warning does not stop the compile
    found = [(d.code, d.severity, d.line) for d in result.diagnostics]
    assert found == [("role.field-not-writable", "warning", 6),
                     ("role.field-not-writable", "warning", 7)]
    assert "formula field" in result.diagnostics[0].message
    assert "autonumber field" in result.diagnostics[1].message


def test_a_role_in_an_entities_folder_is_in_the_wrong_folder(
        write_library: WriteLibrary) -> None:
    lib = library(write_library, {
        "metadata/modules/customer/entities/rep.yaml": "role: rep\n"})
    result = compile_acme(lib)
    assert errors(result) == [("module.wrong-folder", "metadata/modules/customer/entities/rep.yaml",
                               1)]
    assert "`roles/`" in (result.diagnostics[0].hint or "")


def test_the_library_alone_compiles_module_roles(write_library: WriteLibrary) -> None:
    lib = library(write_library, {"metadata/modules/customer/roles/sales_rep.yaml": SALES_REP,
                                  "metadata/modules/sales/roles/sales_rep.yaml": DEAL_REP})
    result = Compiler(lib).compile_library()
    registry = compiled(result)
    assert list(registry.scope().roles["sales_rep"].grants) == ["customer.customer",
                                                                "sales.deal"]

