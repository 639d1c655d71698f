"""The broker path with real processes: `metacrm worker` (Celery) and `metacrm beat` as
subprocesses on a temporary project, against the machine's Redis and RabbitMQ, observed
through their effects (webhook calls on loopback, rows in the tenant database, outbox
files), on SQLite and PostgreSQL.

A broker that does not answer on 127.0.0.1 is skipped, except under ``CI=true``, where
it fails. Every test uses its own queue (and, on Redis, its own key prefix), so
parallel test workers never take each other's jobs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from jobsworld import Receiver, platform_with, wait_until

from metacrm.platform.channels import DELIVERIES, Message, channels_of
from metacrm.platform.jobs import jobs_of
from metacrm.platform.systables import runtime_system_tables
from metacrm.platform.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    send_webhook,
    verify_signature,
)

BROKERS = {"redis": ("redis://127.0.0.1:6379/0", 6379),
           "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672)}
METACRM = str(Path(sys.executable).with_name("metacrm"))
SECRET = "whsec_broker"
TIMEOUT = 60.0

pytestmark = pytest.mark.slow


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(broker URL, a queue of this test's own); the queue is deleted afterwards."""
    url, port = BROKERS[request.param]
    if not reachable(port):
        message = f"{request.param} does not answer on 127.0.0.1:{port}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    queue = f"metacrm-test-{uuid.uuid4().hex[:12]}"
    yield url, queue
    purge(url, queue)


def purge(url: str, queue: str) -> None:
    """Remove what the test left on the broker."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{queue}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        return
    from kombu import Connection

    with Connection(url) as connection, contextlib.suppress(Exception):
        connection.channel().queue_delete(queue)


class Processes:
    """`metacrm` subprocesses of one test, killed (their whole process group) at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{args[0]}-{len(self.started)}.log"
        handle = log.open("wb")
        process = subprocess.Popen([METACRM, *args], env=self.env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        self.started.append((process, log))
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for _, log in self.started)

    def close(self) -> None:
        for process, _ in self.started:
            self.kill(process)


@pytest.fixture
def world(make_platform, broker, tmp_path: Path) -> Iterator[tuple[Any, Processes]]:
    """A platform sending jobs to the broker, and a way to start `metacrm` processes on
    the same project, database and queue."""
    url, queue = broker
    platform = platform_with(make_platform, broker_url=url, queue=queue,
                             webhook_secret=SECRET)
    platform.clock = Clock()
    env = {**os.environ, **make_platform.env(), "METACRM_BROKER_URL": url,
           "METACRM_QUEUE": queue, "METACRM_WEBHOOK_SECRET": SECRET,
           "METACRM_BROKER_VISIBILITY_TIMEOUT": "3", "METACRM_SWEEP_SECONDS": "0.5"}
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = Processes(env, logs)
    try:
        yield platform, processes
    finally:
        processes.close()


class Clock:
    """Real time: the worker processes use it too."""

    def __call__(self) -> Any:
        import datetime as dt

        return dt.datetime.now(dt.UTC)


def delivery(runtime: Any, key: str) -> dict[str, Any] | None:
    table = runtime_system_tables(runtime).table(DELIVERIES)
    with runtime.connect() as connection:
        row = connection.execute(sa.select(table).where(table.c.key == key)).mappings().first()
    return None if row is None else dict(row)


def sent(runtime: Any, key: str) -> dict[str, Any] | None:
    row = delivery(runtime, key)
    return row if row is not None and row["status"] == "sent" else None


def test_a_worker_process_runs_jobs_from_the_broker(world) -> None:
    """Prefork children build their own platform; a webhook and an e-mail go out."""
    platform, processes = world
    runtime = platform.runtime("t1")
    assert jobs_of(platform).mode == "broker"
    processes.start("worker", "--concurrency", "2", "--loglevel", "INFO")
    with Receiver().running() as receiver:
        send_webhook(runtime, receiver.url, {"event": "lead.won"}, key="via-broker")
        channels_of(platform).queue(runtime, Message("email", "ann@example.com", "Hello",
                                                     "From a worker", key="mail-1"))
        assert jobs_of(platform).drain() == 0  # nothing runs in this process
        assert wait_until(lambda: sent(runtime, "via-broker"), TIMEOUT), processes.output()
        [call] = receiver.calls
    assert call.headers[DELIVERY_HEADER] == "via-broker"
    assert verify_signature(SECRET, call.headers[SIGNATURE_HEADER], call.body)
    row = wait_until(lambda: sent(runtime, "mail-1"), TIMEOUT)
    assert row, processes.output()
    outbox = Path(row["reference"])
    assert outbox.parent == Path(platform.settings.outbox) / "t1" / "email"
    assert b"From a worker" in outbox.read_bytes()


def test_beat_sweeps_scheduled_work_through_the_worker(world) -> None:
    """Work scheduled in the database (here: a webhook written in the caller's
    transaction) goes out when `metacrm beat` enqueues the sweep and a worker runs it."""
    platform, processes = world
    runtime = platform.runtime("t1")
    with Receiver().running() as receiver:
        with runtime.begin() as connection:
            send_webhook(runtime, receiver.url, {"n": 1}, key="swept", connection=connection)
        processes.start("worker", "--pool", "solo")
        processes.start("beat")
        assert wait_until(lambda: sent(runtime, "swept"), TIMEOUT), processes.output()
        assert len(receiver.calls) == 1
    assert "beat: " in processes.output() and "jobs.sweep every 0.5s" in processes.output()


def test_a_killed_workers_job_is_redelivered_to_the_next_worker(world) -> None:
    """Acks late + reject on worker lost: SIGKILL a worker in the middle of a webhook
    call; a new worker gets the message again (RabbitMQ at once, Redis after the
    visibility timeout) and re-runs the unfinished attempt with the same delivery key."""
    platform, processes = world
    runtime = platform.runtime("t1")
    hold = threading.Event()
    with Receiver(hold=hold).running() as receiver:
        first = processes.start("worker", "--pool", "solo")
        send_webhook(runtime, receiver.url, {"n": 1}, key="survivor")
        assert receiver.wait_for(1, TIMEOUT), processes.output()
        assert delivery(runtime, "survivor")["status"] == "sending"
        processes.kill(first)
        hold.set()
        processes.start("worker", "--pool", "solo")
        assert wait_until(lambda: sent(runtime, "survivor"), TIMEOUT), processes.output()
        keys = [call.headers[DELIVERY_HEADER] for call in receiver.calls]
    assert keys == ["survivor", "survivor"]
    assert delivery(runtime, "survivor")["attempts"] == 1  # the same attempt, run again
