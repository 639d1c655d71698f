"""The workflow field's guard, inside every record write (`record_writing`).

A workflow's state field changes only through its transitions: an update that changes it
without naming a transition is refused (409), a named transition must lead from the state
before to the state after, and a new record starts in the initial state. The same hook
writes the transition's history row, in the transaction of the change itself.

`workflow_bypass()` lets trusted code (an import of historical records, a data migration)
write states directly; nothing the API or the admin UI reach sets it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ...metadata.ir import Transition, Workflow
from ...platform.events import RecordEvent
from ...platform.records import Conflict
from .tables import APPROVALS, HISTORY


@dataclass(slots=True)
class Move:
    """A transition the engine is making: what the hook records in the history."""

    workflow: Workflow
    transition: Transition
    entity: str
    record_id: int
    comment: str | None = None
    approval_id: int | None = None
    history_id: int | None = None  # set by the hook when it writes the history row
    from_state: str | None = None
    event: RecordEvent | None = None


_MOVE: contextvars.ContextVar[Move | None] = contextvars.ContextVar("metacrm_workflow_move",
                                                                    default=None)
_BYPASS: contextvars.ContextVar[bool] = contextvars.ContextVar("metacrm_workflow_bypass",
                                                               default=False)


@contextlib.contextmanager
def workflow_bypass() -> Iterator[None]:
    """Within the block, record writes may set workflow states directly (imports of
    historical data, migrations). No history is written for such changes."""
    token = _BYPASS.set(True)
    try:
        yield
    finally:
        _BYPASS.reset(token)


def bypassing() -> bool:
    return _BYPASS.get()


@contextlib.contextmanager
def moving(move: Move) -> Iterator[Move]:
    token = _MOVE.set(move)
    try:
        yield move
    finally:
        _MOVE.reset(token)


def workflow_for(runtime: Any, entity: str, unit: str | None) -> Workflow | None:
    """The workflow over `entity`'s records created in business unit `unit` (their unit's
    definitions, else the tenant's)."""
    registry = runtime.registry
    if unit and unit in registry.units:
        found = registry.scope(unit).workflow_for(entity)
        if found is not None:
            return found
    return registry.scope(None).workflow_for(entity)


def leading_to(workflow: Workflow, state: Any) -> list[str]:
    return [t.name for t in workflow.transitions if t.to == state]


def _stored_state(connection: sa.Connection, runtime: Any, entity: str, record_id: int,
                  field: str) -> Any:
    table = runtime.tables.by_entity[entity]
    return connection.execute(sa.select(table.c[field]).where(
        table.c.id == record_id)).scalar()


def check_write(event: RecordEvent, connection: sa.Connection, service: Any) -> None:
    """The `record_writing` hook: refuse state changes made around the workflow, record
    those made through it."""
    if event.kind not in ("created", "updated") or bypassing():
        return
    runtime = service.runtime
    workflow = workflow_for(runtime, event.entity, event.record.get("business_unit"))
    if workflow is None:
        return
    name = workflow.field
    if event.kind == "created":
        _check_initial(event, connection, runtime, workflow)
        return
    if event.transition is None:
        if name in event.changes:
            after = event.changes[name][1]
            ways = leading_to(workflow, after)
            hint = (f"take one of its transitions that lead there: {', '.join(ways)}" if ways
                    else "no transition leads there")
            raise Conflict(f"`{name}` is the state of workflow {workflow.key}: it changes only "
                           f"through a transition (POST …/{event.record_id}/transitions/<name>)"
                           f"; to reach `{after}`, {hint}",
                           {name: ["changes only through a workflow transition"]},
                           workflow=workflow.key, transitions=ways)
        return
    transition = workflow.transition(event.transition)
    if transition is None:
        raise Conflict(f"workflow {workflow.key} has no transition `{event.transition}`",
                       workflow=workflow.key)
    if name in event.changes:
        before, after = event.changes[name]
    else:
        before = after = _stored_state(connection, runtime, event.entity, event.record_id,
                                       name)
    if before not in transition.from_states or after != transition.to:
        raise Conflict(f"transition `{transition.name}` of workflow {workflow.key} leads from "
                       f"{', '.join(transition.from_states)} to {transition.to}, not from "
                       f"{before} to {after}", workflow=workflow.key)
    move = _MOVE.get()
    if move is not None and (move.entity, move.record_id, move.transition.name) != (
            event.entity, event.record_id, transition.name):
        move = None
    history_id = write_history(connection, service.system, workflow, transition, event.entity,
                               event.record_id, before, event.actor, event.at,
                               move.comment if move else None,
                               move.approval_id if move else None)
    cancel_pending(connection, service.system, event.entity, event.record_id,
                   move.approval_id if move else None, event.at,
                   f"the record moved from {before} to {after} by `{transition.name}`")
    if move is not None:
        move.history_id = history_id
        move.from_state = before
        move.event = event


def _check_initial(event: RecordEvent, connection: sa.Connection, runtime: Any,
                   workflow: Workflow) -> None:
    name = workflow.field
    state = _stored_state(connection, runtime, event.entity, event.record_id, name)
    if state is None:  # no value and no default: the record starts in the initial state
        table = runtime.tables.by_entity[event.entity]
        connection.execute(table.update().where(table.c.id == event.record_id).values(
            {name: workflow.initial}))
        if name in event.record:
            event.record[name] = workflow.initial
            event.changes[name] = (None, workflow.initial)
        return
    if state != workflow.initial:
        raise Conflict(f"a new {event.entity} starts in `{workflow.initial}`, the initial state "
                       f"of workflow {workflow.key}; `{state}` is reached through its "
                       "transitions", {name: [f"a new record starts in `{workflow.initial}`"]},
                       workflow=workflow.key, transitions=leading_to(workflow, state))


def write_history(connection: sa.Connection, system: Any, workflow: Workflow,
                  transition: Transition, entity: str, record_id: int, before: Any,
                  actor: int | None, at: dt.datetime, comment: str | None,
                  approval_id: int | None) -> int:
    history = system.table(HISTORY)
    return int(connection.execute(history.insert().values(
        entity=entity, record_id=record_id, workflow=workflow.key, transition=transition.name,
        from_state=before, to_state=transition.to, actor=actor, at=at, comment=comment,
        approval_id=approval_id, actions=[]).returning(history.c.id)).scalar_one())


def cancel_pending(connection: sa.Connection, system: Any, entity: str, record_id: int,
                   keep: int | None, at: dt.datetime, reason: str) -> None:
    """End the record's pending approval requests (but `keep`): its state moved on."""
    approvals = system.table(APPROVALS)
    conditions = [approvals.c.entity == entity, approvals.c.record_id == record_id,
                  approvals.c.status == "pending"]
    if keep is not None:
        conditions.append(approvals.c.id != keep)
    connection.execute(approvals.update().where(*conditions).values(
        status="cancelled", pending=None, decided_at=at, reason=reason))
