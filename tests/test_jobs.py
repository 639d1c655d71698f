"""The job runner: the in-process queue (drain, background thread), beat on a controllable
clock, and delayed work in `_metacrm_scheduled` swept once per due row, on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from jobsworld import T0, Recorder, platform_with

from metacrm.cli import main
from metacrm.platform.jobs import SCHEDULED, SWEEP_JOB, Jobs, JobSpec, cancel, jobs_of, schedule
from metacrm.platform.jobs.scheduled import pending, sweep_tenant
from metacrm.platform.systables import runtime_system_tables


def scheduled_rows(runtime) -> list[dict]:
    table = runtime_system_tables(runtime).table(SCHEDULED)
    with runtime.connect() as connection:
        return [dict(r) for r in connection.execute(
            sa.select(table).order_by(table.c.id)).mappings()]


# -- the in-process queue ------------------------------------------------------------------------

def test_drain_runs_queued_jobs_and_the_jobs_they_queue(make_platform) -> None:
    recorder = Recorder()
    platform = platform_with(make_platform, recorder, tenants=())
    jobs = jobs_of(platform)
    assert jobs.mode == "embedded" and jobs_of(platform) is jobs
    jobs.enqueue("test.chain", {"n": 1})
    jobs.enqueue("test.record", {"n": 2})
    assert recorder.seen == []  # nothing runs before drain (or the thread) takes it
    assert jobs.drain() == 3
    assert recorder.seen == [("chain", {"n": 1}), ("record", {"n": 2}),
                             ("record", {"from": "chain", "n": 1})]
    assert jobs.drain() == 0


def test_enqueue_refuses_unknown_jobs_and_payloads_that_are_not_json(make_platform) -> None:
    platform = platform_with(make_platform, Recorder(), tenants=())
    jobs = jobs_of(platform)
    with pytest.raises(KeyError, match=r"there is no job 'test\.nope'"):
        jobs.enqueue("test.nope", {})
    with pytest.raises(TypeError, match="payload must be JSON"):
        jobs.enqueue("test.record", {"when": dt.datetime.now()})
    assert jobs.drain() == 0


def test_payload_is_a_json_copy(make_platform) -> None:
    recorder = Recorder()
    jobs = jobs_of(platform_with(make_platform, recorder, tenants=()))
    payload = {"items": [1, 2], "nested": {"a": (3, 4)}}
    jobs.enqueue("test.record", payload)
    payload["items"].append(99)
    jobs.drain()
    assert recorder.names("record") == [{"items": [1, 2], "nested": {"a": [3, 4]}}]


def test_a_failing_job_is_logged_and_the_others_still_run(make_platform, caplog) -> None:
    recorder = Recorder()
    jobs = jobs_of(platform_with(make_platform, recorder, tenants=()))
    jobs.enqueue("test.boom", {"tenant": "t1"})
    jobs.enqueue("test.record", {})
    assert jobs.drain() == 2
    assert recorder.names("record") == [{}]
    assert "job test.boom failed" in caplog.text and "RuntimeError: boom" in caplog.text


def test_the_background_thread_runs_jobs_as_they_are_enqueued(make_platform) -> None:
    recorder = Recorder()
    jobs = jobs_of(platform_with(make_platform, recorder, tenants=()))
    jobs.queue.start()
    try:
        jobs.enqueue("test.record", {"n": 1})
        assert recorder.event.wait(10)
        assert jobs.queue.join(10)
        assert recorder.names("record") == [{"n": 1}]
        assert jobs.drain() == 0  # the thread took it
    finally:
        jobs.stop()
    assert not jobs.queue.running


def test_jobs_registered_twice_are_refused(make_platform) -> None:
    platform = platform_with(make_platform, tenants=())
    spec = JobSpec("x", lambda platform, payload: None)
    with pytest.raises(ValueError, match="job 'x' is registered twice"):
        Jobs(platform, [spec, spec])


# -- beat ----------------------------------------------------------------------------------------

def test_beat_enqueues_periodic_jobs_when_the_clock_says_so(make_platform) -> None:
    recorder = Recorder(every=30)
    platform = platform_with(make_platform, recorder, tenants=(), sweep_seconds=5)
    jobs = jobs_of(platform)
    assert {s.name: s.every for s in jobs.periodic()}["test.tick"] == 30
    assert jobs.specs[SWEEP_JOB].every == 5  # the sweep's period is a setting
    assert "test.tick" in jobs.beat.tick()  # the first tick runs everything once
    assert jobs.beat.tick() == []
    platform.clock.advance(5)
    assert jobs.beat.tick() == [SWEEP_JOB]
    platform.clock.advance(24.9)
    assert "test.tick" not in jobs.beat.tick()
    platform.clock.advance(0.1)
    assert "test.tick" in jobs.beat.tick()
    jobs.drain()
    assert recorder.names("tick") == [{}, {}]


def test_the_beat_thread_ticks_by_itself(make_platform) -> None:
    recorder = Recorder(every=0.1)
    platform = platform_with(make_platform, recorder, tenants=())
    platform.clock = lambda: dt.datetime.now(dt.UTC)
    jobs = jobs_of(platform)
    jobs.start()
    try:
        for _ in range(2):
            recorder.event.clear()
            assert recorder.event.wait(10)
    finally:
        jobs.stop()
    assert len(recorder.names("tick")) >= 2


# -- delayed work in the database ------------------------------------------------------------------

def test_schedule_dedups_by_key_and_replace_moves_the_row(make_platform) -> None:
    platform = platform_with(make_platform, Recorder())
    runtime = platform.runtime("t1")
    at = T0 + dt.timedelta(minutes=5)
    assert schedule(runtime, "test.record", {"n": 1}, at, key="k1") is True
    assert schedule(runtime, "test.record", {"n": 2}, at + dt.timedelta(hours=1),
                    key="k1") is False
    row = pending(runtime, "k1")
    assert (row["payload"], row["due_at"], row["status"]) == ({"n": 1}, at, "pending")
    assert schedule(runtime, "test.record", {"n": 3}, T0, key="k1", replace=True) is True
    row = pending(runtime, "k1")
    assert (row["payload"], row["due_at"]) == ({"n": 3}, T0)
    assert len(scheduled_rows(runtime)) == 1


def test_the_sweep_enqueues_due_rows_once_with_the_tenant(make_platform) -> None:
    recorder = Recorder()
    platform = platform_with(make_platform, recorder)
    runtime = platform.runtime("t1")
    jobs = jobs_of(platform)
    for n, seconds in enumerate((-60, 0, 1, 3600)):
        schedule(runtime, "test.record", {"n": n}, T0 + dt.timedelta(seconds=seconds),
                 key=f"row{n}")
    assert jobs.sweep() == 2
    assert jobs.sweep() == 0  # claimed: never enqueued twice
    jobs.drain()
    assert recorder.names("record") == [{"n": 0, "tenant": "t1"}, {"n": 1, "tenant": "t1"}]
    platform.clock.advance(1)
    assert jobs.sweep() == 1
    platform.clock.advance(3600)
    assert jobs.sweep() == 1
    jobs.drain()
    assert [p["n"] for p in recorder.names("record")] == [0, 1, 2, 3]
    assert {(r["key"], r["status"], r["attempts"]) for r in scheduled_rows(runtime)} == {
        (f"row{n}", "enqueued", 1) for n in range(4)}


def test_the_sweep_job_covers_every_active_tenant(make_platform) -> None:
    recorder = Recorder()
    platform = platform_with(make_platform, recorder, tenants=("t1", "t2"))
    for slug in ("t1", "t2"):
        schedule(platform.runtime(slug), "test.record", {}, T0, key="same-key")
    jobs = jobs_of(platform)
    jobs.enqueue(SWEEP_JOB, {})
    jobs.drain()
    assert sorted(p["tenant"] for p in recorder.names("record")) == ["t1", "t2"]


def test_a_row_scheduled_in_a_transaction_that_rolls_back_never_runs(make_platform) -> None:
    recorder = Recorder()
    platform = platform_with(make_platform, recorder)
    runtime = platform.runtime("t1")
    with pytest.raises(RuntimeError), runtime.begin() as connection:
        schedule(connection, "test.record", {"n": "lost"}, T0, key="lost")
        raise RuntimeError("the caller's write failed")
    with runtime.begin() as connection:
        schedule(connection, "test.record", {"n": "kept"}, T0, key="kept")
    jobs = jobs_of(platform)
    jobs.sweep()
    jobs.drain()
    assert recorder.names("record") == [{"n": "kept", "tenant": "t1"}]


def test_cancel_stops_a_pending_row(make_platform) -> None:
    recorder = Recorder()
    platform = platform_with(make_platform, recorder)
    runtime = platform.runtime("t1")
    schedule(runtime, "test.record", {}, T0, key="reminder:1")
    assert cancel(runtime, "reminder:1") is True
    assert cancel(runtime, "reminder:1") is False
    assert jobs_of(platform).sweep() == 0
    assert pending(runtime, "reminder:1")["status"] == "cancelled"


def test_a_row_naming_no_job_is_marked_failed_and_does_not_block(make_platform,
                                                                   caplog) -> None:
    recorder = Recorder()
    platform = platform_with(make_platform, recorder)
    runtime = platform.runtime("t1")
    schedule(runtime, "gone.job", {}, T0 - dt.timedelta(seconds=1), key="orphan")
    schedule(runtime, "test.record", {}, T0, key="fine")
    assert jobs_of(platform).sweep() == 1
    assert pending(runtime, "orphan")["status"] == "failed"
    assert "names no job 'gone.job'" in caplog.text


def test_old_enqueued_rows_are_purged(make_platform) -> None:
    platform = platform_with(make_platform, Recorder())
    runtime = platform.runtime("t1")
    schedule(runtime, "test.record", {}, T0, key="old")
    jobs = jobs_of(platform)
    jobs.sweep()
    platform.clock.advance(8 * 86400)
    jobs.sweep()
    assert scheduled_rows(runtime) == []


def test_concurrent_sweeps_claim_each_row_once(make_platform) -> None:
    """Four sweepers at once over 600 due rows: every row is enqueued exactly once
    (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: BEGIN IMMEDIATE)."""
    recorder = Recorder()
    platform = platform_with(make_platform, recorder)
    runtime = platform.runtime("t1")
    table = runtime_system_tables(runtime).table(SCHEDULED)
    with runtime.begin() as connection:
        connection.execute(table.insert(), [
            {"job": "test.record", "payload": {"n": n}, "due_at": T0, "key": f"k{n}",
             "status": "pending", "attempts": 0, "created_at": T0} for n in range(600)])
    jobs = jobs_of(platform)
    barrier = threading.Barrier(4)
    counts: list[int] = []

    def sweeper() -> None:
        barrier.wait()
        counts.append(sweep_tenant(runtime, jobs, T0))

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == 600
    jobs.drain()
    assert sorted(p["n"] for p in recorder.names("record")) == list(range(600))


# -- modes and commands ----------------------------------------------------------------------------

def test_a_broker_url_selects_celery_and_odd_urls_are_refused(make_platform) -> None:
    platform = platform_with(make_platform, tenants=(), broker_url="redis://127.0.0.1:1/0")
    jobs = jobs_of(platform)
    assert jobs.mode == "broker"
    assert jobs.broker.app.conf.task_serializer == "json"
    assert jobs.broker.app.conf.task_acks_late is True
    assert jobs.broker.app.conf.task_reject_on_worker_lost is True
    assert jobs.drain() == 0
    odd = platform_with(make_platform, tenants=(), broker_url="sqla+sqlite:///x.db")
    with pytest.raises(ValueError, match="unsupported broker 'sqla\\+sqlite'"):
        jobs_of(odd)


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_need_a_broker(make_platform, command: str) -> None:
    make_platform.write({"tenants/.keep": ""})
    env = {**make_platform.env(), "METACRM_BROKER_URL": ""}
    result = CliRunner().invoke(main, [command], env=env)
    assert result.exit_code == 1
    assert "METACRM_BROKER_URL" in result.output and "metacrm run" in result.output


def test_metacrm_run_runs_jobs_in_process_without_a_broker(make_platform, tmp_path) -> None:
    """`make run` needs no broker: its beat thread sweeps the delayed-work table and its job
    thread sends what falls due (here, a webhook another process wrote)."""
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from jobsworld import Receiver, free_port, wait_until

    from metacrm.platform.webhooks import send_webhook

    platform = platform_with(make_platform)
    platform.clock = lambda: dt.datetime.now(dt.UTC)
    port = free_port()
    env = {**os.environ, **make_platform.env(), "METACRM_BROKER_URL": "",
           "METACRM_SWEEP_SECONDS": "0.2", "METACRM_ADMIN_PASSWORD": "a-long-password"}
    log = tmp_path / "run.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("metacrm")), "run", "--tenant", "t1",
             "--no-watch", "--port", str(port)], env=env, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"metacrm run stopped:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_health", timeout=1):
                    return True
            except OSError:
                return False

        assert wait_until(healthy, 60), log.read_text()
        assert "jobs: run in this process (no broker)" in log.read_text()
        runtime = platform.runtime("t1")
        with Receiver().running() as receiver:
            with runtime.begin() as connection:
                send_webhook(runtime, receiver.url, {"from": "test"}, key="embedded",
                             connection=connection)
            assert receiver.wait_for(1, 30), log.read_text()
    finally:
        server.terminate()
        server.wait(30)
