"""Reading a record's transition history and its workflow as the caller sees it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .approvals import record_approvals
from .tables import HISTORY

if TYPE_CHECKING:
    from .engine import Subject, WorkflowEngine


def record_history(engine: WorkflowEngine, entity: str, record_id: int) -> list[dict[str, Any]]:
    """Every transition the record took, oldest first."""
    history = engine.system.table(HISTORY)
    with engine.runtime.connect() as connection:
        rows = connection.execute(sa.select(history).where(
            history.c.entity == entity, history.c.record_id == record_id)
            .order_by(history.c.id)).mappings().all()
    return [{"id": r["id"], "workflow": r["workflow"], "transition": r["transition"],
             "from": r["from_state"], "to": r["to_state"], "actor": r["actor"],
             "at": _iso(r["at"]), "comment": r["comment"], "approval_id": r["approval_id"],
             "actions": r["actions"] or []} for r in rows]


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def workflow_view(engine: WorkflowEngine, subject: Subject,
                  locale: str | None = None) -> dict[str, Any]:
    """State, transitions with the reasons each is refused, history, approval requests."""
    workflow = subject.workflow
    states = {s.name: s for s in workflow.states}
    state = subject.state
    current = states.get(state)
    return {
        "workflow": workflow.key, "entity": subject.entity, "record_id": subject.record_id,
        "field": workflow.field, "row_version": subject.version,
        "state": {"name": state, "label": _text(current.label, state, locale) if current
                  else state, "final": bool(current and current.final)},
        "states": [{"name": s.name, "label": _text(s.label, s.name, locale), "final": s.final}
                   for s in workflow.states],
        "transitions": [o.to_dict(locale) for o in engine.options(subject)],
        "history": record_history(engine, subject.entity, subject.record_id),
        "approvals": record_approvals(engine, subject.entity, subject.record_id),
    }


def _text(text: Any, default: str, locale: str | None) -> str:
    try:
        return text.get(locale) or default
    except Exception:
        return default
