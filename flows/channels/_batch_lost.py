"""A submitted batch job, or its output, that will never be read: its rows go out again.

"Lost" is decided only on evidence that holds, never on one answer (a transient 404 on a job
that SUCCEEDED would otherwise send and bill its rows twice):

- **the job**: ``batches.get`` answered 404 on at least ``GEMINI_LEDGER_BATCH_LOST_POLLS``
  polls in a row (default 3, across ticks) spanning at least
  ``GEMINI_LEDGER_BATCH_LOST_AFTER_S`` (default 600 s), **and** ``batches.list`` has no job
  of that name under the batch's display name (if it has, the job is read from the listing
  instead). A job still unpollable ``GEMINI_LEDGER_BATCH_SUBMITTED_S`` after it was sent
  (default 72 h, beyond the API's own 48 h expiry) is lost whatever the error;
- **its output**: the responses file of a finished job could not be downloaded on as many
  reads in a row over as long (a 404: deleted, or gone with its retention), or, for any other
  error, over ``GEMINI_LEDGER_BATCH_OUTPUT_GRACE_S``.

Each failed read is counted on the batch row (``batch_jobs.misses`` / ``output_misses``), so
the bound holds across ticks; a successful poll clears the job's count. A lost job's rows
still ``submitted`` become ``retryable:batch_lost``, a lost output's ``retryable:output_lost``:
their attempt stays counted (it was billed, and the cap applies), and the batch row ends
``lost`` or ``output_lost`` with the reason in its summary, where ``status`` and the batch
history read it.

Refused credentials or permission (401, 403) are a fault of the setup, never a lost job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flows.channels._batch_io import find_batch_job
from flows.gemini._errors import http_code, is_not_found
from flows.pipeline import Pipeline
from ledger import BatchRecord, Failure, Ledger, Verdict, redact

__all__ = [
    "LOST_STATE",
    "OUTPUT_LOST_STATE",
    "SUBMITTED_ENV",
    "LostBounds",
    "PollFailure",
    "judge_poll_failure",
    "lost_reason",
    "output_lost",
]

SUBMITTED_ENV = "GEMINI_LEDGER_BATCH_SUBMITTED_S"
LOST_STATE = "lost"
OUTPUT_LOST_STATE = "output_lost"
_SETUP_CODES = frozenset({401, 403})

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class LostBounds:
    """How long failed reads must repeat before a job or its output is given up."""

    polls: int = 3  # GEMINI_LEDGER_BATCH_LOST_POLLS
    after_s: float = 600.0  # GEMINI_LEDGER_BATCH_LOST_AFTER_S
    submitted_s: float = 72 * 3600.0  # GEMINI_LEDGER_BATCH_SUBMITTED_S
    output_grace_s: float = 3600.0  # GEMINI_LEDGER_BATCH_OUTPUT_GRACE_S

    @classmethod
    def of(cls, settings: Any) -> LostBounds:
        """The bounds of a run's settings (``flows.settings.Settings``)."""
        return cls(
            polls=settings.batch_lost_polls,
            after_s=settings.batch_lost_after_s,
            submitted_s=settings.batch_submitted_s,
            output_grace_s=settings.batch_output_grace_s,
        )


@dataclass(frozen=True, slots=True)
class PollFailure:
    """What a failed ``batches.get`` came to: the job read from ``batches.list`` instead,
    the job lost (``returned`` rows sent back), or neither yet (a poll error)."""

    job: Any | None = None
    returned: int | None = None


def lost_reason(
    ledger: Ledger, rec: BatchRecord, exc: BaseException, *, bound: float
) -> str | None:
    """Why the poll failure ``exc`` means the job is lost whatever the listing says (it has
    been unpollable past ``bound``, the run's GEMINI_LEDGER_BATCH_SUBMITTED_S), or None."""
    if http_code(exc) in _SETUP_CODES:
        return None
    age = ledger.clock() - (rec.submitted_at or rec.created_at)
    if age > bound:
        return (
            f"{rec.name} cannot be polled ({type(exc).__name__}) {age:.0f} s after it was"
            f" sent, beyond {SUBMITTED_ENV}={bound:.0f}"
        )
    return None


