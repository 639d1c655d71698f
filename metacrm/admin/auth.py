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

import sqlalchemy as sa
from flask import request, session

from ..platform.auth import User
from ..platform.passwords import hash_password, verify_password
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


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant user as the admin needs them."""

    user: User
    active: bool
    password_hash: str | None


def find_account(runtime: Any, *, user_id: int | None = None, username: str | None = None,
                 connection: sa.Connection | None = None) -> Account | None:
    """A user by id or username (on `connection`, else on one of its own)."""
    tables = runtime_system_tables(runtime)
    by = "id" if user_id is not None else "username"
    statement = tables.statements.get(f"admin_account_{by}")
    if statement is None:  # built once per version: the statement cache keeps its SQL
        users = tables.users
        statement = tables.statements[f"admin_account_{by}"] = sa.select(
            users.c.id, users.c.username, users.c.display_name, users.c.business_unit,
            users.c.locale, users.c.active, users.c.password_hash).where(
            users.c[by] == sa.bindparam("key"))
    key = user_id if user_id is not None else username
    if connection is None:
        with runtime.connect() as own:
            row = own.execute(statement, {"key": key}).first()
    else:
        row = connection.execute(statement, {"key": key}).first()
    if row is None:
        return None
    return Account(User(row.id, row.username, row.display_name, row.business_unit, row.locale),
                   bool(row.active), row.password_hash)


class PasswordCheck:
    """Checks a username and password; an unknown user costs one hash check too, so the
    answer's timing does not tell which usernames exist."""

    def __init__(self) -> None:
        self._dummy: str | None = None

    def __call__(self, runtime: Any, username: str, password: str) -> User | None:
        account = find_account(runtime, username=username) if username else None
        if account is None or not account.password_hash:
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_urlsafe(16))
            verify_password(self._dummy, password)
            return None
        if not verify_password(account.password_hash, password) or not account.active:
            return None
        return account.user


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
