"""How the rules engine behaves: limits, retries and batches (per platform, per tenant).

Defaults live in :class:`RuleSettings`; a platform may replace them
(``platform.extensions["rules.settings"] = RuleSettings(...)``) and a tenant may override
any of them in ``tenant.yaml``::

    settings:
      rules: {depth_limit: 3, max_attempts: 8}
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

SETTINGS_KEY = "rules.settings"


@dataclass(frozen=True, slots=True)
class RuleSettings:
    depth_limit: int = 5
    """Changes made by automation `depth_limit` levels deep trigger no more rules."""
    max_attempts: int = 5
    """A run that fails this many times is parked for an administrator."""
    backoff: float = 30.0
    """Seconds before the first retry; each later retry waits twice as long..."""
    backoff_cap: float = 3600.0
    """...but never longer than this."""
    lease: float = 600.0
    """A claimed run not finished after this many seconds is taken back by the sweep
    (its worker died)."""
    grace: float = 60.0
    """The sweep hands out pending runs older than this (their job was lost) and retries
    that are due."""
    batch: int = 10_000
    """Timers fired per statement, and run ids handed out per sweep."""
    job_size: int = 200
    """Run ids per `rules.run` job."""

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return min(self.backoff * 2 ** max(attempts - 1, 0), self.backoff_cap)


def utc_now(platform: Any) -> dt.datetime:
    """The platform's clock as an aware UTC datetime (how the engine stores times)."""
    now = platform.now()
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def settings_for(runtime: Any) -> RuleSettings:
    """The platform's settings with the tenant's `settings.rules` overrides (cached per
    runtime version)."""
    platform = runtime.platform
    base = (platform.extensions.get(SETTINGS_KEY) if platform is not None else None) \
        or DEFAULTS
    cached = runtime.extras.get(SETTINGS_KEY)
    if cached is not None and cached[0] is base:
        return cached[1]
    overrides = dict((runtime.config.settings or {}).get("rules") or {})
    known = {f.name for f in dataclasses.fields(RuleSettings)}
    found = dataclasses.replace(base, **{k: v for k, v in overrides.items() if k in known})
    runtime.extras[SETTINGS_KEY] = (base, found)
    return found


DEFAULTS = RuleSettings()
