"""Every move of a job between states, declared once.

Each verb of the ledger that changes ``jobs.status`` is one :class:`Transition` in
:data:`TRANSITIONS`: the states it moves a row from, the states it may leave it in (several
when the verb decides per row, e.g. a failure parks or retries), and the columns it sets. The
verbs in :mod:`ledger._jobs` and its siblings take their states from here and render them
into SQL with :func:`sql_in` / :func:`sql_literal`, so no status is ever retyped as a string
literal in a query (``tests/ledger/test_transitions.py`` checks it).

A done row's delivery claim (``claim_done`` / ``renew_delivery`` / ``release_done``) moves
no state: it lives in the row's own ``delivery_claim`` (the claiming pass's token) and
``claimed_at`` columns (never ``reservation``, which only a row on its way out uses), and
``fail_delivery``, ``consume``, ``park`` and ``replay`` clear it. The pass renews it while it
works (``renew_delivery``); another pass takes over only a claim left unrenewed for the stale
age, and ``consume`` with the token records nothing for a pass that lost its claim.
``renew_reservation`` does the same for a reservation being sent.

Batch jobs (``batch_jobs.state``) have their own small life, :class:`BatchState`, declared
here too; a reconciled batch keeps the API's final state (lower-cased) instead.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ledger._models import Status

__all__ = [
    "ACTIVE",
    "CACHE_MOVES",
    "TRANSITIONS",
    "UPLOAD_MOVES",
    "BatchState",
    "CacheState",
    "Transition",
    "UploadState",
    "sql_in",
    "sql_literal",
    "transition",
]


class BatchState(enum.StrEnum):
    """A batch job's state in ``batch_jobs`` until it is reconciled."""

    RESERVING = "reserving"  # rows reserved, the API's batch job not created yet
    SUBMITTED = "submitted"  # created and bound: its rows are submitted under its name
    RELEASED = "released"  # given up before creation: its rows went back to their queue
    # The API refused the upload or batches.create (and the job is not in batches.list):
    # its rows went back to their queue with their attempts given back.
    REFUSED = "refused"


class UploadState(enum.StrEnum):
    """A Files API upload's state in ``uploads`` (``ledger._uploads``): the same discipline
    as a submission, without a row's attempt."""

    RESERVING = "reserving"  # reserved by its content hash; the upload may be under way
    ACTIVE = "active"  # uploaded and bound to its file name, URI and expiry
    DELETED = "deleted"  # every row using it was final: deleted from the Files API


# Who moves an upload, from and to (the verbs of ledger._uploads):
UPLOAD_MOVES: dict[str, tuple[tuple[UploadState | None, ...], UploadState | None]] = {
    # a new content, or one whose file expired, was deleted or whose reserving pass died
    "reserve_upload": (
        (None, UploadState.RESERVING, UploadState.ACTIVE, UploadState.DELETED),
        UploadState.RESERVING,
    ),
    "bind_upload": ((UploadState.RESERVING,), UploadState.ACTIVE),
    "release_upload": ((UploadState.RESERVING,), None),  # the upload was refused: row removed
    "upload_deleted": ((UploadState.ACTIVE,), UploadState.DELETED),
}


class CacheState(enum.StrEnum):
    """A context cache's state in ``caches`` (``ledger._caches``): a pipeline's cached shared
    prefix, the same discipline as an upload (never a row's attempt)."""

    RESERVING = "reserving"  # reserved by its prefix digest; caches.create may be under way
    ACTIVE = "active"  # created and bound to its name (cachedContents/...) and expiry
    EXPIRED = "expired"  # gone at the API before its rows were final: created again
    DELETED = "deleted"  # every row of the pipeline was final: deleted (caches.delete)
    # superseded by a new cache of its prefix (it expired, or expires too soon for a row):
    # a row of its own, kept until every row is final (a batch job submitted naming it
    # still reads it until it runs), then deleted like the others
    RETIRED = "retired"


