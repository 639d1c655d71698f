"""Browser fixtures: Playwright (sync API) driving Debian's chromium, headless.

Loaded by the browser test modules with ``pytest_plugins = ["browserfixtures"]`` (next to
``"apifixtures"`` when they serve the demo tenant).

The browser is the system's chromium (``METACRM_CHROMIUM``, default ``/usr/bin/chromium``;
``make test`` installs Debian's ``chromium`` package when it is missing, see
``scripts/browser-env.sh``). Playwright never downloads a browser here: it launches that
executable with ``executable_path``. Without it the browser tests are skipped with a reason,
except when ``CI=true``: there a missing browser fails them instead of hiding them.

- ``chromium_path``: the executable (skip or, under CI, fail when absent).
- ``browser``: one headless chromium per pytest process (session scope), started on first
  use, so under pytest-xdist each worker that runs browser tests launches its own. Each
  launch gets a fresh, throw-away profile (user-data dir) that Playwright removes on close.
- ``page``: a new browser context and page per test (default timeout 10 s), closed after;
  when the test fails, a screenshot lands in ``var/screenshots/failures/``.
- ``live_server(app)``: serves a Flask/WSGI app on ``127.0.0.1`` at a free port from a
  background thread (werkzeug, threaded) and returns its base URL; stopped after the test.
- ``screenshot(page, name)``: saves ``var/screenshots/<name>.png`` (full page).

Playwright's sync API belongs to the thread that started it (the test's main thread). Only
the app server runs in other threads; never hand ``page`` or ``browser`` to a thread.
Tests using ``browser`` or ``page`` get the ``browser`` marker (``-m "not browser"``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = PROJECT_ROOT / "var" / "screenshots"
CHROMIUM_ENV = "METACRM_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_TIMEOUT_MS = 30_000  # generous: CI shares two cores with the other workers
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
_REPORT = pytest.StashKey[dict[str, pytest.TestReport]]()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    """Skip the test with `reason`, or fail it when CI=true (the browser leg is required)."""
    if _in_ci():
        pytest.fail(f"CI=true but {reason}: the browser tests are required in CI "
                    "(run them through `make test`, which installs chromium)", pytrace=False)
    pytest.skip(reason)


def find_chromium() -> str | None:
    """The chromium executable: $METACRM_CHROMIUM, else /usr/bin/chromium; None if absent."""
    for candidate in (os.environ.get(CHROMIUM_ENV), DEFAULT_CHROMIUM):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- markers and failure reports --------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives chromium through Playwright "
                                       "(tests/browserfixtures.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"browser", "page"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("browser")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_REPORT, {})[report.when] = report
    return report


# -- the browser ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The chromium executable Playwright launches (skipped, or failed under CI, if absent)."""
    path = find_chromium()
    if path is None:
        where = " or ".join(dict.fromkeys(filter(None, (os.environ.get(CHROMIUM_ENV),
                                                          DEFAULT_CHROMIUM))))
        _unavailable(f"no chromium at {where} (install Debian's `chromium` package or run "
                     f"`make test`; {CHROMIUM_ENV} names another executable)")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def playwright_api(chromium_path: str) -> Iterator[Playwright]:
    """Playwright's sync API, started on this process's main thread."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed ({exc}); "
                     "run `.venv/bin/pip install -e '.[dev]'`")
    manager = sync_playwright().start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="session")
def browser(playwright_api: Playwright, chromium_path: str) -> Iterator[Browser]:
    """One headless chromium for this pytest process (each xdist worker has its own)."""
    owner = threading.get_ident()
    instance = playwright_api.chromium.launch(executable_path=chromium_path, headless=True,
                                          args=CHROMIUM_ARGS)
    instance._metacrm_thread = owner  # type: ignore[attr-defined]
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh context and page (no cookies or storage from other tests), closed after."""
    if threading.get_ident() != browser._metacrm_thread:  # type: ignore[attr-defined]
        pytest.fail("Playwright's sync API must stay on the thread that started it",
                    pytrace=False)
    context = browser.new_context()
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    context.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
    new_page = context.new_page()
    try:
        yield new_page
    finally:
        call = request.node.stash.get(_REPORT, {}).get("call")
        if call is not None and call.failed and not new_page.is_closed():
            with contextlib.suppress(Exception):  # the failure's report matters more
                flat = re.sub(r"[/\\:]+", "-", request.node.nodeid)
                save_screenshot(new_page, f"failures/{flat}")
        context.close()


# -- screenshots ------------------------------------------------------------------------------

def _file_name(name: str) -> str:
    parts = [re.sub(r"[^\w.-]+", "_", part).strip("._") or "_"
             for part in re.split(r"[/\\]", name) if part]
    return "/".join(parts) or "screenshot"


def save_screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of `page` as var/screenshots/<name>.png and return its path."""
    target = SCREENSHOTS / f"{_file_name(name.removesuffix('.png'))}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    return target


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    """``screenshot(page, "admin-list")`` saves var/screenshots/admin-list.png."""
    return save_screenshot


# -- serving an app ---------------------------------------------------------------------------

@dataclass
class LiveServer:
    """A WSGI app served on 127.0.0.1 from a background thread."""

    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + "/" + path.lstrip("/")

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


def serve(app: Callable[..., Any]) -> LiveServer:
    """Start serving `app` (threaded, a free port); call ``.stop()`` when done."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"live-server-{server.server_port}", daemon=True)
    thread.start()
    return LiveServer(server, thread)


@pytest.fixture
def live_server() -> Iterator[Callable[[Callable[..., Any]], LiveServer]]:
    """``live_server(app)`` serves a Flask/WSGI app and returns a LiveServer (``.url(path)``,
    ``.base_url``); every server started is shut down after the test."""
    started: list[LiveServer] = []

    def start(app: Callable[..., Any]) -> LiveServer:
        running = serve(app)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in reversed(started):
            running.stop()
