"""The migration planner: live table specs (from the tenant's catalog) against the specs
the Registry needs, by stable id, as an ordered list of steps.

Renames come from stable ids (never from guessing). A step that could lose data asks
the database how many rows it touches: none, and it is safe; some, and it is refused
unless destructive changes are allowed, and even then columns are archived, not dropped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import names
from .specs import WIDENINGS, ColumnSpec, IndexSpec, TableSpec


class RowCounter(Protocol):
    """Answers how many rows a change would touch (see platform.migrator.SqlRowCounter)."""

    def rows(self, table: TableSpec) -> int: ...
    def nulls(self, table: TableSpec, column: ColumnSpec) -> int: ...
    def non_null(self, table: TableSpec, column: ColumnSpec) -> int: ...
    def too_long(self, table: TableSpec, column: ColumnSpec, length: int) -> int: ...
    def outside(self, table: TableSpec, column: ColumnSpec, options: tuple[str, ...]) -> int: ...
    def duplicates(self, table: TableSpec, columns: tuple[ColumnSpec, ...]) -> int: ...
    def not_castable(self, table: TableSpec, column: ColumnSpec, new: ColumnSpec) -> int: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One change to a tenant's schema."""

    action: str
    table: str
    spec_id: str
    description: str
    column: str | None = None
    destructive: bool = False
    blocked: bool = False  # cannot be applied at all (e.g. unique over duplicates)
    reason: str | None = None
    rows: int | None = None
    old: Any = field(default=None, compare=False, repr=False)
    new: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "table": self.table, "spec_id": self.spec_id,
                "column": self.column, "description": self.description,
                "destructive": self.destructive, "blocked": self.blocked,
                "reason": self.reason, "rows": self.rows}


