"""A CSV file's header mapped to an entity's fields, and cells read into field values.

A column names a field by its name or by its label in any locale, compared without case
or surrounding spaces (`E-mail`, `email` and `電子郵件` all mean `email`). Columns an export
writes but an import cannot take (id, system columns, formulas, autonumbers) are skipped;
a column matching nothing is an error before any row is read.

Cells are text; each is read the way its field's type needs before validation: an empty
cell is no value (the field keeps its default, or its current value on an update);
booleans take true/false, yes/no, 1/0; lists (many_to_many, multi_enum) take a JSON list
or values separated by `;` or `,`; json fields take JSON.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...metadata.ir import Entity, Field
from ..records import SYSTEM_OUTPUT

SKIPPED_TYPES = frozenset({"formula", "autonumber", "children"})
TRUE = frozenset({"true", "yes", "y", "1", "t", "on", "是"})
FALSE = frozenset({"false", "no", "n", "0", "f", "off", "否"})


class CellError(ValueError):
    """A cell that cannot be read as its field's type."""


@dataclass(frozen=True, slots=True)
class Column:
    """One mapped column: its position, header text, field and cell reader."""

    position: int
    header: str
    field: Field
    read: Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class HeaderMap:
    columns: tuple[Column, ...]
    skipped: tuple[str, ...]  # headers of columns an import does not take
    key_position: int | None = None  # the `id` column, when matching on id

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(c.field.name for c in self.columns)


class HeaderError(ValueError):
    """The header cannot be used: unknown or repeated columns, fields not writable."""


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def map_header(header: Sequence[str], entity: Entity, writable: frozenset[str],
               read_only: frozenset[str] = frozenset(), *, key: str | None = None,
               all_fields: Entity | None = None) -> HeaderMap:
    """Match `header` against `entity` (the fields the importer sees); `writable` are the
    fields its write schema takes, `read_only` those the caller may read but not change."""
    names: dict[str, Field] = {}
    for field in entity.fields:
        names.setdefault(_fold(field.name), field)
    for field in entity.fields:
        for _, text in field.label.values:
            names.setdefault(_fold(text), field)
    known = all_fields or entity
    columns, skipped, unknown, refused = [], [], [], []
    key_position = None
    seen: dict[str, str] = {}
    for position, raw in enumerate(header):
        text = raw.lstrip("\ufeff")
        folded = _fold(text)
        if not folded:
            skipped.append(text)
            continue
        if folded == "id" and key == "id":
            key_position = position
            continue
        field = names.get(folded)
        if field is None:
            if folded in SYSTEM_OUTPUT or known.get_field(text.strip()) is not None:
                skipped.append(text)  # a system column, or a field hidden from the caller
            else:
                unknown.append(text)
            continue
        if field.type in SKIPPED_TYPES or (field.name not in writable and
                                           field.name not in read_only):
            skipped.append(text)
            continue
        if field.name in read_only:
            refused.append(field.name)
            continue
        if field.name in seen:
            raise HeaderError(f"columns `{seen[field.name]}` and `{text}` are both "
                              f"`{field.name}`")
        seen[field.name] = text
        columns.append(Column(position, text, field, cell_reader(field)))
    if unknown:
        fields = ", ".join(f.name for f in entity.fields if f.name in writable)
        raise HeaderError(f"unknown column(s) {', '.join(f'`{u}`' for u in unknown)}; the "
                          f"columns are field names or labels of {entity.key}: {fields}")
    if refused:
        raise HeaderError("your roles may read but not change "
                          + ", ".join(f"`{n}`" for n in refused)
                          + "; leave those columns out")
    if key is not None and key != "id" and key not in seen:
        raise HeaderError(f"the key `{key}` is not one of the file's columns")
    if key == "id" and key_position is None:
        raise HeaderError("the key `id` is not one of the file's columns")
    return HeaderMap(tuple(columns), tuple(skipped), key_position)


# -- cells --------------------------------------------------------------------------------------

def cell_reader(field: Field) -> Callable[[str], Any]:
    """How a cell of `field` is read (its text is never empty here)."""
    kind = field.type
    if kind in ("integer", "reference", "user"):
        return _integer
    if kind == "boolean":
        return _boolean
    if kind == "many_to_many":
        return _id_list
    if kind == "multi_enum":
        return _text_list
    if kind == "json":
        return _json
    return _text


def _text(text: str) -> str:
    return text


def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise CellError("not a whole number") from None


def _boolean(text: str) -> bool:
    folded = text.strip().casefold()
    if folded in TRUE:
        return True
    if folded in FALSE:
        return False
    raise CellError("not true or false (write true/false, yes/no or 1/0)")


def _parts(text: str) -> list[str]:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            raise CellError("not a JSON list") from None
        if not isinstance(value, list):
            raise CellError("not a list")
        return value
    separator = ";" if ";" in stripped else ","
    return [p.strip() for p in stripped.split(separator) if p.strip()]


def _id_list(text: str) -> list[int]:
    out = []
    for part in _parts(text):
        if isinstance(part, bool):
            raise CellError("not a list of record ids")
        try:
            out.append(int(part))
        except (TypeError, ValueError):
            raise CellError("not a list of record ids") from None
    return out


def _text_list(text: str) -> list[Any]:
    return _parts(text)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise CellError("not valid JSON") from None
