"""Background jobs: what the engines hand off to run outside the request.

Skeleton of the interface the engines use (the full embedded runner and the Celery
path come with the jobs work): a job is a named function of the platform and a JSON
payload; periodic jobs (`every` seconds) are sweeps that beat runs. Plugins register
jobs through the `register_jobs` hook.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: `run(platform, payload)`; with `every`, also a periodic sweep."""

    name: str
    run: Callable[[Any, Mapping[str, Any]], None]
    description: str = ""
    every: float | None = None


class Jobs:
    """The platform's job runner. Embedded mode: a queue in this process, run by `drain`."""

    def __init__(self, platform: Any, specs: Iterable[JobSpec]) -> None:
        self.platform = platform
        self.specs: dict[str, JobSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise ValueError(f"job {spec.name!r} is registered twice")
            self.specs[spec.name] = spec
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._lock = threading.Lock()

    def enqueue(self, name: str, payload: Mapping[str, Any]) -> None:
        """Queue job `name` with a JSON-serialisable payload (refused at once if not)."""
        if name not in self.specs:
            raise KeyError(f"there is no job {name!r}")
        data = json.loads(json.dumps(dict(payload)))
        with self._lock:
            self._queue.append((name, data))

    def run(self, name: str, payload: Mapping[str, Any]) -> None:
        """Run one job now, in this thread."""
        self.specs[name].run(self.platform, payload)

    def drain(self) -> int:
        """Run queued jobs (and those they queue) until none is left; how many ran."""
        count = 0
        while True:
            with self._lock:
                if not self._queue:
                    return count
                name, payload = self._queue.popleft()
            try:
                self.run(name, payload)
            except Exception:
                log.exception("job %s failed", name)
            count += 1

    def periodic(self) -> list[JobSpec]:
        return [spec for spec in self.specs.values() if spec.every]


def jobs_of(platform: Any) -> Jobs:
    """The platform's job runner (built once, kept in `platform.extensions`)."""
    found = platform.extensions.get("jobs")
    if found is None:
        specs = [s for batch in platform.plugins.hook.register_jobs() for s in batch]
        found = platform.extensions["jobs"] = Jobs(platform, specs)
    return found
