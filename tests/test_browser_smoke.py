"""Browser smoke tests: Playwright drives headless chromium against live servers.

They prove the browser leg works end to end (tests/browserfixtures.py): a tiny Flask app,
then the real app from ``create_app`` serving the demo tenant's API docs page. The demo
runs on SQLite only: the browser sees the same HTML whatever the backend.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from flask import Flask

if TYPE_CHECKING:  # imported at run time by pytest_plugins (assertion rewriting)
    from apifixtures import Demo

pytest_plugins = ["apifixtures", "browserfixtures"]


def tiny_app() -> Flask:
    app = Flask("browser-smoke")

    @app.get("/")
    def home() -> str:
        return ("<!doctype html><title>Smoke home</title><h1>Home</h1>"
                "<a id=next href='/next?from=home'>Next page</a>")

    @app.get("/next")
    def next_page() -> str:
        from flask import request

        return (f"<!doctype html><title>Smoke next</title><h1>Next</h1>"
                f"<p id=from>{request.args.get('from', '')}</p>")

    return app


def test_tiny_app_in_the_browser(live_server, page, screenshot) -> None:
    server = live_server(tiny_app())
    response = page.goto(server.url("/"))
    assert response is not None and response.status == 200
    assert page.title() == "Smoke home"
    assert page.inner_text("h1") == "Home"
    page.click("text=Next page")
    page.wait_for_url(server.url("/next?from=home"))
    assert page.title() == "Smoke next"
    assert page.inner_text("#from") == "home"
    path = screenshot(page, "smoke/tiny-next")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_api_docs_page_in_the_browser(demo: Demo, live_server, page, screenshot) -> None:
    server = live_server(demo.app)
    response = page.goto(server.url(f"/t/{demo.slug}/api/docs"))
    assert response is not None and response.status == 200
    title = f"metacrm API — tenant {demo.slug}"
    assert page.title() == title
    assert page.inner_text("h1") == title
    assert page.get_by_role("heading", name="Endpoints").is_visible()
    assert page.locator("code", has_text="/api/v1/customer/customer").count() > 0
    path = screenshot(page, "smoke/api-docs")
    assert path.is_file() and path.stat().st_size > 0

    page.click("a:text('openapi.json')")
    page.wait_for_url(server.url(f"/t/{demo.slug}/api/v1/openapi.json"))
    document = json.loads(page.inner_text("body"))
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == title
