"""Approval requests: a transition with `approval` waits for its approvers.

`by: role` — `count` votes from users holding one of `roles` (n of m); the requester
cannot approve their own request. `by: manager` — the record owner's managers up the org
tree, `levels` of them, nearest first (the requester is skipped), each level in turn.
One vote per user (a unique constraint); one pending request per record. When the last
needed approval arrives, the transition is made as the requester (their permission was
checked when they asked), after checking again that the record's state, the guard and
the required fields still allow it; if not, the request fails with the reason. A
rejection ends the request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ...metadata.ir import Transition
from ...platform.orgtree import OrgTree
from ...platform.records import (
    ID_MAX,
    Actor,
    Conflict,
    Forbidden,
    NotFound,
    RecordError,
    ValidationFailed,
)
from .guard import workflow_for
from .tables import APPROVALS, VOTES

if TYPE_CHECKING:
    from .engine import Refusal, Subject, TransitionResult, WorkflowEngine

DECISIONS = ("approve", "reject")
LIST_LIMIT = 500


# -- who approves ----------------------------------------------------------------------------

def manager_chain(connection: sa.Connection, system: Any, owner: int | None,
                  requester: int | None, levels: int) -> list[int]:
    """The owner's managers up the org tree, nearest first, without the requester."""
    if owner is None:
        return []
    chain = [m for m in OrgTree(connection, system).managers_above(owner) if m != requester]
    return chain[:levels]


def role_holders(connection: sa.Connection, system: Any, roles: Sequence[str],
                 requester: int | None) -> list[int]:
    """Active users holding one of `roles`, but the requester."""
    user_roles, users = system.user_roles, system.users
    rows = connection.execute(sa.select(user_roles.c.user_id).distinct().select_from(
        user_roles.join(users, users.c.id == user_roles.c.user_id)).where(
        user_roles.c.role.in_(list(roles)), users.c.active.is_(True)))
    return sorted(r for (r,) in rows if r != requester)


def approver_refusal(engine: WorkflowEngine, subject: Subject, t: Transition) -> Refusal | None:
    """409 when the request could never be approved: too few managers or role holders."""
    from .engine import Refusal

    approval = t.approval
    assert approval is not None
    requester = engine.actor.user_id
    with engine.runtime.connect() as connection:
        if approval.by == "manager":
            chain = manager_chain(connection, engine.system, subject.full.get("owner"),
                                  requester, approval.levels)
            if len(chain) < approval.levels:
                return Refusal("approvers", 409, f"`{t.name}` needs the approval of "
                               f"{approval.levels} manager(s) up the org tree from the record's "
                               f"owner; only {len(chain)} found")
            return None
        holders = role_holders(connection, engine.system, approval.roles, requester)
    if len(holders) < approval.count:
        roles = ", ".join(f"`{r}`" for r in approval.roles)
        return Refusal("approvers", 409, f"`{t.name}` needs {approval.count} approval(s) from "
                       f"holders of {roles}; only {len(holders)} other user(s) hold them")
    return None


# -- asking ----------------------------------------------------------------------------------

def request_approval(engine: WorkflowEngine, subject: Subject, t: Transition,
                     values: Mapping[str, Any], comment: str | None,
                     expected_version: int | None) -> TransitionResult:
    """Save `values` (a plain edit as the caller) and open the request."""
    from .engine import TransitionResult

    approval = t.approval
    assert approval is not None
    entity, record_id = subject.entity, subject.record_id
    if values:
        engine.service.state_field = subject.workflow.field
        engine.service.update(entity, record_id, dict(values),
                              expected_version=expected_version or subject.version)
    approvals = engine.system.table(APPROVALS)
    now = engine.platform.now()
    requester = engine.actor.user_id
    with engine.runtime.begin() as connection:
        chain = manager_chain(connection, engine.system, subject.full.get("owner"), requester,
                              approval.levels) if approval.by == "manager" else []
        try:
            approval_id = connection.execute(approvals.insert().values(
                entity=entity, record_id=record_id, workflow=subject.workflow.key,
                transition=t.name, from_state=subject.state, to_state=t.to, kind=approval.by,
                roles=list(approval.roles), chain=chain,
                needed=approval.levels if approval.by == "manager" else approval.count,
                requested_by=requester, requested_unit=engine.actor.unit, requested_at=now,
                comment=comment, status="pending", pending=1).returning(approvals.c.id)
            ).scalar_one()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"another approval request for {entity} {record_id} is pending; "
                           "wait for its answer", transition=t.name) from exc
    record = engine.service.get(entity, record_id)
    return TransitionResult("pending", subject.workflow.key, t.name, record, subject.state,
                            t.to, approval=approval_view(engine, approval_id))


