"""Beat: enqueue each periodic job (`JobSpec.every`) when it falls due.

Due times follow the platform clock (`platform.now()`), so tests drive beat with a
controllable clock and `tick()`; the thread only decides how often to look. Missed
runs are not caught up: a periodic job runs at most once per tick. Run one beat per
installation (a second one only doubles the sweeps, which claim their rows).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class Beat:
    """The schedule of one platform's periodic jobs."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs
        self._next: dict[str, dt.datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def resolution(self) -> float:
        """How often to look, in seconds: a second, or less for shorter periods."""
        periods = [spec.every for spec in self.jobs.periodic()]
        return max(0.05, min([1.0, *(p / 2 for p in periods if p)]))

    def tick(self) -> list[str]:
        """Enqueue every periodic job that is due now; returns their names."""
        now = self.jobs.platform.now()
        fired = []
        for spec in self.jobs.periodic():
            due = self._next.get(spec.name)
            if due is not None and now < due:
                continue
            self._next[spec.name] = now + dt.timedelta(seconds=spec.every)
            try:
                self.jobs.enqueue(spec.name, {})
            except Exception:
                log.exception("beat could not enqueue %s", spec.name)
                continue
            fired.append(spec.name)
        return fired

    def run(self) -> None:
        """Tick until `stop()` (the `metacrm beat` command runs this in the foreground)."""
        resolution = self.resolution
        while True:
            self.tick()
            if self._stop.wait(resolution):
                return

    def start(self) -> None:
        """Tick in a daemon thread (the embedded mode of `metacrm run`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="metacrm-beat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
