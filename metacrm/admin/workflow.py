# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""The workflow section of a record page: the state, the transitions the visitor may take
(buttons that POST with the page's CSRF token), why the others are refused, the
transition history, and approval requests with approve and reject buttons for their
approvers. Every move goes through the workflow engine as the visitor; a refusal comes
back as an alert on the record page.

    POST /admin/<module>/<entity>/<id>/transitions/<transition>            comment, value.<field>
    POST /admin/<module>/<entity>/<id>/approvals/<approval_id>/<approve|reject>   comment
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import expose

from ..engines.workflows import WorkflowEngine, record_approvals, record_history, vote
from ..metadata.ir import locale_chain
from ..platform.records import NotFound, RecordError
from .convert import from_text
from .display import user_names
from .pages import RecordPages

WORDS: Mapping[str, Mapping[str, str]] = {
    "en": {"transitions": "Transitions", "no_transitions": "No transition is open to you "
           "now.", "needs_approval": "needs approval", "comment": "Comment",
           "refused": "Not now", "approvals": "Approval requests", "approve": "Approve",
           "reject": "Reject", "transition_history": "Transitions", "done": "{label}: done.",
           "requested": "{label}: approval requested.", "voted": "Your vote is recorded "
           "(request {status}).", "final": "final", "waiting": "waiting for {who}",
           "status_pending": "pending", "status_approved": "approved",
           "status_rejected": "rejected", "status_failed": "failed",
           "status_cancelled": "cancelled", "action_failed": "action {action} failed: {error}",
           "requested_by": "asked by {who}"},
    "zh-Hant": {"transitions": "流轉", "no_transitions": "目前沒有你可執行的流轉。",
                "needs_approval": "需審批", "comment": "備註", "refused": "暫不可用",
                "approvals": "審批請求", "approve": "同意", "reject": "駁回",
                "transition_history": "流轉紀錄", "done": "{label}：已完成。",
                "requested": "{label}：已提交審批。", "voted": "已記錄你的意見（請求{status}）。",
                "final": "終態", "waiting": "等待 {who}", "status_pending": "待審批",
                "status_approved": "已批准", "status_rejected": "已駁回",
                "status_failed": "失敗", "status_cancelled": "已取消",
                "action_failed": "動作 {action} 失敗：{error}", "requested_by": "由 {who} 提交"},
    "zh-Hans": {"transitions": "流转", "no_transitions": "目前没有你可执行的流转。",
                "needs_approval": "需审批", "comment": "备注", "refused": "暂不可用",
                "approvals": "审批请求", "approve": "同意", "reject": "驳回",
                "transition_history": "流转记录", "done": "{label}：已完成。",
                "requested": "{label}：已提交审批。", "voted": "已记录你的意见（请求{status}）。",
                "final": "终态", "waiting": "等待 {who}", "status_pending": "待审批",
                "status_approved": "已批准", "status_rejected": "已驳回",
                "status_failed": "失败", "status_cancelled": "已取消",
                "action_failed": "动作 {action} 失败：{error}", "requested_by": "由 {who} 提交"},
}


class Words:
    """The section's own words in the visitor's locale (English when there are none)."""

    def __init__(self, locale: str | None) -> None:
        found = next((WORDS[tag] for tag in locale_chain(locale or "en") if tag in WORDS),
                     None)
        if found is None:
            found = WORDS["zh-Hant"] if (locale or "").startswith("zh") else WORDS["en"]
        self.words = found

    def __call__(self, key: str, **values: Any) -> str:
        text = self.words.get(key) or WORDS["en"][key]
        return text.format(**values) if values else text


@dataclass(frozen=True, slots=True)
class Input:
    name: str
    label: str


@dataclass(frozen=True, slots=True)
class Move:
    """A transition the visitor may take (maybe after filling `inputs`)."""

    name: str
    label: str
    to: str
    url: str
    needs_approval: bool
    inputs: tuple[Input, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    name: str
    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    when: str
    who: str
    label: str
    before: str
    after: str
    comment: str
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    label: str
    status: str
    status_text: str
    progress: str
    detail: str
    can_vote: bool
    approve_url: str
    reject_url: str


@dataclass(frozen=True, slots=True)
class WorkflowPanel:
    label: str
    state: str
    state_label: str
    final: bool
    row_version: int
    moves: tuple[Move, ...]
    refused: tuple[Refused, ...]
    history: tuple[Step, ...]
    requests: tuple[Request, ...]
    w: Words


def workflow_panel(view: Any, key: str, record_id: int) -> WorkflowPanel | None:
    """The record page's workflow section (None: the entity has no workflow)."""
    visitor = view.visitor
    t = visitor.t
    engine = WorkflowEngine(view.ui.platform, view.ui.runtime, visitor.service.actor)
    try:
        subject = engine.subject(key, record_id)
    except NotFound:
        return None
    workflow = subject.workflow
    words = Words(t.locale)
    states = {s.name: t.text(s.label, s.name) for s in workflow.states}
    entity = visitor.service.access(key).entity
    module, name = key.split(".", 1)
    moves, refused = [], []
    for option in engine.options(subject):
        transition = option.transition
        label = t.text(transition.label, transition.name)
        codes = {r.code for r in option.refusals}
        if codes <= {"requires"}:
            inputs = tuple(Input(f.name, t.text(f.label, f.name)) for f in (
                entity.get_field(n) for n in transition.requires) if f is not None
                and f.name in (r for r in _fields(option.refusals)))
            url = url_for("records.transition_view", module=module, entity=name,
                          record_id=record_id, transition=transition.name)
            moves.append(Move(transition.name, label, states.get(transition.to, transition.to),
                              url, transition.approval is not None, inputs))
        elif "state" not in codes:  # transitions from other states are noise here
            refused.append(Refused(transition.name, label, "; ".join(
                r.reason for r in option.refusals)))
    history = record_history(engine, key, record_id)
    requests = record_approvals(engine, key, record_id, limit=10)
    names = user_names(view.ui.runtime, [h["actor"] for h in history]
                       + [r["requested_by"] for r in requests]
                       + [u for r in requests for u in r["waiting_for"].get("users", [])])
    display = view.display(names)
    labels = {tr.name: t.text(tr.label, tr.name) for tr in workflow.transitions}
    steps = tuple(Step(
        display.local_time(h["at"]), names.get(h["actor"], f"#{h['actor']}")
        if h["actor"] else t("system"), labels.get(h["transition"], h["transition"]),
        states.get(h["from"], h["from"] or ""), states.get(h["to"], h["to"]),
        h["comment"] or "", tuple(words("action_failed", action=a.get("action"),
                                        error=a.get("error")) for a in h["actions"]
                                  if not a.get("ok")))
        for h in reversed(history))
    return WorkflowPanel(
        t.text(workflow.label, workflow.name), subject.state,
        states.get(subject.state, str(subject.state)),
        any(s.final and s.name == subject.state for s in workflow.states), subject.version,
        tuple(moves), tuple(refused), steps,
        tuple(_request(r, words, names, labels, module, name, record_id) for r in requests),
        words)


def _fields(refusals: Any) -> list[str]:
    return [n for r in refusals for n in r.fields]


def _request(found: Mapping[str, Any], words: Words, names: Mapping[int, str],
             labels: Mapping[str, str], module: str, entity: str,
             record_id: int) -> Request:
    waiting = found["waiting_for"]
    if waiting.get("users"):
        who = ", ".join(names.get(u, f"#{u}") for u in waiting["users"])
    else:
        who = ", ".join(waiting.get("roles", []))
    parts = [words("requested_by", who=names.get(found["requested_by"],
                                                 f"#{found['requested_by']}"))]
    if found["status"] == "pending" and who:
        parts.append(words("waiting", who=who))
    if found["reason"]:
        parts.append(found["reason"])
    if found["comment"]:
        parts.append(f"“{found['comment']}”")

    def url(decision: str) -> str:
        return url_for("records.decide_view", module=module, entity=entity,
                       record_id=record_id, approval_id=found["id"], decision=decision)

    return Request(found["id"], labels.get(found["transition"], found["transition"]),
                   found["status"], words(f"status_{found['status']}"),
                   f"{found['approved']}/{found['needed']}", " · ".join(parts),
                   found["can_vote"], url("approve"), url("reject"))


class WorkflowPages(RecordPages):
    """The POST targets of the workflow section's buttons."""

    @expose("/<module>/<entity>/<int:record_id>/transitions/<transition>", methods=("POST",))
    def transition_view(self, module: str, entity: str, record_id: int,
                        transition: str) -> Any:
        key = self.entity_key(module, entity)
        visitor = self.visitor
        words = Words(visitor.t.locale)
        found = visitor.service.access(key).entity
        values = {}
        for field_name, raw in request.form.items():
            target = found.get_field(field_name.removeprefix("value.")) \
                if field_name.startswith("value.") else None
            if target is not None and raw.strip():
                values[target.name] = from_text(target, raw.strip())
        version = request.form.get("row_version", "")
        engine = WorkflowEngine(self.ui.platform, self.ui.runtime, visitor.service.actor)
        try:
            result = engine.take(key, record_id, transition, values=values or None,
                                 comment=request.form.get("comment") or None,
                                 expected_version=int(version) if version.isdecimal()
                                 and len(version) < 19 else None)
        except NotFound:
            raise
        except RecordError as exc:
            flash(_message(exc), "danger")
        else:
            found_transition = engine.subject(key, record_id).workflow.transition(transition)
            label = visitor.t.text(found_transition.label, transition) if found_transition \
                else transition
            flash(words("requested" if result.status == "pending" else "done", label=label),
                  "success")
            for action in result.actions:
                if not action.get("ok"):
                    flash(words("action_failed", action=action.get("action"),
                                error=action.get("error")), "warning")
        return redirect(self.record_url(key, record_id) + "#workflow")

    @expose("/<module>/<entity>/<int:record_id>/approvals/<int:approval_id>/<decision>",
            methods=("POST",))
    def decide_view(self, module: str, entity: str, record_id: int, approval_id: int,
                    decision: str) -> Any:
        key = f"{module}.{entity}"
        if key not in self.ui.registry.entities or decision not in ("approve", "reject"):
            raise NotFound(f"there is no admin page for {key} {decision}")
        visitor = self.visitor
        words = Words(visitor.t.locale)
        engine = WorkflowEngine(self.ui.platform, self.ui.runtime, visitor.service.actor)
        comment = (request.form.get("comment") or "").strip() or None
        try:
            found = vote(engine, key, record_id, approval_id, decision, comment)
        except NotFound:
            raise
        except RecordError as exc:
            flash(_message(exc), "danger")
        else:
            flash(words("voted", status=words(f"status_{found['status']}")),
                  "success" if found["status"] != "failed" else "warning")
            if found["status"] == "failed" and found["reason"]:
                flash(found["reason"], "warning")
        try:
            self.visitor.service.get(key, record_id)
        except NotFound:  # an approver who may not read the record goes home
            return redirect(url_for("admin.index"))
        return redirect(self.record_url(key, record_id) + "#workflow")


def _message(exc: RecordError) -> str:
    reasons = exc.extra.get("reasons") or []
    if len(reasons) > 1:
        return "; ".join(r["reason"] for r in reasons)
    return exc.detail
