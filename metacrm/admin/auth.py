"""Signing in to the admin: password checks, the session, CSRF tokens and the visitor.

The session is Flask's signed cookie, with a key derived from the installation's secret
and the tenant's slug and a cookie name per tenant, and it carries the slug it was made
for: a session of one tenant is never a session of another. Every POST must carry the
session's CSRF token. Each request loads the signed-in user's principal afresh, so a
deactivated user or a changed role takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import request, session
from flask.sessions import SecureCookieSessionInterface

from ..platform.auth import User, find_account
from ..platform.permissions import Principal, load_principal
from ..platform.records import Actor, RecordService
from ..platform.systables import runtime_system_tables
from .i18n import Translator, pick_locale

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TENANT, SESSION_USER, SESSION_CSRF = "tenant", "uid", "csrf"


def session_secret(secret_key: str, slug: str) -> bytes:
    """The signing key of one tenant's admin sessions (derived: no key is shared)."""
    return hmac.new(secret_key.encode(), f"metacrm-admin-session:{slug}".encode(),
                    hashlib.sha256).digest()


def cookie_name(slug: str) -> str:
    return f"metacrm_admin_{slug}"


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with a cookie that is `Secure` on every HTTPS
    request (and on every request with `always_secure`: METACRM_SECURE_COOKIES=1, for a
    proxy that ends TLS without telling the app), `HttpOnly` and `SameSite=Lax`."""

    def __init__(self, always_secure: bool = False) -> None:
        self.always_secure = always_secure

    def get_cookie_secure(self, app: Any) -> bool:
        return self.always_secure or request.is_secure or super().get_cookie_secure(app)

    def get_cookie_httponly(self, app: Any) -> bool:
        return True

    def get_cookie_samesite(self, app: Any) -> str:
        return "Lax"


# -- CSRF --------------------------------------------------------------------------------------


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str) or not token:
        token = session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_valid() -> bool:
    """Whether the request carries the session's CSRF token (form field or header)."""
    expected = session.get(SESSION_CSRF)
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    return isinstance(expected, str) and bool(expected) and hmac.compare_digest(
        expected.encode(), sent.encode())


# -- users and passwords -----------------------------------------------------------------------


def sign_in(slug: str, user: User) -> None:
    """Start a fresh session for `user` at tenant `slug` (a new CSRF token too)."""
    session.clear()
    session[SESSION_TENANT] = slug
    session[SESSION_USER] = user.id
    session[SESSION_CSRF] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def session_user_id(slug: str) -> int | None:
    """The signed-in user's id, when the session belongs to tenant `slug`."""
    if session.get(SESSION_TENANT) != slug:
        return None
    user_id = session.get(SESSION_USER)
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None


def safe_next(target: str | None, default: str) -> str:
    """`target` when it is a path inside this tenant's admin, else `default` (no open
    redirects)."""
    if not target:
        return default
    parts = urlsplit(target)
    prefix = f"{request.script_root}/admin"
    if parts.scheme or parts.netloc or target.startswith("//") or "\\" in target or \
            not (parts.path == prefix or parts.path.startswith(prefix + "/")):
        return default
    return target


# -- the visitor: one signed-in user for one request -------------------------------------------


@dataclass(slots=True)
class Visitor:
    """The signed-in user of this request: principal, record service and locale."""

    user: User
    principal: Principal
    service: RecordService
    t: Translator

    @property
    def locale(self) -> str:
        return self.t.locale

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def load_visitor(platform: Any, runtime: Any, user_id: int) -> Visitor | None:
    """The visitor for an active user id, or None (unknown or deactivated)."""
    with runtime.connect() as connection:  # one connection for the user and their roles
        account = find_account(runtime, user_id=user_id, connection=connection)
        if account is None or not account.active:
            return None
        principal = load_principal(connection, runtime_system_tables(runtime), account.user,
                                   runtime.registry.units)
    service = RecordService(runtime, Actor.of(principal), emit=platform.emit,
                            operators=platform.operators)
    locale = pick_locale(account.user.locale, runtime.config.locale)
    return Visitor(account.user, principal, service, Translator(locale))