# -- reading ---------------------------------------------------------------------------------

def _votes(connection: sa.Connection, system: Any,
           ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    votes = system.table(VOTES)
    found: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return found
    for row in connection.execute(sa.select(votes).where(votes.c.approval_id.in_(list(ids)))
                                  .order_by(votes.c.id)).mappings():
        found[row["approval_id"]].append({
            "user": row["user_id"], "decision": row["decision"], "level": row["level"],
            "comment": row["comment"], "at": _iso(row["at"])})
    return found


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def vote_refusal(row: Mapping[str, Any], votes: Sequence[Mapping[str, Any]],
                 principal: Any) -> RecordError | None:
    """Why `principal` may not vote on the pending request `row` now (None: they may)."""
    if principal is None:
        return Forbidden("only a signed-in user votes on approval requests")
    user = principal.user_id
    if any(v["user"] == user for v in votes):
        return Conflict(f"you already voted on approval request {row['id']}")
    if row["kind"] == "manager":
        chain = list(row["chain"])
        level = sum(1 for v in votes if v["decision"] == "approve")
        if user not in chain:
            return Forbidden(f"approval request {row['id']} waits for the record owner's "
                             "managers; you are not one of them")
        if chain.index(user) != level:
            return Conflict(f"approval request {row['id']} waits for level {level + 1} "
                            f"(user {chain[level]}) first; yours is level "
                            f"{chain.index(user) + 1}")
        return None
    if user == row["requested_by"]:
        return Forbidden("you cannot approve your own request")
    roles = list(row["roles"])
    if not principal.roles & set(roles):
        return Forbidden(f"approval request {row['id']} waits for holders of "
                         + ", ".join(f"`{r}`" for r in roles))
    return None


def _view(row: Mapping[str, Any], votes: list[dict[str, Any]],
          principal: Any) -> dict[str, Any]:
    approved = sum(1 for v in votes if v["decision"] == "approve")
    out: dict[str, Any] = {
        "id": row["id"], "entity": row["entity"], "record_id": row["record_id"],
        "workflow": row["workflow"], "transition": row["transition"],
        "from": row["from_state"], "to": row["to_state"], "by": row["kind"],
        "needed": row["needed"], "approved": approved, "status": row["status"],
        "requested_by": row["requested_by"], "requested_at": _iso(row["requested_at"]),
        "comment": row["comment"], "decided_at": _iso(row["decided_at"]),
        "reason": row["reason"], "history_id": row["history_id"], "votes": votes}
    if row["kind"] == "manager":
        out["chain"] = list(row["chain"])
        waiting = [row["chain"][approved]] if row["status"] == "pending" and \
            approved < len(row["chain"]) else []
        out["waiting_for"] = {"users": waiting}
    else:
        out["roles"] = list(row["roles"])
        out["waiting_for"] = {"roles": list(row["roles"]),
                              "remaining": max(0, row["needed"] - approved)} \
            if row["status"] == "pending" else {}
    out["can_vote"] = row["status"] == "pending" and vote_refusal(row, votes, principal) is None
    return out


def approval_view(engine: WorkflowEngine, approval_id: int) -> dict[str, Any]:
    approvals = engine.system.table(APPROVALS)
    with engine.runtime.connect() as connection:
        row = connection.execute(sa.select(approvals).where(
            approvals.c.id == approval_id)).mappings().one()
        votes = _votes(connection, engine.system, [approval_id])[approval_id]
    return _view(row, votes, engine.principal)


def record_approvals(engine: WorkflowEngine, entity: str, record_id: int,
                     limit: int = 50) -> list[dict[str, Any]]:
    """The record's requests, newest first (pending ones and the last decided ones)."""
    approvals = engine.system.table(APPROVALS)
    with engine.runtime.connect() as connection:
        rows = connection.execute(sa.select(approvals).where(
            approvals.c.entity == entity, approvals.c.record_id == record_id)
            .order_by(approvals.c.id.desc()).limit(limit)).mappings().all()
        votes = _votes(connection, engine.system, [r["id"] for r in rows])
    return [_view(r, votes[r["id"]], engine.principal) for r in rows]


def waiting_for(engine: WorkflowEngine, *, requested: bool = False) -> list[dict[str, Any]]:
    """Pending requests waiting for the caller's vote (or, `requested`, those they made)."""
    approvals = engine.system.table(APPROVALS)
    conditions = [approvals.c.status == "pending"]
    if requested:
        conditions.append(approvals.c.requested_by == engine.actor.user_id)
    with engine.runtime.connect() as connection:
        rows = connection.execute(sa.select(approvals).where(*conditions)
                                  .order_by(approvals.c.id)).mappings().all()
        votes = _votes(connection, engine.system, [r["id"] for r in rows])
    views = [_view(r, votes[r["id"]], engine.principal) for r in rows]
    if not requested:
        views = [v for v in views if v["can_vote"]]
    return views[:LIST_LIMIT]


# -- voting ----------------------------------------------------------------------------------

def vote(engine: WorkflowEngine, entity: str, record_id: int, approval_id: int,
         decision: str, comment: str | None = None) -> dict[str, Any]:
    """Approve or reject a pending request; the last needed approval makes the move."""
    if decision not in DECISIONS:
        raise ValidationFailed("the decision is `approve` or `reject`")
    if not (0 < record_id <= ID_MAX and 0 < approval_id <= ID_MAX):
        raise NotFound(f"{entity} {record_id} has no approval request {approval_id}")
    approvals, votes_table = engine.system.table(APPROVALS), engine.system.table(VOTES)
    now = engine.platform.now()
    complete = False
    with engine.runtime.begin() as connection:
        query = sa.select(approvals).where(approvals.c.id == approval_id,
                                           approvals.c.entity == entity,
                                           approvals.c.record_id == record_id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        row = connection.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"{entity} {record_id} has no approval request {approval_id}")
        if row["status"] != "pending":
            raise Conflict(f"approval request {approval_id} is {row['status']}",
                           request_status=row["status"])
        votes = _votes(connection, engine.system, [approval_id])[approval_id]
        refused = vote_refusal(row, votes, engine.principal)
        if refused is not None:
            raise refused
        level = sum(1 for v in votes if v["decision"] == "approve") + 1 \
            if row["kind"] == "manager" else None
        try:
            connection.execute(votes_table.insert().values(
                approval_id=approval_id, user_id=engine.actor.user_id, decision=decision,
                level=level, comment=comment, at=now))
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"you already voted on approval request {approval_id}") from exc
        if decision == "reject":
            connection.execute(approvals.update().where(approvals.c.id == approval_id).values(
                status="rejected", pending=None, decided_at=now,
                reason=f"rejected by user {engine.actor.user_id}"
                       + (f": {comment}" if comment else "")))
        else:
            approved = sum(1 for v in votes if v["decision"] == "approve") + 1
            if approved >= row["needed"]:
                claimed = connection.execute(approvals.update().where(
                    approvals.c.id == approval_id, approvals.c.status == "pending").values(
                    status="approved", pending=None, decided_at=now))
                complete = claimed.rowcount == 1
    if complete:
        _complete(engine, dict(row))
    return approval_view(engine, approval_id)


