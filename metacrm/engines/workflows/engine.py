"""Taking workflow transitions: who may, what must hold, and the move itself.

A transition is refused with the reason each check gives: 403 for who the caller is
(the `transition` action on the record, the transition's `roles`), 409 for where the
record is (its state, a pending approval, the `when` guard, empty `requires` fields,
too few approvers). A transition with `approval` makes a request instead of moving
(see approvals.py). The move is one `RecordService.update(..., transition=name)`:
validation, field access, audit and the record event apply, and the `record_writing`
hook writes the history row in the same transaction. The transition's actions run after
the change commits; each result is kept in the history row, and a failing action does
not undo the move.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import marshmallow as ma
import sqlalchemy as sa

from ...metadata.ir import Transition, Workflow, thaw
from ...platform.records import (
    Actor,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RecordError,
    RecordService,
    ValidationFailed,
)
from ..conditions import ConditionError, EvalContext, parse_condition
from .explain import failing_conditions, nest_references
from .guard import Move, moving, workflow_for, write_history
from .tables import APPROVALS, HISTORY

log = logging.getLogger(__name__)
MAX_COMMENT = 4000
RETRIES = 3


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a transition may not be taken now: `code` (permission, role, state, pending,
    guard, requires, approvers), the HTTP status it answers with, and a sentence."""

    code: str
    status: int
    reason: str
    fields: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "status": self.status, "reason": self.reason}
        if self.fields:
            out["fields"] = list(self.fields)
        return out


@dataclass(frozen=True, slots=True)
class Option:
    """One transition of a record's workflow as the caller sees it."""

    transition: Transition
    refusals: tuple[Refusal, ...]

    @property
    def available(self) -> bool:
        return not self.refusals

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        t = self.transition
        return {"name": t.name, "label": _label(t.label, t.name, locale),
                "from": list(t.from_states), "to": t.to, "requires": list(t.requires),
                "approval": _approval_dict(t), "available": self.available,
                "reasons": [r.to_dict() for r in self.refusals]}


@dataclass(slots=True)
class TransitionResult:
    """What taking a transition did: `done` (the record moved) or `pending` (an approval
    request was made)."""

    status: str
    workflow: str
    transition: str
    record: dict[str, Any]
    from_state: Any = None
    to_state: Any = None
    history_id: int | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    approval: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"status": self.status, "workflow": self.workflow,
               "transition": self.transition, "from": self.from_state, "to": self.to_state,
               "record": self.record}
        if self.status == "done":
            out["history_id"] = self.history_id
            out["actions"] = self.actions
        if self.approval is not None:
            out["approval"] = self.approval
        return out


@dataclass(slots=True)
class Subject:
    """A record under a workflow: what the caller sees, the full record and its row."""

    entity: str
    record_id: int
    workflow: Workflow
    record: dict[str, Any]  # as the caller sees it
    full: dict[str, Any]  # every field (guards read hidden fields too)
    row: Mapping[str, Any]  # the stored row, for permission checks

    @property
    def state(self) -> Any:
        return self.full.get(self.workflow.field)

    @property
    def version(self) -> int:
        return int(self.full["row_version"])


def _label(text: Any, default: str, locale: str | None) -> str:
    try:
        return text.get(locale) or default  # Text.get falls back through locales
    except Exception:
        return default


def _approval_dict(t: Transition) -> dict[str, Any] | None:
    a = t.approval
    if a is None:
        return None
    if a.by == "manager":
        return {"by": "manager", "levels": a.levels}
    return {"by": a.by, "roles": list(a.roles), "count": a.count}


class TransitionService(RecordService):
    """A record service whose updates are transitions: the record needs the `transition`
    action (with its scope) instead of `update`; values sent along obey field access as
    in any update, except the state field, which the transition itself writes."""

    state_field = ""

    def require(self, entity_key: str, action: str) -> None:
        super().require(entity_key, "transition" if action == "update" else action)

    def _check_record(self, connection: sa.Connection, entity_key: str, action: str,
                      row: Mapping[str, Any]) -> None:
        super()._check_record(connection, entity_key,
                              "transition" if action == "update" else action, row)

    def _check_writable(self, access: Any, data: Any, before: Any = None) -> None:
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if k != self.state_field}
        super()._check_writable(access, data, before)


