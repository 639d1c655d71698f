"""Channels: e-mail over a real SMTP server on loopback (aiosmtpd) or into the outbox, SMS
and push outboxes, consent and do-not-contact at send time, the delivery log's keys, and
plugin channels; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from jobsworld import platform_with

from metacrm.hookspecs import hookimpl
from metacrm.platform.channels import (
    DELIVERIES,
    ChannelError,
    ChannelRegistry,
    EmailChannel,
    Message,
    SmsChannel,
    UnknownChannel,
    channels_of,
    parse_smtp_url,
)
from metacrm.platform.channels.registry import LEASE
from metacrm.platform.jobs import SCHEDULED, jobs_of
from metacrm.platform.records import RecordService
from metacrm.platform.systables import runtime_system_tables


def delivery_rows(runtime: Any) -> list[dict[str, Any]]:
    table = runtime_system_tables(runtime).table(DELIVERIES)
    with runtime.connect() as connection:
        return [dict(r) for r in connection.execute(
            sa.select(table).order_by(table.c.id)).mappings()]


def scheduled_rows(runtime: Any) -> list[dict[str, Any]]:
    table = runtime_system_tables(runtime).table(SCHEDULED)
    with runtime.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(table)).mappings()]


def outbox_files(platform: Any, channel: str = "email") -> list[Path]:
    folder = Path(platform.settings.outbox) / "t1" / channel
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def read_lines(platform: Any, channel: str) -> list[dict[str, Any]]:
    path = Path(platform.settings.outbox) / "t1" / f"{channel}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


# -- the outbox (the embedded default) -------------------------------------------------------------

def test_email_without_smtp_goes_to_the_outbox_as_an_eml_file(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    message = Message("email", "ann@example.com", "Welcome", "Hello Ann",
                      html="<p>Hello <b>Ann</b></p>", key="welcome:1")
    delivery = channels_of(platform).send(runtime, message)
    assert (delivery.status, delivery.ok, delivery.duplicate, delivery.attempts) == (
        "sent", True, False, 1)
    [path] = outbox_files(platform)
    assert path.parent == make_platform.var_dir / "outbox" / "t1" / "email"
    assert delivery.reference == str(path)
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert (mail["To"], mail["Subject"], mail["From"]) == (
        "ann@example.com", "Welcome", "metacrm@localhost")
    assert mail["Message-ID"] == "<welcome_1@localhost>"
    assert mail.get_body(("plain",)).get_content().strip() == "Hello Ann"
    assert "<b>Ann</b>" in mail.get_body(("html",)).get_content()
    [row] = delivery_rows(runtime)
    assert (row["channel"], row["recipient"], row["subject"], row["status"], row["key"],
            row["attempts"]) == ("email", "ann@example.com", "Welcome", "sent", "welcome:1", 1)


def test_a_second_send_with_the_same_key_sends_nothing(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    first = registry.send(runtime, Message("email", "ann@example.com", "Hi", key="k"))
    again = registry.send(runtime, Message("email", "bob@example.com", "Other", key="k"))
    assert again.duplicate and again.id == first.id and again.to == "ann@example.com"
    assert len(outbox_files(platform)) == 1 and len(delivery_rows(runtime)) == 1


def test_messages_without_a_key_get_one(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    first = registry.send(runtime, Message("email", "ann@example.com", "Hi"))
    second = registry.send(runtime, Message("email", "ann@example.com", "Hi"))
    assert first.key != second.key and first.key.startswith("email:")
    assert len(outbox_files(platform)) == 2


def test_sms_and_push_write_json_lines_to_their_outbox(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    sms = registry.send(runtime, Message("sms", "+886912345678", body="Your code is 1234",
                                         key="otp:1"))
    push = registry.send(runtime, Message("push", "device-token-1", "New lead", "Ann Lee",
                                          key="push:1", data={"lead": 7}))
    assert sms.ok and push.ok
    [line] = read_lines(platform, "sms")
    assert (line["to"], line["body"], line["key"], line["tenant"]) == (
        "+886912345678", "Your code is 1234", "otp:1", "t1")
    [line] = read_lines(platform, "push")
    assert (line["to"], line["subject"], line["data"]) == ("device-token-1", "New lead",
                                                           {"lead": 7})


@pytest.mark.parametrize(("channel", "to", "why"), [
    ("sms", "0912345678", "not a phone number in E.164 form"),
    ("sms", "+1234", "not a possible phone number"),
    ("email", "not-an-address", "is not an e-mail address"),
    ("push", " ", "needs a device token"),
])
def test_malformed_recipients_fail_without_retries(make_platform, channel: str, to: str,
                                                   why: str) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    failed = registry.send(runtime, Message(channel, to, "x", "y"))
    assert failed.status == "failed" and why in failed.reason
    parked = registry.queue(runtime, Message(channel, to, "x", "y"))
    jobs_of(platform).drain()
    [_, row] = delivery_rows(runtime)
    assert row["id"] == parked.id and row["status"] == "parked" and why in row["reason"]
    assert scheduled_rows(runtime) == []  # a malformed address is never retried


def test_an_unknown_channel_is_refused_at_once(make_platform) -> None:
    platform = platform_with(make_platform)
    with pytest.raises(UnknownChannel, match="there is no channel 'fax'"):
        channels_of(platform).send(platform.runtime("t1"), Message("fax", "+1"))


# -- SMTP on loopback ----------------------------------------------------------------------------

class Inbox:
    """An aiosmtpd handler keeping what it receives; refuses recipients at `blocked`."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.endswith("@blocked.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = (auth_data.login, auth_data.password) == (b"crm", b"p@ss word")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    """A real SMTP server on 127.0.0.1 with STARTTLS (a self-signed certificate) and
    AUTH LOGIN/PLAIN for user `crm`."""
    import ssl

    from jobsworld import free_port

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=tls,
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port, cert
    finally:
        controller.stop()


