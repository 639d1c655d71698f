"""RFC 9457 problem details: every error the web layer returns is one of these."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

PROBLEM_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None, *, type_: str = "about:blank",
            **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def wsgi_problem(start_response: Any, status: int, title: str, detail: str | None = None,
                 **extra: Any) -> Iterable[bytes]:
    """Answer a raw WSGI request with a problem+json body."""
    payload = json.dumps(problem(status, title, detail, **extra)).encode()
    reason = {400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", PROBLEM_TYPE),
                                          ("Content-Length", str(len(payload)))])
    return [payload]