class WorkflowEngine:
    """Workflow operations on one tenant runtime, as one actor."""

    def __init__(self, platform: Any, runtime: Any, actor: Actor) -> None:
        self.platform = platform
        self.runtime = runtime
        self.actor = actor
        self.service = TransitionService(runtime, actor, emit=platform.emit,
                                         operators=platform.operators)
        # reads every field (guards and actions see the whole record); never writes
        self.reader = RecordService(runtime, Actor(actor.user_id, actor.unit, actor.depth),
                                    operators=platform.operators)
        self.system = self.service.system

    @property
    def principal(self) -> Any:
        return self.actor.principal

    # -- reading -----------------------------------------------------------------------------

    def subject(self, entity: str, record_id: int) -> Subject:
        """The record (404 unless the caller may read it) and its workflow (404 if none)."""
        record = self.service.get(entity, record_id)
        full = self.reader.get(entity, record_id)
        workflow = workflow_for(self.runtime, entity, full.get("business_unit"))
        if workflow is None:
            raise NotFound(f"{entity} has no workflow")
        table = self.runtime.tables.by_entity[entity]
        with self.runtime.connect() as connection:
            row = connection.execute(sa.select(table).where(
                table.c.id == record_id)).mappings().first()
        if row is None:  # deleted between the reads
            raise NotFound(f"{entity} {record_id} does not exist")
        return Subject(entity, record_id, workflow, record, full, row)

    def options(self, subject: Subject) -> list[Option]:
        """Every transition of the record's workflow with the reasons it is refused now."""
        pending = self.pending_request(subject)
        return [Option(t, tuple(self.refusals(subject, t, {}, pending=pending)))
                for t in subject.workflow.transitions]

    def pending_request(self, subject: Subject) -> Mapping[str, Any] | None:
        approvals = self.system.table(APPROVALS)
        with self.runtime.connect() as connection:
            return connection.execute(sa.select(approvals).where(
                approvals.c.entity == subject.entity,
                approvals.c.record_id == subject.record_id,
                approvals.c.status == "pending")).mappings().first()

    # -- checks ------------------------------------------------------------------------------

    def refusals(self, subject: Subject, t: Transition, values: Mapping[str, Any], *,
                 pending: Mapping[str, Any] | None = None, who: bool = True) -> list[Refusal]:
        """Why `t` may not be taken now (empty: it may). `who` False skips the checks of
        the caller (permission, roles): an approved request re-checks only the record."""
        found: list[Refusal] = []
        if who:
            found.extend(self._who_refusals(subject, t))
        state = subject.state
        if state not in t.from_states:
            found.append(Refusal("state", 409, f"`{t.name}` leads from "
                                 f"{_names(t.from_states)}; the record is `{state}`"))
            return found  # the rest would only add noise
        if t.approval is not None and pending is not None:
            found.append(Refusal("pending", 409, f"approval request {pending['id']} for "
                                 f"`{pending['transition']}` is pending; wait for its answer"))
        merged = {**subject.full, **values}
        if t.when is not None:
            failed = self._guard_failures(subject, t, merged)
            if failed:
                found.append(Refusal("guard", 409, f"the condition of `{t.name}` does not "
                                     "hold: " + "; ".join(failed)))
        empty = tuple(n for n in t.requires if _empty(merged.get(n)))
        if empty:
            found.append(Refusal("requires", 409, f"`{t.name}` needs {_names(empty)} filled "
                                 "first (send them in `values`)", empty))
        if t.approval is not None and who and not found:
            from .approvals import approver_refusal

            refusal = approver_refusal(self, subject, t)
            if refusal is not None:
                found.append(refusal)
        return found

    def _who_refusals(self, subject: Subject, t: Transition) -> list[Refusal]:
        guard = self.service.guard
        principal = self.principal
        found = []
        if guard is not None:
            if not guard.can(subject.entity, "transition"):
                found.append(Refusal("permission", 403, "your roles do not allow `transition` "
                                     f"on {subject.entity}"))
            else:
                with self.runtime.connect() as connection:
                    if not guard.allows(connection, subject.entity, "transition", subject.row):
                        found.append(Refusal("permission", 403, "your roles do not allow "
                                             f"`transition` on {subject.entity} "
                                             f"{subject.record_id}"))
        if t.roles and principal is not None and not principal.is_admin and \
                not principal.roles & set(t.roles):
            found.append(Refusal("role", 403, f"`{t.name}` is for {_names(t.roles)}; your "
                                 f"roles are {_names(sorted(principal.roles)) or 'none'}"))
        return found

    def _guard_failures(self, subject: Subject, t: Transition,
                        merged: Mapping[str, Any]) -> list[str]:
        registry = self.runtime.registry
        cache = self.runtime.extras.setdefault("workflow_guards", {})
        key = (subject.workflow.key, t.name)
        node = cache.get(key)
        if node is None:
            try:
                node = parse_condition(thaw(t.when), subject.entity, registry,
                                       self.platform.operators)
            except ConditionError as exc:  # the compiler checks guards; a plugin may not
                return [f"the condition cannot be checked ({exc.message})"]
            cache[key] = node
        record = nest_references(self.reader, subject.entity, merged, node)
        ctx = EvalContext(self.platform.now(), ZoneInfo(self.runtime.config.timezone))
        return failing_conditions(node, record, ctx)

    # -- taking ------------------------------------------------------------------------------

    def take(self, entity: str, record_id: int, name: str, *,
             values: Any = None, comment: Any = None,
             expected_version: int | None = None) -> TransitionResult:
        """Take transition `name` of the record's workflow, or ask for its approval."""
        comment = _comment(comment)
        for attempt in range(RETRIES):
            subject = self.subject(entity, record_id)
            t = subject.workflow.transition(name) if isinstance(name, str) else None
            if t is None:
                raise NotFound(f"workflow {subject.workflow.key} has no transition `{name}`",
                               transitions=[x.name for x in subject.workflow.transitions])
            if expected_version is not None and expected_version != subject.version:
                raise PreconditionFailed(
                    f"{entity} {record_id} was changed by someone else (version "
                    f"{subject.version}, you sent {expected_version}); reload it and try "
                    "again", current_version=subject.version)
            checked = self._values(subject, values)
            pending = self.pending_request(subject) if t.approval is not None else None
            refuse(t, self.refusals(subject, t, checked, pending=pending), subject)
            if t.approval is not None:
                from .approvals import request_approval

                return request_approval(self, subject, t, values or {}, comment,
                                        expected_version)
            try:
                return self.move(subject, t, values or {}, comment,
                                 expected_version=expected_version)
            except PreconditionFailed:
                if expected_version is not None or attempt == RETRIES - 1:
                    raise  # the caller's version is stale, or the record keeps changing
        raise AssertionError("unreachable")

    def _values(self, subject: Subject, values: Any) -> dict[str, Any]:
        """`values` checked as an update of the record (as the caller may write it)."""
        if values is None:
            return {}
        if not isinstance(values, Mapping):
            raise ValidationFailed("`values` must be an object of field values",
                                   {"values": ["an object of field values"]})
        name = subject.workflow.field
        if name in values:
            raise ValidationFailed(f"`{name}` is the workflow's state: the transition sets it",
                                   {name: ["set by the transition"]})
        schema = self.service.access(subject.entity).schemas.update
        try:
            loaded = schema.load(values)
        except ma.ValidationError as exc:
            errors = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
            raise ValidationFailed("some values are not valid", errors) from exc
        loaded.pop("row_version", None)
        return loaded

    def move(self, subject: Subject, t: Transition, values: Mapping[str, Any],
             comment: str | None, *, approval_id: int | None = None,
             expected_version: int | None = None) -> TransitionResult:
        """Make the change (one update with the history row), then run the actions."""
        workflow = subject.workflow
        self.service.state_field = workflow.field
        data = {**values, workflow.field: t.to}
        move = Move(workflow, t, subject.entity, subject.record_id, comment, approval_id)
        version = expected_version if expected_version is not None else subject.version
        with moving(move):
            record = self.service.update(subject.entity, subject.record_id, data,
                                         expected_version=version, transition=t.name)
        if move.history_id is None:  # nothing changed (a transition into the same state)
            with self.runtime.begin() as connection:
                move.history_id = write_history(
                    connection, self.system, workflow, t, subject.entity, subject.record_id,
                    subject.state, self.actor.user_id, dt.datetime.now(dt.UTC), comment,
                    approval_id)
            move.from_state = subject.state
        results = self.run_actions(subject, t, move)
        return TransitionResult("done", workflow.key, t.name, record, move.from_state, t.to,
                                move.history_id, results)

    def run_actions(self, subject: Subject, t: Transition, move: Move) -> list[dict[str, Any]]:
        """Run the transition's actions in order (each one's failure is kept, the others
        still run) and store their results in the history row."""
        if not t.actions:
            return []
        from ..actions import ActionContext, actions_of

        registry = actions_of(self.platform)
        try:
            record = self.reader.get(subject.entity, subject.record_id)
        except NotFound:
            record = subject.full
        results: list[dict[str, Any]] = []
        for index, spec in enumerate(t.actions):
            plain = thaw(spec)
            name = next(iter(plain), "?")
            context = ActionContext(
                self.platform, self.runtime, subject.entity, record,
                source=f"workflow:{subject.workflow.key}:{t.name}",
                key=f"{self.runtime.slug}:transition:{move.history_id}:{index}",
                depth=self.actor.depth, event=move.event, actor_id=self.actor.user_id,
                extras={"workflow": subject.workflow.key, "transition": t.name,
                        "history_id": move.history_id})
            try:
                result = registry.run(context, plain)
                results.append({"action": name, "ok": True, "result": _json(result)})
            except Exception as exc:  # reported in the history; the move stays
                log.warning("action %s of transition %s on %s %s failed: %s", name, t.name,
                            subject.entity, subject.record_id, exc)
                message = exc.detail if isinstance(exc, RecordError) else str(exc)
                results.append({"action": name, "ok": False,
                                "error": message or type(exc).__name__})
        history = self.system.table(HISTORY)
        with self.runtime.begin() as connection:
            connection.execute(history.update().where(history.c.id == move.history_id)
                               .values(actions=results))
        return results


