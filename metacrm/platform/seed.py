"""Seeding a tenant's org tree and users from YAML (``tenants/<slug>/org.yaml``).

Idempotent: units are created, moved or relabelled to match the file; users are
created or updated, their roles and units replaced by the file's. Users and units the
file does not name are left alone. Passwords never live in YAML: set them with
``metacrm user password`` or the API.

    org: acme
    units:
      acme:   {label: ACME Group, kind: group}
      retail: {label: Retail, kind: business_unit, parent: acme, business_unit: retail}
    users:
      alice: {name: Alice Chen, email: alice@example.com, units: [retail], roles: [sales_rep],
              manages: [retail]}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from ..metadata.diagnostics import Diagnostic
from ..metadata.loader import Document, LoadError, load_file
from .identity import IdentityService
from .orgtree import UNIT_KINDS, OrgTree

NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,99}$"}
SEED_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "required": ["org"], "additionalProperties": False,
    "properties": {
        "org": {"type": "string", "description": "The tenant's slug."},
        "units": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["label", "kind"], "additionalProperties": False,
            "properties": {
                "label": {"type": "string", "minLength": 1, "maxLength": 200},
                "kind": {"enum": list(UNIT_KINDS)},
                "parent": NAME,
                "business_unit": {"type": "string"}}}},
        "users": {"type": "object", "propertyNames": {"type": "string", "minLength": 1,
                                                      "maxLength": 150},
                  "additionalProperties": {
                      "type": "object", "additionalProperties": False,
                      "properties": {
                          "name": {"type": "string", "minLength": 1, "maxLength": 200},
                          "email": {"type": "string", "maxLength": 254},
                          "locale": {"type": "string", "maxLength": 16},
                          "units": {"type": "array", "items": NAME},
                          "roles": {"type": "array", "items": {"type": "string"}},
                          "manages": {"type": "array", "items": NAME},
                          "active": {"type": "boolean"}}}},
    },
}


class SeedError(Exception):
    """A seed file that cannot be applied; carries its diagnostics (file:line:col)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.format() for d in diagnostics))


def seed_file(directory: Path) -> Path:
    return directory / "org.yaml"


def load_seed(path: Path) -> Document:
    """The seed document, checked against its schema; SeedError lists every problem."""
    try:
        doc = load_file(path)
    except LoadError as exc:
        raise SeedError(exc.diagnostics) from exc
    validator = jsonschema.Draft202012Validator(SEED_SCHEMA)
    problems = [doc.diagnostic("seed.schema", error.message, tuple(error.absolute_path))
                for error in sorted(validator.iter_errors(doc.data), key=lambda e: e.path)]
    if problems:
        raise SeedError(problems)
    return doc


def apply_seed(runtime: Any, doc: Document) -> dict[str, int]:
    """Apply a seed document to a tenant runtime; returns counts of what it touched."""
    data = doc.data
    if data["org"] != runtime.slug:
        raise SeedError([doc.diagnostic("seed.tenant", f"this file seeds `{data['org']}`, not "
                                        f"`{runtime.slug}`", ("org",))])
    units: Mapping[str, Any] = data.get("units") or {}
    users: Mapping[str, Any] = data.get("users") or {}
    _check_references(doc, units, users, runtime)
    identity = IdentityService(runtime)
    with runtime.connect() as connection:
        existing = {u.name: u for u in OrgTree(connection, identity.tables).all()}
    ids = {u.id: u.name for u in existing.values()}
    parents = {name: ids.get(u.parent_id) for name, u in existing.items()}
    for name, spec in units.items():
        if spec.get("parent") or name not in parents:
            parents[name] = spec.get("parent")
    for name in _parents_first(doc, units, parents):
        spec = units[name]
        body = {"label": spec["label"], "kind": spec["kind"],
                "business_unit": spec.get("business_unit")}
        if spec.get("parent"):
            body["parent"] = spec["parent"]
        if name in existing:
            identity.save_unit(body, name)
        else:
            identity.save_unit({**body, "name": name})
    ids: dict[str, int] = {}
    with runtime.connect() as connection:
        known = {u["username"]: u["id"] for u in _all_users(connection, identity)}
    for username, spec in users.items():
        body = {"display_name": spec.get("name") or username, "email": spec.get("email"),
                "roles": spec.get("roles", []), "units": spec.get("units", []),
                "active": spec.get("active", True)}
        if spec.get("locale"):
            body["locale"] = spec["locale"]
        if username in known:
            ids[username] = identity.save_user(body, known[username])["id"]
        else:
            ids[username] = identity.save_user({**body, "username": username})["id"]
    for username, spec in users.items():
        for unit in spec.get("manages", []):
            identity.save_unit({"manager": ids[username]}, unit)
    return {"units": len(units), "users": len(users)}


def _all_users(connection: Any, identity: IdentityService) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    users = identity.tables.users
    return [{"username": r.username, "id": r.id}
            for r in connection.execute(sa.select(users.c.username, users.c.id))]


def _check_references(doc: Document, units: Mapping[str, Any], users: Mapping[str, Any],
                      runtime: Any) -> None:
    """Every parent, unit, manager's unit, role and business unit must exist."""
    problems = []
    with runtime.connect() as connection:
        from .systables import runtime_system_tables

        stored = {u.name for u in OrgTree(connection, runtime_system_tables(runtime)).all()}
    names = set(units) | stored
    roles = set()
    for scope in runtime.registry.scopes.values():
        roles.update(scope.roles)
    roles.add("administrator")
    for name, spec in units.items():
        if spec.get("parent") and spec["parent"] not in names:
            problems.append(doc.diagnostic("seed.unknown-unit", f"unit `{name}` has parent "
                                           f"`{spec['parent']}`, which is not a unit",
                                           ("units", name, "parent")))
        bu = spec.get("business_unit")
        if bu and bu not in runtime.registry.units:
            problems.append(doc.diagnostic("seed.unknown-business-unit", f"`{bu}` is not a "
                                           "business unit of the tenant (tenant.yaml)",
                                           ("units", name, "business_unit")))
    for username, spec in users.items():
        for key in ("units", "manages"):
            for index, unit in enumerate(spec.get(key, [])):
                if unit not in names:
                    problems.append(doc.diagnostic("seed.unknown-unit", f"`{unit}` is not a "
                                                   "unit", ("users", username, key, index)))
        for index, role in enumerate(spec.get("roles", [])):
            if role not in roles:
                problems.append(doc.diagnostic(
                    "seed.unknown-role", f"`{role}` is not a role; known roles: "
                    f"{', '.join(sorted(roles))}", ("users", username, "roles", index)))
    if problems:
        raise SeedError(problems)


def _parents_first(doc: Document, units: Mapping[str, Any],
                   parents: Mapping[str, str | None]) -> list[str]:
    """The file's units, each after its parent; a cycle in the tree the seed would leave
    (the file's parents over the stored ones) is refused before anything changes."""
    for start in units:
        chain = [start]
        current = parents.get(start)
        while current is not None:
            if current in chain:
                raise SeedError([doc.diagnostic(
                    "seed.cycle", "the units' parents would form a cycle: "
                    + " → ".join([*chain, current]), ("units", start, "parent"))])
            chain.append(current)
            current = parents.get(current)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in units:
            return
        seen.add(name)
        parent = units[name].get("parent")
        if parent:
            visit(parent)
        order.append(name)

    for name in units:
        visit(name)
    return order
