"""What the crash matrix tries: every crash point of the three channels, and the scenario.

Every world runs with media (``media(kills)``): the even items' prompts share one document,
uploaded once through the Files API and deleted once they are all final, so every row also
goes through the ``upload.*`` points and checks the upload invariants (``World.check``).

Shared by ``tests/proof/test_crash_matrix.py`` (CI) and ``bench/proof.py`` (the table).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ALSO_PARKED_AFTER_KILLS",
    "CHANNEL_NAMES",
    "EXPECTED_PARKED",
    "FAILING_DELIVERY_ITEM",
    "MATRIX",
    "PERMANENT_ITEM",
    "REFUSED_KEY",
    "RETRYABLE_ITEM",
    "SCENARIO",
    "SHARED_POINTS",
    "exact_attempts",
    "expected_parked",
    "kill_env",
    "media",
    "row_id",
    "world_env",
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
    # A fault of the setup met after reserving (the killed tick runs under a refused key),
    # killed before the reservation is given back; the next ticks run with the good key.
    ("batch", ("batch.before_release_on_halt",), 0),
    ("background", ("background.before_release_on_halt",), 0),
    ("direct", ("direct.before_release_on_halt",), 0),
    # A side effect that always fails, killed once its failure is counted (below the cap):
    # the count survives the kill and the row ends parked as delivery:<Exception>.
    ("batch", ("batch.after_delivery_failure",), 1),
    ("background", ("background.after_delivery_failure",), 1),
    ("direct", ("direct.after_delivery_failure",), 0),
]

CHANNEL_NAMES = ("batch", "background", "direct")

# Points every channel passes through (the media uploads its prompts' parts make), each tried
# on every channel: one line adds a point. The flag: the point is met only once the answers
# are in (the tick after the sending on batch and background, the same tick on direct).
SHARED_POINTS: list[tuple[str, bool]] = [
    # Reserved, nothing uploaded: the next tick takes the upload over and sends it.
    ("upload.after_reserve", False),
    # Uploaded, not bound: the next tick finds the file by its display name and binds it.
    ("upload.after_upload", False),
    # Bound, the rows not sent: the next tick uses the bound file.
    ("upload.after_bind", False),
    # Deleted at the API, not marked: the next tick's delete meets a 404 and marks it.
    ("upload.after_delete", True),
]
MATRIX += [
    (channel, (point,), int(after_answers and channel != "direct"))
    for point, after_answers in SHARED_POINTS
    for channel in CHANNEL_NAMES
]
_SHARED = frozenset(point for point, _ in SHARED_POINTS)

# The killed tick of a halt row meets a refused key (the emulator refuses every key that
# starts with ``refused-`` with 400 INVALID_ARGUMENT / API_KEY_INVALID): a fault of the setup.
REFUSED_KEY = "refused-proof-key"
_HALT_SUFFIX = ".before_release_on_halt"
# The delivery rows' world: one item whose side effect always raises, parked at a cap of 2.
FAILING_DELIVERY_ITEM = "item-00003"
_DELIVERY_SUFFIX = ".after_delivery_failure"
DELIVERY_CAP = 2


def kill_env(point: str) -> dict[str, str]:
    """What the tick armed at ``point`` runs with on top of its world."""
    return {"GEMINI_API_KEY": REFUSED_KEY} if point.endswith(_HALT_SUFFIX) else {}


def row_id(row: tuple[str, tuple[str, ...], int]) -> str:
    """A matrix row's test id: its points, after its channel where they do not name it."""
    channel, kills, _ = row
    points = "+".join(kills)
    return points if kills[0].startswith(f"{channel}.") else f"{channel}:{points}"


def media(kills: tuple[str, ...]) -> bool:
    """Whether the world killed at ``kills`` has media: all but the halt rows, whose refused
    key would be met at the upload (every row given back there) before the call they kill."""
    return not any(k.endswith(_HALT_SUFFIX) for k in kills)


def exact_attempts(kills: tuple[str, ...]) -> bool:
    """Whether the attempts of the keys that read the shared file must equal the submissions
    the API received: after kills at shared points only (an upload is never a row's attempt,
    nor a kill around one). The other keys keep the general bound: on direct a call bound at
    the kill may never have left (one attempt more)."""
    return all(k in _SHARED for k in kills)


def world_env(kills: tuple[str, ...]) -> dict[str, str]:
    """What every tick of the world killed at ``kills`` runs with."""
    if any(k.endswith(_DELIVERY_SUFFIX) for k in kills):
        return {
            "PROOF_FAIL_DELIVERY": FAILING_DELIVERY_ITEM,
            "GEMINI_LEDGER_DELIVERY_CAP": str(DELIVERY_CAP),
        }
    return {}


def expected_parked(kills: tuple[str, ...]) -> dict[str, int]:
    """The parked classes a settled world killed at ``kills`` ends with (a halt adds none)."""
    if any(k.endswith(_DELIVERY_SUFFIX) for k in kills):
        return {**EXPECTED_PARKED, "delivery:ProofDeliveryFailed": 1}
    return dict(EXPECTED_PARKED)


# Parked classes a run may end with: the scripted permanent key, and direct calls killed
# twice in flight (each kill an ``unknown:interrupted`` failure for every call in flight;
# two reach unknown_cap and park them).
EXPECTED_PARKED = {"permanent:400": 1}
ALSO_PARKED_AFTER_KILLS = {"unknown:interrupted"}
