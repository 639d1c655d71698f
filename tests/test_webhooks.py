"""Webhooks against a real receiver on loopback: signed calls, retries with backoff driven
by the platform clock and the sweep, parking after the last attempt, and the
administrators' delivery routes; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from jobsworld import T0, Receiver, free_port, platform_with

from metacrm.platform.app import create_app
from metacrm.platform.auth import create_user, issue_token, set_roles
from metacrm.platform.channels import BACKOFF, DELIVERIES
from metacrm.platform.jobs import SCHEDULED, jobs_of
from metacrm.platform.systables import runtime_system_tables
from metacrm.platform.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    send_webhook,
    sign,
    verify_signature,
)

SECRET = "whsec_test"


def deliveries(runtime: Any) -> list[dict[str, Any]]:
    table = runtime_system_tables(runtime).table(DELIVERIES)
    with runtime.connect() as connection:
        return [dict(r) for r in connection.execute(
            sa.select(table).order_by(table.c.id)).mappings()]


def pending_rows(runtime: Any) -> list[dict[str, Any]]:
    table = runtime_system_tables(runtime).table(SCHEDULED)
    with runtime.connect() as connection:
        return [dict(r) for r in connection.execute(
            sa.select(table).where(table.c.status == "pending")).mappings()]


def step(platform: Any) -> int:
    """One beat: sweep the due rows and run the jobs; how many jobs ran."""
    jobs = jobs_of(platform)
    jobs.sweep()
    return jobs.drain()


# -- signatures ------------------------------------------------------------------------------------

def test_a_signature_verifies_and_anything_else_does_not() -> None:
    body = b'{"event":"created"}'
    now = 1_900_000_000
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=") and len(header.rpartition("=")[2]) == 64
    assert verify_signature(SECRET, header, body, now=now + 299)
    assert not verify_signature(SECRET, header, body, now=now + 301)  # replayed too late
    assert not verify_signature(SECRET, header, body + b" ", now=now)
    assert not verify_signature("other", header, body, now=now)
    assert not verify_signature(SECRET, None, body, now=now)
    assert not verify_signature(SECRET, "v1=abc", body, now=now)
    assert not verify_signature(SECRET, header.replace(f"t={now}", f"t={now + 1}"), body,
                                now=now)
    rotated = f"{header},v1={'0' * 64}"  # several signatures during a secret rotation
    assert verify_signature(SECRET, rotated, body, now=now)


@given(secret=st.text(min_size=1), body=st.binary(), skew=st.integers(-300, 300))
def test_signatures_round_trip(secret: str, body: bytes, skew: int) -> None:
    now = 1_900_000_000
    assert verify_signature(secret, sign(secret, body, now), body, now=now + skew)


# -- delivery, retries and parking ---------------------------------------------------------------

def test_a_signed_call_reaches_the_receiver(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    with Receiver().running() as receiver:
        delivery = send_webhook(runtime, receiver.url, {"event": "lead.won", "id": 7},
                                key="lead:7:won", secret=SECRET)
        assert delivery.status == "queued"
        jobs_of(platform).drain()
        [call] = receiver.calls
    assert call.path == "/hook"
    assert json.loads(call.body) == {"event": "lead.won", "id": 7}
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers[DELIVERY_HEADER] == "lead:7:won"
    assert verify_signature(SECRET, call.headers[SIGNATURE_HEADER], call.body)
    [row] = deliveries(runtime)
    assert (row["channel"], row["status"], row["attempts"], row["reference"]) == (
        "webhook", "sent", 1, "HTTP 200")


def test_failures_are_retried_with_backoff_until_the_receiver_answers(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    with Receiver(statuses=(500, 500)).running() as receiver:
        send_webhook(runtime, receiver.url, {"n": 1}, key="retry-me", secret=SECRET)
        jobs_of(platform).drain()
        [row] = deliveries(runtime)
        assert (row["status"], row["attempts"]) == ("retrying", 1)
        assert "HTTP 500" in row["reason"]
        assert row["next_at"].replace(tzinfo=dt.UTC) == T0 + dt.timedelta(seconds=BACKOFF[0])
        platform.clock.advance(BACKOFF[0] - 1)
        assert step(platform) == 0 and len(receiver.calls) == 1  # not yet due
        platform.clock.advance(1)
        assert step(platform) == 1 and len(receiver.calls) == 2
        platform.clock.advance(BACKOFF[1] - 1)
        assert step(platform) == 0
        platform.clock.advance(1)
        assert step(platform) == 1
        assert step(platform) == 0
        calls = receiver.calls
    assert len(calls) == 3
    assert {c.headers[DELIVERY_HEADER] for c in calls} == {"retry-me"}  # dedup by it
    assert all(verify_signature(SECRET, c.headers[SIGNATURE_HEADER], c.body) for c in calls)
    [row] = deliveries(runtime)
    assert (row["status"], row["attempts"], row["reason"], row["next_at"]) == (
        "sent", 3, None, None)
    assert pending_rows(runtime) == []


def test_the_last_failure_parks_the_delivery(make_platform, caplog) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    attempts = len(BACKOFF) + 1
    with Receiver(statuses=(503,) * 99).running() as receiver:
        send_webhook(runtime, receiver.url, {}, key="doomed", secret=SECRET)
        jobs_of(platform).drain()
        for wait in BACKOFF:
            platform.clock.advance(wait)
            assert step(platform) == 1
        platform.clock.advance(86400)
        assert step(platform) == 0  # parked: nothing more is scheduled
        assert len(receiver.calls) == attempts
    [row] = deliveries(runtime)
    assert (row["status"], row["attempts"]) == ("parked", attempts)
    assert row["reason"].startswith(f"gave up after {attempts} attempts: POST http://")
    assert "HTTP 503" in row["reason"]
    assert "parked after 6 attempts" in caplog.text


def test_connection_errors_and_redirects_are_failures(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    send_webhook(runtime, f"http://127.0.0.1:{free_port()}/hook", {}, key="nobody-home",
                 secret=SECRET)
    with Receiver(statuses=(302,)).running() as receiver:
        send_webhook(runtime, receiver.url, {}, key="moved", secret=SECRET)
        jobs_of(platform).drain()
    refused, moved = deliveries(runtime)
    assert refused["status"] == "retrying" and "ConnectionRefusedError" in refused["reason"]
    assert moved["status"] == "retrying" and "HTTP 302" in moved["reason"]
    send_webhook(runtime, "ftp://example.com/x", {}, key="ftp")
    jobs_of(platform).drain()
    assert deliveries(runtime)[-1]["status"] == "parked"  # a bad URL is never retried


def test_the_same_key_posts_once_and_a_finished_attempt_never_reruns(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    jobs = jobs_of(platform)
    with Receiver().running() as receiver:
        first = send_webhook(runtime, receiver.url, {"v": 1}, key="once", secret=SECRET)
        second = send_webhook(runtime, receiver.url, {"v": 2}, key="once", secret=SECRET)
        jobs.drain()
        assert second.duplicate and second.id == first.id
        # a redelivered job (at least once) for the finished attempt changes nothing
        jobs.enqueue("deliveries.attempt", {"tenant": "t1", "delivery": first.id,
                                            "attempt": 1})
        jobs.drain()
        assert len(receiver.calls) == 1


def test_the_default_secret_comes_from_the_settings(make_platform) -> None:
    platform = platform_with(make_platform, webhook_secret="from-env")
    runtime = platform.runtime("t1")
    with Receiver().running() as receiver:
        send_webhook(runtime, receiver.url, {}, key="k")
        jobs_of(platform).drain()
        [call] = receiver.calls
    assert verify_signature("from-env", call.headers[SIGNATURE_HEADER], call.body)
    derived = platform_with(make_platform, tenants=()).settings.signing_secret
    assert derived != platform.settings.secret_key and len(derived) == 64


def test_a_webhook_in_the_callers_transaction_goes_at_the_next_sweep(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    with Receiver().running() as receiver:
        with runtime.begin() as connection:
            send_webhook(runtime, receiver.url, {}, key="tx", secret=SECRET,
                         connection=connection)
        assert jobs_of(platform).drain() == 0
        assert step(platform) == 1
        assert len(receiver.calls) == 1


def test_secrets_stay_out_of_job_payloads(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    jobs = jobs_of(platform)
    send_webhook(runtime, f"http://127.0.0.1:{free_port()}/", {}, key="s", secret=SECRET)
    queued = list(jobs.queue._queue)
    assert queued == [("deliveries.attempt", {"delivery": 1, "attempt": 1, "tenant": "t1"})]
    jobs.drain()
    assert SECRET not in json.dumps([r["payload"] for r in pending_rows(runtime)])


# -- the administrators' routes ----------------------------------------------------------------

def token_for(runtime: Any, username: str, roles: tuple[str, ...]) -> str:
    with runtime.begin() as connection:
        user_id = create_user(connection, username)
        set_roles(connection, user_id, roles)
        return issue_token(connection, user_id, "tests")


def test_parked_deliveries_are_listed_for_administrators_and_retried(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    client = create_app(platform.settings, platform).test_client()
    admin = {"Authorization": f"Bearer {token_for(runtime, 'root', ('administrator',))}"}
    clerk = {"Authorization": f"Bearer {token_for(runtime, 'clerk', ())}"}
    base = "/t/t1/api/v1/_automation/deliveries"
    with Receiver(statuses=(500,) * (len(BACKOFF) + 1)).running() as receiver, \
            Receiver().running() as healthy:
        parked = send_webhook(runtime, receiver.url, {}, key="p", secret=SECRET)
        send_webhook(runtime, healthy.url, {}, key="fine", secret=SECRET)
        jobs_of(platform).drain()
        for wait in BACKOFF:
            platform.clock.advance(wait)
            step(platform)
        answer = client.get(f"{base}?status=parked", headers=admin)
        assert answer.status_code == 200, answer.json
        [item] = answer.json["items"]
        assert (item["id"], item["status"], item["key"], item["channel"]) == (
            parked.id, "parked", "p", "webhook")
        assert "message" not in item and SECRET not in answer.text
        assert len(client.get(base, headers=admin).json["items"]) == 2

        assert client.get(base, headers=clerk).status_code == 403
        assert client.get(base).status_code == 401
        bad = client.get(f"{base}?status=lost", headers=admin)
        assert bad.status_code == 400 and bad.content_type == "application/problem+json"
        assert client.post(f"{base}/{parked.id}/retry", headers=clerk).status_code == 403
        assert client.post(f"{base}/999/retry", headers=admin).status_code == 404
        sent = next(i for i in client.get(base, headers=admin).json["items"]
                    if i["key"] == "fine")
        conflict = client.post(f"{base}/{sent['id']}/retry", headers=admin)
        assert conflict.status_code == 409 and "only parked or failed" in conflict.json["detail"]

        retried = client.post(f"{base}/{parked.id}/retry", headers=admin)
        assert retried.status_code == 202
        assert (retried.json["status"], retried.json["attempts"]) == ("queued", 0)
        calls = len(receiver.calls)
        jobs_of(platform).drain()
        assert len(receiver.calls) == calls + 1
    row = next(r for r in deliveries(runtime) if r["id"] == parked.id)
    assert (row["status"], row["attempts"]) == ("sent", 1)
    assert client.get(f"{base}?status=parked", headers=admin).json["items"] == []


def test_the_delivery_routes_are_in_the_administrators_openapi(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    client = create_app(platform.settings, platform).test_client()
    admin = {"Authorization": f"Bearer {token_for(runtime, 'root', ('administrator',))}"}
    clerk = {"Authorization": f"Bearer {token_for(runtime, 'clerk', ())}"}
    url = "/t/t1/api/v1/openapi.json"
    paths = client.get(url, headers=admin).json["paths"]
    assert "get" in paths["/api/v1/_automation/deliveries"]
    assert "post" in paths["/api/v1/_automation/deliveries/{id}/retry"]
    assert "/api/v1/_automation/deliveries" not in client.get(url, headers=clerk).json["paths"]


@pytest.mark.parametrize("timeout", [0.5])
def test_a_slow_receiver_times_out(make_platform, timeout: float) -> None:
    import threading

    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    hold = threading.Event()
    with Receiver(hold=hold).running() as receiver:
        send_webhook(runtime, receiver.url, {}, key="slow", secret=SECRET, timeout=timeout)
        started = time.monotonic()
        jobs_of(platform).drain()
        elapsed = time.monotonic() - started
        hold.set()
    [row] = deliveries(runtime)
    assert row["status"] == "retrying" and "timed out" in row["reason"]
    assert elapsed < 10