def _repeated(ledger: Ledger, misses: int, since: float, polls: int, after_s: float) -> bool:
    return misses >= polls and ledger.clock() - since >= after_s


def judge_poll_failure(
    ledger: Ledger,
    client: Any,
    p: Pipeline[Any],
    rec: BatchRecord,
    exc: BaseException,
    log: Log,
    bounds: LostBounds,
) -> PollFailure:
    """Decide what the failed poll ``exc`` of ``rec`` means (see the module). A failing
    ``batches.list`` raises: the caller counts a poll error and the next tick asks again."""
    assert rec.name is not None
    reason = lost_reason(ledger, rec, exc, bound=bounds.submitted_s)
    if reason is None and is_not_found(exc):
        misses, since = ledger.note_batch_miss(rec.name)
        if not _repeated(ledger, misses, since, bounds.polls, bounds.after_s):
            log.warning(
                "%s: %s answered 404 (%d in a row); lost only after %d over %.0f s and if"
                " batches.list has no %s",
                p.name,
                rec.name,
                misses,
                bounds.polls,
                bounds.after_s,
                rec.reservation,
            )
            return PollFailure()
        listed = find_batch_job(client, rec.reservation)
        if listed is not None and listed.name == rec.name:
            ledger.clear_batch_misses(rec.name)
            log.info(
                "%s: %s answered 404 but is in batches.list: read from there", p.name, rec.name
            )
            return PollFailure(job=listed)
        reason = (
            f"the API answered 404 for {rec.name} on {misses} polls in a row over"
            f" {ledger.clock() - since:.0f} s, and batches.list has no job named {rec.reservation}"
        )
    if reason is None:
        return PollFailure()
    failure = Failure(Verdict.RETRYABLE, "batch_lost", reason)
    return PollFailure(returned=_give_up(ledger, p, rec, failure, LOST_STATE, exc, log))


def output_lost(
    ledger: Ledger,
    p: Pipeline[Any],
    rec: BatchRecord,
    exc: BaseException,
    log: Log,
    bounds: LostBounds,
) -> int | None:
    """The responses file of ``rec`` could not be downloaded (``exc``): once that repeated
    over the bound, return its unanswered rows (``retryable:output_lost``); how many, or None
    while it may still be read."""
    assert rec.name is not None
    misses, since = ledger.note_batch_miss(rec.name, output=True)
    after_s = bounds.after_s if is_not_found(exc) else bounds.output_grace_s
    if not _repeated(ledger, misses, since, bounds.polls, after_s):
        return None
    reason = (
        f"the responses file of {rec.name} could not be downloaded on {misses} reads in a row"
        f" over {ledger.clock() - since:.0f} s ({redact(f'{type(exc).__name__}: {exc}')[:200]})"
    )
    failure = Failure(Verdict.RETRYABLE, "output_lost", reason)
    return _give_up(ledger, p, rec, failure, OUTPUT_LOST_STATE, exc, log)


def _give_up(
    ledger: Ledger,
    p: Pipeline[Any],
    rec: BatchRecord,
    failure: Failure,
    state: str,
    exc: BaseException,
    log: Log,
) -> int:
    """Return the rows still submitted under ``rec`` to be sent again and end the batch."""
    assert rec.name is not None
    returned = ledger.fail_outstanding(handle=rec.name, failure=failure, policy=p.policy)
    ledger.finish_batch(
        rec.name,
        state=state,
        summary={
            state: failure.message,
            "rows_returned": returned,
            "error": redact(str(exc))[:300],
        },
    )
    log.warning("%s: %s; %d rows returned to be sent again", p.name, failure.message, returned)
    return returned
