"""Duplicate detection and merging for any entity with match rules (`duplicates:`).

    rules = entity_rules(runtime, "customer.customer")      # compiled once per version
    rules.keys(record)                                      # {rule: key}
    merge_records(service, "customer.customer", winner, loser, {"email": "loser"})
    BatchMatcher.for_entity(runtime, system, key)           # the bulk path imports use

Keys are kept in `_metacrm_match_keys` inside every write (`record_writing`); pairs to look
at go to `_metacrm_duplicate_reviews`; merges are logged in `_metacrm_merges`. See
docs/modules/customer.md and docs/api.md#duplicates-and-merging.
"""

from __future__ import annotations

from .detect import MAX_CANDIDATES, BatchMatcher, duplicate_conflict
from .merge import MergeResult, merge_records
from .normalise import NORMALISERS, phone_region
from .reviews import dismiss, record_candidates, review_queue
from .rules import IDENTITY_FIELD, EntityRules, entity_rules

__all__ = [
    "IDENTITY_FIELD",
    "MAX_CANDIDATES",
    "NORMALISERS",
    "BatchMatcher",
    "EntityRules",
    "MergeResult",
    "dismiss",
    "duplicate_conflict",
    "entity_rules",
    "merge_records",
    "phone_region",
    "record_candidates",
    "review_queue",
]
