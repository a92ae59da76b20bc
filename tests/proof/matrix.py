"""What the crash matrix tries: every crash point of the three channels, and the scenario.

Shared by ``tests/proof/test_crash_matrix.py`` (CI) and ``bench/proof.py`` (the table).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ALSO_PARKED_AFTER_KILLS",
    "EXPECTED_PARKED",
    "MATRIX",
    "PERMANENT_ITEM",
    "RETRYABLE_ITEM",
    "SCENARIO",
]

# The scripted faults every crash and concurrency run carries on top of the clean scenario:
# one key fails with a retryable 503 on its first submission, one is refused for good.
RETRYABLE_ITEM = "item-00001"
PERMANENT_ITEM = "item-00002"
SCENARIO: dict[str, Any] = {
    "name": "proof",
    "batch_polls_to_complete": 1,
    "interaction_polls_to_complete": 1,
    "retry_delay_s": 0.01,
    "scripts": [
        {"match": f"*:{RETRYABLE_ITEM}:*", "steps": ["503", "ok"]},
        {"match": f"*:{PERMANENT_ITEM}:*", "steps": ["400"]},
    ],
}

# (channel, the points killed at in turn, ticks run before the first kill so that it is
# reachable: 0 for the submit path, 1 for reconcile and delivery, which need work in flight).
# A second point is a kill during the recovery of the first (that tick takes the dead one's
# leftovers over at once), e.g. the orphan found in batches.list and killed right after
# binding it, or a taken-over background reservation killed before or after resubmitting.
MATRIX: list[tuple[str, tuple[str, ...], int]] = [
    ("batch", ("batch.after_reserve",), 0),
    ("batch", ("batch.after_upload",), 0),
    ("batch", ("batch.after_create",), 0),
    ("batch", ("batch.after_bind",), 0),
    ("batch", ("batch.reconcile.after_chunk",), 1),
    ("batch", ("batch.reconcile.before_finish",), 1),
    ("batch", ("batch.after_done",), 1),
    ("batch", ("batch.inside_side_effect",), 1),
    ("batch", ("batch.before_consume",), 1),
    ("batch", ("batch.after_create", "batch.after_bind"), 0),
    ("batch", ("batch.after_reserve", "batch.after_create"), 0),
    ("background", ("background.after_reserve",), 0),
    ("background", ("background.after_create",), 0),
    ("background", ("background.after_bind",), 0),
    ("background", ("background.after_reclaim",), 1),
    ("background", ("background.after_done",), 1),
    ("background", ("background.inside_side_effect",), 1),
    ("background", ("background.before_consume",), 1),
    ("background", ("background.after_create", "background.after_take_over"), 0),
    ("background", ("background.after_create", "background.after_create"), 0),
    ("direct", ("direct.after_reserve",), 0),
    ("direct", ("direct.before_call",), 0),
    ("direct", ("direct.after_call",), 0),
    ("direct", ("direct.after_record",), 0),
    ("direct", ("direct.before_side_effect",), 0),
    ("direct", ("direct.after_side_effect",), 0),
    ("direct", ("direct.after_call", "direct.after_call"), 0),
]

# Parked classes a run may end with: the scripted permanent key, and direct calls killed
# twice in flight (each kill an ``unknown:interrupted`` failure for every call in flight;
# two reach unknown_cap and park them).
EXPECTED_PARKED = {"permanent:400": 1}
ALSO_PARKED_AFTER_KILLS = {"unknown:interrupted"}