def refuse(t: Transition, refusals: list[Refusal], subject: Subject) -> None:
    """Raise the first refusal (403 before 409), naming every reason in `reasons`."""
    if not refusals:
        return
    first = min(refusals, key=lambda r: r.status != 403)
    error = Forbidden if first.status == 403 else Conflict
    errors = {n: ["required by this transition"] for r in refusals for n in r.fields}
    raise error(first.reason, errors, transition=t.name, state=subject.state,
                reasons=[r.to_dict() for r in refusals])


def take_transition(platform: Any, runtime: Any, entity: str, record_id: int, name: str, *,
                    actor: Actor, depth: int | None = None, values: Any = None,
                    comment: Any = None, expected_version: int | None = None
                    ) -> TransitionResult:
    """Take transition `name` on one record as `actor` (an `Actor`; no principal: the
    system, which skips the permission and role checks but not the record's). `depth`
    (default: the actor's) counts the automations that led here. Raises `RecordError`s:
    NotFound (404), Forbidden (403), Conflict (409), ValidationFailed (422),
    PreconditionFailed (412). A transition with `approval` returns status `pending`."""
    if depth is not None and depth != actor.depth:
        actor = replace(actor, depth=depth)
    engine = WorkflowEngine(platform, runtime, actor)
    return engine.take(entity, record_id, name, values=values, comment=comment,
                       expected_version=expected_version)


def _names(names: Any) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _comment(comment: Any) -> str | None:
    if comment is None or comment == "":
        return None
    if not isinstance(comment, str):
        raise ValidationFailed("`comment` must be text", {"comment": ["text"]})
    if len(comment) > MAX_COMMENT or "\x00" in comment or not _encodable(comment):
        raise ValidationFailed(f"`comment` is text of at most {MAX_COMMENT} characters",
                               {"comment": [f"at most {MAX_COMMENT} characters"]})
    return comment


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)
