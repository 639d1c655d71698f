"""Managing a tenant's users, their roles and the org tree (administrators only).

One service behind the API's ``/api/v1/_identity`` routes, the CLI and YAML seeding, so
every way in applies the same checks. Each change is written to the audit log under the
pseudo-entities ``_identity.user`` and ``_identity.unit``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from .auth import create_user, roles_of, set_roles
from .orgtree import OrgError, OrgTree, OrgUnit, bump_org_version, members_below
from .passwords import hash_password
from .permissions import ADMIN_ROLE, Principal
from .records import ID_MAX, Conflict, Forbidden, NotFound, ValidationFailed, write_audit
from .systables import runtime_system_tables

USER_KEYS = frozenset({"username", "display_name", "email", "password", "locale", "active",
                       "roles", "unit", "units", "business_unit"})
UNIT_KEYS = frozenset({"name", "label", "kind", "parent", "business_unit", "manager"})


class IdentityService:
    """Users, roles and org units of one tenant runtime, changed by `principal`
    (None: the system, e.g. seeding from YAML)."""

    def __init__(self, runtime: Any, principal: Principal | None = None) -> None:
        self.runtime = runtime
        self.principal = principal
        self.tables = runtime_system_tables(runtime)

    def _require_admin(self) -> None:
        if self.principal is not None and not self.principal.is_admin:
            raise Forbidden("only administrators manage users, roles and org units")

    # -- roles --------------------------------------------------------------------------------

    def known_roles(self) -> set[str]:
        registry = self.runtime.registry
        names = {ADMIN_ROLE}
        for scope in registry.scopes.values():
            names.update(scope.roles)
        return names

    def roles(self) -> list[dict[str, Any]]:
        """Every role with its grants, per business unit where a unit changes them."""
        registry = self.runtime.registry
        base = registry.scope(None)
        out = [{"name": ADMIN_ROLE, "label": "Administrator", "builtin": True,
                "grants": {"*": {"actions": {"*": "all"}, "fields": {}}}}]
        for name in sorted(self.known_roles() - {ADMIN_ROLE}):
            role = base.roles.get(name) or next(
                s.roles[name] for s in registry.scopes.values() if name in s.roles)
            out.append({"name": name, "label": role.label.get(None) or name, "builtin": False,
                        "grants": _grants_json(role),
                        "units": {unit: _grants_json(scope.roles[name])
                                  for unit, scope in registry.scopes.items()
                                  if unit and name in scope.roles
                                  and scope.roles[name] != base.roles.get(name)}})
        return out

    def _check_roles(self, roles: Any) -> list[str]:
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValidationFailed("`roles` is a list of role names", {"roles": ["a list"]})
        unknown = sorted(set(roles) - self.known_roles())
        if unknown:
            raise ValidationFailed(f"unknown role(s): {', '.join(unknown)}",
                                   {"roles": [f"`{r}` is not a role" for r in unknown]})
        return roles

    # -- users --------------------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        self._require_admin()
        with self.runtime.connect() as connection:
            ids = [r for (r,) in connection.execute(sa.select(self.tables.users.c.id)
                                                   .order_by(self.tables.users.c.id))]
            return [self._user_json(connection, i) for i in ids]

    def user(self, user_id: int) -> dict[str, Any]:
        if not 1 <= user_id <= ID_MAX:
            raise NotFound(f"there is no user {user_id}")
        if self.principal is not None and self.principal.user_id != user_id:
            self._require_admin()
        with self.runtime.connect() as connection:
            return self._user_json(connection, user_id)

    def _user_json(self, connection: sa.Connection, user_id: int) -> dict[str, Any]:
        users = self.tables.users
        row = connection.execute(sa.select(users).where(users.c.id == user_id)).mappings().first()
        if row is None:
            raise NotFound(f"there is no user {user_id}")
        tree = OrgTree(connection, self.tables)
        return {"id": row["id"], "username": row["username"],
                "display_name": row["display_name"], "email": row["email"],
                "locale": row["locale"], "active": row["active"],
                "business_unit": row["business_unit"], "has_password": bool(
                    row["password_hash"]), "roles": roles_of(connection, user_id),
                "units": [u.name for u in tree.units_of(user_id)]}

    def save_user(self, data: Mapping[str, Any], user_id: int | None = None) -> dict[str, Any]:
        """Create a user (no `user_id`) or change one; returns the user."""
        self._require_admin()
        unknown = sorted(set(data) - USER_KEYS)
        if unknown:
            raise ValidationFailed(f"unknown key(s): {', '.join(unknown)}",
                                   {k: ["unknown key"] for k in unknown})
        _check_user_values(data, self.runtime.registry.units)
        roles = self._check_roles(data["roles"]) if "roles" in data else None
        units = _unit_list(data)
        password = data.get("password")
        password_hash = None
        if password is not None:
            try:
                password_hash = hash_password(password) if isinstance(password, str) else None
            except ValueError as exc:
                raise ValidationFailed(str(exc), {"password": [str(exc)]}) from exc
            if password_hash is None:
                raise ValidationFailed("`password` is text", {"password": ["text"]})
        users = self.tables.users
        with self.runtime.begin() as connection:
            if user_id is None:
                username = data.get("username")
                if not isinstance(username, str) or not username.strip() or len(username) > 150:
                    raise ValidationFailed("`username` is required (at most 150 characters)",
                                           {"username": ["required"]})
                if connection.execute(sa.select(users.c.id).where(
                        users.c.username == username)).first() is not None:
                    raise Conflict(f"a user named {username!r} already exists",
                                   {"username": ["already taken"]})
                user_id = create_user(connection, username, data.get("display_name"),
                                      business_unit=data.get("business_unit"),
                                      email=data.get("email"), password_hash=password_hash)
                action = "created"
            else:
                if not 1 <= user_id <= ID_MAX or connection.execute(sa.select(users.c.id).where(
                        users.c.id == user_id)).first() is None:
                    raise NotFound(f"there is no user {user_id}")
                values = {k: data[k] for k in ("display_name", "email", "locale", "active",
                                               "business_unit") if k in data}
                if "username" in data:
                    values["username"] = data["username"]
                if password_hash is not None:
                    values["password_hash"] = password_hash
                if values:
                    try:
                        connection.execute(users.update().where(users.c.id == user_id)
                                           .values(**values))
                    except sa.exc.IntegrityError as exc:
                        raise Conflict("another user already has this username") from exc
                action = "updated"
            if "locale" in data and action == "created":
                connection.execute(users.update().where(users.c.id == user_id)
                                   .values(locale=data["locale"]))
            if self.principal is not None and user_id == self.principal.user_id and \
                    data.get("active") is False:
                raise ValidationFailed("you cannot deactivate yourself; ask another "
                                       "administrator", {"active": ["stays true"]})
            if roles is not None:
                if self.principal is not None and user_id == self.principal.user_id and \
                        ADMIN_ROLE not in roles:
                    raise ValidationFailed("you cannot take the administrator role from "
                                           "yourself; ask another administrator",
                                           {"roles": ["keeps administrator"]})
                set_roles(connection, user_id, roles)
            if units is not None:
                self._place(connection, user_id, units)
            changes = {k: v for k, v in data.items() if k != "password"}
            if password is not None:
                changes["password"] = "(changed)"
            self._audit(connection, "_identity.user", user_id, action, changes)
            return self._user_json(connection, user_id)

    def _place(self, connection: sa.Connection, user_id: int, units: list[str]) -> None:
        tree = OrgTree(connection, self.tables)
        members = self.tables.org_members
        try:
            targets = [tree.get(name) for name in units]
        except OrgError as exc:
            raise ValidationFailed(str(exc), {"units": [str(exc)]}) from exc
        connection.execute(members.delete().where(members.c.user_id == user_id))
        bump_org_version(connection, self.tables)
        for index, unit in enumerate(targets):
            tree.place(user_id, unit.name, primary=index == 0)

    # -- org units ----------------------------------------------------------------------------

    def units(self) -> list[dict[str, Any]]:
        with self.runtime.connect() as connection:
            tree = OrgTree(connection, self.tables)
            return [self._unit_json(tree, u) for u in tree.all()]

    def unit(self, name: str) -> dict[str, Any]:
        with self.runtime.connect() as connection:
            tree = OrgTree(connection, self.tables)
            try:
                unit = tree.get(name)
            except OrgError as exc:
                raise NotFound(str(exc)) from exc
            body = self._unit_json(tree, unit)
            body["members"] = tree.members_of(name)
            body["subtree"] = [u.name for u in tree.subtree(name)]
            return body

    def _unit_json(self, tree: OrgTree, unit: OrgUnit) -> dict[str, Any]:
        parent = tree.by_id(unit.parent_id).name if unit.parent_id else None
        return {"id": unit.id, "name": unit.name, "label": unit.label, "kind": unit.kind,
                "parent": parent, "path": unit.path, "depth": unit.depth,
                "business_unit": unit.business_unit,
                "effective_business_unit": tree.business_unit_of(unit),
                "manager": unit.manager_id}

    def save_unit(self, data: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
        """Create a unit (no `name`) or change one: label, kind, business unit, manager, or
        `parent` (a move: one update of the subtree's paths, no record changes)."""
        self._require_admin()
        unknown = sorted(set(data) - UNIT_KEYS)
        if unknown:
            raise ValidationFailed(f"unknown key(s): {', '.join(unknown)}",
                                   {k: ["unknown key"] for k in unknown})
        limits = {"name": 100, "label": 200, "kind": 32, "parent": 100, "business_unit": 64}
        wrong = sorted(k for k, most in limits.items()
                       if data.get(k) is not None and (not isinstance(data[k], str)
                                                       or not data[k].strip()
                                                       or len(data[k]) > most))
        if wrong:
            raise ValidationFailed(f"{', '.join(f'`{k}`' for k in wrong)} must be non-empty "
                                   "text of at most " + ", ".join(
                                       f"{limits[k]}" for k in wrong) + " characters",
                                   {k: [f"non-empty text, at most {limits[k]} characters"]
                                    for k in wrong})
        business_unit = data.get("business_unit")
        if business_unit is not None and business_unit not in self.runtime.registry.units:
            raise ValidationFailed(f"there is no business unit {business_unit!r} in the "
                                   "tenant's definitions", {"business_unit": ["unknown"]})
        with self.runtime.begin() as connection:
            tree = OrgTree(connection, self.tables)
            try:
                if name is None:
                    new_name = data.get("name")
                    if not isinstance(new_name, str) or not new_name:
                        raise ValidationFailed("`name` is required", {"name": ["required"]})
                    unit = tree.add(new_name, data.get("label") or new_name,
                                    data.get("kind", "team"), data.get("parent"),
                                    business_unit=business_unit)
                    action = "created"
                else:
                    unit = self._existing_unit(tree, name)
                    current_parent = tree.by_id(unit.parent_id).name if unit.parent_id else None
                    if "parent" in data and data["parent"] != current_parent:
                        if data["parent"] is None:
                            raise ValidationFailed("a unit cannot become a root again",
                                                   {"parent": ["required"]})
                        tree.move(unit.name, data["parent"])
                    tree.update(unit.name, label=data.get("label"), kind=data.get("kind"),
                                business_unit=business_unit if "business_unit" in data
                                else False)
                    action = "updated"
                if "manager" in data:
                    self._check_user(connection, data["manager"], "manager")
                    tree.set_manager(unit.name, data["manager"])
            except OrgError as exc:
                raise ValidationFailed(str(exc)) from exc
            unit = tree.get(unit.name)
            self._audit(connection, "_identity.unit", unit.id, action, dict(data))
            return self._unit_json(tree, unit)

    def delete_unit(self, name: str) -> None:
        self._require_admin()
        with self.runtime.begin() as connection:
            tree = OrgTree(connection, self.tables)
            unit = self._existing_unit(tree, name)
            try:
                tree.remove(name)
            except OrgError as exc:
                raise Conflict(str(exc)) from exc
            self._audit(connection, "_identity.unit", unit.id, "deleted", {"name": name})

    @staticmethod
    def _existing_unit(tree: OrgTree, name: str) -> OrgUnit:
        try:
            return tree.get(name)
        except OrgError as exc:
            raise NotFound(str(exc)) from exc

    def _check_user(self, connection: sa.Connection, user_id: Any, key: str) -> None:
        if user_id is None:
            return
        users = self.tables.users
        if isinstance(user_id, bool) or not isinstance(user_id, int) or \
                not 1 <= user_id <= ID_MAX or connection.execute(
                sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
            raise ValidationFailed(f"`{key}` is the id of an existing user", {key: ["unknown"]})

    def _audit(self, connection: sa.Connection, entity: str, record_id: int, action: str,
               changes: Mapping[str, Any]) -> None:
        write_audit(connection, self.tables, entity, record_id, action,
                    self.principal.user_id if self.principal else None,
                    {k: (None, v) for k, v in changes.items()}, dt.datetime.now(dt.UTC))


USER_TEXT = {"username": (150, False), "display_name": (200, False), "email": (254, True),
             "locale": (16, True), "business_unit": (64, True), "password": (1000, False)}
"""Text fields of a user body: (longest, may be null)."""


def _check_user_values(data: Mapping[str, Any], known_units: Iterable[str]) -> None:
    """Refuse (422) user values of the wrong type, length or meaning, before any write."""
    errors: dict[str, list[str]] = {}
    for key, (longest, nullable) in USER_TEXT.items():
        if key not in data:
            continue
        value = data[key]
        if value is None and nullable:
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > longest:
            errors[key] = [f"non-empty text of at most {longest} characters"
                           + (", or null" if nullable else "")]
    if "active" in data and not isinstance(data["active"], bool):
        errors["active"] = ["true or false"]
    unit = data.get("business_unit")
    if isinstance(unit, str) and "business_unit" not in errors and unit not in set(known_units):
        errors["business_unit"] = [f"`{unit}` is not a business unit of this tenant"]
    if errors:
        raise ValidationFailed("some values are not valid: " + ", ".join(
            f"`{k}`" for k in sorted(errors)), errors)


def _unit_list(data: Mapping[str, Any]) -> list[str] | None:
    """`unit` (one name) or `units` (primary first) from a user body."""
    if "units" in data:
        units = data["units"]
        if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
            raise ValidationFailed("`units` is a list of org unit names", {"units": ["a list"]})
        return units
    if "unit" in data:
        unit = data["unit"]
        if unit is not None and not isinstance(unit, str):
            raise ValidationFailed("`unit` is an org unit's name", {"unit": ["a name"]})
        return [unit] if unit else []
    return None


def _grants_json(role: Any) -> dict[str, Any]:
    return {key: {"actions": {a: ({"scope": r.scope, "when": _thaw(r.when)} if r.when is not None
                                  else r.scope) for a, r in grant.actions.items()},
                  "fields": dict(grant.fields)} for key, grant in role.grants.items()}


def _thaw(value: Any) -> Any:
    from ..metadata.ir import thaw

    return thaw(value)


def maintainers(connection: sa.Connection, tables: Any, team: str) -> set[int]:
    """The users of org unit `team` and its subtree: who may change definitions `team` owns."""
    units = tables.org_units
    path = connection.execute(sa.select(units.c.path).where(units.c.name == team)).scalar()
    if path is None:
        return set()
    return {r for (r,) in connection.execute(members_below(tables, [path]))}


def teams_of(connection: sa.Connection, tables: Any, user_id: int,
             teams: Iterable[str]) -> set[str]:
    """Which of `teams` the user maintains."""
    return {t for t in teams if user_id in maintainers(connection, tables, t)}
