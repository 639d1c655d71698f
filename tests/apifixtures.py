"""Fixtures for the record service and REST API tests: the demo tenant on every backend.

Loaded by the record/API/OpenAPI test modules with ``pytest_plugins = ["apifixtures"]``.
It builds on ``tests/dbfixtures.py`` (the ``backend`` and ``make_platform`` fixtures, run
on SQLite and, when ``METACRM_TEST_PG_URL`` is set, on PostgreSQL).

``demo`` copies the shipped definitions (``metadata/`` and ``tenants/acme``) into a
throw-away project under a tenant slug unique to the test (``acme-<hex>``), provisions it,
creates three users (``admin`` without a business unit, ``retail`` and ``education``) with
bearer tokens, and serves it through the real app (``create_app``) with a Flask test client.
Unique slugs keep tests apart even when they share one platform store (pytest-xdist).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbfixtures import Project
from flask import Flask
from flask.testing import FlaskClient

from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, issue_token, set_roles, user_by_name
from metacrm.platform.events import RecordEvent
from metacrm.platform.permissions import load_principal
from metacrm.platform.records import Actor, RecordService
from metacrm.platform.runtime import Platform, TenantRuntime
from metacrm.platform.systables import runtime_system_tables

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CUSTOMER = "customer.customer"
TAG = "customer.tag"
CONTACT_POINT = "customer.contact_point"
USERS = {"admin": None, "retail": "retail", "education": "education"}


def conditions_available() -> bool:
    """Whether the condition engine (metacrm.engines.conditions) can be imported yet."""
    try:
        from metacrm.engines.conditions import parse_condition, to_sql  # noqa: F401
    except ImportError:
        return False
    return True


needs_conditions = pytest.mark.skipif(
    not conditions_available(),
    reason="metacrm.engines.conditions (parse_condition, to_sql) is not importable yet: "
           "filter= and field parameters cannot run without the condition engine")


def unique_slug(prefix: str = "acme") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def copy_demo_definitions(project_root: Path, slug: str) -> None:
    """The shipped metadata/ and tenants/acme, the tenant renamed to `slug`."""
    shutil.copytree(PROJECT_ROOT / "metadata", project_root / "metadata", dirs_exist_ok=True)
    target = project_root / "tenants" / slug
    shutil.copytree(PROJECT_ROOT / "tenants" / "acme", target, dirs_exist_ok=True)
    tenant_file = target / "tenant.yaml"
    lines = tenant_file.read_text("utf-8").splitlines()
    tenant_file.write_text("\n".join(f"tenant: {slug}" if line.startswith("tenant:") else line
                                     for line in lines) + "\n", "utf-8")


@dataclass
class Demo:
    """The demo tenant on one backend: platform, app, client, users and their tokens."""

    project: Project
    platform: Platform
    slug: str
    app: Flask
    client: FlaskClient
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    units: dict[str, str | None] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.project.backend.name

    @property
    def runtime(self) -> TenantRuntime:
        return self.platform.runtime(self.slug)

    def service(self, who: str | None = "admin", *, emit: bool = True) -> RecordService:
        """The record service acting as user `who` with their roles (None: the system)."""
        actor = Actor()
        if who is not None:
            with self.runtime.connect() as connection:
                principal = load_principal(connection, runtime_system_tables(self.runtime),
                                           user_by_name(connection, who),
                                           self.runtime.registry.units)
            actor = Actor.of(principal)
        return RecordService(self.runtime, actor, emit=self.platform.emit if emit else None,
                             operators=self.platform.operators)

    def add_user(self, username: str, unit: str | None = None, *,
                 expires_in: dt.timedelta | None = None,
                 roles: tuple[str, ...] = ("administrator",)) -> str:
        """A user with a token; an administrator unless `roles` says otherwise."""
        with self.runtime.begin() as connection:
            user_id = create_user(connection, username, business_unit=unit)
            set_roles(connection, user_id, roles)
            token = issue_token(connection, user_id, "tests", expires_in)
        self.user_ids[username] = user_id
        self.units[username] = unit
        self.tokens[username] = token
        return token

    # -- HTTP -------------------------------------------------------------------------------

    def url(self, path: str = "") -> str:
        return f"/t/{self.slug}/api/v1/{path.lstrip('/')}"

    def entity_url(self, entity: str = CUSTOMER, record_id: int | None = None,
                   tail: str = "") -> str:
        module, name = entity.split(".")
        url = self.url(f"{module}/{name}")
        if record_id is not None:
            url += f"/{record_id}"
        return url + tail

    def headers(self, who: str | None = "admin", **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return headers

    def request(self, method: str, url: str, *, who: str | None = "admin",
                json_body: Any = None, data: str | bytes | None = None,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        all_headers = self.headers(who, **dict(headers or {}))
        if json_body is not None:
            data = json.dumps(json_body)
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        return self.client.open(url, method=method, data=data, headers=all_headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", url, json_body=body, **kwargs)

    def patch(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", url, json_body=body, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)

    # -- looking at the database ------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        with self.runtime.connect() as connection:
            yield connection

    def table(self, entity: str) -> sa.Table:
        return self.runtime.tables.by_entity[entity]

    def link_table(self, entity: str, field_name: str) -> sa.Table:
        runtime = self.runtime
        field_def = runtime.registry.entities[entity].get_field(field_name)
        return runtime.tables.by_id[field_def.id]


def make_demo(make_platform: Project, *, slug: str | None = None,
              check_interval: float = 1.0) -> Demo:
    """Provision the demo tenant in `make_platform`'s project and serve it."""
    slug = slug or unique_slug()
    copy_demo_definitions(make_platform.root, slug)
    platform = make_platform(check_interval=check_interval)
    report = platform.create_tenant(slug)
    assert report.ok, report.format()
    app = create_app(make_platform.settings(), platform)
    app.testing = True
    demo = Demo(make_platform, platform, slug, app, app.test_client())
    for username, unit in USERS.items():
        demo.add_user(username, unit)
    return demo


