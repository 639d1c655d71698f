"""Webhooks: JSON posted to a URL, signed with HMAC-SHA256, retried with backoff.

Every call carries::

    Content-Type: application/json
    X-Metacrm-Delivery: <key>                 (the same on every retry: dedup by it)
    X-Metacrm-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">

A receiver checks the signature with `verify_signature` (or the same few lines in its
own language). A non-2xx answer, a redirect, a timeout or a connection error is a
failure: the delivery is retried after 10 s, 1 min, 5 min, 30 min and 2 h (scheduled in
the database, not in a broker), then parked in `_metacrm_deliveries`, where an
administrator sees it (``GET /api/v1/_automation/deliveries?status=parked``) and can
retry it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from .channels import Channel, ChannelError, Delivery, Message, SendContext, channels_of

SIGNATURE_HEADER = "X-Metacrm-Signature"
DELIVERY_HEADER = "X-Metacrm-Delivery"
TIMEOUT = 10.0
TOLERANCE = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Metacrm-Signature` header value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(secret: str, header: str | None, body: bytes,
                     tolerance: float = TOLERANCE, now: float | None = None) -> bool:
    """True when `header` (the `X-Metacrm-Signature` value) signs `body` with `secret`
    and its timestamp is within `tolerance` seconds of `now` (default: the time now).

    Pass the raw request body, before any JSON parsing. Several ``v1=`` entries (during a
    secret rotation) are accepted if any matches.
    """
    if not header:
        return False
    timestamp: int | None = None
    signatures = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def post_webhook(url: str, body: bytes, secret: str, key: str,
                 timeout: float = TIMEOUT) -> int:
    """POST `body` once, signed; the HTTP status of a 2xx answer, else ChannelError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelError(f"{url!r} is not an http(s) URL", retryable=False)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" \
        else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": "metacrm-webhooks/1",
               DELIVERY_HEADER: key, SIGNATURE_HEADER: sign(secret, body, int(time.time()))}
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        snippet = response.read(500).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        raise ChannelError(f"POST {parts.scheme}://{parts.netloc}{parts.path}: "
                           f"{type(exc).__name__}: {exc}") from exc
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        raise ChannelError(f"POST {parts.scheme}://{parts.netloc}{parts.path}: HTTP "
                           f"{response.status}" + (f": {snippet[:200]}" if snippet else ""))
    return response.status


class WebhookChannel(Channel):
    """Messages whose `to` is a URL and `body` a JSON text (see `send_webhook`)."""

    name = "webhook"
    description = "Signed JSON POSTs to a URL, retried with backoff, then parked."

    def send(self, message: Message, context: SendContext) -> str | None:
        secret = str(message.data.get("secret") or context.settings.signing_secret)
        status = post_webhook(message.to, message.body.encode("utf-8"), secret,
                              message.key or "", float(message.data.get("timeout", TIMEOUT)))
        return f"HTTP {status}"


def send_webhook(runtime: Any, url: str, payload: Mapping[str, Any], *, key: str,
                 secret: str | None = None, connection: sa.Connection | None = None,
                 timeout: float = TIMEOUT) -> Delivery:
    """Post `payload` (JSON) to `url` in the background, signed with `secret` (default:
    the installation's webhook secret), retried with backoff and parked after the last
    attempt. `key` identifies the call: the same key twice sends once, and receivers
    see it as `X-Metacrm-Delivery`. With `connection`, the call commits with the
    caller's transaction (and goes out at the next sweep)."""
    body = json.dumps(dict(payload), ensure_ascii=False, separators=(",", ":"), default=str)
    data: dict[str, Any] = {}
    if secret:
        data["secret"] = secret
    if timeout != TIMEOUT:
        data["timeout"] = timeout
    message = Message("webhook", url, body=body, key=key, data=data)
    return channels_of(runtime.platform).queue(runtime, message, connection=connection)