def _complete(engine: WorkflowEngine, row: Mapping[str, Any]) -> None:
    """Make the approved transition as the requester; a request whose move is no longer
    possible fails with the reason."""
    from .engine import WorkflowEngine

    approvals = engine.system.table(APPROVALS)
    requester = Actor(row["requested_by"], row["requested_unit"], engine.actor.depth)
    mover = WorkflowEngine(engine.platform, engine.runtime, requester)
    reason = None
    history_id = None
    try:
        subject = mover.subject(row["entity"], row["record_id"])
        workflow = workflow_for(engine.runtime, row["entity"], subject.full.get("business_unit"))
        t = workflow.transition(row["transition"]) if workflow is not None else None
        if t is None:
            reason = f"the workflow no longer has transition `{row['transition']}`"
        else:
            refusals = mover.refusals(subject, t, {}, who=False)
            if refusals:
                reason = "; ".join(r.reason for r in refusals)
            else:
                result = mover.move(subject, t, {}, row["comment"], approval_id=row["id"])
                history_id = result.history_id
    except RecordError as exc:
        reason = exc.detail
    with engine.runtime.begin() as connection:
        if reason is None:
            connection.execute(approvals.update().where(approvals.c.id == row["id"])
                               .values(history_id=history_id))
        else:
            connection.execute(approvals.update().where(approvals.c.id == row["id"]).values(
                status="failed", reason=f"approved, but the transition could not be made: "
                                        f"{reason}"))
