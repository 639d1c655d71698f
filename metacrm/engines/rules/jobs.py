"""The rules engine's jobs: run given runs, and the periodic sweep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...platform.jobs import JobSpec
from .dispatch import RUN_JOB
from .runner import execute_runs
from .sweep import sweep

SWEEP_JOB = "rules.sweep"
SWEEP_EVERY = 20.0


def run_job(platform: Any, payload: Mapping[str, Any]) -> None:
    """`rules.run` {tenant, runs: [ids]}: each run that is still pending and due, once."""
    ids = [int(i) for i in payload.get("runs", [])]
    execute_runs(platform, str(payload["tenant"]), ids)


def rule_jobs() -> list[JobSpec]:
    return [
        JobSpec(RUN_JOB, run_job, "Run automation rule runs (each claimed once)."),
        JobSpec(SWEEP_JOB, sweep, "Fire due timers and schedules of automation rules; hand "
                "out retries and runs whose job was lost.", every=SWEEP_EVERY),
    ]
