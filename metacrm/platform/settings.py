"""Settings of one metacrm installation, read from the environment."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    """Where definitions and data live.

    ``database_url`` None means the embedded default: SQLite files under ``var/``
    (``platform.db`` plus one file per tenant). A PostgreSQL URL means one schema
    per tenant in that database.

    ``broker_url`` None runs jobs in-process (`metacrm run`); a ``redis://`` or
    ``amqp://`` URL sends them to Celery workers (`metacrm worker`, `metacrm beat`).
    ``smtp_url`` None writes e-mail as .eml files under the outbox folder.
    """

    root: Path
    var_dir: Path
    database_url: str | None = None
    secret_key: str = "dev-only-secret"
    base_domain: str | None = None
    broker_url: str | None = None
    queue: str = "metacrm"
    """The Celery queue jobs go to (on Redis, also the prefix of every broker key)."""
    broker_visibility_timeout: int = 3600
    """Redis only: seconds before an unacknowledged job is handed to another worker."""
    sweep_seconds: float = 5.0
    """How often beat sweeps the delayed-work table for due rows."""
    smtp_url: str | None = None
    mail_from: str = "metacrm@localhost"
    outbox_dir: Path | None = None
    """Where outbox channels write (default ``var/outbox``)."""
    webhook_secret: str | None = None
    secure_cookies: bool = False
    """Admin session cookies always `Secure` (else only on HTTPS requests)."""

    @classmethod
    def from_env(cls, root: Path | str | None = None) -> Settings:
        base = Path(root or os.environ.get("METACRM_ROOT", ".")).resolve()
        var = Path(os.environ.get("METACRM_VAR", base / "var")).resolve()
        env = os.environ.get
        outbox = env("METACRM_OUTBOX")
        return cls(base, var, env("METACRM_DATABASE_URL") or None,
                   env("METACRM_SECRET_KEY", "dev-only-secret"),
                   env("METACRM_BASE_DOMAIN") or None,
                   broker_url=env("METACRM_BROKER_URL") or None,
                   queue=env("METACRM_QUEUE") or "metacrm",
                   broker_visibility_timeout=int(env("METACRM_BROKER_VISIBILITY_TIMEOUT")
                                                 or 3600),
                   sweep_seconds=float(env("METACRM_SWEEP_SECONDS") or 5.0),
                   smtp_url=env("METACRM_SMTP_URL") or None,
                   mail_from=env("METACRM_MAIL_FROM") or "metacrm@localhost",
                   outbox_dir=Path(outbox).resolve() if outbox else None,
                   webhook_secret=env("METACRM_WEBHOOK_SECRET") or None,
                   secure_cookies=(env("METACRM_SECURE_COOKIES") or "").lower()
                   in ("1", "true", "yes"))

    @property
    def is_postgres(self) -> bool:
        return bool(self.database_url) and self.database_url.startswith("postgresql")

    @property
    def outbox(self) -> Path:
        """The folder outbox channels write into."""
        return self.outbox_dir or self.var_dir / "outbox"

    @property
    def signing_secret(self) -> str:
        """The webhook signing secret: $METACRM_WEBHOOK_SECRET, or one derived from the
        secret key (never the secret key itself: receivers hold this one)."""
        if self.webhook_secret:
            return self.webhook_secret
        return hmac.new(self.secret_key.encode(), b"metacrm-webhooks", "sha256").hexdigest()
