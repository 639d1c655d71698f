"""Database identifiers: table, column, index and constraint names within PostgreSQL's 63."""

from __future__ import annotations

import hashlib

MAX_IDENTIFIER = 63


def bounded(name: str) -> str:
    """`name` unchanged when short enough, else truncated with a stable hash suffix."""
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


def entity_table(module: str, entity: str) -> str:
    return bounded(f"{module}__{entity}")


def link_table(table: str, field: str) -> str:
    return bounded(f"{table}__{field}")


def id_slug(stable_id: str) -> str:
    """A stable id as an identifier part: `ocrm.lead.email` -> `ocrm__lead__email`."""
    return stable_id.replace(".", "__").replace("#", "_")


def index_name(spec_id: str, field_id: str, unique: bool = False) -> str:
    """Named after stable ids, so renaming a field or an entity keeps the name."""
    field = field_id.rsplit(".", 1)[-1].replace("#", "_")
    return bounded(f"{'uq' if unique else 'ix'}_{id_slug(spec_id)}__{field}")


def check_name(spec_id: str, field_id: str) -> str:
    return bounded(f"ck_{id_slug(spec_id)}__{field_id.rsplit('.', 1)[-1]}")


def foreign_key_name(spec_id: str, field_id: str) -> str:
    return bounded(f"fk_{id_slug(spec_id)}__{field_id.rsplit('.', 1)[-1].replace('#', '_')}")


def archived_column(column: str, stamp: str) -> str:
    return bounded(f"archived_{column}_{stamp}")


def archived_table(table: str, stamp: str) -> str:
    return bounded(f"archived_{table}_{stamp}")
