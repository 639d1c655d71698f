"""Users and bearer tokens of a tenant. Tokens are random and stored only as SHA-256 hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .passwords import hash_password, verify_password
from .systables import SystemTables, runtime_system_tables, system_tables

TOKEN_PREFIX = "mcrm_"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    business_unit: str | None
    locale: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(connection: sa.Connection, username: str, display_name: str | None = None, *,
                business_unit: str | None = None, email: str | None = None,
                password_hash: str | None = None) -> int:
    """Create (or update) a user; returns the user's id."""
    users = system_tables().users
    existing = connection.execute(sa.select(users.c.id).where(users.c.username == username)
                                  ).scalar()
    values = {"display_name": display_name or username, "business_unit": business_unit,
              "email": email, "active": True}
    if password_hash is not None:
        values["password_hash"] = password_hash
    if existing is not None:
        connection.execute(users.update().where(users.c.id == existing).values(**values))
        return int(existing)
    return int(connection.execute(users.insert().values(
        username=username, created_at=dt.datetime.now(dt.UTC), **values)
        .returning(users.c.id)).scalar_one())


def issue_token(connection: sa.Connection, user_id: int, name: str = "api",
                expires_in: dt.timedelta | None = None) -> str:
    """A new token for `user_id`; the plain token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    connection.execute(system_tables().tokens.insert().values(
        user_id=user_id, name=name, token_hash=hash_token(token), created_at=now,
        expires_at=now + expires_in if expires_in else None))
    return token


def revoke_token(connection: sa.Connection, token: str) -> bool:
    tokens = system_tables().tokens
    result = connection.execute(tokens.update().where(tokens.c.token_hash == hash_token(token))
                                .values(revoked_at=dt.datetime.now(dt.UTC)))
    return result.rowcount > 0


def token_lookup(tables: SystemTables) -> sa.Select:
    """The token → user statement, built once per set of tables (its cache key is kept)."""
    tokens, users = tables.tokens, tables.users
    return tables.statement("token_lookup", lambda: (
        sa.select(users.c.id, users.c.username, users.c.display_name,
                  users.c.business_unit, users.c.locale, tokens.c.expires_at,
                  tokens.c.revoked_at)
        .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
        .where(tokens.c.token_hash == sa.bindparam("token_hash"), users.c.active.is_(True))))


def user_for_token(connection: sa.Connection, token: str,
                   tables: SystemTables | None = None) -> User | None:
    """The active user a token belongs to, or None (unknown, revoked or expired)."""
    tables = tables or system_tables()
    row = connection.execute(token_lookup(tables), {"token_hash": hash_token(token)}).first()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None:
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(
            tzinfo=dt.UTC)
        if expires <= dt.datetime.now(dt.UTC):
            return None
    return User(row.id, row.username, row.display_name, row.business_unit, row.locale)


def set_roles(connection: sa.Connection, user_id: int, roles: Iterable[str]) -> list[str]:
    """Replace a user's roles; returns them sorted."""
    table = system_tables().user_roles
    wanted = sorted(set(roles))
    connection.execute(table.delete().where(table.c.user_id == user_id))
    if wanted:
        connection.execute(table.insert(), [{"user_id": user_id, "role": r} for r in wanted])
    return wanted


def roles_of(connection: sa.Connection, user_id: int) -> list[str]:
    table = system_tables().user_roles
    return sorted(r for (r,) in connection.execute(sa.select(table.c.role).where(
        table.c.user_id == user_id)))


def user_by_name(connection: sa.Connection, username: str) -> User | None:
    users = system_tables().users
    row = connection.execute(sa.select(users).where(users.c.username == username)).first()
    if row is None:
        return None
    return User(row.id, row.username, row.display_name, row.business_unit, row.locale)


# -- signing in with a password ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant user with what signing in needs: active, and the password hash."""

    user: User
    active: bool
    password_hash: str | None


def find_account(runtime: Any, *, user_id: int | None = None, username: str | None = None,
                 connection: sa.Connection | None = None) -> Account | None:
    """A user by id or username (on `connection`, else on one of its own)."""
    tables = runtime_system_tables(runtime)
    by = "id" if user_id is not None else "username"
    users = tables.users
    statement = tables.statement(f"account_by_{by}", lambda: sa.select(
        users.c.id, users.c.username, users.c.display_name, users.c.business_unit,
        users.c.locale, users.c.active, users.c.password_hash).where(
        users.c[by] == sa.bindparam("key")))
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
