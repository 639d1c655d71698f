"""Built-in plugin of the job runner: the delayed-work table and its periodic sweep."""

from __future__ import annotations

from typing import Any

from ...hookspecs import hookimpl
from . import JobSpec
from .scheduled import SWEEP_JOB, scheduled_table, sweep


@hookimpl
def register_system_tables(metadata: Any) -> list[Any]:
    return [scheduled_table(metadata)]


@hookimpl
def register_jobs() -> list[JobSpec]:
    return [JobSpec(SWEEP_JOB, sweep, "Enqueue the scheduled jobs that are due, in every "
                    "active tenant (period: $METACRM_SWEEP_SECONDS).", every=5.0)]
