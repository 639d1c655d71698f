"""The rules engine's system tables, kept in every tenant's database.

- ``_metacrm_rule_runs``: the outbox and the run log. One row per rule execution, written
  in the transaction of the change that triggered it (or by a sweep); its `dedup_key` is
  unique, so a trigger delivered twice makes one run.
- ``_metacrm_rule_timers``: per time-relative rule and record (its key), when it is due.
- ``_metacrm_rule_state``: per rule and scope, what the sweeps remember (the last cron fire
  time; the trigger a time-relative rule's timers were seeded for, and for rules timed
  from `created_at`, the last record id and time the sweep planted timers up to).
"""

from __future__ import annotations

import sqlalchemy as sa

from ...generators.tables import ID_TYPE

RUNS = "_metacrm_rule_runs"
TIMERS = "_metacrm_rule_timers"
STATE = "_metacrm_rule_state"

STATUSES = ("pending", "running", "done", "parked", "stopped", "skipped")
"""pending: waiting (or waiting for a retry); running: claimed by a worker; done; parked:
failed for good, waiting for an administrator; stopped: not run, the depth limit was
reached (a loop); skipped: its rule was removed or disabled before it ran."""


def rule_tables(metadata: sa.MetaData) -> list[sa.Table]:
    runs = sa.Table(
        RUNS, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False, server_default=""),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", ID_TYPE, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("dedup_key", sa.String(400), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
        sa.Column("actor", ID_TYPE),
        sa.Column("event", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("results", sa.JSON),
        sa.UniqueConstraint("dedup_key", name="uq__metacrm_rule_runs_dedup"),
        # partial: only the runs a sweep may hand out (the log of finished runs, which
        # grows, is in neither, and a new run touches one index besides its dedup key)
        sa.Index("ix__metacrm_rule_runs_pending", "next_attempt_at",
                 sqlite_where=sa.text("status = 'pending'"),
                 postgresql_where=sa.text("status = 'pending'")),
        sa.Index("ix__metacrm_rule_runs_running", "lease_until",
                 sqlite_where=sa.text("status = 'running'"),
                 postgresql_where=sa.text("status = 'running'")))
    timers = sa.Table(  # keyed by (rule, record): one b-tree fewer than an id and a unique
        TIMERS, metadata,
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("record_id", ID_TYPE, primary_key=True, autoincrement=False),
        sa.Column("scope", sa.String(64), nullable=False, server_default=""),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_epoch", sa.BigInteger, nullable=False),
        sa.Index("ix__metacrm_rule_timers_due", "due_at"),
        sqlite_with_rowid=False)
    state = sa.Table(
        STATE, metadata,
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("signature", sa.String(400), nullable=False),
        sa.Column("last_fire_at", sa.DateTime(timezone=True)),
        sa.Column("mark", sa.BigInteger),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False))
    return [runs, timers, state]
