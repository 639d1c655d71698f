"""The no-code proof, on SQLite and PostgreSQL: one business unit gets a new field, a new
option, a new workflow transition and a new rule by writing YAML into its overlay folder
and nothing else; after a reload, its people use all four through the REST API and the
admin UI, while the other business unit sees none of it."""

from __future__ import annotations

import html
import re
import textwrap
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbfixtures import Project
from salesworld import LEAD, TASK, Sales, build_sales

from metacrm.platform.passwords import hash_password
from metacrm.platform.systables import runtime_system_tables

pytest_plugins = ["apifixtures"]

PASSWORD = "no-code-proof"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

# Everything the business unit writes: YAML in its own overlay folder.
RETAIL_YAML = {
    "proof_lead.yaml": """
        # a new field and a new option for retail's leads
        extend: ocrm.lead
        fields:
          loyalty_card:
            type: string
            max_length: 20
            insert_after: phone
            label: {en: Loyalty card, zh-Hant: 會員卡號}
          source:
            options:
              add:
                - {value: line_official, label: {en: LINE official account, zh-Hant: LINE 官方帳號}}
        """,
    "proof_workflow.yaml": """
        # a new transition in the module's lead lifecycle, for retail only
        workflow: lead_lifecycle
        entity: ocrm.lead
        transitions:
          fast_track:
            from: [new]
            to: qualified
            label: {en: Fast-track a member, zh-Hant: 會員快速確認}
            requires: [loyalty_card]
        """,
    "proof_rule.yaml": """
        # a new rule: leads from LINE are warm; answer them today
        rule: line_leads_are_warm
        entity: ocrm.lead
        trigger: created
        when: {field: source, op: eq, value: line_official}
        do:
          - set: {score: 80}
          - create_task:
              title: "LINE: {{ record.contact_name }}"
              assignee: owner
              due_in: 4h
        """,
}


class Browser:
    """One admin-UI visitor (own cookies), signed in with a password through the form."""

    def __init__(self, sales: Sales, username: str) -> None:
        self.sales = sales
        self.client = sales.demo.app.test_client()
        self.prefix = f"/t/{sales.demo.slug}/admin/"
        page = self.client.get(self.prefix + "login").get_data(as_text=True)
        response = self.client.post(self.prefix + "login", data={
            "username": username, "password": PASSWORD, "csrf_token": CSRF.search(page)[1]})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]

    def page(self, path: str) -> str:
        response = self.client.get(self.prefix + path)
        text = response.get_data(as_text=True)
        assert response.status_code == 200, (response.status_code, text[:1000])
        assert "Traceback" not in text
        return text

    def post(self, path: str, data: dict[str, str], page: str) -> Any:
        return self.client.post(self.prefix + path, data={**data,
                                                          "csrf_token": CSRF.search(page)[1]})

    def submit(self, text: str, action: str, data: dict[str, str] | None = None) -> Any:
        """POST the form of page `text` whose action ends with `action` (its hidden inputs
        and `data`)."""
        forms = re.findall(r'<form method="post" action="([^"]+)"(.*?)</form>', text, re.S)
        ((target, body),) = [(html.unescape(a), b) for a, b in forms if a.endswith(action)]
        fields = {name: html.unescape(value) for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body)}
        return self.client.post(target, data={**fields, **(data or {})})


def with_passwords(sales: Sales, *usernames: str) -> None:
    users = runtime_system_tables(sales.runtime).users
    with sales.runtime.begin() as connection:
        connection.execute(users.update().where(users.c.username.in_(usernames)).values(
            password_hash=hash_password(PASSWORD), locale="en"))


def select_options(text: str, name: str) -> list[str]:
    found = re.search(rf'<select[^>]*id="field-{name}".*?</select>', text, re.S)
    assert found is not None, f"no select for {name}"
    return re.findall(r'<option[^>]*value="([^"]*)"', found.group(0))


def has_input(text: str, name: str) -> bool:
    return re.search(rf'<(?:input|select|textarea)[^>]*id="field-{name}"', text) is not None


def write_yaml_only(sales: Sales) -> list[Path]:
    """Write the proof's YAML into retail's overlay folder; the paths written."""
    folder = sales.demo.project.root / "tenants" / sales.demo.slug / "overlays" / "retail"
    written = []
    for name, text in RETAIL_YAML.items():
        path = folder / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), "utf-8")
        written.append(path)
    return written


