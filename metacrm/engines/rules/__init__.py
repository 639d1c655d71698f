"""Automation rules: event-, time- and schedule-triggered actions over records.

    trigger ─▶ outbox row in the change's own transaction (dispatch)
            ─▶ `rules.run` job after commit ─▶ claimed once, actions in order (runner)
            ─▶ done | retried with backoff | parked for an administrator
    sweep (`rules.sweep`, periodic) ─▶ due timers, cron schedules, lost jobs, retries

Rules come from the runtime's current Registry (``Scope.rules_for``), so a reload brings
new rules with no restart. See docs/rules.md.
"""

from __future__ import annotations

from .dispatch import RUN_JOB, enqueue_runs
from .index import CompiledRule, RuleIndex, rule_index
from .jobs import SWEEP_JOB
from .runner import execute_run, execute_runs
from .settings import RuleSettings, settings_for
from .sweep import SweepReport, latest_fire, sweep_tenant
from .tables import RUNS, STATE, STATUSES, TIMERS

__all__ = [
    "RUNS",
    "RUN_JOB",
    "STATE",
    "STATUSES",
    "SWEEP_JOB",
    "TIMERS",
    "CompiledRule",
    "RuleIndex",
    "RuleSettings",
    "SweepReport",
    "enqueue_runs",
    "execute_run",
    "execute_runs",
    "latest_fire",
    "rule_index",
    "settings_for",
    "sweep_tenant",
]
