"""Writing many rows at once inside one transaction: PostgreSQL's COPY (ids taken from the
table's sequence first), SQLite's multi-row INSERT ... RETURNING; autonumbers reserved a
batch at a time."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


class RawJSON(str):
    """Text that is already JSON, for a JSON column (written as it is, not encoded again)."""


def _qualified(table: sa.Table, schema: str | None) -> str:
    name = f'"{table.name}"'
    return f'"{schema}".{name}' if schema else name


def _copy_value(value: Any, column: sa.Column) -> Any:
    if value is not None and isinstance(column.type, sa.JSON) and \
            not isinstance(value, RawJSON):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def copy_rows(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
              rows: Iterable[Sequence[Any]], schema: str | None = None, *,
              plain: bool = False) -> None:
    """COPY `rows` (tuples in the order of `columns`) into `table` (PostgreSQL).

    `plain` rows hold only None, numbers, datetimes, RawJSON and text without tabs, line
    breaks or backslashes (ids, keys, names of rules and entities): they are written as
    COPY text directly, which is quicker than converting value by value."""
    cols = [table.c[name] for name in columns]
    json_positions = [i for i, c in enumerate(cols) if isinstance(c.type, sa.JSON)]
    raw = connection.connection.driver_connection
    names = ", ".join(f'"{c}"' for c in columns)
    with raw.cursor() as cursor, cursor.copy(
            f"COPY {_qualified(table, schema)} ({names}) FROM STDIN") as copy:
        if plain:
            rows = list(rows)
            if rows:
                copy.write(_plain_text(rows))
        elif json_positions:
            for row in rows:
                values = list(row)
                for i in json_positions:
                    values[i] = _copy_value(values[i], cols[i])
                copy.write_row(values)
        else:
            for row in rows:
                copy.write_row(row)


def _plain_text(rows: list[Sequence[Any]]) -> str:
    """COPY text of plain rows; a column whose value is the same object in every row
    (the entity, the actor, the time) is formatted once."""
    first = rows[0]
    same = [all(row[i] is value for row in rows) for i, value in enumerate(first)]
    if all(isinstance(v, int | str) for i, v in enumerate(first) if not same[i]) and \
            not any(same):
        return "".join("\t".join(map(str, row)) + "\n" for row in rows)
    fixed = {i: _plain(v) for i, v in enumerate(first) if same[i]}
    return "".join("\t".join([fixed[i] if i in fixed else _plain(v)
                              for i, v in enumerate(row)]) + "\n" for row in rows)


def _plain(value: Any) -> str:
    if value is None:
        return "\\N"
    if value.__class__ is str or value.__class__ is RawJSON:
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def row_writer(schema: str | None, dialect: str) -> Any:
    """A `(connection, table, columns, rows, plain=False)` writer for this database."""
    if dialect == "postgresql":
        def write(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                  rows: Iterable[Sequence[Any]], plain: bool = False) -> None:
            copy_rows(connection, table, columns, rows, schema, plain=plain)
    else:
        def write(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                  rows: Iterable[Sequence[Any]], plain: bool = False) -> None:
            batch = [{name: json.loads(value) if isinstance(value, RawJSON) else value
                      for name, value in zip(columns, row, strict=True)} for row in rows]
            if batch:
                connection.execute(table.insert(), batch)
    return write


def insert_records(connection: sa.Connection, table: sa.Table, columns: Sequence[str],
                   rows: Sequence[Sequence[Any]], schema: str | None) -> list[int]:
    """Insert rows (without `id`) and return their new ids, in order."""
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        ids = reserve_ids(connection, table, len(rows), schema)
        copy_rows(connection, table, ("id", *columns),
                  ((record_id, *row) for record_id, row in zip(ids, rows, strict=True)),
                  schema)
        return ids
    statement = table.insert().returning(table.c.id, sort_by_parameter_order=True)
    result = connection.execute(statement, [dict(zip(columns, row, strict=True))
                                            for row in rows])
    return [r for (r,) in result]


def reserve_ids(connection: sa.Connection, table: sa.Table, count: int,
                schema: str | None) -> list[int]:
    """`count` new ids from the table's own sequence (PostgreSQL)."""
    sequence = connection.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"),
                                  {"t": _qualified(table, schema)}).scalar_one()
    return [r for (r,) in connection.execute(
        sa.text("SELECT nextval(CAST(:s AS regclass)) FROM generate_series(1, :n)"),
        {"s": sequence, "n": count})]


def reserve_counter(connection: sa.Connection, counters: sa.Table, key: str,
                    count: int) -> int:
    """Reserve `count` numbers of an autonumber counter; returns the first."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(counters).values(key=key, value=count)
    statement = statement.on_conflict_do_update(
        index_elements=[counters.c.key], set_={"value": counters.c.value + count}
    ).returning(counters.c.value)
    last = int(connection.execute(statement).scalar_one())
    return last - count + 1


def one_of(connection: sa.Connection, column: Any,
           values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """`column IN values`. On PostgreSQL the values go as one array parameter, in its text
    form (which the server reads faster than the driver builds a binary one), unnested in
    a subquery: `column IN (SELECT unnest(CAST(:v AS type[])))` is a semi-join the planner
    runs through the column's index (`= ANY(array)` may scan the table instead, comparing
    every row with every value). Elsewhere a plain IN."""
    if connection.dialect.name == "postgresql":
        if all(type(v) is int for v in values):
            literal = "{" + ",".join(map(str, values)) + "}"
        else:
            literal = "{" + ",".join(_array_item(v) for v in values) + "}"
        return column.in_(sa.select(sa.func.unnest(sa.cast(
            sa.literal(literal, sa.Text()), postgresql.ARRAY(column.type)))))
    return column.in_(list(values))


def _array_item(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    text = str(value.isoformat() if isinstance(value, dt.date) else value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