def test_email_goes_over_smtp_with_starttls_and_login(make_platform, smtp_server) -> None:
    inbox, port, cert = smtp_server
    url = f"smtp://crm:p%40ss%20word@127.0.0.1:{port}?starttls=true&cafile={cert}"
    platform = platform_with(make_platform, smtp_url=url, mail_from="crm@acme.example")
    runtime = platform.runtime("t1")
    delivery = channels_of(platform).send(runtime, Message(
        "email", "Ann Lee <ann@example.com>", "Your order", "Thanks!", key="order:42"))
    assert delivery.ok, delivery.reason
    assert delivery.reference == "<order_42@acme.example>"
    [envelope] = inbox.envelopes
    assert envelope.mail_from == "crm@acme.example"
    assert envelope.rcpt_tos == ["ann@example.com"]
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert (mail["Subject"], mail["Message-ID"]) == ("Your order", "<order_42@acme.example>")
    assert outbox_files(platform) == []


def test_smtp_login_failure_and_refused_recipients(make_platform, smtp_server) -> None:
    _, port, _ = smtp_server
    bad_login = platform_with(make_platform, smtp_url=f"smtp://crm:wrong@127.0.0.1:{port}")
    delivery = channels_of(bad_login).send(bad_login.runtime("t1"),
                                           Message("email", "a@example.com", "x"))
    assert delivery.status == "failed" and "SMTP login failed (535)" in delivery.reason

    platform = platform_with(make_platform, smtp_url=f"smtp://127.0.0.1:{port}")
    runtime = platform.runtime("t1")
    refused = channels_of(platform).queue(runtime, Message("email", "x@blocked.example", "x"))
    jobs_of(platform).drain()
    [*_, row] = delivery_rows(runtime)
    assert row["id"] == refused.id and row["status"] == "parked"  # a 5xx is for good
    assert "refused the recipient" in row["reason"] and "550" in row["reason"]


