"""Jobs on Celery: one app per platform, one generic task that runs a registered job.

The web process only sends ``metacrm.job(name, payload)`` messages; `metacrm worker`
runs them, building its own Platform from the settings (once per worker process, after
the fork). JSON is the only serialiser; tasks are acknowledged late and rejected when
their worker dies, so a killed worker's job goes to another worker (at-least-once).
There are no ETAs: delayed work waits in `_metacrm_scheduled` until beat's sweep.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..settings import Settings

TASK = "metacrm.job"
SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")


def check_broker_url(url: str) -> str:
    if not url.startswith(SCHEMES):
        raise ValueError(f"unsupported broker {url.split(':', 1)[0]!r}: use redis:// or "
                         "amqp:// (or no broker: jobs then run in-process)")
    return url


def celery_app(settings: Settings, platform_factory: Callable[[], Any] | None = None) -> Any:
    """The Celery app of one installation. With `platform_factory` (the worker), the task
    runs jobs on a Platform built once per process; without, the app only sends."""
    from celery import Celery

    url = check_broker_url(settings.broker_url or "")
    app = Celery("metacrm", broker=url, set_as_current=False)
    options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://")):
        # kombu looks for messages past their visibility timeout only on every 10th
        # 10-second tick by default (~100 s); look on every tick instead.
        options = {"visibility_timeout": settings.broker_visibility_timeout,
                   "global_keyprefix": f"{settings.queue}:",
                   "unacked_restore_throttle": 1,
                   "unacked_restore_interval": max(1, min(
                       10, settings.broker_visibility_timeout))}
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1, task_default_queue=settings.queue,
        task_default_exchange=settings.queue, task_default_routing_key=settings.queue,
        broker_transport_options=options, broker_connection_retry_on_startup=True,
        broker_connection_timeout=10, worker_hijack_root_logger=False,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2,
                                   "interval_step": 0.5, "interval_max": 2})
    platform_of = _per_process(platform_factory) if platform_factory else None

    @app.task(name=TASK)
    def run_job(name: str, payload: Mapping[str, Any]) -> None:
        if platform_of is None:
            raise RuntimeError("this Celery app only sends jobs; run `metacrm worker`")
        from . import jobs_of

        jobs_of(platform_of()).run(name, payload)

    return app


def _per_process(factory: Callable[[], Any]) -> Callable[[], Any]:
    """`factory()` once per process: a forked pool child must not reuse the parent's
    database connections."""
    made: dict[int, Any] = {}
    lock = threading.Lock()

    def platform() -> Any:
        pid = os.getpid()
        found = made.get(pid)
        if found is None:
            with lock:
                found = made.get(pid)
                if found is None:
                    found = made[pid] = factory()
        return found

    return platform


class BrokerQueue:
    """Sends jobs to the Celery workers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = celery_app(settings)

    def put(self, name: str, payload: dict[str, Any], queue: str | None = None) -> None:
        self.app.send_task(TASK, args=[name, payload],
                           queue=f"{self.settings.queue}.{queue}" if queue else None)

    def close(self) -> None:
        self.app.close()
