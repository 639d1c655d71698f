"""The match-key index and the review queue, inside the caller's transaction.

Keys live in ``_metacrm_match_keys`` (entity, record, rule → key; indexed by entity, rule,
key), so finding a record's duplicate candidates is one indexed query whatever the number
of records. Only live records have keys: a deleted record's keys are removed, a restored
record's put back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .tables import MATCH_KEYS, REVIEWS

Pair = tuple[int, int, str]  # (smaller id, larger id, rule)
RowWriter = Callable[..., None]
"""`(connection, table, columns, rows, plain=False)`: writes many rows into a table (the
importer passes PostgreSQL's COPY; `plain`: ids and identifier-like text only)."""


def _tables(service_or_system: Any) -> tuple[sa.Table, sa.Table]:
    system = getattr(service_or_system, "system", service_or_system)
    return system.table(MATCH_KEYS), system.table(REVIEWS)


def stored_keys(connection: sa.Connection, system: Any, entity: str,
                record_id: int) -> dict[str, int]:
    keys, _ = _tables(system)
    rows = connection.execute(sa.select(keys.c.rule, keys.c.key).where(
        keys.c.record_id == record_id, keys.c.entity == entity))
    return {rule: key for rule, key in rows}


def replace_keys(connection: sa.Connection, system: Any, entity: str, record_id: int,
                 found: Mapping[str, int]) -> None:
    """Make `found` the record's keys (removing those of rules that no longer apply)."""
    keys, _ = _tables(system)
    connection.execute(keys.delete().where(keys.c.record_id == record_id,
                                           keys.c.entity == entity))
    if found:
        connection.execute(keys.insert(), [
            {"entity": entity, "record_id": record_id, "rule": rule, "key": key}
            for rule, key in found.items()])


def remove_keys(connection: sa.Connection, system: Any, entity: str, record_id: int) -> None:
    keys, _ = _tables(system)
    connection.execute(keys.delete().where(keys.c.record_id == record_id,
                                           keys.c.entity == entity))


def candidates(connection: sa.Connection, system: Any, entity: str,
               found: Mapping[str, int], exclude: int | None = None) -> dict[int, list[str]]:
    """Records sharing a key with `found` ({rule: key}): {record id: [rules]}, by id.
    One query on the key column's index."""
    if not found:
        return {}
    keys, _ = _tables(system)
    rule_of = {key: rule for rule, key in found.items()}
    statement = sa.select(keys.c.record_id, keys.c.key, keys.c.rule, keys.c.entity).where(
        keys.c.key.in_(list(rule_of)))
    if exclude is not None:
        statement = statement.where(keys.c.record_id != exclude)
    out: dict[int, list[str]] = {}
    for record_id, key, rule, owner in connection.execute(statement):
        if owner == entity and rule_of.get(key) == rule:
            out.setdefault(record_id, []).append(rule)
    return dict(sorted(out.items()))


def holders(connection: sa.Connection, system: Any, entity: str,
            wanted: Mapping[str, Sequence[int]]) -> dict[tuple[str, int], list[int]]:
    """Which records hold each of the keys wanted ({rule: [keys]}): {(rule, key): [ids]}.
    One query for every rule (an import's batch asks for thousands of keys at once)."""
    from ...platform.importer.bulk import one_of

    keys, _ = _tables(system)
    pairs = {(rule, key) for rule, values in wanted.items() for key in values}
    every = sorted({key for _, key in pairs})
    out: dict[tuple[str, int], list[int]] = {}
    for start in range(0, len(every), 5000):
        rows = connection.execute(sa.select(keys.c.rule, keys.c.key, keys.c.record_id,
                                            keys.c.entity).where(
            one_of(connection, keys.c.key, every[start:start + 5000])))
        for rule, key, record_id, owner in rows:
            if owner == entity and (rule, key) in pairs:
                out.setdefault((rule, key), []).append(record_id)
    return out


def insert_keys(connection: sa.Connection, system: Any, entity: str,
                rows: Iterable[tuple[int, str, int]], writer: RowWriter | None = None) -> None:
    """Add keys for new records: (record id, rule, key) each."""
    keys, _ = _tables(system)
    columns = ("key", "record_id", "entity", "rule")
    values = [(key, r, entity, rule) for r, rule, key in rows]
    if not values:
        return
    if writer is not None:
        writer(connection, keys, columns, values, plain=True)
        return
    connection.execute(keys.insert(), [dict(zip(columns, v, strict=True)) for v in values])


def queue_pairs(connection: sa.Connection, system: Any, entity: str, pairs: Iterable[Pair],
                at: dt.datetime) -> int:
    """Put pairs in the review queue (a pair already there, whatever its status, stays as
    it is: a dismissed pair is not asked again). Returns how many were new."""
    _, reviews = _tables(system)
    unique: dict[tuple[int, int], str] = {}
    for a, b, rule in pairs:
        if a == b:
            continue
        low, high = (a, b) if a < b else (b, a)
        unique.setdefault((low, high), rule)
    if not unique:
        return 0
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    rows = [{"entity": entity, "record_a": a, "record_b": b, "rule": rule, "status": "open",
             "created_at": at} for (a, b), rule in unique.items()]
    added = 0
    for start in range(0, len(rows), 1000):
        statement = dialect.insert(reviews).on_conflict_do_nothing(
            index_elements=["entity", "record_a", "record_b"]).returning(reviews.c.id)
        added += len(connection.execute(statement, rows[start:start + 1000]).all())
    return added


def pair(a: int, b: int, rule: str) -> Pair:
    return (a, b, rule) if a < b else (b, a, rule)
