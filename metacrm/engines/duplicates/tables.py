"""The duplicate engine's system tables: match keys, the review queue, the merge log and
the import log (kept in every tenant's database)."""

from __future__ import annotations

import sqlalchemy as sa

from ...generators.tables import ID_TYPE

MATCH_KEYS = "_metacrm_match_keys"
REVIEWS = "_metacrm_duplicate_reviews"
MERGES = "_metacrm_merges"
REVIEW_STATUSES = ("open", "dismissed", "merged")
KEY_BITS = 64
"""A key is a 64-bit BLAKE2b hash of (entity, rule, normalised values): one small integer
column holds every rule's keys and its index stays compact (with 10 million keys the
chance that two different values share a hash is about 1 in 400,000; a shared hash only
ever makes a candidate pair for a person to look at, or a refusal naming the record)."""


def duplicate_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The three tables on `metadata`."""
    keys = sa.Table(
        MATCH_KEYS, metadata,
        sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_id", ID_TYPE, primary_key=True, autoincrement=False),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Index("ix__metacrm_match_keys_record", "record_id"))
    reviews = sa.Table(
        REVIEWS, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_a", ID_TYPE, nullable=False),  # the smaller id of the pair
        sa.Column("record_b", ID_TYPE, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", ID_TYPE),
        sa.CheckConstraint("record_a < record_b", name="ck__metacrm_duplicate_reviews_order"),
        sa.CheckConstraint("status IN ('open', 'dismissed', 'merged')",
                           name="ck__metacrm_duplicate_reviews_status"),
        sa.UniqueConstraint("entity", "record_a", "record_b",
                            name="uq__metacrm_duplicate_reviews_pair"),
        sa.Index("ix__metacrm_duplicate_reviews_status", "entity", "status", "id"),
        sa.Index("ix__metacrm_duplicate_reviews_b", "entity", "record_b"))
    merges = sa.Table(
        MERGES, metadata,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("winner_id", ID_TYPE, nullable=False),
        sa.Column("loser_id", ID_TYPE, nullable=False),
        sa.Column("loser", sa.JSON, nullable=False),  # the losing record, every field
        sa.Column("fields", sa.JSON, nullable=False),  # {field: "winner" | "loser"}
        sa.Column("moved", sa.JSON, nullable=False),  # {"module.entity.field": count}
        sa.Column("actor", ID_TYPE),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix__metacrm_merges_winner", "entity", "winner_id"),
        sa.Index("ix__metacrm_merges_loser", "entity", "loser_id"))
    return [keys, reviews, merges]
