"""Outbox files: what the embedded default writes instead of sending."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any

from .base import Message, SendContext

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 80) -> str:
    """`text` as a file-name part (letters, digits, dot, dash, underscore)."""
    return _UNSAFE.sub("_", text)[:limit] or "message"


def write_file(folder: Path, name: str, content: bytes) -> Path:
    """Write `content` to folder/name atomically (a reader never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    temporary.write_bytes(content)
    os.replace(temporary, target)
    return target


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line, locked against other threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.write(line)
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OutboxAdapter:
    """The default SMS and push adapter: one JSON line per message in
    ``var/outbox/<tenant>/<channel>.jsonl``."""

    def deliver(self, message: Message, context: SendContext) -> str:
        path = context.outbox(message.channel).with_suffix(".jsonl")
        append_line(path, {"at": dt.datetime.now(dt.UTC).isoformat(), **message.to_dict()})
        return str(path)
