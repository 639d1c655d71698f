"""What every admin view shares: the per-app state, signing in per request, CSRF, the
page chrome (menus, user, locale) and error pages that never show a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, g, redirect, request, session, url_for
from flask_admin import BaseView
from werkzeug.exceptions import HTTPException

from ..platform.auth import PasswordCheck
from ..platform.records import Forbidden, NotFound, RecordError
from .auth import Visitor, csrf_token, csrf_valid, load_visitor, session_user_id
from .i18n import Translator, pick_locale

log = logging.getLogger(__name__)
ERROR_TEMPLATE = "metacrm_admin/error.html"
VISITOR = "metacrm_admin_visitor"  # flask.g attribute: this request's Visitor


class BadForm(RecordError):
    """A POST without the session's CSRF token (or otherwise malformed)."""

    status, title = 400, "Bad request"


@dataclass(slots=True)
class AdminUI:
    """The admin of one tenant sub-app (one Registry version): app.extensions state."""

    platform: Any
    runtime: Any
    passwords: PasswordCheck = field(default_factory=PasswordCheck)

    @property
    def slug(self) -> str:
        return self.runtime.slug

    @property
    def registry(self) -> Any:
        return self.runtime.registry

    def tenant_label(self, locale: str) -> str:
        return self.runtime.config.label.get(locale, self.slug)


@dataclass(frozen=True, slots=True)
class MenuItem:
    label: str
    url: str
    active: bool = False


@dataclass(frozen=True, slots=True)
class MenuCategory:
    name: str
    label: str
    items: tuple[MenuItem, ...]

    @property
    def active(self) -> bool:
        return any(item.active for item in self.items)


@dataclass(frozen=True, slots=True)
class Chrome:
    """Everything the page frame shows: words, menus, the user, the CSRF token."""

    t: Translator
    tenant: str
    menus: tuple[MenuCategory, ...]
    user: str | None
    csrf: str
    is_admin: bool = False

    @property
    def locale(self) -> str:
        return self.t.locale


def automation_menu(t: Translator, endpoint: str) -> MenuCategory:
    """The administrators' Automation menu (the run log; see admin/automation.py)."""
    from .automation import WORDS

    return MenuCategory("_automation", t.text(WORDS["menu"], "Automation"), (
        MenuItem(t.text(WORDS["title"], "Automation runs"), url_for("automation.index"),
                 endpoint == "automation.index"),))


def build_menus(ui: AdminUI, visitor: Visitor) -> tuple[MenuCategory, ...]:
    """A category per module (its label in the visitor's locale) with an entry per entity
    the visitor may see; administrators also get the Metadata menu."""
    t = visitor.t
    scope = visitor.service.scope
    current = request.view_args or {}
    current_key = f"{current.get('module')}.{current.get('entity')}"
    by_module: dict[str, list[MenuItem]] = {}
    for key in visitor.service.visible_entities():
        module, name = key.split(".", 1)
        entity = scope.entities[key]
        label = t.text(entity.plural_label or entity.label, name)
        by_module.setdefault(module, []).append(MenuItem(
            label, url_for("records.list_view", module=module, entity=name),
            key == current_key and request.blueprint == "records"))
    menus = [MenuCategory(name, t.text(module.label, name), tuple(by_module[name]))
             for name, module in ui.registry.modules.items() if name in by_module]
    if visitor.is_admin:
        endpoint = request.endpoint or ""
        menus.append(MenuCategory("_metadata", t("metadata"), (
            MenuItem(t("modules"), url_for("metadata.index"), endpoint == "metadata.index"),
            MenuItem(t("versions"), url_for("metadata.versions_view"),
                     endpoint == "metadata.versions_view"),
            MenuItem(t("pending_plan"), url_for("metadata.plan_view"),
                     endpoint == "metadata.plan_view"))))
        menus.append(automation_menu(t, endpoint))
    return tuple(menus)


