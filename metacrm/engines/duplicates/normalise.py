"""Normalisers: the canonical form a match key compares (see docs/language.md#duplicates).

Each takes a stored or submitted value and returns its key text, or None when the value
gives no key (empty, or nothing left after normalising): a record without a value never
matches another record without one.

    exact    the value as stored (text, number or boolean as text)
    text     NFKC, case-folded, runs of spaces collapsed, trimmed
    email    trimmed and lower-cased (gmail's dots and +tags are kept: they may be people)
    phone    E.164 (+8613800138000) via `phonenumbers`, local numbers read in the tenant's
             region; what does not parse keeps its digits
    company  NFKC, case-folded, punctuation and legal suffixes (Ltd, Inc, Co., GmbH,
             有限公司, 股份有限公司, 公司, 株式会社 ...) removed, spaces dropped
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import phonenumbers

Normaliser = Callable[[Any, "str | None"], "str | None"]

_SPACES = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"[^\w\s]|_", re.UNICODE)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_DIGITS = re.compile(r"[0-9]")
LATIN_SUFFIXES = frozenset({
    "ltd", "limited", "inc", "incorporated", "co", "company", "corp", "corporation", "llc",
    "llp", "lp", "plc", "gmbh", "ag", "kg", "sa", "sarl", "sas", "srl", "spa", "bv", "nv",
    "oy", "ab", "as", "pte", "pty", "kk", "bhd", "sdn", "holdings"})
"""Trailing words that only say what legal form a company has (removed from the end)."""
CJK_SUFFIXES = ("股份有限公司", "有限责任公司", "有限責任公司", "有限公司", "株式会社",
                "有限会社", "合同会社", "公司")
"""Legal forms written in CJK, removed from the end (株式会社 from the start as well)."""
CJK_PREFIXES = ("株式会社", "有限会社", "合同会社")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def exact(value: Any, region: str | None = None) -> str | None:
    text = _text(value)
    return text if text else None


def text(value: Any, region: str | None = None) -> str | None:
    raw = _text(value)
    if raw is None:
        return None
    folded = _SPACES.sub(" ", unicodedata.normalize("NFKC", raw).casefold()).strip()
    return folded or None


def email(value: Any, region: str | None = None) -> str | None:
    raw = _text(value)
    if raw is None:
        return None
    return raw.strip().lower() or None


def phone(value: Any, region: str | None = None) -> str | None:
    raw = _text(value)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    if _E164.match(raw) and _plain_e164(raw):
        return raw
    compact = raw.translate(_FORMATTING)
    if compact.startswith("+"):
        if _E164.match(compact) and _plain_e164(compact):
            return compact
    elif region and _NATIONAL.match(compact):
        found = _national(compact, region)
        if found is not None:
            return found
    return _parsed_phone(raw, region)


_FORMATTING = str.maketrans("", "", " -.()\u00a0")
_NATIONAL = re.compile(r"^[1-9][0-9]{2,16}$")


def _national(digits: str, region: str) -> str | None:
    """A national number written with digits only, in E.164, when phonenumbers would
    read it exactly so: no trunk, carrier or international prefix to strip, a possible
    length, and the region's general pattern matched in full (else None: parse it)."""
    rules = _region_rules(region)
    if rules is None:
        return None
    code, trunk, for_parsing, international, general, lengths = rules
    if (trunk and digits.startswith(trunk)) or len(digits) not in lengths:
        return None
    if (for_parsing is not None and for_parsing.match(digits)) or \
            (international is not None and international.match(digits)):
        return None
    if not general.fullmatch(digits):
        return None
    return code + digits


@lru_cache(maxsize=512)
def _region_rules(region: str) -> tuple[Any, ...] | None:
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
    if meta is None or meta.general_desc is None or \
            meta.general_desc.national_number_pattern is None or meta.country_code is None:
        return None
    return ("+" + str(meta.country_code), meta.national_prefix or "",
            re.compile(meta.national_prefix_for_parsing)
            if meta.national_prefix_for_parsing else None,
            re.compile(meta.international_prefix) if meta.international_prefix else None,
            re.compile(meta.general_desc.national_number_pattern),
            frozenset(meta.general_desc.possible_length or ()))


def _plain_e164(raw: str) -> bool:
    """Whether `raw` (+digits) is already canonical: a known country code followed by a
    national number that does not start with a trunk prefix 0 (phonenumbers would keep
    such a number as it is; anything else goes through the parser)."""
    for size in (1, 2, 3):
        code = int(raw[1:1 + size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return raw[1 + size:2 + size] != "0"
    return False


@lru_cache(maxsize=4096)
def _parsed_phone(raw: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    digits = "".join(_DIGITS.findall(unicodedata.normalize("NFKC", raw)))
    return digits if len(digits) >= 3 else None


def company(value: Any, region: str | None = None) -> str | None:
    raw = _text(value)
    if raw is None:
        return None
    folded = unicodedata.normalize("NFKC", raw).casefold()
    words = _PUNCTUATION.sub(" ", folded).split()
    while len(words) > 1 and words[-1] in LATIN_SUFFIXES:
        words.pop()
    name = "".join(words)
    changed = True
    while changed:
        changed = False
        for suffix in CJK_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, changed = name[: -len(suffix)], True
        for prefix in CJK_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name, changed = name[len(prefix):], True
    return name or None


NORMALISERS: Mapping[str, Normaliser] = {
    "exact": exact, "text": text, "email": email, "phone": phone, "company": company}
"""By name, as match keys declare them (`ir.NORMALISERS`)."""


# -- the tenant's phone region ---------------------------------------------------------------

def phone_region(settings: Mapping[str, Any], locale: str | None,
                 timezone: str | None) -> str | None:
    """The region local phone numbers are read in: the tenant setting `phone_region`
    (ISO 3166 code, e.g. TW), else the region of the tenant's locale (zh-Hant-TW → TW,
    en-US → US), else the country of its timezone (Asia/Shanghai → CN), else None."""
    configured = settings.get("phone_region") if settings else None
    if isinstance(configured, str) and configured.strip():
        return configured.strip().upper()
    for part in reversed((locale or "").split("-")[1:]):
        if len(part) == 2 and part.isalpha():
            return part.upper()
    if timezone:
        return _timezone_countries().get(timezone)
    return None


@lru_cache(maxsize=1)
def _timezone_countries() -> dict[str, str]:
    """Timezone name → country code, from the system's zone.tab (tzdata)."""
    import zoneinfo

    found: dict[str, str] = {}
    for base in zoneinfo.TZPATH:
        path = Path(base) / "zone.tab"
        if not path.is_file():
            continue
        for line in path.read_text("utf-8", errors="replace").splitlines():
            if line.startswith("#") or not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) >= 3:
                found.setdefault(parts[2], parts[0])
        break
    found.setdefault("Asia/Shanghai", "CN")
    found.setdefault("Asia/Taipei", "TW")
    found.setdefault("Asia/Hong_Kong", "HK")
    found.setdefault("Asia/Singapore", "SG")
    found.setdefault("Asia/Tokyo", "JP")
    return found
