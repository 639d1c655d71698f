"""Background jobs: what the engines hand off to run outside the request.

A job is a named function of the platform and a JSON payload (`JobSpec`); plugins
register jobs through the `register_jobs` hook. `jobs_of(platform).enqueue(name,
payload)` hands one to the platform's runner:

- embedded (no broker URL, `metacrm run`): an in-process queue, run by a background
  thread once started (`Jobs.start`), or by `drain()` in tests and scripts;
- broker (``redis://`` or ``amqp://``): Celery workers (`metacrm worker`).

Periodic jobs (`every` seconds) are enqueued by beat: a thread in `metacrm run`, or the
`metacrm beat` process. Delayed work goes to the database (`schedule`), never to a
broker ETA. Jobs run at least once: a job may run twice (a redelivered message, a
sweep racing a crash), so every job dedups by a key of its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .beat import Beat
from .embedded import InProcessQueue
from .scheduled import SCHEDULED, SWEEP_JOB, cancel, schedule, sweep_tenant

log = logging.getLogger(__name__)

__all__ = ["SCHEDULED", "SWEEP_JOB", "Beat", "JobSpec", "Jobs", "cancel", "jobs_of",
           "schedule", "sweep_tenant"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: `run(platform, payload)`; with `every`, also a periodic sweep that beat
    enqueues with an empty payload. `queue` names a separate Celery queue (workers pick
    queues with ``metacrm worker --queues``)."""

    name: str
    run: Callable[[Any, Mapping[str, Any]], None]
    description: str = ""
    every: float | None = None
    queue: str | None = None


class Jobs:
    """The platform's job runner: in-process without a broker, Celery with one."""

    def __init__(self, platform: Any, specs: Iterable[JobSpec]) -> None:
        self.platform = platform
        self.specs: dict[str, JobSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise ValueError(f"job {spec.name!r} is registered twice")
            self.specs[spec.name] = spec
        settings = platform.settings
        sweep = self.specs.get(SWEEP_JOB)
        if sweep is not None:  # the sweep's period is a setting
            self.specs[SWEEP_JOB] = dataclasses.replace(sweep, every=settings.sweep_seconds)
        self.broker: Any = None
        if settings.broker_url:
            from .broker import BrokerQueue

            self.broker = BrokerQueue(settings)
        self.queue = InProcessQueue(self.run)
        self.beat = Beat(self)

    @property
    def mode(self) -> str:
        """``embedded`` or ``broker``."""
        return "embedded" if self.broker is None else "broker"

    def enqueue(self, name: str, payload: Mapping[str, Any]) -> None:
        """Queue job `name` with a JSON payload (refused at once if it is not JSON).

        Call it after your transaction has committed (from `record_event`, say): the job
        may start at once, in another thread or process. Inside a transaction, use
        `schedule(connection, ...)` instead, which commits or rolls back with it.
        """
        spec = self.specs.get(name)
        if spec is None:
            raise KeyError(f"there is no job {name!r}")
        try:
            data = json.loads(json.dumps(dict(payload)))
        except TypeError as exc:
            raise TypeError(f"job {name!r}: the payload must be JSON ({exc})") from exc
        if self.broker is not None:
            self.broker.put(name, data, spec.queue)
        else:
            self.queue.put(name, data)

    def run(self, name: str, payload: Mapping[str, Any]) -> None:
        """Run one job now, in this thread (workers call this)."""
        spec = self.specs.get(name)
        if spec is None:
            raise KeyError(f"there is no job {name!r}")
        spec.run(self.platform, payload)

    def drain(self) -> int:
        """Run queued in-process jobs (and those they queue) until none is left; how many
        ran. A failing job is logged and does not stop the others."""
        return self.queue.drain()

    def sweep(self) -> int:
        """Enqueue every active tenant's due scheduled rows now; how many (tests and
        scripts; beat runs the `jobs.sweep` job)."""
        now = self.platform.now()
        return sum(sweep_tenant(self.platform.runtime(slug), self, now)
                   for slug in self.platform.active_slugs())

    def periodic(self) -> list[JobSpec]:
        return [spec for spec in self.specs.values() if spec.every]

    # -- embedded mode ----------------------------------------------------------------------

    def start(self) -> None:
        """Embedded mode: run queued jobs in a background thread and periodic jobs by a
        beat thread (`metacrm run`). With a broker, workers and `metacrm beat` do it."""
        if self.broker is None:
            self.queue.start()
            self.beat.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.beat.stop(timeout)
        self.queue.stop(timeout)
        if self.broker is not None:
            self.broker.close()


def jobs_of(platform: Any) -> Jobs:
    """The platform's job runner (built once, kept in `platform.extensions`)."""
    found = platform.extensions.get("jobs")
    if found is None:
        specs = [s for batch in platform.plugins.hook.register_jobs() for s in batch]
        found = platform.extensions.setdefault("jobs", Jobs(platform, specs))
    return found
