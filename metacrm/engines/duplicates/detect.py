"""Duplicate detection at every way in: one record (the `record_writing` hook, for the API,
the admin UI, workflows and rules) and a batch of new records (imports).

`block` rules refuse a record whose key another live record holds (409 naming the rule and
the candidates); `review` rules let it through and queue the pair for a person to look at.
Nothing is merged automatically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ...platform.events import RecordEvent
from ...platform.records import Conflict
from . import index
from .rules import EntityRules, entity_rules

MAX_CANDIDATES = 50
"""Pairs queued per rule for one record: a key shared by thousands of records (a switchboard
number) queues the first 50, not thousands."""


def on_record_writing(event: RecordEvent, connection: sa.Connection, service: Any) -> None:
    """Keep the record's keys current and act on its candidates (inside the write)."""
    rules = entity_rules(service.runtime, event.entity)
    if rules is None or event.kind == "assigned":
        return
    system = service.system
    if event.kind == "deleted":
        index.remove_keys(connection, system, event.entity, event.record_id)
        return
    if event.kind == "updated" and not (rules.fields & event.changed_fields):
        return
    record = _record_values(connection, service, rules, event)
    found = rules.keys(record, event.at)
    before = {} if event.kind == "created" else index.stored_keys(
        connection, system, event.entity, event.record_id)
    if found == before:
        return
    index.replace_keys(connection, system, event.entity, event.record_id, found)
    changed = {rule: key for rule, key in found.items() if before.get(rule) != key}
    matches = index.candidates(connection, system, event.entity, changed, event.record_id)
    act_on(connection, system, rules, event.entity, event.record_id, matches, event.at)


def act_on(connection: sa.Connection, system: Any, rules: EntityRules, entity: str,
           record_id: int, matches: Mapping[int, list[str]], at: dt.datetime) -> None:
    """Refuse for a `block` rule's candidates; queue `review` pairs."""
    blocked: dict[str, list[int]] = {}
    pairs = []
    per_rule: dict[str, int] = {}
    for other, names in matches.items():
        known = [rules.rule(name) for name in names]
        blocking = [c.name for c in known if c is not None and c.blocks]
        for name in blocking:
            blocked.setdefault(name, []).append(other)
        review = next((c.name for c in known if c is not None and not c.blocks), None)
        if not blocking and review is not None and per_rule.get(review, 0) < MAX_CANDIDATES:
            per_rule[review] = per_rule.get(review, 0) + 1
            pairs.append(index.pair(record_id, other, review))  # under its first rule
    if blocked:
        raise duplicate_conflict(rules, blocked)
    index.queue_pairs(connection, system, entity, pairs, at)


def duplicate_conflict(rules: EntityRules, blocked: Mapping[str, list[int]]) -> Conflict:
    names = sorted(blocked)
    fields = {name: list(rules.rule(name).fields) for name in names}  # type: ignore[union-attr]
    listed = "; ".join(f"rule `{n}` ({', '.join(fields[n])}): "
                       + ", ".join(map(str, blocked[n][:MAX_CANDIDATES])) for n in names)
    errors = {f: [f"another {rules.entity} has the same value (duplicate rule `{n}`)"]
              for n in names for f in fields[n]}
    return Conflict(f"a duplicate of an existing {rules.entity}: {listed}", errors,
                    rules=names, candidates=sorted({i for ids in blocked.values()
                                                    for i in ids[:MAX_CANDIDATES]}))


def _record_values(connection: sa.Connection, service: Any, rules: EntityRules,
                   event: RecordEvent) -> Mapping[str, Any]:
    """The values the rules read: the event's record when it has them all (a caller may
    not see every field), else the stored row."""
    if all(name in event.record for name in rules.fields):
        return event.record
    table = service.runtime.tables.by_entity[event.entity]
    columns = [table.c[name] for name in sorted(rules.fields) if name in table.c]
    row = connection.execute(sa.select(*columns).where(
        table.c.id == event.record_id)).mappings().first()
    return dict(row or {})


# -- batches (imports) ---------------------------------------------------------------------------