def test_yaml_alone_gives_one_business_unit_a_field_an_option_a_transition_and_a_rule(
        make_platform: Project) -> None:
    sales = build_sales(make_platform)
    demo = sales.demo
    with_passwords(sales, "ming", "mei")
    # before: retail does not know any of it
    refused = demo.post(sales.url(LEAD), {"company": "Early", "contact_name": "A",
                                          "loyalty_card": "M-0"}, who="ming")
    assert refused.status_code == 422

    written = write_yaml_only(sales)
    assert {p.suffix for p in written} == {".yaml"}
    assert all("overlays/retail" in p.as_posix() for p in written)
    report = sales.platform.reload(demo.slug)
    assert report.ok and report.changed, report.format()

    # -- the REST API, as a retail sales rep ---------------------------------------------------
    lead = sales.create(LEAD, "ming", company="Acme Mart", contact_name="王先生",
                        source="line_official", loyalty_card="M-1024", store_code="TPE-01")
    assert (lead["source"], lead["loyalty_card"]) == ("line_official", "M-1024")
    sales.drain()
    after = sales.get(LEAD, lead["id"], "ming")
    assert after["score"] == 80  # the rule's `set`
    tasks = sales.all(TASK, lead=lead["id"])
    assert [(t["title"], t["assignee"]) for t in tasks] == [("LINE: 王先生", sales.ids["ming"])]
    view = demo.get(sales.url(LEAD, lead["id"], "/workflow"), who="ming").get_json()
    offered = {t["name"]: t for t in view["transitions"]}
    assert offered["fast_track"]["available"], offered["fast_track"]
    moved = sales.moved(LEAD, lead["id"], "fast_track", "ming")
    assert (moved["from"], moved["to"]) == ("new", "qualified")
    # the transition's requirement is enforced: no loyalty card, no fast track
    plain = sales.create(LEAD, "ming", company="No card", contact_name="B", source="web")
    needs = sales.take(LEAD, plain["id"], "fast_track", "ming")
    assert needs.status_code == 409
    assert needs.get_json()["errors"] == {"loyalty_card": ["required by this transition"]}
    sales.drain()
    assert sales.get(LEAD, plain["id"])["score"] == 0  # the rule's `when` did not hold

    # -- the other business unit sees none of it ---------------------------------------------
    for body in ({"loyalty_card": "M-2"}, {"source": "line_official"}):
        response = demo.post(sales.url(LEAD), {"company": "School", "contact_name": "C",
                                               **body}, who="mei")
        assert response.status_code == 422, response.get_data(as_text=True)
    school = sales.create(LEAD, "mei", company="School", contact_name="C", source="web")
    sales.drain()
    assert "loyalty_card" not in sales.get(LEAD, school["id"], "mei")
    assert sales.take(LEAD, school["id"], "fast_track", "mei").status_code == 404
    assert sales.all(TASK, lead=school["id"]) == []
    edu_view = demo.get(sales.url(LEAD, school["id"], "/workflow"), who="mei").get_json()
    assert "fast_track" not in {t["name"] for t in edu_view["transitions"]}
    spec = demo.get(demo.url("openapi.json"), who="ming").get_json()
    edu_spec = demo.get(demo.url("openapi.json"), who="mei").get_json()
    assert "loyalty_card" in str(spec) and "line_official" in str(spec)
    assert "loyalty_card" not in str(edu_spec) and "line_official" not in str(edu_spec)

    # -- the admin UI, as the same people -------------------------------------------------------
    ming = Browser(sales, "ming")
    form = ming.page("ocrm/lead/new")
    assert has_input(form, "loyalty_card") and "Loyalty card" in form
    assert "line_official" in select_options(form, "source")
    created = ming.post("ocrm/lead/new", {"company": "Form Mart", "contact_name": "林小姐",
                                          "source": "line_official", "loyalty_card": "M-7",
                                          "store_code": "TPE-02"}, form)
    assert created.status_code == 302, created.get_data(as_text=True)[:2000]
    record_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    saved = sales.get(LEAD, record_id, "ming")
    assert (saved["source"], saved["loyalty_card"]) == ("line_official", "M-7")
    sales.drain()
    assert sales.get(LEAD, record_id)["score"] == 80
    assert [t["title"] for t in sales.all(TASK, lead=record_id)] == ["LINE: 林小姐"]
    record_page = ming.page(f"ocrm/lead/{record_id}")
    assert 'id="transition-fast_track"' in record_page and "M-7" in record_page
    response = ming.submit(record_page, "/transitions/fast_track")
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    assert sales.get(LEAD, record_id)["status"] == "qualified"
    listing = ming.page("ocrm/lead/?view=ocrm.all_leads")
    assert "Form Mart" in listing

    mei = Browser(sales, "mei")
    edu_form = mei.page("ocrm/lead/new")
    assert not has_input(edu_form, "loyalty_card") and "Loyalty card" not in edu_form
    assert "line_official" not in select_options(edu_form, "source")
    assert 'id="transition-fast_track"' not in mei.page(f"ocrm/lead/{school['id']}")

    # the shared table gained a column that only retail's records fill
    table = sales.runtime.tables.by_entity[LEAD]
    with sales.runtime.connect() as connection:
        cards = dict(connection.execute(sa.select(table.c.id, table.c.loyalty_card)).all())
    assert cards[record_id] == "M-7" and cards[school["id"]] is None
