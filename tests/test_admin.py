"""The admin UI, server side (Flask test client), on SQLite and PostgreSQL.

Each test signs real users in with a password, through the login form and its CSRF token,
and reads the HTML the admin sends. Records are made with the record service as the user
who owns them, so owners and business units are what the permission rules expect. Browser
tests of the same pages live elsewhere; these check what the server decides: who may see,
change and export what, how forms validate, and that a reload changes the pages at once.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import re
from typing import TYPE_CHECKING, Any

from flask.testing import FlaskClient

from metacrm.admin.i18n import CATALOGUE, DEFAULT_LOCALE, Translator, messages_for
from metacrm.platform.auth import create_user, set_roles
from metacrm.platform.passwords import hash_password
from metacrm.platform.records import ListQuery
from metacrm.platform.settings import Settings
from metacrm.platform.systables import runtime_system_tables

if TYPE_CHECKING:  # imported at run time by pytest_plugins (assertion rewriting)
    from apifixtures import Demo

pytest_plugins = ["apifixtures"]

PASSWORD = "admin-ui-password"
CUSTOMER, TAG, CONTACT_POINT = "customer.customer", "customer.tag", "customer.contact_point"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 is slow on purpose: hash once per run


def person(demo: Demo, username: str, *roles: str, unit: str | None = None,
           locale: str | None = "en", active: bool = True) -> int:
    """A user with a password and `roles` (business unit from the user record)."""
    with demo.runtime.begin() as connection:
        user_id = create_user(connection, username, username.capitalize(), business_unit=unit,
                              password_hash=password_hash())
        set_roles(connection, user_id, roles)
        users = runtime_system_tables(demo.runtime).users
        connection.execute(users.update().where(users.c.id == user_id).values(
            locale=locale, active=active))
    demo.user_ids[username] = user_id
    return user_id


class Admin:
    """One browser: its own cookies, signed in (or not) to the demo tenant's admin."""

    def __init__(self, demo: Demo, slug: str | None = None) -> None:
        self.demo = demo
        self.slug = slug or demo.slug
        self.client: FlaskClient = demo.app.test_client()
        self.token: str | None = None
        self.base_url = "http://localhost"  # "https://localhost": requests over TLS

    def url(self, path: str = "") -> str:
        return f"/t/{self.slug}/admin/{path.lstrip('/')}"

    def get(self, path: str = "", **kwargs: Any) -> Any:
        return self.client.get(self.url(path), base_url=self.base_url, **kwargs)

    def post(self, path: str, data: Any = None, *, csrf: bool = True) -> Any:
        fields = dict(data or {}) if not isinstance(data, list) else {}
        pairs = list(data) if isinstance(data, list) else list(fields.items())
        if csrf:
            pairs.append(("csrf_token", self.csrf()))
        from werkzeug.datastructures import MultiDict

        return self.client.post(self.url(path), data=MultiDict(pairs), base_url=self.base_url)

    def csrf(self) -> str:
        if self.token is None:
            page = self.get("login")
            self.token = CSRF.search(page.get_data(as_text=True)).group(1)
        return self.token

    def login(self, username: str, password: str = PASSWORD, next_url: str = "") -> Any:
        self.token = None
        data = {"username": username, "password": password}
        if next_url:
            data["next"] = next_url
        response = self.post("login", data)
        if response.status_code == 302:  # a new session: a new token
            self.token = None
            self.token = CSRF.search(self.get("").get_data(as_text=True)).group(1)
        return response


def signed_in(demo: Demo, username: str) -> Admin:
    browser = Admin(demo)
    response = browser.login(username)
    assert response.status_code == 302, response.get_data(as_text=True)
    return browser


def page_of(response: Any, status: int = 200) -> str:
    """The HTML of `response`, after checking its status; never a traceback."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, (response.status_code, text[:2000])
    assert response.mimetype == "text/html", response.headers
    assert "Traceback" not in text and 'File "' not in text
    return text


def row_ids(text: str) -> list[int]:
    """The record ids of a list page's rows, in order."""
    table = text.split('id="record-list"', 1)[1].split("</table>", 1)[0]
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', table)]


def column_labels(text: str) -> list[str]:
    """The list's column headings, as shown."""
    cells = re.findall(r'<th scope="col" data-column="[^"]+"[^>]*>(.*?)</th>', text, re.S)
    return [html.unescape(re.sub(r"<span.*?</span>|<[^>]+>", "", c)).strip() for c in cells]


def link(text: str, element_id: str) -> str | None:
    found = re.search(rf'href="([^"]+)"[^>]*id="{element_id}"', text)
    return html.unescape(found.group(1)) if found else None


def field_error(text: str, name: str) -> str | None:
    found = re.search(rf'class="field-error[^"]*" data-field="{name}"[^>]*>([^<]*)<', text)
    return html.unescape(found.group(1)) if found else None


def field_box(text: str, name: str) -> str:
    """The opening tag of a form field's box (its data attributes, `hidden`)."""
    found = re.search(rf'<div class="form-group mc-field"[^>]*data-field="{name}"[^>]*>', text)
    assert found is not None, name
    return found.group(0)


def input_tag(text: str, name: str) -> str | None:
    found = re.search(rf'<(?:input|select|textarea)[^>]*id="field-{name}"[^>]*>', text)
    return found.group(0) if found else None


def make(demo: Demo, who: str, entity: str = CUSTOMER, **values: Any) -> dict[str, Any]:
    return demo.service(who).create(entity, values)


def customers(demo: Demo, who: str, *names: str, **values: Any) -> list[int]:
    return [make(demo, who, display_name=name, **values)["id"] for name in names]