@dataclass
class BatchMatcher:
    """Duplicate detection for the new records of an import, a batch at a time.

    `check` computes every row's keys once and finds the rows a `block` rule refuses
    (a live record, or an earlier row of the same import, holds the key); `commit`, after
    the batch is inserted, adds the keys and queues `review` pairs with existing records
    and with earlier rows. Both run inside the batch's transaction.
    """

    rules: EntityRules
    system: Any
    seen_blocking: dict[tuple[str, int], int] = field(default_factory=dict)
    """Keys of `block` rules taken by earlier rows of this import → the row number."""

    @classmethod
    def for_entity(cls, runtime: Any, system: Any, entity_key: str) -> BatchMatcher | None:
        rules = entity_rules(runtime, entity_key)
        return None if rules is None else cls(rules, system)

    def keys(self, records: Sequence[Mapping[str, Any]],
             now: dt.datetime | None = None) -> list[dict[str, int]]:
        return self.rules.keys_many(records, now)

    def check(self, connection: sa.Connection, row_keys: Sequence[Mapping[str, int]],
              rows: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Refused rows: {position in the batch: (rule, why)}. Earlier rows win."""
        refused: dict[int, tuple[str, str]] = {}
        blocking = [r for r in self.rules.rules if r.blocks]
        if not blocking:
            return refused
        wanted = {r.name: sorted({k[r.name] for k in row_keys if r.name in k})
                  for r in blocking}
        held = index.holders(connection, self.system, self.rules.entity,
                             {rule: keys for rule, keys in wanted.items() if keys})
        for compiled in blocking:
            name = compiled.name
            for position, found in enumerate(row_keys):
                key = found.get(name)
                if key is None or position in refused:
                    continue
                if (name, key) in held:
                    ids = ", ".join(map(str, sorted(held[(name, key)])[:10]))
                    refused[position] = (name, f"a duplicate of {self.rules.entity} {ids} "
                                         f"(duplicate rule `{name}`)")
                elif (name, key) in self.seen_blocking:
                    earlier = self.seen_blocking[(name, key)]
                    refused[position] = (name, f"a duplicate of row {earlier} of this file "
                                         f"(duplicate rule `{name}`)")
        for position, found in enumerate(row_keys):
            if position in refused:
                continue
            for compiled in blocking:
                key = found.get(compiled.name)
                if key is not None:
                    self.seen_blocking.setdefault((compiled.name, key), rows[position])
        return refused

    def commit(self, connection: sa.Connection, ids: Sequence[int],
               row_keys: Sequence[Mapping[str, int]], at: dt.datetime,
               writer: index.RowWriter | None = None) -> int:
        """Add the new records' keys (through `writer`, e.g. PostgreSQL's COPY); queue
        review pairs with existing records and between the batch's own. Returns the pairs
        queued."""
        entity = self.rules.entity
        review = [r.name for r in self.rules.rules if not r.blocks]
        batch: dict[str, dict[int, list[int]]] = {name: {} for name in review}
        for record_id, found in zip(ids, row_keys, strict=True):
            for name in review:
                key = found.get(name)
                if key is not None:
                    batch[name].setdefault(key, []).append(record_id)
        held = index.holders(connection, self.system, entity,
                             {name: list(keys) for name, keys in batch.items() if keys})
        pairs: list[index.Pair] = []
        for name, by_key in batch.items():
            for key, new_ids in by_key.items():
                earlier = held.get((name, key))
                if earlier is None and len(new_ids) == 1:
                    continue
                earlier = sorted(earlier or ())[:MAX_CANDIDATES]
                for record_id in new_ids:
                    for other in earlier:
                        pairs.append(index.pair(other, record_id, name))
                    if len(earlier) < MAX_CANDIDATES:
                        earlier.append(record_id)
        index.insert_keys(connection, self.system, entity,
                          ((record_id, rule, key) for record_id, found in zip(
                              ids, row_keys, strict=True) for rule, key in found.items()),
                          writer)
        return index.queue_pairs(connection, self.system, entity, pairs, at)