@dataclass(frozen=True, slots=True)
class Plan:
    """Every step taking a tenant from `from_version` to `to_version`."""

    tenant: str
    from_version: str | None
    to_version: str
    steps: tuple[Step, ...]
    desired: Mapping[str, TableSpec] = field(default_factory=dict, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return not self.steps and self.from_version == self.to_version

    @property
    def destructive(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.destructive)

    @property
    def blocked(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.blocked)

    def refusals(self, allow_destructive: bool = False) -> tuple[Step, ...]:
        """The steps that stop this plan from being applied."""
        return tuple(s for s in self.steps
                     if s.blocked or (s.destructive and not allow_destructive))

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "from_version": self.from_version,
                "to_version": self.to_version, "steps": [s.to_dict() for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        head = f"tenant {self.tenant}: {self.from_version or 'empty'} → {self.to_version}"
        if not self.steps:
            return head + "\n  nothing to change" + (
                "" if self.from_version == self.to_version else " (version recorded only)")
        lines = [head]
        for number, step in enumerate(self.steps, 1):
            mark = "BLOCKED " if step.blocked else "LOSSY " if step.destructive else ""
            lines.append(f"  {number:>3}. {mark}{step.description}")
            if step.reason:
                lines.append(f"       {step.reason}")
        return "\n".join(lines)


def plan(tenant: str, live: Mapping[str, TableSpec], desired: Mapping[str, TableSpec],
         from_version: str | None, to_version: str, counter: RowCounter | None,
         stamp: str = "0", archived_tables: Collection[str] = ()) -> Plan:
    """Diff `live` against `desired`; `counter` is only asked about possibly lossy steps.

    `archived_tables` names the tables archived earlier, so new archive names avoid them.
    """
    steps: list[Step] = []
    taken_tables = {*archived_tables, *(s.name for s in live.values()),
                    *(s.name for s in desired.values())}
    for spec_id, want in desired.items():
        have = live.get(spec_id)
        if have is None:
            steps.append(Step("create_table", want.name, spec_id,
                              f"create table {want.name} ({len(want.columns)} fields)", new=want))
        else:
            steps.extend(_table_steps(have, want, counter, stamp))
    for spec_id, have in live.items():
        if spec_id not in desired:
            rows = counter.rows(have) if counter else None
            archived = _free_name(names.archived_table, have.name, stamp, taken_tables)
            steps.append(Step("archive_table", have.name, spec_id,
                              f"archive table {have.name} as {archived} (no longer defined)",
                              destructive=bool(rows) or rows is None,
                              reason=f"{rows} row(s) would no longer be reachable"
                              if rows else None,
                              rows=rows, old=have, new=archived))
    return Plan(tenant, from_version, to_version, tuple(steps), dict(desired))


def _table_steps(have: TableSpec, want: TableSpec, counter: RowCounter | None,
                 stamp: str) -> list[Step]:
    steps: list[Step] = []
    spec_id = want.entity_id
    if have.name != want.name:
        steps.append(Step("rename_table", have.name, spec_id,
                          f"rename table {have.name} to {want.name}", old=have.name,
                          new=want.name))
    table = want.name
    have_columns = {c.field_id: c for c in have.columns}
    for column in want.columns:
        old = have_columns.get(column.field_id)
        if old is None:
            steps.extend(_add_column(have, table, column, counter))
        else:
            steps.extend(_column_steps(have, table, old, column, counter))
    wanted_ids = {c.field_id for c in want.columns}
    taken = {c.name for c in (*have.columns, *have.archived, *want.columns)}
    for old in have.columns:
        if old.field_id not in wanted_ids:
            rows = counter.non_null(have, old) if counter else None
            archived = _free_name(names.archived_column, old.name, stamp, taken)
            steps.append(Step(
                "archive_column", table, spec_id,
                f"archive column {table}.{old.name} as {archived} (field removed)",
                old.name, destructive=bool(rows) or rows is None,
                reason=f"{rows} row(s) hold a value in {old.name}" if rows else None,
                rows=rows, old=old, new=archived))
    steps.extend(_declared_index_steps(have, want, counter))
    return steps


def _free_name(make: Callable[[str, str], str], name: str, stamp: str, taken: set[str]) -> str:
    """An archive name not in `taken` (a second archive within the same second gets `_2`)."""
    candidate, number = make(name, stamp), 1
    while candidate in taken:
        number += 1
        candidate = make(name, f"{stamp}_{number}")
    taken.add(candidate)
    return candidate


def _add_column(have: TableSpec, table: str, column: ColumnSpec,
                counter: RowCounter | None) -> list[Step]:
    spec_id = have.entity_id
    description = f"add column {table}.{column.name} ({_type_text(column)})"
    if column.nullable or column.default is not None:
        if not column.nullable:
            description += f", filled with the default {column.default!r}"
        return [Step("add_column", table, spec_id, description, column.name, new=column)]
    rows = counter.rows(have) if counter else 0
    if not rows:
        return [Step("add_column", table, spec_id, description + ", required", column.name,
                     new=column)]
    return [Step("add_column", table, spec_id, description + ", required", column.name,
                 destructive=True, blocked=True, rows=rows,
                 reason=f"the field is required but has no default and {rows} existing row(s) "
                 "would hold no value; give it a default to fill them", new=column)]


def _column_steps(table_spec: TableSpec, table: str, old: ColumnSpec, new: ColumnSpec,
                  counter: RowCounter | None) -> list[Step]:
    steps: list[Step] = []
    spec_id = table_spec.entity_id
    column = new.name
    if old.name != new.name:
        steps.append(Step("rename_column", table, spec_id,
                          f"rename column {table}.{old.name} to {new.name}", old.name,
                          old=old, new=new))
    if not old.same_type(new):
        steps.append(_type_step(table_spec, table, old, new, counter))
    if old.options != new.options:
        removed = tuple(o for o in (old.options or ()) if o not in (new.options or ()))
        rows = counter.outside(table_spec, old, new.options) if (
            counter and removed and new.options) else 0
        what = "options of" if new.options else "option check from"
        steps.append(Step(
            "replace_check", table, spec_id, f"update the allowed {what} {table}.{column}"
            + (f" (removing {', '.join(removed)})" if removed else ""), column,
            destructive=bool(rows), blocked=bool(rows), rows=rows or None,
            reason=f"{rows} row(s) hold a removed option; change them to another option first"
            if rows else None, old=old, new=new))
    if old.default != new.default:
        steps.append(Step("alter_default", table, spec_id,
                          f"set the default of {table}.{column} to {new.default!r}", column,
                          old=old, new=new))
    if old.nullable and not new.nullable:
        nulls = counter.nulls(table_spec, old) if counter else 0
        if nulls and new.default is not None:
            steps.append(Step("backfill_default", table, spec_id,
                              f"fill {nulls} empty {table}.{column} with {new.default!r}",
                              column, rows=nulls, old=old, new=new))
            nulls = 0
        steps.append(Step("set_not_null", table, spec_id, f"make {table}.{column} required",
                          column, destructive=bool(nulls), blocked=bool(nulls),
                          rows=nulls or None,
                          reason=f"{nulls} row(s) hold no value; give the field a default to "
                          "fill them" if nulls else None, old=old, new=new))
    elif new.nullable and not old.nullable:
        steps.append(Step("drop_not_null", table, spec_id, f"make {table}.{column} optional",
                          column, old=old, new=new))
    if (old.references, old.on_delete) != (new.references, new.on_delete):
        steps.append(Step("replace_foreign_key", table, spec_id,
                          f"point {table}.{column} at {new.references} "
                          f"(on delete {new.on_delete})", column, old=old, new=new))
    if old.unique != new.unique or old.index != new.index:
        steps.extend(_index_steps(table_spec, table, old, new, counter))
    return steps


def _type_step(table_spec: TableSpec, table: str, old: ColumnSpec, new: ColumnSpec,
               counter: RowCounter | None) -> Step:
    spec_id, column = table_spec.entity_id, new.name
    text = f"change {table}.{column} from {_type_text(old)} to {_type_text(new)}"
    if _widens(old, new):
        return Step("alter_type", table, spec_id, text, column, old=old, new=new)
    if old.storage == new.storage == "string" and new.length and (old.length or 0) > new.length:
        rows = counter.too_long(table_spec, old, new.length) if counter else None
        reason = f"{rows} row(s) are longer than {new.length} characters" if rows else None
    else:
        rows = counter.not_castable(table_spec, old, new) if counter else None
        reason = f"{rows} row(s) cannot be converted to {_type_text(new)}" if rows else None
    return Step("alter_type", table, spec_id, text, column, destructive=bool(rows),
                blocked=bool(rows), rows=rows or None,
                reason=(reason + "; fix those values first, or add a new field") if reason
                else None, old=old, new=new)


def _widens(old: ColumnSpec, new: ColumnSpec) -> bool:
    if (old.storage, new.storage) in WIDENINGS:
        return True
    if old.storage == new.storage == "string":
        return new.length is None or (old.length is not None and new.length >= old.length)
    if old.storage == new.storage == "decimal":
        whole_old = (old.precision or 18) - (old.scale or 0)
        whole_new = (new.precision or 18) - (new.scale or 0)
        return whole_new >= whole_old and (new.scale or 0) >= (old.scale or 0)
    return False


def _index_steps(table_spec: TableSpec, table: str, old: ColumnSpec, new: ColumnSpec,
                 counter: RowCounter | None) -> list[Step]:
    steps = []
    spec_id, column = table_spec.entity_id, new.name
    if old.unique or old.index:
        steps.append(Step("drop_index", table, spec_id, f"drop the index on {table}.{column}",
                          column, old=old, new=new))
    if new.unique:
        dupes = counter.duplicates(table_spec, (old,)) if counter else 0
        steps.append(Step("add_index", table, spec_id, f"make {table}.{column} unique", column,
                          destructive=bool(dupes), blocked=bool(dupes), rows=dupes or None,
                          reason=f"{dupes} value(s) appear more than once; merge or fix them "
                          "first" if dupes else None, old=old, new=new))
    elif new.index:
        steps.append(Step("add_index", table, spec_id, f"index {table}.{column}", column,
                          old=old, new=new))
    return steps


def _declared_index_steps(have: TableSpec, want: TableSpec,
                          counter: RowCounter | None) -> list[Step]:
    steps = []
    old_indexes = {i.name: i for i in have.indexes}
    new_indexes = {i.name: i for i in want.indexes}
    for name, index in old_indexes.items():
        if new_indexes.get(name) != index:
            steps.append(Step("drop_declared_index", want.name, want.entity_id,
                              f"drop index {name}", old=index))
    for name, index in new_indexes.items():
        if old_indexes.get(name) != index:
            dupes = 0
            if index.unique and counter:
                columns = tuple(c for c in have.columns if c.field_id in index.columns)
                dupes = counter.duplicates(have, columns) if len(columns) == len(
                    index.columns) else 0
            steps.append(Step("add_declared_index", want.name, want.entity_id,
                              f"create {'unique ' if index.unique else ''}index {name}",
                              destructive=bool(dupes), blocked=bool(dupes), rows=dupes or None,
                              reason=f"{dupes} combination(s) appear more than once"
                              if dupes else None, new=index))
    return steps


def _type_text(column: ColumnSpec) -> str:
    if column.storage == "string":
        return f"text up to {column.length}"
    if column.storage == "decimal":
        return f"decimal({column.precision},{column.scale})"
    return column.storage


def archived_spec(column: ColumnSpec, name: str) -> ColumnSpec:
    """How an archived column is kept: renamed, optional, without constraints."""
    return dataclasses.replace(column, name=name, nullable=True, options=None, unique=False,
                               index=False, default=None, references=None, on_delete=None)


def final_specs(plan: Plan, live: Mapping[str, TableSpec]) -> dict[str, TableSpec]:
    """The specs to record once `plan` is applied: desired, plus every archived column."""
    out = {}
    for spec_id, spec in plan.desired.items():
        kept = live[spec_id].archived if spec_id in live else ()
        new = tuple(archived_spec(s.old, s.new) for s in plan.steps
                    if s.action == "archive_column" and s.spec_id == spec_id)
        out[spec_id] = dataclasses.replace(spec, archived=kept + new) if kept or new else spec
    return out


__all__ = ["IndexSpec", "Plan", "RowCounter", "Step", "final_specs", "plan"]
