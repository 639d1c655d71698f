"""Helpers for the jobs, channels and webhook tests: a small customer library with
do-not-contact and consent, a settable clock, plugins with test jobs, loopback servers."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dbfixtures import Project

from metacrm.hookspecs import hookimpl
from metacrm.platform.jobs import JobSpec
from metacrm.platform.runtime import Platform
from metacrm.plugins import make_plugin_manager

T0 = dt.datetime(2030, 1, 1, 9, 0, tzinfo=dt.UTC)

LIBRARY = {
    "metadata/modules/customer/module.yaml": "module: customer\nowner: crm\n",
    "metadata/modules/customer/entities/customer.yaml": """
        entity: customer
        fields:
          name: {type: string, required: true}
          email: {type: email}
          do_not_contact: {type: boolean, default: false}
        """,
    "metadata/modules/customer/entities/consent.yaml": """
        entity: consent
        fields:
          customer: {type: reference, to: customer, required: true}
          channel: {type: enum, options: [email, sms], required: true}
          status: {type: enum, options: [granted, withdrawn], required: true}
          at: {type: datetime}
        """,
    "tenants/t1/tenant.yaml": "tenant: t1\nmodules: [customer]\n",
    "tenants/t2/tenant.yaml": "tenant: t2\nmodules: [customer]\n",
}


class Clock:
    """A controllable clock for `platform.clock`."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


@dataclass
class Recorder:
    """A plugin with test jobs: `record` notes its payloads, `chain` queues `record`,
    `boom` raises, `tick` is periodic."""

    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    every: float = 30.0
    event: threading.Event = field(default_factory=threading.Event)

    def record(self, platform: Any, payload: Mapping[str, Any]) -> None:
        self.seen.append(("record", dict(payload)))
        self.event.set()

    def chain(self, platform: Any, payload: Mapping[str, Any]) -> None:
        from metacrm.platform.jobs import jobs_of

        self.seen.append(("chain", dict(payload)))
        jobs_of(platform).enqueue("test.record", {"from": "chain", **payload})

    def boom(self, platform: Any, payload: Mapping[str, Any]) -> None:
        raise RuntimeError("boom")

    def tick(self, platform: Any, payload: Mapping[str, Any]) -> None:
        self.seen.append(("tick", dict(payload)))
        self.event.set()

    @hookimpl
    def register_jobs(self) -> list[JobSpec]:
        return [JobSpec("test.record", self.record), JobSpec("test.chain", self.chain),
                JobSpec("test.boom", self.boom),
                JobSpec("test.tick", self.tick, every=self.every)]

    def names(self, name: str) -> list[dict[str, Any]]:
        return [payload for job, payload in self.seen if job == name]


def platform_with(project: Project, *plugins: object, tenants: tuple[str, ...] = ("t1",),
                  **settings: Any) -> Platform:
    """A platform on `project` (files written) with extra plugins, tenants created, and a
    controllable clock at T0."""
    project.write(LIBRARY)
    manager = make_plugin_manager(extra_plugins=plugins, load_entrypoints=False)
    platform = Platform(project.settings(**settings), manager)
    project._platforms.append(platform)
    for slug in tenants:
        report = platform.create_tenant(slug)
        assert report.ok, report.format()
    platform.clock = Clock()
    return platform


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook receiver on loopback: answers each call with the next of `statuses`
    (then 200), recording every call."""

    def __init__(self, statuses: tuple[int, ...] = (), hold: threading.Event | None = None):
        self.statuses = list(statuses)
        self.calls: list[Call] = []
        self.arrived = threading.Condition()
        self.hold = hold
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.calls.append(Call(self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.arrived.notify_all()
                if receiver.hold is not None and len(receiver.calls) == 1:
                    receiver.hold.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.calls) >= count, timeout)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            if self.hold is not None:
                self.hold.set()
            self.server.shutdown()
            self.server.server_close()


def wait_until(check: Callable[[], Any], timeout: float = 30.0, step: float = 0.1) -> Any:
    """Poll `check` until it returns something true (for other processes' effects)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(step)
