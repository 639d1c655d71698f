"""The workflow engine's system tables: the transition history, approval requests and votes."""

from __future__ import annotations

import sqlalchemy as sa

from ...generators.tables import ID_TYPE

HISTORY = "_metacrm_transitions"
APPROVALS = "_metacrm_approvals"
VOTES = "_metacrm_approval_votes"


def workflow_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The three tables on `metadata` (every tenant database gets them on reload)."""
    history = sa.Table(
        HISTORY, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", ID_TYPE, nullable=False),
        sa.Column("workflow", sa.String(130), nullable=False),
        sa.Column("transition", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(100)),
        sa.Column("to_state", sa.String(100), nullable=False),
        sa.Column("actor", ID_TYPE),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("approval_id", ID_TYPE),
        sa.Column("actions", sa.JSON),
        sa.Index("ix__metacrm_transitions_record", "entity", "record_id"))
    approvals = sa.Table(
        APPROVALS, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", ID_TYPE, nullable=False),
        sa.Column("workflow", sa.String(130), nullable=False),
        sa.Column("transition", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(100)),
        sa.Column("to_state", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # role | manager
        sa.Column("roles", sa.JSON, nullable=False),  # by role: who may vote
        sa.Column("chain", sa.JSON, nullable=False),  # by manager: user ids, nearest first
        sa.Column("needed", sa.Integer, nullable=False),
        sa.Column("requested_by", ID_TYPE),
        sa.Column("requested_unit", sa.String(64)),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        # 1 while pending, NULL after: one pending request per record, race-free
        sa.Column("pending", sa.Integer),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("history_id", ID_TYPE),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'failed', "
                           "'cancelled')", name="ck__metacrm_approvals_status"),
        sa.UniqueConstraint("entity", "record_id", "pending",
                            name="uq__metacrm_approvals_pending"),
        sa.Index("ix__metacrm_approvals_status", "status", "entity"))
    votes = sa.Table(
        VOTES, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("approval_id", ID_TYPE, sa.ForeignKey(f"{APPROVALS}.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("user_id", ID_TYPE, nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("level", sa.Integer),
        sa.Column("comment", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("decision IN ('approve', 'reject')",
                           name="ck__metacrm_approval_votes_decision"),
        sa.UniqueConstraint("approval_id", "user_id", name="uq__metacrm_approval_votes_user"))
    return [history, approvals, votes]
