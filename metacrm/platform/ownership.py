"""Metadata ownership: whose definitions a reload changes, and whether a user may.

Every definition file has one owner, from where it lives: a module's files (its
manifest, entities, forms, views, roles) belong to the module, whose `owner:` names the
team; tenant.yaml and the tenant-wide overlay folders belong to the tenant (`team:` in
tenant.yaml); a business unit's overlay folders belong to that unit (its `team:`, else
the tenant's). A file added, removed or changed between the version being served and
the new one needs its owner's team. A user maintains a team when they are placed in
the org unit named like the team, or anywhere below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OwnedFile = tuple[str, str, str]  # (file, sha256, owner)


def changed_owners(old: Iterable[OwnedFile], new: Iterable[OwnedFile]) -> set[str]:
    """Owners of the files that differ between two compiles (added, removed, edited)."""
    before: dict[str, tuple[str, set[str]]] = {}
    after: dict[str, tuple[str, set[str]]] = {}
    for files, target in ((old, before), (new, after)):
        for file, digest, owner in files:
            target.setdefault(file, (digest, set()))[1].add(owner)
    owners: set[str] = set()
    for file in set(before) | set(after):
        was, now = before.get(file), after.get(file)
        if was is None or now is None or was[0] != now[0]:
            owners |= (was[1] if was else set()) | (now[1] if now else set())
    return owners


def owner_teams(owners: Iterable[str], old: Any, new: Any, config: Any) -> dict[str, str | None]:
    """The team responsible for each owner (None: no team is named)."""
    teams: dict[str, str | None] = {}
    for owner in owners:
        kind, _, name = owner.partition(":")
        if kind == "module":
            module = old.modules.get(name) or new.modules.get(name)
            teams[owner] = module.owner if module else None
        elif kind == "unit":
            unit = old.units.get(name) or new.units.get(name)
            teams[owner] = (unit.team if unit else None) or config.team
        else:
            teams[owner] = config.team
    return teams


def refusals(teams: Mapping[str, str | None], maintained: set[str]) -> list[str]:
    """Why the change is refused: one line per owner the user does not maintain."""
    out = []
    for owner, team in sorted(teams.items()):
        kind, _, name = owner.partition(":")
        what = {"module": f"module {name}", "unit": f"business unit {name}"}.get(
            kind, "the tenant's own definitions")
        if team is None:
            out.append(f"{what} names no owning team, so only an operator may change it")
        elif team not in maintained:
            out.append(f"{what} belongs to team `{team}`, which you are not a maintainer of")
    return out
