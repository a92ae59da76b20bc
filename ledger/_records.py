"""The values the ledger takes and returns: inputs, rows, reports and records."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ledger._failure import Failure
from ledger._lines import Usage
from ledger._models import Job

__all__ = [
    "API_SETTINGS_COLUMNS",
    "BATCH_COLUMNS",
    "DELIVERY_CLASS_PREFIX",
    "JOB_COLUMNS",
    "PIPELINE_COLUMNS",
    "PROMPT_CLASS_PREFIX",
    "ApiSettingsRecord",
    "BatchFileRecord",
    "BatchRecord",
    "Claimed",
    "Counts",
    "Enrollment",
    "FailureRow",
    "JobView",
    "ModelUsage",
    "NewJob",
    "ParkedJob",
    "PipelineChange",
    "PipelineRecord",
    "Policy",
    "Reserved",
    "ResultRow",
    "SubmissionRefusals",
    "TakenOver",
    "fingerprint_of",
]


# Error classes of rows parked by their delivery, not by the API: their result is kept.
DELIVERY_CLASS_PREFIX = "delivery:"
# Error classes of rows parked at enrollment because ``build_prompt`` raised for the item:
# nothing was sent or billed, and the row holds no request (a later tick of the same day
# rebuilds it once the prompt builds; replay leaves it alone).
PROMPT_CLASS_PREFIX = "prompt:"


@dataclass(frozen=True, slots=True)
class Policy:
    """How many times a job may be tried before it is parked."""

    attempt_cap: int = 4
    unknown_cap: int = 2

    def __post_init__(self) -> None:
        if self.attempt_cap < 1 or self.unknown_cap < 1:
            raise ValueError("attempt_cap and unknown_cap must be at least 1")


@dataclass(frozen=True, slots=True)
class NewJob:
    """An input item to enroll: its idempotency key and the request it stands for.

    ``fingerprint``: the request's digest, when the payload carries more than the request
    (data kept for the side effect); by default the payload's own (``fingerprint_of``), so
    the same poison input is still recognised under many keys.
    """

    key: str
    payload: Mapping[str, Any] | str
    fingerprint: str | None = None

    def digest(self, payload: str) -> str:
        return self.fingerprint or fingerprint_of(payload)


class ParkedJob(NamedTuple):
    """An item enrolled straight into the dead-letter store: its key, class and message."""

    key: str
    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class TakenOver:
    """Rows a dead pass held (a delivery claim or a reservation left unrenewed past the stale
    age), taken over by this one: how many, and the last time the dead pass held one (its
    latest renewal, epoch seconds: its last sign of life)."""

    rows: int = 0
    last_held: float | None = None

    @classmethod
    def of(cls, held_at: list[float | None]) -> TakenOver:
        """The rows taken over, given when each was last held."""
        known = [float(t) for t in held_at if t is not None]
        return cls(len(held_at), max(known) if known else None)

    def __add__(self, other: TakenOver) -> TakenOver:
        held = [t for t in (self.last_held, other.last_held) if t is not None]
        return TakenOver(self.rows + other.rows, max(held) if held else None)

    def __bool__(self) -> bool:
        return self.rows > 0

    def describe(self, what: str = "rows") -> str:
        """``24 rows held by a dead tick (last held at 02:14:05 UTC), taken over``."""
        when = ""
        if self.last_held is not None:
            from datetime import UTC, datetime

            at = datetime.fromtimestamp(self.last_held, UTC)
            when = f" (last held at {at:%Y-%m-%d %H:%M:%S} UTC)"
        return f"{self.rows} {what} held by a dead tick{when}, taken over"

    def as_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        held = self.last_held
        return {
            "rows": self.rows,
            "last_held": None if held is None else datetime.fromtimestamp(held, UTC).isoformat(),
        }


class Claimed(list[tuple[str, str]]):
    """What ``claim_done`` claimed: (key, result) rows, and among them those a dead pass
    held (``taken_over``)."""

    taken_over: TakenOver

    def __init__(self, rows: list[tuple[str, str]], taken_over: TakenOver = TakenOver()) -> None:
        super().__init__(rows)
        self.taken_over = taken_over


class Reserved(NamedTuple):
    """A job claimed for submission."""

    key: str
    payload: str
    model: str
    attempts: int
    reservation: str
    reserved_at: float | None = None  # when its pass last held it (renewed it)


# ResultRow and FailureRow carry a Usage's six counts in its order, so ``*usage`` spreads
# into them, then the answer's model version and response id.


class ResultRow(NamedTuple):
    """A validated result for one submitted job."""

    key: str
    result: str  # JSON text of the validated output
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    audio_tokens: int = 0
    model_version: str | None = None
    response_id: str | None = None


class FailureRow(NamedTuple):
    """A classified failure for one job (tokens and ids of the answer, if one came back)."""

    key: str
    failure: Failure
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    audio_tokens: int = 0
    model_version: str | None = None
    response_id: str | None = None


class ModelUsage(NamedTuple):
    """Rows, attempts and tokens of one (model, model version, channel) in the ledger."""

    model: str
    model_version: str | None
    channel: str
    rows: int
    attempts: int
    usage: Usage


class BatchRecord(NamedTuple):
    """One batch job we asked for."""

    reservation: str
    pipeline: str
    model: str
    name: str | None
    state: str
    rows: int
    created_at: float
    leased_at: float
    submitted_at: float | None
    reconciled_at: float | None
    misses: int = 0  # polls answered 404 in a row
    missed_since: float | None = None
    output_misses: int = 0  # failed downloads of its responses file in a row
    output_missed_since: float | None = None
    # When we asked to cancel it to meet a deadline (``mark_deadline_cancel``): its CANCELLED
    # end is then the deadline's, whoever settles it.
    deadline_cancel_at: float | None = None


class SubmissionRefusals(NamedTuple):
    """A pipeline's batch submissions the API refused since its last batch job was created."""

    refused: int
    since: float | None  # when the first of them was refused
    last_at: float | None  # when the last was
    last_reason: str | None


