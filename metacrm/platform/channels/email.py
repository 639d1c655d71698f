"""The e-mail channel: SMTP when $METACRM_SMTP_URL is set, else .eml files in the outbox.

URL forms: ``smtp://host:25`` (plain), ``smtp://user:pass@host:587?starttls=true``
(STARTTLS), ``smtps://user:pass@host:465`` (TLS from the start). Options:
``timeout`` (seconds, default 30), ``verify=false`` (accept any certificate: tests
only), ``cafile`` (a CA bundle to trust). User and password are percent-decoded.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

from .base import Channel, ChannelError, Message, SendContext
from .outbox import safe_name, write_file

TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    security: str  # plain, starttls or ssl
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    verify: bool = True
    cafile: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def parse_smtp_url(url: str) -> SmtpServer:
    """An `SmtpServer` from ``smtp://`` or ``smtps://`` URL (ValueError if malformed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"not an SMTP URL: {parts.scheme}://{parts.hostname or ''} "
                         "(expected smtp://[user:pass@]host[:port][?starttls=true] or smtps://)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    starttls = query.get("starttls", "").lower() in TRUE
    security = "ssl" if parts.scheme == "smtps" else "starttls" if starttls else "plain"
    port = parts.port or {"ssl": 465, "starttls": 587, "plain": 25}[security]
    return SmtpServer(parts.hostname, port, security,
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None,
                      float(query.get("timeout", 30)),
                      query.get("verify", "true").lower() in TRUE, query.get("cafile"))


def build_email(message: Message, sender: str, key: str) -> EmailMessage:
    """The MIME message: text body, an HTML alternative when given, a Message-ID made
    from the delivery key (a receiver can spot a duplicate)."""
    _, address = parseaddr(message.to)
    if "@" not in address:
        raise ChannelError(f"{message.to!r} is not an e-mail address", retryable=False)
    mail = EmailMessage()
    mail["From"] = str(message.data.get("from") or sender)
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or "metacrm.local"
    mail["Message-ID"] = f"<{safe_name(key, 160)}@{domain}>"
    if message.data.get("reply_to"):
        mail["Reply-To"] = str(message.data["reply_to"])
    mail.set_content(message.body or "")
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


def smtp_send(server: SmtpServer, mail: EmailMessage) -> None:
    """Hand `mail` to the SMTP server; ChannelError says why not (5xx: not retryable)."""
    try:
        if server.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port,
                                                    timeout=server.timeout,
                                                    context=server.tls_context())
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        with client:
            if server.security == "starttls":
                client.starttls(context=server.tls_context())
            if server.username:
                client.login(server.username, server.password or "")
            client.send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise ChannelError(f"the SMTP server refused the recipient: {exc.recipients}",
                           retryable=not all(code >= 500 for code in codes)) from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise ChannelError(f"SMTP login failed ({exc.smtp_code})") from exc
    except smtplib.SMTPResponseException as exc:
        detail = exc.smtp_error.decode(errors="replace") if isinstance(
            exc.smtp_error, bytes) else str(exc.smtp_error)
        raise ChannelError(f"SMTP {exc.smtp_code}: {detail}",
                           retryable=exc.smtp_code < 500) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"SMTP server {server.host}:{server.port}: {exc}") from exc


class EmailChannel(Channel):
    """E-mail by SMTP, or to ``var/outbox/<tenant>/email/*.eml`` without an SMTP URL."""

    name = "email"
    description = "E-mail: SMTP ($METACRM_SMTP_URL) or .eml files in the outbox."
    replaceable = True

    def send(self, message: Message, context: SendContext) -> str | None:
        settings = context.settings
        key = message.key or "message"
        mail = build_email(message, settings.mail_from, key)
        if settings.smtp_url:
            try:
                server = parse_smtp_url(settings.smtp_url)
            except ValueError as exc:
                raise ChannelError(str(exc)) from exc
            smtp_send(server, mail)
            return str(mail["Message-ID"])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        path = write_file(context.outbox("email"), f"{stamp}-{safe_name(key)}.eml",
                          bytes(mail))
        return str(path)
