"""Durations written in definitions ("30m", "4h", "1d12h", "-2d") as whole seconds.

One parser for every place the language takes a length of time: SLA targets, rule
delays, action parameters. A day is 24 hours and a week 7 days (business time is the
SLA engine's business, not the parser's).
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
"""Seconds per unit, largest first: units are written in this order, each at most once."""
LONGEST = 36_600 * 86_400  # about 100 years
PATTERN = r"^-?(?=[0-9])([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
"""The shape of a duration (also used by the JSON Schemas)."""
_DURATION = re.compile(PATTERN)


def parse_duration(text: str, *, signed: bool = False) -> int:
    """The number of seconds `text` names; ValueError saying why when it names none.

    ``parse_duration("1d12h") == 129600``; a leading ``-`` (only with `signed`) counts
    backwards, e.g. a rule that fires two days *before* a date.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration is text like 30m, 4h, 3d, 1d12h or 2w, not {text!r}")
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"`{text}` is not a duration like 30m, 4h, 3d, 1d12h or 2w "
                         "(units w, d, h, m, s, largest first)")
    seconds = sum(int(part[:-1]) * UNITS[part[-1]] for part in match.groups() if part)
    if seconds > LONGEST:
        raise ValueError(f"`{text}` is longer than 100 years")
    if text.strip().startswith("-"):
        if not signed:
            raise ValueError(f"`{text}` is negative; only a rule's `delay` may count backwards")
        seconds = -seconds
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest text that `parse_duration` reads back as `seconds` (``129600`` → ``1d12h``)."""
    sign, rest = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in UNITS.items():
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + ("".join(parts) or "0s")