# Who moves a cache, from and to (the verbs of ledger._caches):
CACHE_MOVES: dict[str, tuple[tuple[CacheState | None, ...], CacheState | None]] = {
    # a new prefix, or one whose cache expires too soon, expired, was deleted, or whose
    # reserving pass died
    "reserve_cache": (
        (None, CacheState.RESERVING, CacheState.ACTIVE, CacheState.EXPIRED, CacheState.DELETED),
        CacheState.RESERVING,
    ),
    "bind_cache": ((CacheState.RESERVING,), CacheState.ACTIVE),
    "release_cache": ((CacheState.RESERVING,), None),  # the create was refused: row removed
    "cache_expired": ((CacheState.ACTIVE,), CacheState.EXPIRED),  # a request named it: gone
    "cache_deleted": (
        (CacheState.ACTIVE, CacheState.EXPIRED, CacheState.RETIRED),
        CacheState.DELETED,
    ),
    # reserve_cache superseding a bound cache keeps its name in a row of its own
    "retire_cache": ((None,), CacheState.RETIRED),
    # a dead pass's reservation once every row is final: its cache (if the create made one)
    # found by display name and deleted
    "abandoned_cache_deleted": ((CacheState.RESERVING,), CacheState.DELETED),
}


@dataclass(frozen=True, slots=True)
class Transition:
    """One verb's move: from any of ``source`` to one of ``target``, setting ``sets``."""

    verb: str
    source: tuple[Status, ...]
    target: tuple[Status, ...]
    sets: tuple[str, ...]
    note: str = ""

    @property
    def sql_source(self) -> str:
        """The source states as a SQL list for ``status IN (...)``."""
        return sql_in(self.source)

    def where(self, column: str = "status") -> str:
        """The SQL condition that a row is in one of the source states.

        ``=`` for one state, as the statements were written by hand: SQLite matches a
        partial index's ``status = ...`` only against an equality, never ``IN (...)``.
        """
        if len(self.source) == 1:
            return f"{column} = {sql_literal(self.source[0])}"
        return f"{column} IN ({self.sql_source})"

    def to(self, status: Status) -> str:
        """``status`` as a SQL literal, refusing a state this verb never moves to."""
        if status not in self.target:
            raise ValueError(f"{self.verb} never moves a job to {status}")
        return sql_literal(status)

    def source_is(self, status: Status) -> str:
        """``status`` as a SQL literal, refusing a state this verb never moves from."""
        if status not in self.source:
            raise ValueError(f"{self.verb} never moves a job from {status}")
        return sql_literal(status)


def sql_literal(value: enum.StrEnum) -> str:
    """One state as a quoted SQL literal, from the enum (never retyped)."""
    return "'" + value.value + "'"


def sql_in(values: Iterable[enum.StrEnum]) -> str:
    """States as the inside of a SQL ``IN (...)`` list."""
    return ", ".join(sql_literal(v) for v in values)


S = Status
_FAILURE_SETS = (
    "status",
    "error_class",
    "error_message",
    "parked_at",
    "unknown_failures",
    "first_failure_at",
    "last_failure_at",
    "due_at",
    "attempts (given back for a cache_expired refusal)",
    "reservation",
    "tokens",
)
_REQUEUE_SETS = ("status", "attempts", "reservation")