@pytest.fixture
def demo(make_platform: Project) -> Demo:
    """The demo tenant (acme's definitions, a unique slug) with users, tokens and an app."""
    return make_demo(make_platform)


@pytest.fixture
def events(demo: Demo) -> list[RecordEvent]:
    """Every RecordEvent the demo platform emits during the test, in order."""
    seen: list[RecordEvent] = []
    demo.platform.subscribe(seen.append)
    return seen


class StatementCounter:
    """Counts the SQL statements an engine executes while `active`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.active = False
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.active:
            self.statements.append(statement)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements = []
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)


@pytest.fixture
def statement_counter(demo: Demo) -> Iterator[StatementCounter]:
    counter = StatementCounter(demo.runtime.db.engine)
    try:
        yield counter
    finally:
        counter.close()


def problem_of(response: Any, status: int) -> dict[str, Any]:
    """The problem+json body of `response`, after checking its status and content type."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.mimetype == "application/problem+json", response.headers
    body = response.get_json(force=True)
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    return body



def patch_in_process(root: str, var_dir: str, database_url: str | None, slug: str,
                     token: str, url: str, etag: str, value: str, barrier: Any,
                     results: Any) -> None:
    """A separate process with its own Platform and app PATCHes `url` once (If-Match `etag`)
    when every process is ready; puts (value, status) on `results`."""
    from metacrm.platform.settings import Settings

    settings = Settings(Path(root), Path(var_dir), database_url)
    platform = Platform(settings)
    try:
        client = create_app(settings, platform).test_client()
        headers = {"Authorization": f"Bearer {token}"}
        warm = client.get(f"/t/{slug}/api/v1/_meta", headers=headers)  # builds the sub-app
        barrier.wait(timeout=120)
        if warm.status_code != 200:
            results.put((value, warm.status_code))
            return
        response = client.patch(url, data=json.dumps({"city": value}),
                                headers={**headers, "If-Match": etag,
                                         "Content-Type": "application/json"})
        results.put((value, response.status_code))
    finally:
        platform.close()