def test_an_unreachable_smtp_server_is_retried_with_backoff(make_platform) -> None:
    from jobsworld import free_port

    platform = platform_with(make_platform, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    runtime = platform.runtime("t1")
    delivery = channels_of(platform).queue(runtime, Message("email", "a@example.com", "x"))
    jobs_of(platform).drain()
    [row] = delivery_rows(runtime)
    assert (row["status"], row["attempts"]) == ("retrying", 1)
    assert "SMTP server 127.0.0.1" in row["reason"]
    [next_attempt] = scheduled_rows(runtime)
    assert next_attempt["payload"] == {"delivery": delivery.id, "attempt": 2}


def test_smtp_urls() -> None:
    server = parse_smtp_url("smtps://u%40x:p%3Aw@mail.example?timeout=5")
    assert (server.host, server.port, server.security, server.username, server.password,
            server.timeout) == ("mail.example", 465, "ssl", "u@x", "p:w", 5.0)
    assert parse_smtp_url("smtp://mail.example?starttls=1").port == 587
    assert parse_smtp_url("smtp://mail.example").security == "plain"
    assert parse_smtp_url("smtp://h?starttls=true&verify=false").tls_context().verify_mode == 0
    with pytest.raises(ValueError, match="not an SMTP URL"):
        parse_smtp_url("http://mail.example")


# -- consent and do-not-contact ------------------------------------------------------------------

def customer(runtime: Any, name: str, **values: Any) -> int:
    return RecordService(runtime).create("customer.customer", {"name": name, **values})["id"]


def consent(runtime: Any, customer_id: int, channel: str, status: str) -> None:
    RecordService(runtime).create("customer.consent", {"customer": customer_id,
                                                       "channel": channel, "status": status})


def test_consent_and_do_not_contact_are_checked_at_send_time(make_platform, caplog) -> None:
    caplog.set_level(logging.INFO, "metacrm.platform.channels")
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    ann = customer(runtime, "Ann")
    dnc = customer(runtime, "Dee", do_not_contact=True)
    consent(runtime, dnc, "email", "granted")

    def send(customer_id: int | None, channel: str = "email", to: str = "x@example.com"):
        return registry.send(runtime, Message(channel, to, "News", customer_id=customer_id))

    no_consent = send(ann)
    assert (no_consent.status, no_consent.refused) == ("refused", True)
    assert no_consent.reason == f"customer {ann} has given no consent to email messages"
    consent(runtime, ann, "email", "granted")
    assert send(ann).ok
    consent(runtime, ann, "email", "withdrawn")  # the latest consent counts
    assert send(ann).reason == f"customer {ann}'s consent to email messages is withdrawn"
    assert send(ann, "sms", "+886912345678").refused  # consent is per channel
    consent(runtime, ann, "sms", "granted")
    assert send(ann, "sms", "+886912345678").ok
    assert send(ann, "push", "token").ok  # push is not among the consent channels
    assert send(dnc).reason == f"customer {dnc} is marked do-not-contact"
    assert send(dnc, "push", "token").refused  # do-not-contact covers every channel
    assert send(None).ok  # not a customer: an employee, say
    assert send(99999).reason == "customer 99999 does not exist"
    assert len(outbox_files(platform)) == 2
    assert f"refused: customer {dnc} is marked do-not-contact" in caplog.text


def test_the_latest_consent_is_the_one_given_last(make_platform) -> None:
    """With an `at` field, a consent imported later but given earlier does not count
    over a newer one."""
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    ann = customer(runtime, "Ann")
    service = RecordService(runtime)
    service.create("customer.consent", {"customer": ann, "channel": "email",
                                        "status": "withdrawn", "at": "2030-01-01T08:00:00Z"})
    service.create("customer.consent", {"customer": ann, "channel": "email",
                                        "status": "granted", "at": "2029-06-01T08:00:00Z"})
    delivery = channels_of(platform).send(runtime, Message("email", "a@example.com", "x",
                                                           customer_id=ann))
    assert delivery.reason == f"customer {ann}'s consent to email messages is withdrawn"


def test_a_refused_message_is_logged_once_and_not_retried(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    ann = customer(runtime, "Ann", do_not_contact=True)
    registry = channels_of(platform)
    queued = registry.queue(runtime, Message("email", "ann@example.com", "Hi",
                                             customer_id=ann, key="promo:ann"))
    assert queued.status == "queued"
    jobs_of(platform).drain()
    [row] = delivery_rows(runtime)
    assert (row["status"], row["customer_id"], row["attempts"]) == ("refused", ann, 1)
    assert scheduled_rows(runtime) == [] and outbox_files(platform) == []
    again = registry.send(runtime, Message("email", "ann@example.com", "Hi",
                                           customer_id=ann, key="promo:ann"))
    assert again.duplicate and again.status == "refused"


def test_consent_is_checked_again_on_each_retry(make_platform) -> None:
    """A message queued while consent was granted is refused if it is withdrawn before
    the attempt."""
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    ann = customer(runtime, "Ann")
    consent(runtime, ann, "email", "granted")
    channels_of(platform).queue(runtime, Message("email", "a@example.com", "x",
                                                 customer_id=ann))
    consent(runtime, ann, "email", "withdrawn")
    jobs_of(platform).drain()
    assert [r["status"] for r in delivery_rows(runtime)] == ["refused"]


def test_tenants_without_consent_entities_are_not_checked(make_platform) -> None:
    make_platform.write({"metadata/modules/plain/module.yaml": "module: plain\nowner: x\n",
                         "metadata/modules/plain/entities/note.yaml":
                             "entity: note\nfields:\n  text: {type: string}\n",
                         "tenants/t3/tenant.yaml": "tenant: t3\nmodules: [plain]\n"})
    platform = platform_with(make_platform, tenants=("t3",))
    delivery = channels_of(platform).send(platform.runtime("t3"),
                                          Message("email", "a@example.com", "x", customer_id=5))
    assert delivery.ok


# -- queueing, the caller's transaction, recovery ------------------------------------------------

def test_a_message_queued_in_a_transaction_goes_with_it(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    with pytest.raises(RuntimeError), runtime.begin() as connection:
        registry.queue(runtime, Message("email", "a@example.com", "lost", key="lost"),
                       connection=connection)
        raise RuntimeError("the caller's write failed")
    with runtime.begin() as connection:
        registry.queue(runtime, Message("email", "a@example.com", "kept", key="kept"),
                       connection=connection)
    jobs = jobs_of(platform)
    assert jobs.drain() == 0  # nothing in memory: the sweep finds it in the database
    assert jobs.sweep() == 1 and jobs.drain() == 1
    assert [(r["key"], r["status"]) for r in delivery_rows(runtime)] == [("kept", "sent")]


def test_a_lost_job_is_recovered_after_the_lease(make_platform) -> None:
    """The embedded queue is memory: a process that stops loses its jobs. The recover job
    re-queues deliveries left queued past the lease; a duplicate attempt does nothing."""
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    registry = channels_of(platform)
    registry.queue(runtime, Message("email", "a@example.com", "x", key="lost-job"))
    jobs = jobs_of(platform)
    jobs.queue._queue.clear()  # the process stopped with the job in memory
    jobs.run("deliveries.recover", {})
    assert jobs.drain() == 0  # within the lease: it may still be on its way
    platform.clock.advance(LEASE.total_seconds() + 1)
    jobs.run("deliveries.recover", {})
    jobs.enqueue("deliveries.attempt", {"tenant": "t1", "delivery": 1, "attempt": 1})
    assert jobs.drain() == 2
    assert [(r["status"], r["attempts"]) for r in delivery_rows(runtime)] == [("sent", 1)]
    assert len(outbox_files(platform)) == 1


# -- plugin channels ---------------------------------------------------------------------------

class FakeSms:
    """A provider adapter: keeps what it was given; fails when told to."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.fail: str | None = None

    def deliver(self, message: Message, context: Any) -> str:
        if self.fail:
            raise ChannelError(self.fail)
        self.sent.append(message)
        return f"provider-{len(self.sent)}"


class SmsProviderPlugin:
    def __init__(self) -> None:
        self.adapter = FakeSms()

    @hookimpl
    def register_channels(self) -> list[Any]:
        return [SmsChannel(self.adapter)]


def test_a_plugin_channel_replaces_the_built_in_outbox(make_platform) -> None:
    plugin = SmsProviderPlugin()
    platform = platform_with(make_platform, plugin)
    runtime = platform.runtime("t1")
    delivery = channels_of(platform).send(runtime, Message("sms", "+886912345678",
                                                           body="hi", key="s1"))
    assert (delivery.status, delivery.reference) == ("sent", "provider-1")
    assert [m.key for m in plugin.adapter.sent] == ["s1"]
    assert read_lines(platform, "sms") == []
    plugin.adapter.fail = "provider says 503"
    failed = channels_of(platform).send(runtime, Message("sms", "+886912345678", key="s2"))
    assert (failed.status, failed.reason) == ("failed", "provider says 503")
    plugin.adapter.fail = None
    assert channels_of(platform).send(runtime, Message("sms", "+886912345678",
                                                       key="s2")).ok  # same key, again


def test_two_channels_of_one_name_are_refused(make_platform) -> None:
    platform = platform_with(make_platform, tenants=())
    with pytest.raises(ValueError, match="channel 'sms' is registered twice"):
        ChannelRegistry(platform, [SmsChannel(FakeSms()), SmsChannel(FakeSms())])
    registry = ChannelRegistry(platform, [EmailChannel(), SmsChannel(FakeSms()),
                                          SmsChannel()])
    assert not registry.get("sms").replaceable and "email" in registry


def test_now_is_the_platform_clock(make_platform) -> None:
    platform = platform_with(make_platform)
    runtime = platform.runtime("t1")
    channels_of(platform).send(runtime, Message("email", "a@example.com", "x"))
    [row] = delivery_rows(runtime)
    sent_at = row["sent_at"].replace(tzinfo=dt.UTC) if row["sent_at"].tzinfo is None \
        else row["sent_at"]
    assert sent_at == platform.now()