TRANSITIONS: dict[str, Transition] = {
    t.verb: t
    for t in (
        Transition("enroll", (), (S.PENDING,), ("every column",), "a new key only"),
        Transition(
            "enroll_parked",
            (),
            (S.PARKED,),
            ("every column", "error_class", "error_message", "parked_at"),
            "a new key whose request could not be built (prompt:<Error>): no payload",
        ),
        Transition(
            "rebuild_prompts",
            (S.PARKED,),
            (S.PENDING,),
            ("payload", "fingerprint", "error_class", "error_message", "parked_at", "due_at"),
            "only a row parked prompt:<Error> whose item builds its prompt now",
        ),
        Transition(
            "reserve",
            (S.PENDING, S.RETRYABLE),
            (S.RESERVING,),
            ("reservation", "handle", "reserved_at", "attempts", "schema_revision"),
            "due rows only; attempts + 1; the pipeline's current revision",
        ),
        Transition(
            "bind_handle",
            (S.RESERVING,),
            (S.SUBMITTED,),
            ("handle", "submitted_at", "reservation"),
            "under the row's reservation",
        ),
        Transition(
            "bind_reservation",
            (S.RESERVING,),
            (S.SUBMITTED,),
            ("handle", "submitted_at", "reservation"),
            "every row of the reservation, one handle (one embed call carries them)",
        ),
        Transition(
            "bind_batch",
            (S.RESERVING,),
            (S.SUBMITTED,),
            ("handle", "submitted_at", "reservation"),
            "every row of the batch reservation",
        ),
        Transition(
            "renew_reservation",
            (S.RESERVING,),
            (S.RESERVING,),
            ("reserved_at",),
            "under the reservation token: a live pass's rows are never taken for orphans",
        ),
        Transition(
            "release",
            (S.RESERVING,),
            (S.PENDING, S.RETRYABLE),
            _REQUEUE_SETS,
            "retryable if attempts remain spent after the refund",
        ),
        Transition(
            "release_ambiguous",
            (S.RESERVING,),
            (S.RETRYABLE,),
            (
                "status",
                "reservation",
                "possible_duplicates",
                "error_class",
                "error_message",
                "due_at",
            ),
            "a create answered 5xx or not at all: attempt kept, possible_duplicates + 1, never"
            " parked, while possible_duplicates is below the bound",
        ),
        Transition(
            "release_keys",
            (S.RESERVING,),
            (S.PENDING, S.RETRYABLE),
            _REQUEUE_SETS,
            "and leaves the batch's members",
        ),
        Transition(
            "park_keys",
            (S.RESERVING,),
            (S.PARKED,),
            ("status", "attempts", "reservation", "error_class", "error_message", "parked_at"),
            "a request no batch file can carry: attempt given back, leaves the batch's members",
        ),
        Transition(
            "unsubmit",
            (S.SUBMITTED,),
            (S.PENDING, S.RETRYABLE),
            (*_REQUEUE_SETS, "handle", "submitted_at"),
            "the API never accepted it",
        ),
        Transition(
            "apply_results",
            (S.SUBMITTED,),
            (S.DONE,),
            ("result", "done_at", "error_class", "reservation", "tokens"),
            "under the row's handle; record_result is the one-row form",
        ),
        Transition(
            "apply_failures",
            (S.SUBMITTED,),
            (S.RETRYABLE, S.PARKED),
            _FAILURE_SETS,
            "parked at a cap or a permanent verdict",
        ),
        Transition(
            "fail_outstanding",
            (S.SUBMITTED,),
            (S.RETRYABLE, S.PARKED),
            _FAILURE_SETS,
            "every row still submitted under a handle the output never settled",
        ),
        Transition(
            "requeue_outdated",
            (S.SUBMITTED,),
            (S.PENDING, S.RETRYABLE),
            (
                "status",
                "attempts_base",
                "handle",
                "submitted_at",
                "reservation",
                "due_at",
                "tokens",
            ),
            "a schema failure of a row reserved under an earlier pipeline revision: not the"
            " row's fault, sent again under the new schema (apply_failures and record_failure"
            " call it first); attempts kept, attempts_base + 1 so the caps do not count it",
        ),
        Transition(
            "record_failure",
            (S.SUBMITTED, S.RESERVING),
            (S.RETRYABLE, S.PARKED),
            _FAILURE_SETS,
            "submitted under a handle, or reserving under a reservation",
        ),
        Transition(
            "park",
            tuple(Status),
            (S.PARKED,),
            ("error_class", "error_message", "parked_at", "first_failure_at", "last_failure_at"),
            "from the states the caller names, whatever its attempts",
        ),
        Transition(
            "fail_delivery",
            (S.DONE,),
            (S.DONE, S.PARKED),
            ("delivery_failures", "error_class", "error_message", "parked_at", "delivery_claim"),
            "parked at the delivery cap, its result kept",
        ),
        Transition(
            "renew_delivery",
            (S.DONE,),
            (S.DONE,),
            ("claimed_at",),
            "under the pass's claim token: its claims stay its own while it is alive",
        ),
        Transition(
            "consume",
            (S.DONE,),
            (S.CONSUMED,),
            ("consumed_at", "delivery_claim"),
            "the side effect completed; with the pass's claim token only rows it still"
            " holds; consume_one is the one-row form",
        ),
        Transition(
            "consume_and_renew",
            (S.DONE,),
            (S.CONSUMED,),
            ("consumed_at", "delivery_claim"),
            "consume of the row whose side effect ran (still claimed by the pass), with"
            " renew_delivery of the pass's next row in the same transaction",
        ),
        Transition(
            "replay",
            (S.PARKED,),
            (S.PENDING, S.DONE),
            (
                "attempts_base",
                "unknown_failures",
                "delivery_failures",
                "replayed",
                "due_at",
                "delivery_claim",
            ),
            "done again when parked by its delivery (result kept)",
        ),
    )
}

# States a job has not left for good: the in-flight report covers these.
ACTIVE = (S.PENDING, S.RESERVING, S.SUBMITTED, S.DONE, S.RETRYABLE)


def transition(verb: str) -> Transition:
    """The declared move of ``verb``."""
    return TRANSITIONS[verb]
