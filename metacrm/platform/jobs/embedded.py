"""The embedded job queue: jobs run in this process, by a background thread or `drain()`.

No broker is needed (`metacrm run`). Jobs are queued in memory: a job still queued when
the process stops is lost, which is why delayed and retried work lives in the database
(`_metacrm_scheduled`) and only its due rows reach this queue.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Execute = Callable[[str, Mapping[str, Any]], None]


class InProcessQueue:
    """A FIFO of (job name, payload) run by `execute`, on demand or by a worker thread."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy = 0

    def put(self, name: str, payload: dict[str, Any]) -> None:
        with self._ready:
            self._queue.append((name, payload))
            self._ready.notify()

    def __len__(self) -> int:
        return len(self._queue)

    def _take(self) -> tuple[str, dict[str, Any]] | None:
        with self._ready:
            if not self._queue:
                return None
            self._busy += 1
            return self._queue.popleft()

    def _run(self, name: str, payload: Mapping[str, Any]) -> None:
        try:
            self._execute(name, payload)
        except Exception:
            log.exception("job %s failed (payload %s)", name, dict(payload))
        finally:
            with self._ready:
                self._busy -= 1
                self._ready.notify_all()

    def drain(self) -> int:
        """Run queued jobs (and those they queue) in this thread until none is left."""
        count = 0
        while (item := self._take()) is not None:
            self._run(*item)
            count += 1
        return count

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and no job is running (the worker thread's)."""
        with self._ready:
            return self._ready.wait_for(lambda: not self._queue and not self._busy, timeout)

    # -- the worker thread ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run queued jobs in a daemon thread as they arrive."""
        if self.running:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="metacrm-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                self._busy += 1
                item = self._queue.popleft()
            self._run(*item)