class BatchFileRecord(NamedTuple):
    """A file of a batch job still to be deleted from the Files API."""

    name: str
    reservation: str
    role: str  # a FileRole
    size_bytes: int
    recorded_at: float
    delete_failures: int


@dataclass(slots=True)
class Enrollment:
    """What one enrollment did: new keys, keys this pipeline already had, and keys another
    pipeline owns (left untouched; ``foreign_examples`` names a few of them).

    ``flows.run._deliver.enroll_day`` adds what the items themselves got wrong, each the item's
    own failure while the rest of the day goes on: items refused before any row exists
    (``key_of`` raised or gave a key the rules refuse), items parked as ``prompt:<Error>``
    (``build_prompt`` raised), keys given by more than one item of the day (the first item
    kept), and rows parked ``prompt:`` earlier whose prompt builds now (back to pending).
    """

    enrolled: int = 0
    already_known: int = 0
    foreign: int = 0
    foreign_examples: list[tuple[str, str]] = field(default_factory=list)  # (key, owner)
    refused: int = 0
    refused_examples: list[str] = field(default_factory=list)
    prompt_parked: int = 0
    prompt_parked_examples: list[str] = field(default_factory=list)
    duplicates: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    prompt_rebuilt: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            "already_known": self.already_known,
            "owned_by_other_pipeline": self.foreign,
            "owned_by_other_examples": [f"{k} ({owner})" for k, owner in self.foreign_examples],
            "refused": self.refused,
            "refused_examples": list(self.refused_examples),
            "prompt_parked": self.prompt_parked,
            "prompt_parked_examples": list(self.prompt_parked_examples),
            "duplicate_keys": self.duplicates,
            "duplicate_examples": list(self.duplicate_examples),
            "prompt_rebuilt": self.prompt_rebuilt,
        }


class PipelineRecord(NamedTuple):
    """The ledger's record of a pipeline: where it is loaded from and what it produces."""

    name: str
    spec: str
    channel: str
    model: str
    schema_fingerprint: str
    revision: int
    created_at: float
    updated_at: float


class ApiSettingsRecord(NamedTuple):
    """The API a pipeline's workers last bound a batch job at (``api_settings``)."""

    pipeline: str
    base_url: str
    key_digest: str
    recorded_at: float


class PipelineChange(NamedTuple):
    """What recording a pipeline did: ``new``, ``same`` or ``changed`` (with the fields)."""

    outcome: str
    record: PipelineRecord
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Counts:
    """Counts by status and by error class, with attempts and tokens."""

    by_status: dict[str, int]
    by_error_class: dict[str, int]  # parked jobs only
    retrying_by_class: dict[str, int]  # retryable jobs, by their last failure
    attempts: int
    usage: Usage  # tokens billed over every attempt, as one value
    possible_duplicates: int
    replayed: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    # The three counts read one by one, as reports print them.
    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def candidates_tokens(self) -> int:
        return self.usage.candidates_tokens

    @property
    def total_tokens(self) -> int:
        return self.usage.total_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_status": dict(self.by_status),
            "by_error_class": dict(self.by_error_class),
            "retrying_by_class": dict(self.retrying_by_class),
            "jobs": self.total,
            "attempts": self.attempts,
            "tokens": {
                "prompt": self.usage.prompt_tokens,
                "candidates": self.usage.candidates_tokens,
                "total": self.usage.total_tokens,
                "thoughts": self.usage.thoughts_tokens,
                "cached": self.usage.cached_tokens,
                "audio": self.usage.audio_tokens,
            },
            "possible_duplicates": self.possible_duplicates,
            "replayed": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class JobView:
    """A read-only snapshot of one ledger row."""

    key: str
    pipeline: str
    channel: str
    model: str
    payload: str
    fingerprint: str
    status: str
    handle: str | None
    reservation: str | None
    attempts: int
    attempts_base: int
    unknown_failures: int
    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int
    result: str | None
    error_class: str | None
    error_message: str | None
    first_failure_at: float | None
    last_failure_at: float | None
    due_at: float
    possible_duplicates: int
    replayed: int
    created_at: float
    updated_at: float
    reserved_at: float | None
    submitted_at: float | None
    done_at: float | None
    consumed_at: float | None
    parked_at: float | None
    delivery_failures: int = 0
    schema_revision: int | None = None
    delivery_claim: str | None = None
    claimed_at: float | None = None
    plan_day: str | None = None  # the night whose budget paid for its last reservation
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    audio_tokens: int = 0
    model_version: str | None = None
    response_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def payload_dict(self) -> Any:
        return orjson.loads(self.payload)

    @property
    def result_dict(self) -> Any:
        return None if self.result is None else orjson.loads(self.result)


JOB_COLUMNS = [c.name for c in Job.__table__.columns]  # type: ignore[attr-defined]

BATCH_COLUMNS = ", ".join(BatchRecord._fields)

PIPELINE_COLUMNS = ", ".join(PipelineRecord._fields)
API_SETTINGS_COLUMNS = ", ".join(ApiSettingsRecord._fields)


def fingerprint_of(payload: str) -> str:
    """A stable digest of a request, to spot the same poison input under many keys."""
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
