"""Tenants on SQLite and PostgreSQL: the `tenant` commands, the dispatcher's three ways of
naming a tenant, 404 problem+json for unknown and archived tenants, per-tenant overlays and
isolation by construction (one file, or one schema, per tenant)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dbfixtures import Project, column_names, fetch, insert, inspector, table_names

from metacrm.cli import main
from metacrm.platform.app import create_app
from metacrm.platform.database import tenant_schema
from metacrm.platform.problems import PROBLEM_TYPE
from metacrm.platform.runtime import Platform

LIBRARY = {
    "metadata/modules/crm/module.yaml": "module: crm\nowner: crm-team\n",
    "metadata/modules/crm/entities/company.yaml": """
        entity: company
        fields:
          name: {type: string, required: true}
          city: {type: string}
        """,
    "tenants/alpha/tenant.yaml": "tenant: alpha\nlabel: Alpha Ltd\nteam: alpha-admins\n"
                                 "modules: [crm]\n",
    "tenants/beta/tenant.yaml": """
        tenant: beta
        label: Beta Inc
        team: beta-admins
        modules: [crm]
        business_units:
          retail: {overlays: [overlays/retail]}
        """,
    "tenants/beta/overlays/retail/company.yaml": """
        extend: crm.company
        fields:
          store_code: {type: string, max_length: 20, insert_after: name}
        """,
}


def cli(project: Project, *args: str):
    return CliRunner().invoke(main, ["--root", str(project.root), *args], env=project.env())


@pytest.fixture
def two_tenants(make_platform: Project) -> Platform:
    platform = make_platform(LIBRARY, check_interval=0)
    for slug in ("alpha", "beta"):
        report = platform.create_tenant(slug)
        assert report.ok, report.format()
    return platform


def assert_problem(response, status: int = 404) -> dict:
    assert response.status_code == status
    assert response.headers["Content-Type"] == PROBLEM_TYPE
    body = json.loads(response.data)
    assert body["status"] == status and body["title"]
    return body


# -- the tenant commands -----------------------------------------------------------------------

def test_tenant_create_list_and_archive_through_the_cli(make_platform: Project) -> None:
    make_platform.write(LIBRARY)
    result = cli(make_platform, "tenant", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert {r["slug"]: r["status"] for r in json.loads(result.output)} == {
        "alpha": "not created", "beta": "not created"}

    result = cli(make_platform, "tenant", "create", "alpha")
    assert result.exit_code == 0, result.output
    assert "alpha: new →" in result.output and "create table crm__company" in result.output
    result = cli(make_platform, "tenant", "create", "alpha")  # idempotent
    assert result.exit_code == 0 and "unchanged" in result.output

    result = cli(make_platform, "tenant", "list", "--format", "json")
    rows = {r["slug"]: r for r in json.loads(result.output)}
    assert rows["alpha"]["status"] == "active" and rows["alpha"]["label"] == "Alpha Ltd"
    assert rows["alpha"]["version"] and rows["beta"]["status"] == "not created"
    result = cli(make_platform, "tenant", "list")
    assert result.exit_code == 0
    assert [line.split()[:2] for line in result.output.splitlines()] == [
        ["alpha", "active"], ["beta", "not"]]

    result = cli(make_platform, "tenant", "archive", "alpha")
    assert result.exit_code == 0 and "archived alpha" in result.output
    result = cli(make_platform, "tenant", "archive", "alpha")
    assert result.exit_code == 1 and "no active tenant 'alpha'" in result.output
    result = cli(make_platform, "tenant", "list", "--format", "json")
    assert {r["slug"]: r["status"] for r in json.loads(result.output)}["alpha"] == "archived"

    platform = make_platform()
    assert platform.active_slugs() == []
    assert "crm__company" in table_names(platform, "alpha")  # archiving keeps the data


def test_tenant_create_of_an_undefined_or_invalid_tenant_fails(make_platform: Project) -> None:
    make_platform.write(LIBRARY)
    result = cli(make_platform, "tenant", "create", "gamma")
    assert result.exit_code == 1 and "gamma" in result.output
    make_platform.write({"tenants/delta/tenant.yaml": "tenant: delta\nmodules: [nope]\n"})
    result = cli(make_platform, "tenant", "create", "delta")
    assert result.exit_code == 1 and "kept version none" in result.output
    result = cli(make_platform, "tenant", "list", "--format", "json")
    assert {r["slug"]: r["status"] for r in json.loads(result.output)}["delta"] == "not created"


# -- the dispatcher ----------------------------------------------------------------------------

def test_the_three_ways_to_name_a_tenant(two_tenants: Platform, make_platform: Project) -> None:
    app = create_app(make_platform.settings(base_domain="crm.example.test"), two_tenants)
    client = app.test_client()
    versions = {slug: two_tenants.runtime(slug).version for slug in ("alpha", "beta")}

    by_prefix = client.get("/t/alpha/")
    assert by_prefix.status_code == 200
    assert (by_prefix.json["tenant"], by_prefix.json["version"]) == ("alpha", versions["alpha"])
    by_header = client.get("/", headers={"X-Tenant": "beta"})
    assert (by_header.json["tenant"], by_header.json["version"]) == ("beta", versions["beta"])
    by_host = client.get("/", base_url="http://alpha.crm.example.test")
    assert (by_host.json["tenant"], by_host.json["version"]) == ("alpha", versions["alpha"])
    # the prefix wins over the header, the header over the host
    assert client.get("/t/beta/", headers={"X-Tenant": "alpha"},
                      base_url="http://alpha.crm.example.test").json["tenant"] == "beta"
    assert client.get("/", headers={"X-Tenant": "beta"},
                      base_url="http://alpha.crm.example.test").json["tenant"] == "beta"
    # a host outside the base domain names no tenant
    assert "tenants" in client.get("/", base_url="http://alpha.elsewhere.test").json

    root = client.get("/")  # no tenant named: the installation's index
    assert root.status_code == 200
    assert [t["slug"] for t in root.json["tenants"]] == ["alpha", "beta"]


@pytest.mark.parametrize("how", ["prefix", "header", "subdomain"])
def test_unknown_tenants_get_404_problem_json(two_tenants: Platform, make_platform: Project,
                                              how: str) -> None:
    app = create_app(make_platform.settings(base_domain="crm.example.test"), two_tenants)
    client = app.test_client()
    for slug in ("nobody", "Bad_Slug!"):
        if how == "prefix":
            response = client.get(f"/t/{slug}/")
            if slug != "nobody":  # not a slug: not a tenant prefix at all
                assert response.status_code == 404
                continue
        elif how == "header":
            response = client.get("/", headers={"X-Tenant": slug})
        else:
            response = client.get("/", base_url=f"http://{slug.lower()}.crm.example.test")
        body = assert_problem(response)
        assert body["title"] == "Unknown tenant"


def test_an_archived_tenant_answers_404_problem_json(two_tenants: Platform,
                                                     make_platform: Project) -> None:
    client = create_app(make_platform.settings(), two_tenants).test_client()
    assert client.get("/t/alpha/").status_code == 200
    assert client.get("/t/beta/").status_code == 200

    assert two_tenants.archive_tenant("alpha")  # through this process's platform
    body = assert_problem(client.get("/t/alpha/"))
    assert body["tenant"] == "alpha"

    result = cli(make_platform, "tenant", "archive", "beta")  # through another process
    assert result.exit_code == 0, result.output
    assert_problem(client.get("/t/beta/"))
    assert_problem(client.get("/", headers={"X-Tenant": "beta"}))
    assert client.get("/").json["tenants"] == []

    result = cli(make_platform, "tenant", "create", "beta")  # re-activated, data kept
    assert result.exit_code == 0, result.output
    assert client.get("/t/beta/").status_code == 200


# -- per-tenant definitions and isolation ------------------------------------------------------

def test_tenants_with_different_overlays_get_different_columns(two_tenants: Platform) -> None:
    alpha = column_names(two_tenants, "alpha", "crm__company")
    beta = column_names(two_tenants, "beta", "crm__company")
    assert "store_code" in beta and "store_code" not in alpha
    assert set(beta) - set(alpha) == {"store_code"}
    assert two_tenants.runtime("alpha").version != two_tenants.runtime("beta").version
    beta_table = two_tenants.runtime("beta").tables.by_entity["crm.company"]
    assert "store_code" in beta_table.c
    assert "store_code" not in two_tenants.runtime("alpha").tables.by_entity["crm.company"].c


def test_the_same_entity_in_two_tenants_is_two_tables(two_tenants: Platform,
                                                      make_platform: Project) -> None:
    alpha_db = two_tenants.databases.tenant("alpha")
    beta_db = two_tenants.databases.tenant("beta")
    if make_platform.backend.is_postgres:
        assert (alpha_db.schema, beta_db.schema) == (tenant_schema("alpha"),
                                                     tenant_schema("beta"))
        assert alpha_db.engine is beta_db.engine  # one database, one schema per tenant
        for slug in ("alpha", "beta"):
            with inspector(two_tenants, slug) as (insp, _):
                assert "crm__company" in insp.get_table_names(schema=tenant_schema(slug))
                assert "crm__company" not in insp.get_table_names()  # nothing in public
    else:
        alpha_file = two_tenants.databases.tenant_file("alpha")
        beta_file = two_tenants.databases.tenant_file("beta")
        assert alpha_file != beta_file and alpha_file.is_file() and beta_file.is_file()
        assert (alpha_db.schema, beta_db.schema) == (None, None)
        assert alpha_db.engine.url.database != beta_db.engine.url.database

    alpha = two_tenants.runtime("alpha")
    beta = two_tenants.runtime("beta")
    insert(alpha, "crm.company", {"name": "Only in alpha"})
    assert fetch(two_tenants, "alpha", "SELECT name FROM crm__company") == [("Only in alpha",)]
    assert fetch(two_tenants, "beta", "SELECT count(*) FROM crm__company") == [(0,)]
    with beta.connect() as connection:
        table = beta.tables.by_entity["crm.company"]
        assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    insert(beta, "crm.company", {"name": "Only in beta", "store_code": "B1"})
    with alpha.connect() as connection:
        table = alpha.tables.by_entity["crm.company"]
        assert connection.execute(sa.select(table.c.name)).scalars().all() == ["Only in alpha"]


def test_a_path_prefix_with_a_newline_still_names_its_tenant() -> None:
    from metacrm.platform.tenancy import tenant_from_environ

    environ = {"PATH_INFO": "/t/acme/api/v1/_identity/units/a\nb", "SCRIPT_NAME": ""}
    assert tenant_from_environ(environ, None) == "acme"
    assert environ["PATH_INFO"] == "/api/v1/_identity/units/a\nb"
    assert environ["SCRIPT_NAME"] == "/t/acme"
