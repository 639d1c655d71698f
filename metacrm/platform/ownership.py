"""Metadata ownership: which team's definitions a new Registry version changes.

Every part of a Registry has one owner: a module's entities, its fields, forms, views and
role grants belong to the module (its manifest's `owner` team); what an overlay adds or
changes belongs to the tenant (`team:` in tenant.yaml) or to the business unit (its
`team:`). A user may reload definitions only when every changed part's team counts them
among its maintainers (members of the org unit named like the team, or of its subtree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

Part = tuple[str, str, str]  # (scope unit, kind, key)


def _owner(origin: str, module: str) -> str:
    if origin == "tenant" or origin.startswith("unit:"):
        return origin
    return f"module:{module if origin == 'module' else origin}"


def owned_parts(registry: Any) -> dict[str, dict[Part, Any]]:
    """Each owner's parts of `registry` (`module:<name>`, `tenant`, `unit:<name>`)."""
    parts: dict[str, dict[Part, Any]] = {}

    def add(owner: str, part: Part, value: Any) -> None:
        parts.setdefault(owner, {})[part] = value

    for name, module in registry.modules.items():
        add(f"module:{name}", ("", "module", name), dataclasses.replace(module, entities=()))
    for unit, scope in registry.scopes.items():
        for key, entity in scope.entities.items():
            if not unit:
                add(f"module:{entity.module}", ("", "entity", key),
                    dataclasses.replace(entity, fields=()))
            for f in entity.fields:
                add(_owner(f.origin, entity.module), (unit, "field", f"{key}.{f.name}"), f)
        for kind, table in (("form", scope.forms), ("view", scope.views)):
            for key, item in table.items():
                add(_owner(item.origin, item.module), (unit, kind, key), item)
        for name, role in scope.roles.items():
            for key, grant in role.grants.items():
                add(_owner(grant.origin, key.split(".")[0]), (unit, "grant", f"{name}:{key}"),
                    grant)
    return parts


def changed_owners(old: Any, new: Any) -> set[str]:
    """The owners whose parts differ between two Registry versions."""
    before, after = owned_parts(old), owned_parts(new)
    return {o for o in set(before) | set(after) if before.get(o, {}) != after.get(o, {})}


def config_changed(old: Any, new: Any) -> bool:
    """Whether tenant.yaml's own settings differ (modules, locales, units, permissions...)."""
    fields = [f.name for f in dataclasses.fields(new) if f.name != "directory"]
    return any(getattr(old, f, None) != getattr(new, f, None) for f in fields)


def owner_teams(owners: set[str], old: Any, new: Any, config: Any) -> dict[str, str | None]:
    """The team responsible for each owner (None: no team is named)."""
    teams: dict[str, str | None] = {}
    for owner in owners:
        if owner.startswith("module:"):
            name = owner.split(":", 1)[1]
            module = old.modules.get(name) or new.modules.get(name)
            teams[owner] = module.owner if module else None
        elif owner == "tenant":
            teams[owner] = config.team
        else:
            name = owner.split(":", 1)[1]
            unit = old.units.get(name) or new.units.get(name)
            teams[owner] = (unit.team if unit else None) or config.team
    return teams


def refusals(teams: Mapping[str, str | None], maintained: set[str]) -> list[str]:
    """Why the change is refused: one line per owner the user does not maintain."""
    out = []
    for owner, team in sorted(teams.items()):
        what = owner.replace("module:", "module ").replace("unit:", "business unit ")
        if team is None:
            out.append(f"{what} names no owning team, so only an operator may change it")
        elif team not in maintained:
            out.append(f"{what} belongs to team `{team}`, which you are not a maintainer of")
    return out
