"""The generated OpenAPI 3.1 document: valid for every business-unit scope, one set of
components per entity, unit fields only in their unit's document, and hot reload."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

pytest.register_assert_rewrite("apifixtures")
from apifixtures import CUSTOMER, Demo  # noqa: E402

from metacrm.generators.openapi import build_openapi, component_name  # noqa: E402

pytest_plugins = ["apifixtures"]
WHO = ("admin", "retail", "education")


def document(demo: Demo, who: str | None = "admin") -> dict[str, Any]:
    response = demo.get(demo.url("openapi.json"), who=who)
    assert response.status_code == 200, response.get_data(True)
    assert response.mimetype == "application/json"
    return response.get_json()


def customer_properties(doc: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    return doc["components"]["schemas"][f"customer__customer{suffix}"]["properties"]


def test_the_document_is_valid_openapi_31_for_every_scope(demo: Demo) -> None:
    docs = {who: document(demo, who) for who in WHO}
    docs["public"] = document(demo, None)
    for who, doc in docs.items():
        assert doc["openapi"] == "3.1.0", who
        validate(doc, cls=OpenAPIV31SpecValidator)
        assert doc["info"]["version"] == demo.runtime.version
        # a client generated from it reaches this tenant's API
        assert doc["servers"] == [{"url": f"/t/{demo.slug}/"}]
    assert docs["public"] == docs["admin"]
    registry = demo.runtime.registry
    for unit in (None, *registry.units):
        built = build_openapi(registry.scope(unit), tenant=demo.slug, version=registry.version)
        validate(built, cls=OpenAPIV31SpecValidator)
    # through the X-Tenant header the API is at the root
    by_header = demo.client.get("/api/v1/openapi.json", headers={"X-Tenant": demo.slug})
    assert by_header.get_json()["servers"] == [{"url": "/"}]


def test_components_and_paths_per_entity(demo: Demo) -> None:
    doc = document(demo)
    schemas = doc["components"]["schemas"]
    scope = demo.runtime.registry.scope(None)
    assert set(schemas) == {"Problem"} | {
        component_name(entity, suffix) for entity in scope.entities.values()
        for suffix in ("", "__create", "__update")}
    for key, entity in scope.entities.items():
        module, name = key.split(".")
        base = f"/api/v1/{module}/{name}"
        assert set(doc["paths"][base]) == {"get", "post"}
        assert set(doc["paths"][base + "/{id}"]) == {"parameters", "get", "patch", "delete"}
        for tail in ("/{id}/restore", "/{id}/history", "/bulk"):
            assert base + tail in doc["paths"]
        record = schemas[component_name(entity)]
        for field in entity.fields:
            if field.type not in ("children", "many_to_many"):
                assert field.name in record["properties"], (key, field.name)
        create = schemas[component_name(entity, "__create")]
        assert create["additionalProperties"] is False
        assert "id" not in create["properties"] and "row_version" not in create["properties"]
    assert "/api/v1/_meta" in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

    create = schemas["customer__customer__create"]
    assert create["required"] == ["display_name"]  # kind has a default
    for read_only in ("number", "value_tier", "contact_points"):
        assert read_only not in create["properties"]
    assert create["properties"]["tags"]["type"] == "array"
    assert create["properties"]["kind"]["enum"] == ["person", "company"]
    assert create["properties"]["display_name"]["maxLength"] == 200
    assert "row_version" in schemas["customer__customer__update"]["properties"]
    assert schemas["customer__tag__create"]["properties"]["color"]["pattern"] == \
        "^#[0-9a-fA-F]{6}$"
    assert schemas["customer__customer"]["properties"]["value_tier"] is not None


def test_unit_fields_appear_only_in_their_units_document(demo: Demo) -> None:
    docs = {who: document(demo, who) for who in WHO}
    for suffix in ("", "__create", "__update"):
        retail = customer_properties(docs["retail"], suffix)
        education = customer_properties(docs["education"], suffix)
        admin = customer_properties(docs["admin"], suffix)
        assert {"store_code", "membership_level"} <= set(retail)
        assert {"school", "grade"} <= set(education)
        assert not {"school", "grade"} & set(retail)
        assert not {"store_code", "membership_level"} & set(education)
        assert not {"store_code", "membership_level", "school", "grade"} & set(admin)
    retail_level = customer_properties(docs["retail"], "__create")["membership_level"]
    assert retail_level["enum"] == ["bronze", "silver", "gold"]
    grade = customer_properties(docs["education"], "__create")["grade"]
    assert (grade["minimum"], grade["maximum"]) == (1, 12)
    # list filters name the unit's fields too
    params = {p["name"] for p in docs["retail"]["paths"]["/api/v1/customer/customer"]["get"][
        "parameters"]}
    assert "store_code" in params and "school" not in params


def test_docs_page(demo: Demo) -> None:
    page = demo.client.get(f"/t/{demo.slug}/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/v1/customer/customer" in html and "customer__customer__create" in html
    assert f"/t/{demo.slug}/api/v1/openapi.json" in html


NICKNAME = "  nickname: {type: string, max_length: 40, label: {en: Nickname}}\n"


def test_hot_reload_adds_a_field_without_restarting(demo: Demo) -> None:
    url = demo.entity_url()
    before = document(demo)
    assert "nickname" not in customer_properties(before, "__create")
    rejected = demo.post(url, {"display_name": "Ann", "nickname": "A"})
    assert rejected.status_code == 422
    record = demo.post(url, {"display_name": "Old"}).get_json()

    overlay = demo.project.root / "tenants" / demo.slug / "overlays" / "tenant" / "customer.yaml"
    overlay.write_text(overlay.read_text("utf-8").rstrip("\n") + "\n" + NICKNAME, "utf-8")
    report = demo.platform.reload(demo.slug)
    assert report.ok and report.changed, report.format()

    after = document(demo)
    assert after["info"]["version"] == report.version != before["info"]["version"]
    assert customer_properties(after, "__create")["nickname"]["maxLength"] == 40
    assert "nickname" in customer_properties(after)
    assert "nickname" in customer_properties(document(demo, "retail"), "__update")
    validate(after, cls=OpenAPIV31SpecValidator)

    created = demo.post(url, {"display_name": "Ann", "nickname": "A"})
    assert created.status_code == 201, created.get_data(True)
    assert created.get_json()["nickname"] == "A"
    assert demo.get(created.headers["Location"]).get_json()["nickname"] == "A"
    too_long = demo.post(url, {"display_name": "Bo", "nickname": "x" * 41})
    assert too_long.status_code == 422
    patched = demo.patch(demo.entity_url(CUSTOMER, record["id"]), {"nickname": "O"})
    assert patched.status_code == 200 and patched.get_json()["nickname"] == "O"
    meta = demo.get(demo.url("_meta")).get_json()
    assert meta["version"] == report.version
    assert "nickname" in str(meta["entities"][CUSTOMER])

    # a broken definition is refused: the working version keeps serving
    overlay.write_text(overlay.read_text("utf-8") + "  broken: {type: no_such_type}\n",
                       "utf-8")
    refused = demo.platform.reload(demo.slug)
    assert not refused.ok
    assert document(demo)["info"]["version"] == report.version
    assert demo.post(url, {"display_name": "Cy", "nickname": "C"}).status_code == 201