def write(demo: Demo, files: dict[str, str]) -> None:
    """Write definition files into the demo's project and reload the tenant."""
    demo.project.write(files)
    report = demo.platform.reload(demo.slug)
    assert report.ok, report.format()


# -- signing in ---------------------------------------------------------------------------------


def test_every_page_needs_a_signed_in_user(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    record = make(demo, "admin", display_name="Ann")
    browser = Admin(demo)
    for path in ("", "customer/customer/", f"customer/customer/{record['id']}",
                 "customer/customer/new", "customer/tag/lookup?q=a", "_metadata/",
                 "customer/customer/export"):
        response = browser.get(path)
        assert response.status_code == 302, path
        location = response.headers["Location"]
        assert location.startswith(browser.url("login")), location
    login = page_of(browser.get("login"))
    assert '<html lang="zh-Hant">' in login  # the tenant's locale for strangers
    assert 'id="field-username"' in login and 'id="field-password"' in login
    assert 'for="field-username"' in login and 'for="field-password"' in login
    # signing in comes back to the page asked for
    target = browser.url("customer/customer/")
    response = browser.login("boss", next_url=target)
    assert response.status_code == 302 and response.headers["Location"] == target
    assert "Ann" in page_of(browser.get("customer/customer/"))
    # an open redirect is not followed
    other = Admin(demo)
    response = other.login("boss", next_url="https://evil.example/")
    assert response.headers["Location"] == other.url("")


def test_a_wrong_password_an_unknown_or_inactive_user_does_not_sign_in(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    person(demo, "gone", "administrator", active=False)
    browser = Admin(demo)
    for username, password in (("boss", "wrong-password"), ("nobody", PASSWORD),
                               ("gone", PASSWORD), ("admin", PASSWORD), ("boss", "")):
        text = page_of(browser.login(username, password), 401)
        assert 'id="login-error"' in text, username
        assert browser.get("").status_code == 302  # still signed out
    assert browser.login("boss").status_code == 302
    home = page_of(browser.get(""))
    assert 'id="signed-in-user">Boss<' in home
    # signing out ends the session
    assert browser.post("logout").status_code == 302
    assert browser.get("").status_code == 302


def test_every_post_needs_the_sessions_csrf_token(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    first, second = customers(demo, "admin", "Ann", "Bob")
    stranger = Admin(demo)
    refused = stranger.post("login", {"username": "boss", "password": PASSWORD}, csrf=False)
    assert 'id="error"' in page_of(refused, 400)
    assert stranger.get("").status_code == 302

    browser = signed_in(demo, "boss")
    bulk = [("action", "delete"), ("ids", str(first))]
    page_of(browser.post("customer/customer/bulk", bulk, csrf=False), 400)
    page_of(browser.client.post(browser.url("customer/customer/bulk"), data={
        "action": "delete", "ids": str(first), "csrf_token": "forged"}), 400)
    page_of(browser.client.post(browser.url(f"customer/customer/{second}/edit"), data={
        "display_name": "Changed"}), 400)
    page_of(browser.post("logout", csrf=False), 400)
    service = demo.service("admin")
    assert service.get(CUSTOMER, first)["display_name"] == "Ann"
    assert service.get(CUSTOMER, second)["display_name"] == "Bob"
    assert browser.get("").status_code == 200  # still signed in
    assert browser.post("customer/customer/bulk", bulk).status_code == 302
    assert [i["id"] for i in service.list(CUSTOMER, ListQuery()).items] == [second]


def test_a_session_belongs_to_one_tenant(demo: Demo) -> None:
    from apifixtures import copy_demo_definitions, unique_slug

    other = unique_slug()
    copy_demo_definitions(demo.project.root, other)
    assert demo.platform.create_tenant(other).ok
    person(demo, "boss", "administrator")
    with demo.platform.runtime(other).begin() as connection:  # the same name and password
        set_roles(connection, create_user(connection, "boss", password_hash=password_hash()),
                  ["administrator"])
    here = signed_in(demo, "boss")
    there = Admin(demo, other)
    there.client = here.client  # the same browser, cookies and all
    assert there.get("").status_code == 302
    # a copy of this tenant's session cookie is not a session of the other tenant
    mine = here.client.get_cookie(f"metacrm_admin_{demo.slug}")
    assert mine is not None
    here.client.set_cookie(f"metacrm_admin_{other}", mine.value)
    assert there.get("").status_code == 302
    assert here.get("").status_code == 200
    assert there.login("boss").status_code == 302  # each tenant signs in on its own
    assert there.get("").status_code == 200 and here.get("").status_code == 200


def session_cookie(response: Any, slug: str) -> dict[str, str | bool]:
    """The attributes of the admin session cookie a response sets (lower-case names)."""
    header = next(h for h in response.headers.getlist("Set-Cookie")
                  if h.startswith(f"metacrm_admin_{slug}="))
    attributes: dict[str, str | bool] = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value or True
    return attributes


def test_the_session_cookie_is_httponly_lax_and_secure_over_https(demo: Demo) -> None:
    from metacrm.platform.app import create_app

    person(demo, "boss", "administrator")
    plain = Admin(demo)  # http://127.0.0.1 (`make run`): a Secure cookie would never return
    cookie = session_cookie(plain.login("boss"), demo.slug)
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax"
    assert "secure" not in cookie
    assert plain.get("").status_code == 200
    tls = Admin(demo)
    tls.base_url = "https://localhost"
    cookie = session_cookie(tls.login("boss"), demo.slug)
    assert cookie["secure"] is True and cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert tls.get("").status_code == 200
    # METACRM_SECURE_COOKIES=1: Secure on every request (TLS ended by a proxy)
    platform = demo.project(secure_cookies=True)
    behind_proxy = Admin(demo)
    behind_proxy.client = create_app(platform.settings, platform).test_client()
    cookie = session_cookie(behind_proxy.login("boss"), demo.slug)
    assert cookie["secure"] is True and cookie["samesite"] == "Lax"


def test_secure_cookies_setting_reads_the_environment(monkeypatch: Any) -> None:
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("METACRM_SECURE_COOKIES", value)
        assert Settings.from_env().secure_cookies is expected
    monkeypatch.delenv("METACRM_SECURE_COOKIES")
    assert Settings.from_env().secure_cookies is False


# -- menus and locales --------------------------------------------------------------------------


def menu_entries(text: str) -> dict[str, list[str]]:
    """Menu category → its entries' labels."""
    nav = text.split('id="admin-menu"', 1)[1].split("</ul>", 1)[0]
    found: dict[str, list[str]] = {}
    for name, body in re.findall(r'data-menu="([^"]+)">(.*?)</li>', nav, re.S):
        found[name] = [html.unescape(label.strip()) for label in re.findall(
            r'class="dropdown-item[^"]*" href="[^"]+"\s*[^>]*>([^<]+)</a>', body)]
    return found


def known(entries: list[str], expected: list[str]) -> bool:
    """Whether `entries`, less those the test does not know, are `expected` in order."""
    return [e for e in entries if e in expected] == expected


def test_menus_show_each_user_what_their_roles_reach(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    person(demo, "audrey", "auditor", locale="zh-Hans")
    person(demo, "ming", "sales_rep", unit="retail", locale=None)
    person(demo, "nobody")
    boss = menu_entries(page_of(signed_in(demo, "boss").get("")))
    # the demo enables more modules than customer (ocrm, ...), and the module library grows:
    # compare the customer menus' entries of the entities this test knows
    assert known(boss["customer"], ["Contact point", "Customers", "Tag"])
    assert boss["_metadata"][:3] == ["Modules", "Versions", "Pending plan"]  # engines add
    assert len(boss["customer"]) == sum(1 for key in demo.runtime.registry.scope(None).entities
                                        if key.startswith("customer."))
    audrey = page_of(signed_in(demo, "audrey").get(""))
    assert '<html lang="zh-Hans">' in audrey
    assert known(menu_entries(audrey)["customer"], ["联络方式", "客户", "标签"])
    assert ">客户主档<" in audrey and ">退出<" in audrey  # module label, chrome
    ming = page_of(signed_in(demo, "ming").get(""))  # no locale: the tenant's (zh-Hant)
    assert known(menu_entries(ming)["customer"], ["聯絡方式", "客戶", "標籤"])
    assert ">客戶主檔<" in ming and ">登出<" in ming
    nobody = page_of(signed_in(demo, "nobody").get(""))
    assert menu_entries(nobody) == {} and 'id="nothing-visible"' in nobody
    page_of(signed_in(demo, "nobody").get("customer/customer/"), 404)


def test_labels_follow_the_users_locale_with_text_fallback(demo: Demo) -> None:
    person(demo, "audrey", "auditor", locale="zh-Hans")
    person(demo, "tina", "auditor", locale="zh-Hant")
    record = make(demo, "admin", display_name="Ann", kind="company", lifetime_value="5")
    hans = page_of(signed_in(demo, "audrey").get(f"customer/customer/{record['id']}"))
    assert "<dt>名称</dt>" in hans and 'id="value-kind">公司<' in hans
    # lifetime_value has en and zh-Hant labels only: zh-Hans falls back to English, never
    # to the sibling script
    assert "<dt>Lifetime value</dt>" in hans and "終身價值" not in hans
    hant = page_of(signed_in(demo, "tina").get(f"customer/customer/{record['id']}"))
    assert "<dt>終身價值</dt>" in hant and "<dt>名稱</dt>" in hant
    # the field `naming: {autonumber: ...}` makes has a label in every admin locale
    assert "<dt>編號</dt>" in hant and "<dt>编号</dt>" in hans


def test_every_locale_of_the_catalogue_has_every_english_word() -> None:
    english = set(CATALOGUE[DEFAULT_LOCALE])
    for locale, words in CATALOGUE.items():
        assert set(words) == english, locale
    assert messages_for("zh-Hant-TW") is CATALOGUE["zh-Hant"]
    assert messages_for("zh") is CATALOGUE["zh-Hant"]
    assert messages_for("fr") is CATALOGUE["en"]
    assert Translator("zh-Hans")("deleted_n", count=3) == "已删除 3 条数据。"


# -- lists ----------------------------------------------------------------------------------------


SMALL_VIEW = """
view: small_pages
entity: customer.customer
label: {en: Small pages}
columns: [display_name, city, {field: created_at, label: {en: Since}}]
sort: [display_name]
search: [display_name, email]
quick_filters: [kind, is_vip]
page_size: 2
"""


def test_lists_follow_the_yaml_views_sort_filter_search_and_page(demo: Demo) -> None:
    write(demo, {f"tenants/{demo.slug}/overlays/tenant/small_view.yaml": SMALL_VIEW})
    person(demo, "boss", "administrator")
    carl, ann, eve, bob, dan = (make(demo, "admin", **values)["id"] for values in (
        {"display_name": "Carl", "kind": "company", "city": "Tainan"},
        {"display_name": "Ann", "email": "ann@shop.example", "is_vip": True},
        {"display_name": "Eve", "lifetime_value": "150000"},
        {"display_name": "Bob", "kind": "company", "email": "bob@shop.example"},
        {"display_name": "Dan"}))
    browser = signed_in(demo, "boss")
    text = page_of(browser.get("customer/customer/"))
    # the default view first: its columns, labels and sort (-created_at: newest first)
    assert row_ids(text) == [dan, bob, eve, ann, carl]
    headers = re.findall(r'<th scope="col" data-column="([^"]+)"', text)
    assert headers == ["number", "display_name", "kind", "email", "phone", "city",
                       "lifetime_value"]
    assert column_labels(text)[:3] == ["Number", "Name", "Kind"]
    assert 'data-view="customer.vip_customers"' in text and 'id="export-csv"' in text
    # clickable sorting
    assert row_ids(page_of(browser.get("customer/customer/?sort=display_name"))) == [
        ann, bob, carl, dan, eve]
    sorted_down = page_of(browser.get("customer/customer/?sort=-display_name"))
    assert row_ids(sorted_down) == [eve, dan, carl, bob, ann]
    assert 'data-column="display_name"\n                  aria-sort="descending"' in sorted_down
    # another view: its filter
    vip = page_of(browser.get("customer/customer/?view=customer.vip_customers"))
    assert row_ids(vip) == [eve, ann]  # -lifetime_value
    # quick filters and search, on the condition language
    assert row_ids(page_of(browser.get("customer/customer/?f_kind=company&sort=display_name"))
                   ) == [bob, carl]
    assert row_ids(page_of(browser.get("customer/customer/?f_is_vip=true"))) == [ann]
    assert row_ids(page_of(browser.get("customer/customer/?q=shop.example&sort=display_name"))
                   ) == [ann, bob]
    assert row_ids(page_of(browser.get("customer/customer/?q=Ca"))) == [carl]
    bad = page_of(browser.get("customer/customer/?f_is_vip=maybe"), 422)
    assert 'class="alert alert-danger"' in bad
    # keyset pages of the view's page size, across the whole list
    url = "customer/customer/?view=customer.small_pages"
    seen, pages = [], 0
    while url:
        text = page_of(browser.get(url.removeprefix(browser.url())))
        assert len(row_ids(text)) <= 2
        seen += row_ids(text)
        pages += 1
        url = link(text, "next-page")
    assert seen == [ann, bob, carl, dan, eve] and pages == 3
    small = page_of(browser.get("customer/customer/?view=customer.small_pages&f_kind=company"))
    assert row_ids(small) == [bob, carl] and link(small, "next-page") is None
    assert column_labels(small) == ["Name", "City", "Since"]


def test_bulk_delete_goes_through_the_record_service(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    person(demo, "ming", "sales_rep", unit="retail")
    first, second, third = customers(demo, "ming", "Ann", "Bob", "Cid")
    rep = signed_in(demo, "ming")
    text = page_of(rep.get("customer/customer/"))
    assert 'id="bulk-delete"' not in text and 'name="ids"' not in text
    page_of(rep.post("customer/customer/bulk", [("action", "delete"), ("ids", str(first))]),
            403)
    boss = signed_in(demo, "boss")
    text = page_of(boss.get("customer/customer/"))
    assert 'id="bulk-delete"' in text
    response = boss.post("customer/customer/bulk", [
        ("action", "delete"), ("ids", str(first)), ("ids", str(third)),
        ("next", boss.url("customer/customer/?sort=display_name"))])
    assert response.status_code == 302
    assert response.headers["Location"] == boss.url("customer/customer/?sort=display_name")
    after = page_of(boss.get("customer/customer/"))
    assert "Deleted 2 record(s)." in after and row_ids(after) == [second]
    history = demo.service("admin").history(CUSTOMER, first)
    assert [e["action"] for e in history] == ["created", "deleted"]
    assert history[-1]["actor"] == demo.user_ids["boss"]


# -- forms --------------------------------------------------------------------------------------


def test_a_refused_create_keeps_the_input_and_shows_errors_beside_fields(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    browser = signed_in(demo, "boss")
    form = page_of(browser.get("customer/customer/new"))
    assert 'novalidate' in form and 'id="field-display_name"' in form
    assert 'style="--mc-columns: 2"' in form  # the layout's section columns
    assert 'value="person" selected' in form or 'selected value="person"' in form  # default
    assert "birthday" in form and 'id="field-value_tier"' not in form  # formulas: no input
    refused = browser.post("customer/customer/new", {
        "kind": "person", "display_name": "", "email": "not-an-email", "city": "Tainan",
        "lifetime_value": "12.50", "profile": "{\"a\": 1}"})
    text = page_of(refused, 422)
    assert field_error(text, "display_name")
    assert field_error(text, "email")
    assert field_error(text, "city") is None
    assert 'value="not-an-email"' in input_tag(text, "email")
    assert 'value="Tainan"' in input_tag(text, "city")
    assert 'value="12.50"' in input_tag(text, "lifetime_value")
    assert 'aria-describedby="error-display_name"' in input_tag(text, "display_name")
    assert demo.service("admin").list(CUSTOMER, ListQuery()).items == []
    bad_json = page_of(browser.post("customer/customer/new", {
        "display_name": "Ann", "profile": "{nope"}), 422)
    assert field_error(bad_json, "profile").startswith("Not valid JSON")

    created = browser.post("customer/customer/new", {
        "kind": "person", "display_name": "Ann", "email": "ann@example.com", "city": "Tainan",
        "lifetime_value": "12.50", "profile": "{\"a\": 1}", "birthday": "1990-02-03"})
    assert created.status_code == 302
    record_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    record = demo.service("admin").get(CUSTOMER, record_id)
    assert (record["display_name"], record["city"], record["lifetime_value"], record["profile"],
            record["birthday"], record["is_vip"]) == ("Ann", "Tainan", "12.50", {"a": 1},
                                                      "1990-02-03", False)
    assert record["number"].startswith("C-") and record["owner"] == demo.user_ids["boss"]
    page = page_of(browser.get(f"customer/customer/{record_id}"))
    assert "Created Ann." in page and 'id="value-city">Tainan<' in page


def test_an_edit_is_audited_and_the_record_page_shows_it(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    record = make(demo, "admin", display_name="Ann", city="Taipei")
    browser = signed_in(demo, "boss")
    form = page_of(browser.get(f"customer/customer/{record['id']}/edit"))
    assert 'value="Taipei"' in input_tag(form, "city")
    assert re.search(r'id="field-row_version" name="row_version" type="hidden" value="1"', form)
    saved = browser.post(f"customer/customer/{record['id']}/edit", {
        "row_version": "1", "display_name": "Ann", "city": "Kaohsiung", "kind": "person"})
    assert saved.status_code == 302
    assert saved.headers["Location"] == browser.url(f"customer/customer/{record['id']}")
    page = page_of(browser.get(f"customer/customer/{record['id']}"))
    assert "Saved." in page and 'id="value-city">Kaohsiung<' in page
    history = page.split('id="history-table"', 1)[1]
    assert 'data-action="updated"' in history and 'data-action="created"' in history
    updated = history.split('data-action="updated"', 1)[1].split("</tr>", 1)[0]
    assert ">Boss<" in updated and ">City<" in updated
    assert ">Taipei<" in updated and ">Kaohsiung<" in updated
    entries = demo.service("admin").history(CUSTOMER, record["id"])
    assert entries[-1]["changes"] == {"city": {"before": "Taipei", "after": "Kaohsiung"}}


def test_a_stale_row_version_is_a_clear_message_and_keeps_the_input(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    record = make(demo, "admin", display_name="Ann", city="Taipei")
    browser = signed_in(demo, "boss")
    page_of(browser.get(f"customer/customer/{record['id']}/edit"))
    demo.service("admin").update(CUSTOMER, record["id"], {"city": "Hsinchu"})
    text = page_of(browser.post(f"customer/customer/{record['id']}/edit", {
        "row_version": "1", "display_name": "Ann", "city": "Tainan"}), 412)
    assert 'id="stale-warning"' in text and "version 2" in text
    assert 'value="Tainan"' in input_tag(text, "city")
    assert demo.service("admin").get(CUSTOMER, record["id"])["city"] == "Hsinchu"


def test_references_many_to_many_and_children(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    ann = make(demo, "admin", display_name="Ann")
    vip, gold = (make(demo, "admin", TAG, name=name)["id"] for name in ("vip", "gold"))
    browser = signed_in(demo, "boss")
    # a child's form pre-filled from its parent's "add" link
    form = page_of(browser.get(f"customer/contact_point/new?customer={ann['id']}"))
    assert f'id="field-customer-value" value="{ann["id"]}"' in form
    assert re.search(r'id="field-customer"\s+value="Ann"', form)
    assert f'data-lookup="{browser.url("customer/customer/lookup")}"' in form
    created = browser.post(f"customer/contact_point/new?customer={ann['id']}", {
        "customer": str(ann["id"]), "channel": "email", "value": "ann@example.com"})
    assert created.status_code == 302
    # the parent shows its children inline, with links and an "add" link
    edit = page_of(browser.get(f"customer/customer/{ann['id']}/edit"))
    children = edit.split('data-field="contact_points"', 1)[1].split("</table>", 1)[0]
    assert "email: ann@example.com" in children
    add = browser.url(f"customer/contact_point/new?customer={ann['id']}")
    assert f'href="{add}"' in edit
    # many_to_many: one hidden input per linked id, written as a list
    saved = browser.post(f"customer/customer/{ann['id']}/edit", [
        ("row_version", "1"), ("display_name", "Ann"), ("tags", str(vip)), ("tags", str(gold))])
    assert saved.status_code == 302
    page = page_of(browser.get(f"customer/customer/{ann['id']}"))
    shown = page.split('id="value-tags"', 1)[1].split("</dd>", 1)[0]
    assert ">vip<" in shown and ">gold<" in shown
    edit = page_of(browser.get(f"customer/customer/{ann['id']}/edit"))
    assert f'<input type="hidden" name="tags" value="{vip}"' in edit
    browser.post(f"customer/customer/{ann['id']}/edit", [
        ("row_version", "2"), ("display_name", "Ann"), ("tags", str(gold))])
    shown = page_of(browser.get(f"customer/customer/{ann['id']}")).split(
        'id="value-tags"', 1)[1].split("</dd>", 1)[0]
    assert ">gold<" in shown and ">vip<" not in shown
    # a reference to a record that does not exist is refused beside the field
    text = page_of(browser.post("customer/contact_point/new", {
        "customer": "999999", "channel": "email", "value": "x@example.com"}), 422)
    assert "there is no customer.customer with id 999999" in field_error(text, "customer")


CONTACT_FORM = """
form: contact_point_main
entity: customer.contact_point
default: true
label: {en: Contact point}
sections:
  - name: main
    label: {en: Main}
    columns: 2
    fields:
      - customer
      - channel
      - {field: value, span: 2, help: {en: The address or number.}}
      - consent
      - {field: consent_at, visible_when: {field: consent, op: eq, value: true}}
      - {field: do_not_contact, read_only_when: {field: channel, op: eq, value: post}}
"""


TAG_FIELDS = """
extend: customer.tag
fields:
  note: {type: text, label: {en: Note}}
  score: {type: integer, min: 0, max: 100}
  ratio: {type: decimal, precision: 6, scale: 3}
  topics: {type: multi_enum, options: [sales, service, events]}
  homepage: {type: url}
  reviewer: {type: user}
  due: {type: date}
  seen_at: {type: datetime}
  extra: {type: json}
  data: {type: string, max_length: 20, help: {en: Named like a WTForms attribute.}}
"""


def test_every_field_type_goes_through_the_form_and_back(demo: Demo) -> None:
    write(demo, {f"tenants/{demo.slug}/overlays/tenant/tag_fields.yaml": TAG_FIELDS})
    reviewer = person(demo, "boss", "administrator")
    browser = signed_in(demo, "boss")
    form = page_of(browser.get("customer/tag/new"))
    kinds = {name: re.search(r'type="([^"]+)"', input_tag(form, name) or "") for name in (
        "score", "ratio", "homepage", "due", "seen_at", "uuid")}
    assert {k: v.group(1) for k, v in kinds.items() if v} == {
        "score": "number", "ratio": "number", "homepage": "url", "due": "date",
        "seen_at": "datetime-local", "uuid": "text"}
    assert input_tag(form, "note").startswith("<textarea")
    assert input_tag(form, "topics").startswith("<select") and "multiple" in input_tag(
        form, "topics")
    assert f'<option value="{reviewer}">Boss</option>' in form  # user: the active users
    bad = page_of(browser.post("customer/tag/new", {"name": "t", "score": "many",
                                                    "seen_at": "yesterday"}), 422)
    assert field_error(bad, "score") and field_error(bad, "seen_at")
    assert 'value="many"' in input_tag(bad, "score")
    over = page_of(browser.post("customer/tag/new", {"name": "t", "score": "101"}), 422)
    assert field_error(over, "score")  # the record service's own check, beside the field
    created = browser.post("customer/tag/new", [
        ("name", "everything"), ("note", "two\nlines"), ("score", "42"), ("ratio", "1.250"),
        ("topics", "sales"), ("topics", "events"), ("homepage", "https://example.com"),
        ("reviewer", str(reviewer)), ("due", "2026-03-04"), ("seen_at", "2026-01-02T10:30"),
        ("extra", '{"k": [1, 2]}'), ("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("data", "no clash")])
    assert created.status_code == 302, page_of(created, 422)
    record_id = int(created.headers["Location"].rsplit("/", 1)[1])
    record = demo.service("admin").get(TAG, record_id)
    assert {k: record[k] for k in ("note", "score", "ratio", "topics", "homepage", "reviewer",
                                   "due", "extra", "uuid", "data")} == {
        "note": "two\nlines", "score": 42, "ratio": "1.250", "topics": ["sales", "events"],
        "homepage": "https://example.com", "reviewer": reviewer, "due": "2026-03-04",
        "extra": {"k": [1, 2]}, "uuid": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "data": "no clash"}
    assert record["seen_at"].startswith("2026-01-02T02:30:00")  # Asia/Shanghai → UTC
    edit = page_of(browser.get(f"customer/tag/{record_id}/edit"))
    assert 'value="2026-01-02T10:30"' in input_tag(edit, "seen_at")  # back in local time
    assert 'value="1.250"' in input_tag(edit, "ratio")
    assert re.search(r'<option selected value="events">', edit)
    page = page_of(browser.get(f"customer/tag/{record_id}"))
    assert 'id="value-reviewer">Boss<' in page and 'id="value-seen_at">2026-01-02 10:30<' in page
    assert 'id="value-topics">sales, events<' in page


def test_form_conditions_are_evaluated_on_the_record(demo: Demo) -> None:
    write(demo, {f"tenants/{demo.slug}/overlays/tenant/contact_form.yaml": CONTACT_FORM})
    person(demo, "boss", "administrator")
    ann = make(demo, "admin", display_name="Ann")["id"]
    quiet = make(demo, "admin", CONTACT_POINT, customer=ann, channel="email", value="a@x.io")
    agreed = make(demo, "admin", CONTACT_POINT, customer=ann, channel="post", value="Road 1",
                  consent=True)
    browser = signed_in(demo, "boss")
    text = page_of(browser.get(f"customer/contact_point/{quiet['id']}/edit"))
    # hidden by its condition, but there (hidden) for the browser to show as one types
    assert " hidden" in field_box(text, "consent_at")
    assert input_tag(text, "consent_at") is not None
    assert """data-visible-when='{"field": "consent", "op": "eq", "value": true}'""" in \
        field_box(text, "consent_at")
    assert "disabled" not in input_tag(text, "do_not_contact")
    assert "data-read-only-when=" in field_box(text, "do_not_contact")
    live = json.loads(html.unescape(re.search(r"data-condition-fields='([^']*)'", text)[1]))
    assert live == {"channel": {"type": "enum"}, "consent": {"type": "boolean"}}
    assert 'style="grid-column: span 2"' in text and "The address or number." in text
    assert ">Main<" in text and "Other fields" not in text
    text = page_of(browser.get(f"customer/contact_point/{agreed['id']}/edit"))
    assert " hidden" not in field_box(text, "consent_at")
    assert "disabled" in input_tag(text, "do_not_contact")
    # a read-only input's value is never written, whatever the browser sends
    saved = browser.post(f"customer/contact_point/{agreed['id']}/edit", {
        "row_version": "1", "customer": str(ann), "channel": "post", "value": "Road 2",
        "consent": "y", "do_not_contact": "y"})
    assert saved.status_code == 302
    record = demo.service("admin").get(CONTACT_POINT, agreed["id"])
    assert (record["value"], record["do_not_contact"]) == ("Road 2", False)
    # the conditions are evaluated again on what is sent: another channel makes the field
    # editable; consent withdrawn hides consent_at, whose value is then not written
    saved = browser.post(f"customer/contact_point/{agreed['id']}/edit", {
        "row_version": "2", "customer": str(ann), "channel": "email", "value": "a@y.io",
        "do_not_contact": "y", "consent_at": "2026-01-02T10:30"})
    assert saved.status_code == 302, page_of(saved, 422)
    record = demo.service("admin").get(CONTACT_POINT, agreed["id"])
    assert (record["channel"], record["do_not_contact"], record["consent"],
            record["consent_at"]) == ("email", True, False, None)
    saved = browser.post(f"customer/contact_point/{quiet['id']}/edit", {
        "row_version": "1", "customer": str(ann), "channel": "email", "value": "a@x.io",
        "consent": "y", "consent_at": "2026-01-02T10:30"})
    assert saved.status_code == 302, page_of(saved, 422)
    record = demo.service("admin").get(CONTACT_POINT, quiet["id"])
    assert record["consent"] is True and record["consent_at"].startswith("2026-01-02T02:30")


# -- permissions -----------------------------------------------------------------------------


def test_records_of_another_business_unit_do_not_exist(demo: Demo) -> None:
    person(demo, "ming", "sales_rep", unit="retail")
    person(demo, "mei", "sales_rep", unit="education")
    retail = make(demo, "ming", display_name="Shared Retail")
    education = make(demo, "mei", display_name="Shared Education")
    mei = signed_in(demo, "mei")
    for path in (f"customer/customer/{retail['id']}", f"customer/customer/{retail['id']}/edit"):
        text = page_of(mei.get(path), 404)
        assert 'data-status="404"' in text and "Shared Retail" not in text
    text = page_of(mei.get("customer/customer/"))
    assert row_ids(text) == [education["id"]]
    found = mei.get("customer/customer/lookup?q=Shared").get_json()
    assert found == {"items": [{"id": education["id"], "title": "Shared Education"}]}
    by_id = mei.get(f"customer/customer/lookup?q={retail['id']}").get_json()
    assert by_id == {"items": []}
    # a record of their unit they do not own: readable, not changeable
    colleague = person(demo, "lee", "sales_rep", unit="education")
    assert colleague
    theirs = make(demo, "lee", display_name="Lee's")
    page = page_of(mei.get(f"customer/customer/{theirs['id']}"))
    assert "Lee&#39;s" in page and 'id="edit-record"' not in page
    page_of(mei.get(f"customer/customer/{theirs['id']}/edit"), 403)
    mine = page_of(mei.get(f"customer/customer/{education['id']}"))
    assert 'id="edit-record"' in mine and 'id="delete-record"' not in mine
    refused = mei.post(f"customer/customer/{theirs['id']}/edit", {
        "row_version": "1", "display_name": "Mine now"})
    page_of(refused, 403)
    assert demo.service("admin").get(CUSTOMER, theirs["id"])["display_name"] == "Lee's"


def test_hidden_fields_never_render_and_read_only_ones_are_disabled(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    person(demo, "audrey", "auditor")
    person(demo, "ming", "sales_rep", unit="retail")
    secret = make(demo, "admin", display_name="Ann", profile={"secret": "sauce"})
    demo.service("admin").update(CUSTOMER, secret["id"], {"profile": {"secret": "gravy"}})
    audrey = signed_in(demo, "audrey")
    page = page_of(audrey.get(f"customer/customer/{secret['id']}"))
    assert 'data-field="profile"' not in page and "sauce" not in page and "gravy" not in page
    assert "Profile" not in page
    boss_page = page_of(signed_in(demo, "boss").get(f"customer/customer/{secret['id']}"))
    assert 'data-field="profile"' in boss_page and "gravy" in boss_page
    # a view naming fields some visitors may not see: their columns are left out
    write(demo, {f"tenants/{demo.slug}/overlays/tenant/wide_view.yaml": """
        view: wide
        entity: customer.customer
        columns: [display_name, birthday, profile]
        search: [display_name]
        """})
    wide = "customer/customer/?view=customer.wide"
    assert column_labels(page_of(signed_in(demo, "boss").get(wide))) == [
        "Name", "Birthday", "Profile"]
    audrey_list = page_of(signed_in(demo, "audrey").get(wide))
    assert column_labels(audrey_list) == ["Name", "Birthday"] and "gravy" not in audrey_list
    ming_list = page_of(signed_in(demo, "ming").get(wide))
    assert column_labels(ming_list) == ["Name", "Profile"]  # retail hides birthday
    # retail's overlay hides birthday (hidden: true) and adds its own fields
    ming = signed_in(demo, "ming")
    form = page_of(ming.get("customer/customer/new"))
    assert input_tag(form, "birthday") is None and input_tag(form, "store_code") is not None
    assert "disabled" in input_tag(form, "lifetime_value")  # read-only for sales reps
    assert "disabled" not in input_tag(form, "display_name")
    listing = page_of(ming.get("customer/customer/?view=customer.retail_members"))
    assert 'data-column="store_code"' in listing
    boss_form = page_of(signed_in(demo, "boss").get("customer/customer/new"))
    assert input_tag(boss_form, "birthday") is not None
    assert input_tag(boss_form, "store_code") is None  # tenant-wide: no retail fields
    # a read-only field is not written, even when sent
    created = ming.post("customer/customer/new", {"display_name": "Bo", "kind": "person",
                                                   "lifetime_value": "999"})
    assert created.status_code == 302
    record_id = int(created.headers["Location"].rsplit("/", 1)[1])
    assert demo.service("admin").get(CUSTOMER, record_id)["lifetime_value"] == "0.00"


def test_export_obeys_the_export_permission(demo: Demo) -> None:
    person(demo, "audrey", "auditor")
    person(demo, "ming", "sales_rep", unit="retail")
    customers(demo, "admin", "Ann", "Bob", profile={"private": True})
    customers(demo, "admin", "Cid")
    audrey = signed_in(demo, "audrey")
    listing = page_of(audrey.get("customer/customer/?q=Ann"))
    export = link(listing, "export-csv")
    assert export is not None and "q=Ann" in export
    response = audrey.client.get(export)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["display_name"] for r in rows] == ["Ann"]
    assert "profile" not in rows[0] and "id" in rows[0]
    everything = audrey.get("customer/customer/export?sort=display_name")
    names = [r["display_name"] for r in csv.DictReader(io.StringIO(
        everything.get_data(as_text=True)))]
    assert names == ["Ann", "Bob", "Cid"]
    ming = signed_in(demo, "ming")
    assert 'id="export-csv"' not in page_of(ming.get("customer/customer/"))
    text = page_of(ming.get("customer/customer/export"), 403)
    assert 'data-status="403"' in text


def test_reference_lookup_returns_only_readable_records(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    person(demo, "ming", "sales_rep", unit="retail")
    person(demo, "nobody")
    ours = customers(demo, "ming", "Alpha One", "Alpha Two")
    customers(demo, "admin", "Alpha HQ")  # headquarters' record: not retail's
    ming = signed_in(demo, "ming")
    found = ming.get("customer/customer/lookup?q=Alpha").get_json()
    assert [item["id"] for item in found["items"]] == ours
    assert [item["title"] for item in found["items"]] == ["Alpha One", "Alpha Two"]
    assert ming.get("customer/customer/lookup?q=zzz").get_json() == {"items": []}
    boss = signed_in(demo, "boss")
    assert len(boss.get("customer/customer/lookup?q=Alpha").get_json()["items"]) == 3
    assert len(boss.get("customer/customer/lookup?q=").get_json()["items"]) == 3
    page_of(signed_in(demo, "nobody").get("customer/customer/lookup?q=Alpha"), 404)


def test_errors_are_pages_without_tracebacks(demo: Demo) -> None:
    person(demo, "ming", "sales_rep", unit="retail")
    ming = signed_in(demo, "ming")
    for path in ("nope/nope/", "customer/nope/", "customer/customer/999999",
                 f"customer/customer/{2**70}", "customer/customer/1/nothing", "a/b/c/d/e"):
        assert 'data-status="404"' in page_of(ming.get(path), 404), path
    assert 'data-status="403"' in page_of(ming.get("customer/tag/new"), 403)  # read only
    assert 'data-status="403"' in page_of(ming.get("_metadata/"), 403)


# -- reloads and metadata -----------------------------------------------------------------------


def test_a_field_added_in_yaml_appears_after_a_reload_without_a_restart(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    make(demo, "admin", display_name="Ann")
    browser = signed_in(demo, "boss")
    assert input_tag(page_of(browser.get("customer/customer/new")), "nickname") is None
    overlay = demo.project.root / "tenants" / demo.slug / "overlays" / "tenant" / "customer.yaml"
    view = demo.project.root / "metadata" / "modules" / "customer" / "views" / "customer_all.yaml"
    before = demo.runtime.version
    write(demo, {
        str(overlay.relative_to(demo.project.root)): overlay.read_text("utf-8") +
        "  nickname: {type: string, max_length: 40, label: {en: Nickname}}\n",
        str(view.relative_to(demo.project.root)): view.read_text("utf-8").replace(
            "columns: [number, display_name,", "columns: [number, display_name, nickname,")})
    assert demo.runtime.version != before
    form = page_of(browser.get("customer/customer/new"))  # the same session, a new sub-app
    assert input_tag(form, "nickname") is not None and 'for="field-nickname">Nickname' in form
    listing = page_of(browser.get("customer/customer/"))
    assert 'data-column="nickname"' in listing
    created = browser.post("customer/customer/new", {"display_name": "Bo", "kind": "person",
                                                     "nickname": "B"})
    assert created.status_code == 302
    listing = page_of(browser.get("customer/customer/?sort=display_name"))
    assert re.search(r'data-column="nickname">\s*B\s*<', listing)


def test_metadata_pages_are_for_administrators_only(demo: Demo) -> None:
    person(demo, "boss", "administrator")
    person(demo, "audrey", "auditor")
    boss = signed_in(demo, "boss")
    modules = page_of(boss.get("_metadata/"))
    row = modules.split('data-module="customer"', 1)[1].split("</tr>", 1)[0]
    assert "1.0.0" in row and "customer-data" in row and "customer.contact_point" in row
    tenant_wide = page_of(boss.get("_metadata/entity/customer.customer"))
    retail = page_of(boss.get("_metadata/entity/customer.customer?unit=retail"))
    assert "store_code" in retail and "store_code" not in tenant_wide
    assert "&#34;entity&#34;: &#34;customer.customer&#34;" in retail or \
        '"entity": "customer.customer"' in html.unescape(retail)
    page_of(boss.get("_metadata/entity/customer.nope"), 404)
    page_of(boss.get("_metadata/entity/customer.customer?unit=nope"), 404)
    versions = page_of(boss.get("_metadata/versions"))
    assert demo.runtime.version in versions and 'data-status="applied"' in versions
    assert "retail, education" in versions and '{"entities"' not in versions  # a summary
    plan = page_of(boss.get("_metadata/plan"))
    assert 'id="plan-empty"' in plan
    write(demo, {f"tenants/{demo.slug}/overlays/tenant/extra.yaml": SMALL_VIEW})
    demo.project.write({f"tenants/{demo.slug}/overlays/tenant/more.yaml": """
        extend: customer.tag
        fields:
          note: {type: string, max_length: 20}
        """})
    pending = page_of(boss.get("_metadata/plan"))
    assert 'id="plan"' in pending and "note" in pending
    audrey = signed_in(demo, "audrey")
    for path in ("_metadata/", "_metadata/entity/customer.customer", "_metadata/versions",
                 "_metadata/plan"):
        page_of(audrey.get(path), 403)
