"""Property-based API tests: schemathesis generates requests from the demo tenant's own
OpenAPI document and runs them through the real WSGI app (tenant dispatch, auth, the
generated views) with a valid bearer token.

Every operation must answer without a server error, with a status code, content type and
body that its document declares. Two documents are tested: the admin's (no business unit)
and the retail unit's. On PostgreSQL the run is lighter (fewer examples, admin only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytest.register_assert_rewrite("apifixtures")
from apifixtures import CONTACT_POINT, CUSTOMER, TAG, Demo  # noqa: E402
from dbfixtures import Backend  # noqa: E402

pytest_plugins = ["apifixtures"]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# examples per operation (fuzzing phase), by backend and by whose document is tested
EXAMPLES = {("sqlite", "admin"): 25, ("sqlite", "retail"): 10, ("postgresql", "admin"): 10}


def seed(demo: Demo) -> None:
    """A few records of every entity, so generated ids (small ones first) find some."""
    service = demo.service()
    tags = [service.create(TAG, {"name": f"tag {i}"})["id"] for i in range(3)]
    for i in range(3):
        customer = service.create(CUSTOMER, {"display_name": f"Customer {i}",
                                             "external_id": f"E{i}", "tags": tags[:i]})
        service.create(CONTACT_POINT, {"customer": customer["id"], "channel": "email",
                                       "value": f"c{i}@example.com"})


@pytest.fixture(params=["admin", "retail"])
def who(request: pytest.FixtureRequest, backend: Backend) -> str:
    """Whose token: `admin` (no business unit) or `retail` (the unit's own document)."""
    if (backend.name, request.param) not in EXAMPLES:
        pytest.skip("the PostgreSQL leg is lighter: the admin document only (the retail "
                    "document runs on SQLite)")
    return request.param


@pytest.fixture
def answered(demo: Demo) -> Iterator[list[tuple[str, str, int]]]:
    """(method, path template, status) of every generated request; at the end, a check that
    the run was meaningful: every entity was created, listed, read and changed at least once
    (schemathesis ran valid requests, not only ones the API refuses)."""
    seen: list[tuple[str, str, int]] = []
    yield seen
    ok = {(method, path) for method, path, status in seen if status < 300}
    for module, name in (key.split(".") for key in (CUSTOMER, TAG, CONTACT_POINT)):
        base = f"/api/v1/{module}/{name}"
        for method, path in (("POST", base), ("GET", base), ("GET", base + "/{id}"),
                             ("PATCH", base + "/{id}")):
            assert (method, path) in ok, f"no successful {method} {path} in {len(seen)} calls"


@pytest.fixture
def api_schema(who: str, demo: Demo, answered: list[tuple[str, str, int]]) -> Any:
    seed(demo)
    config = schemathesis.Config.from_dict({
        "headers": demo.headers(who),  # a valid bearer token on every generated request
        "generation": {"max-examples": EXAMPLES[demo.backend, who], "deterministic": True},
    })
    schema = schemathesis.openapi.from_wsgi(f"/t/{demo.slug}/api/v1/openapi.json", demo.app,
                                            config=config, headers=demo.headers(who))
    assert schema.raw_schema["servers"] == [{"url": f"/t/{demo.slug}/"}]
    fields = schema.raw_schema["components"]["schemas"]["customer__customer"]["properties"]
    assert ("store_code" in fields) == (who == "retail")
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_honours_its_openapi_document(case: Any, demo: Demo, who: str,
                                              answered: list[tuple[str, str, int]]) -> None:
    response = case.call_and_validate(headers=demo.headers(who), checks=CHECKS)
    answered.append((case.operation.method.upper(), case.operation.path,
                     response.status_code))
