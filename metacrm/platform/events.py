"""Record events: what the record service tells the engines after each committed change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """A committed change to one record.

    ``kind`` is created, updated, deleted, restored or assigned; ``changes`` maps each
    changed field to its (before, after) values; ``record`` is the record after the
    change; ``transition`` names the workflow transition that made an update; ``depth``
    counts how many automations led to it (rules stop at a limit); ``unit`` is the
    acting user's business unit.
    """

    tenant: str
    entity: str
    record_id: int
    kind: str
    actor: int | None
    at: dt.datetime
    version: str
    record: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    depth: int = 0
    transition: str | None = None
    unit: str | None = None

    @property
    def changed_fields(self) -> frozenset[str]:
        return frozenset(self.changes)
