"""The workflow section of the admin record page, server side, on SQLite and PostgreSQL:
state, transition buttons posted with the CSRF token, refusals shown as alerts, history,
and approve buttons for an approver up the manager chain."""

from __future__ import annotations

import functools
import html
import re
from typing import Any

import pytest
from dbfixtures import Project
from workflowworld import LEAD, SLUG, World, build_world

from metacrm.platform.passwords import hash_password
from metacrm.platform.records import RecordService
from metacrm.platform.systables import runtime_system_tables

PASSWORD = "workflow-admin-password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


class Browser:
    """One signed-in admin session of the workflow world."""

    def __init__(self, world: World, username: str) -> None:
        self.client = world.app.test_client()
        users = runtime_system_tables(world.runtime).users
        with world.runtime.begin() as connection:
            connection.execute(users.update().where(users.c.username == username).values(
                password_hash=password_hash(), locale="en"))
        token = CSRF.search(self.get("login").get_data(as_text=True)).group(1)
        response = self.client.post(self.url("login"), data={
            "username": username, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]

    @staticmethod
    def url(path: str) -> str:
        return f"/t/{SLUG}/admin/{path.lstrip('/')}"

    def get(self, path: str) -> Any:
        return self.client.get(self.url(path))

    def page(self, path: str) -> str:
        response = self.get(path)
        text = response.get_data(as_text=True)
        assert response.status_code == 200, (response.status_code, text[:2000])
        assert "Traceback" not in text
        return text

    def submit(self, text: str, action: str, data: dict[str, str] | None = None,
               csrf: bool = True) -> Any:
        """POST a form of the page `text` whose action ends with `action`."""
        forms = re.findall(r'<form method="post" action="([^"]+)"(.*?)</form>', text, re.S)
        ((target, body),) = [(html.unescape(a), b) for a, b in forms if a.endswith(action)]
        fields = {name: html.unescape(value) for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body)}
        fields.update(data or {})
        if not csrf:
            del fields["csrf_token"]
        return self.client.post(target, data=fields)


def alerts(text: str, kind: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", m)).strip() for m in
            re.findall(rf'<div class="alert alert-{kind}"[^>]*>(.*?)</div>', text, re.S)]


@pytest.fixture
def world(make_platform: Project) -> World:
    return build_world(make_platform)


def test_the_record_page_shows_the_workflow_and_takes_transitions(world: World) -> None:
    lead = world.lead(score=20)
    rep = Browser(world, "rep")
    path = f"sales/lead/{lead['id']}"
    text = rep.page(path)
    assert 'id="workflow"' in text and 'data-state="new"' in text
    assert 'id="transition-contact"' in text and 'id="transition-disqualify"' in text
    assert 'id="transition-reopen"' not in text  # from another state, for another role
    response = rep.submit(text, "/transitions/contact", {"comment": "called"}, csrf=False)
    assert response.status_code == 400  # no CSRF token: refused, nothing moves
    assert RecordService(world.runtime).get(LEAD, lead["id"])["status"] == "new"
    response = rep.submit(text, "/transitions/contact", {"comment": "called"})
    assert response.status_code == 302
    text = rep.page(path)
    assert alerts(text, "success") == ["Contact: done."]
    assert 'data-state="contacted"' in text and "called" in text
    assert 'id="transition-history"' in text
    # qualify needs expected_value (an input) and a score of 50 (a guard): refused, said so
    assert 'id="transition-qualify"' not in text
    assert "score gte 50 (score is 20)" in html.unescape(text)
    RecordService(world.runtime).update(LEAD, lead["id"], {"score": 80})
    text = rep.page(path)
    assert 'name="value.expected_value"' in text
    stale = text
    response = rep.submit(text, "/transitions/qualify", {"value.expected_value": "300"})
    text = rep.page(path)
    assert 'data-state="qualified"' in text, alerts(text, "danger")
    rep.submit(stale, "/transitions/qualify", {"value.expected_value": "1"})  # an old page
    text = rep.page(path)
    assert "was changed by someone else" in alerts(text, "danger")[0]
    assert 'data-state="qualified"' in text


def test_approvers_approve_from_the_record_page(world: World) -> None:
    lead = world.lead(score=20)
    rep = Browser(world, "rep")
    path = f"sales/lead/{lead['id']}"
    rep.submit(rep.page(path), "/transitions/disqualify", {"comment": "no budget"})
    text = rep.page(path)
    assert alerts(text, "success") == ["Disqualify: approval requested."]
    assert 'data-status="pending"' in text and "id=\"approve-" not in text  # not theirs
    director = Browser(world, "director")
    text = director.page(path)
    assert "id=\"approve-" not in text  # level 2 waits for level 1
    lead1 = Browser(world, "lead1")
    text = lead1.page(path)
    response = lead1.submit(text, "/approve")
    assert response.status_code == 302
    text = director.page(path)
    director.submit(text, "/approve")
    text = director.page(path)
    assert 'data-state="disqualified"' in text and 'data-status="approved"' in text
    assert RecordService(world.runtime).get(LEAD, lead["id"])["status"] == "disqualified"