class SecureView(BaseView):
    """A flask-admin view whose pages need a signed-in user of this tenant.

    Before each view method: POSTs must carry the CSRF token; the session's user is
    loaded (principal, record service, locale) into `self.visitor`; without one, pages
    redirect to the sign-in page. Methods named in `public` are open to everyone.
    """

    public: frozenset[str] = frozenset()

    def __init__(self, ui: AdminUI, **kwargs: Any) -> None:
        self.ui = ui
        super().__init__(**kwargs)

    # -- per request ----------------------------------------------------------------------------

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        setattr(g, VISITOR, None)
        user_id = session_user_id(self.ui.slug)
        visitor = load_visitor(self.ui.platform, self.ui.runtime, user_id) \
            if user_id is not None else None
        if visitor is not None:  # known first, so a refusal speaks the visitor's language
            setattr(g, VISITOR, visitor)
        if request.method == "POST" and not csrf_valid():
            raise BadForm("the form's CSRF token is missing or wrong")
        if visitor is None:
            if user_id is not None or session.get("tenant") not in (None, self.ui.slug):
                session.clear()  # a deactivated user, or a session of another tenant
            if name in self.public:
                return None
            return redirect(url_for("admin.login_view", next=here()))
        setattr(g, VISITOR, visitor)
        return None

    def _run_view(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # flask-admin retries a view that raised TypeError with other arguments; call once
        return fn(self, *args, **kwargs)

    @property
    def visitor(self) -> Visitor:
        """The signed-in visitor (pages that are not `public` always have one)."""
        found = self.visitor_or_none()
        if found is None:  # pragma: no cover - _handle_view guarantees one
            raise NotFound("sign in first")
        return found

    def visitor_or_none(self) -> Visitor | None:
        return g.get(VISITOR)

    # -- rendering -----------------------------------------------------------------------------

    def translator(self) -> Translator:
        visitor = self.visitor_or_none()
        if visitor is not None:
            return visitor.t
        return Translator(pick_locale(None, self.ui.runtime.config.locale))

    def chrome(self) -> Chrome:
        visitor = self.visitor_or_none()
        t = self.translator()
        if visitor is None:
            return Chrome(t, self.ui.tenant_label(t.locale), (), None, csrf_token())
        return Chrome(t, self.ui.tenant_label(t.locale), build_menus(self.ui, visitor),
                      visitor.user.display_name, csrf_token(), visitor.is_admin)

    def render(self, template: str, **kwargs: Any) -> str:
        chrome = self.chrome()
        return super().render(template, chrome=chrome, t=chrome.t, **kwargs)

    def page(self, template: str, code: int = 200, **kwargs: Any) -> Response:
        """A rendered page with status `code`."""
        return Response(self.render(template, **kwargs), status=code,
                        content_type="text/html; charset=utf-8")

    # -- errors --------------------------------------------------------------------------------

    def create_blueprint(self, admin: Any) -> Any:
        blueprint = super().create_blueprint(admin)
        blueprint.register_error_handler(RecordError, self.record_error)
        blueprint.register_error_handler(HTTPException, self.http_error)
        blueprint.register_error_handler(Exception, self.unexpected_error)
        return blueprint

    def error_page(self, status: int, title_key: str, detail: str) -> Response:
        t = self.translator()
        return self.page(ERROR_TEMPLATE, status, status=status, title=t(title_key),
                         detail=detail)

    def record_error(self, exc: RecordError) -> Response:
        t = self.translator()
        if isinstance(exc, NotFound):
            return self.error_page(404, "not_found", t("not_found_detail"))
        if isinstance(exc, Forbidden):
            return self.error_page(403, "forbidden", f"{t('forbidden_detail')} ({exc.detail})")
        if isinstance(exc, BadForm):
            return self.error_page(400, "bad_request", t("csrf_failed"))
        return self.error_page(exc.status, "bad_request", exc.detail)

    def http_error(self, exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 404:
            return self.error_page(404, "not_found", self.translator()("not_found_detail"))
        if code == 403:
            return self.error_page(403, "forbidden", self.translator()("forbidden_detail"))
        return self.error_page(code, "bad_request", exc.description or exc.name)

    def unexpected_error(self, exc: Exception) -> Response:
        log.exception("unexpected error in admin %s %s", request.method, request.path)
        return self.error_page(500, "error", self.translator()("error_detail"))


def here() -> str:
    """The current request's URL path and query (for coming back, or posting to)."""
    query = request.query_string.decode("latin-1")
    return request.script_root + request.path + (f"?{query}" if query else "")
