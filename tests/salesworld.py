"""The shipped demo tenant with its org tree for the sales (ocrm) tests: acme's definitions
under a unique slug, ``org.yaml`` seeded (users with tokens), a settable clock, and short
ways to call the API, take transitions, drain jobs and sweep the rules.

Who is who (``tenants/acme/org.yaml``)::

    retail-north [hua, sales_manager] ── retail-taipei ── retail-taipei-1: ming, wei (reps)
                                     └── retail-hsinchu: ting (rep)
    edu-north [fang, sales_manager] ── edu-taipei: mei, jun (reps)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbfixtures import Project

from metacrm.engines.rules import sweep_tenant
from metacrm.engines.rules.admin import list_runs
from metacrm.platform.auth import issue_token, user_by_name
from metacrm.platform.jobs import jobs_of
from metacrm.platform.records import Actor, ListQuery, RecordService
from metacrm.platform.seed import apply_seed, load_seed

if TYPE_CHECKING:  # imported at run time by pytest_plugins (assertion rewriting)
    from apifixtures import Demo

LEAD, ACCOUNT, CONTACT = "ocrm.lead", "ocrm.account", "ocrm.contact"
OPPORTUNITY, ACTIVITY, TASK = "ocrm.opportunity", "ocrm.activity", "ocrm.task"
PEOPLE = ("ming", "wei", "ting", "hua", "mei", "jun", "fang", "chen")


class Clock:
    """A settable clock for `platform.clock` (starts at the wall clock's now)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@dataclass
class Sales:
    demo: Demo
    clock: Clock
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def runtime(self) -> Any:
        return self.demo.runtime

    @property
    def platform(self) -> Any:
        return self.demo.platform

    def url(self, entity: str, record_id: int | None = None, tail: str = "") -> str:
        return self.demo.entity_url(entity, record_id, tail)

    def create(self, entity: str, who: str, **values: Any) -> dict[str, Any]:
        response = self.demo.post(self.url(entity), values, who=who)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def get(self, entity: str, record_id: int, who: str = "admin") -> dict[str, Any]:
        response = self.demo.get(self.url(entity, record_id), who=who)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def take(self, entity: str, record_id: int, name: str, who: str,
             values: dict[str, Any] | None = None) -> Any:
        """POST …/transitions/<name>; the response (not checked)."""
        body = {"values": values} if values else None
        return self.demo.post(self.url(entity, record_id, f"/transitions/{name}"), body,
                              who=who)

    def moved(self, entity: str, record_id: int, name: str, who: str,
              values: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.take(entity, record_id, name, who, values)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def system(self, unit: str | None = None) -> RecordService:
        return RecordService(self.runtime, Actor(None, unit), emit=self.platform.emit,
                             operators=self.platform.operators)

    def all(self, entity: str, **equal: Any) -> list[dict[str, Any]]:
        items = self.system().list(entity, ListQuery(limit=500)).items
        return [r for r in items if all(r.get(k) == v for k, v in equal.items())]

    def drain(self) -> int:
        return jobs_of(self.platform).drain()

    def sweep(self) -> Any:
        report = sweep_tenant(self.platform, self.demo.slug)
        self.drain()
        return report

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        return list_runs(self.runtime, limit=500, **filters)["items"]


def seed_org(demo: Demo) -> None:
    """Apply the shipped org.yaml to the demo's slug."""
    path = demo.project.root / "tenants" / demo.slug / "org.yaml"
    lines = path.read_text("utf-8").splitlines()
    path.write_text("\n".join(f"org: {demo.slug}" if line.startswith("org:") else line
                              for line in lines) + "\n", "utf-8")
    apply_seed(demo.runtime, load_seed(path))


def build_sales(project: Project) -> Sales:
    from apifixtures import make_demo

    demo = make_demo(project)
    clock = Clock()
    demo.platform.clock = clock
    seed_org(demo)
    sales = Sales(demo, clock)
    with demo.runtime.begin() as connection:
        for username in PEOPLE:
            user = user_by_name(connection, username)
            assert user is not None, username
            sales.ids[username] = user.id
            demo.tokens[username] = issue_token(connection, user.id, "tests")
    sales.ids["admin"] = demo.user_ids["admin"]
    return sales
