"""Settings of one metacrm installation, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    """Where definitions and data live.

    ``database_url`` None means the embedded default: SQLite files under ``var/``
    (``platform.db`` plus one file per tenant). A PostgreSQL URL means one schema
    per tenant in that database.
    """

    root: Path
    var_dir: Path
    database_url: str | None = None
    secret_key: str = "dev-only-secret"
    base_domain: str | None = None

    @classmethod
    def from_env(cls, root: Path | str | None = None) -> Settings:
        base = Path(root or os.environ.get("METACRM_ROOT", ".")).resolve()
        var = Path(os.environ.get("METACRM_VAR", base / "var")).resolve()
        return cls(base, var, os.environ.get("METACRM_DATABASE_URL") or None,
                   os.environ.get("METACRM_SECRET_KEY", "dev-only-secret"),
                   os.environ.get("METACRM_BASE_DOMAIN") or None)

    @property
    def is_postgres(self) -> bool:
        return bool(self.database_url) and self.database_url.startswith("postgresql")
