"""A submitted batch job that will never be reconciled: its rows go back to be sent again.

Two ways a bound batch job is lost for good: the API answers 404 for it (deleted, or gone
with the emulator's memory), or it has been submitted longer than
``GEMINI_LEDGER_BATCH_SUBMITTED_S`` (default 72 h, beyond the API's own 48 h expiry) and
still cannot be polled. Its rows still ``submitted`` become retryable with a
``retryable:batch_lost`` failure (their attempt stays counted: it was billed, and the cap
applies), and the batch row ends ``lost`` with the reason in its summary: the event is
recorded where ``status`` and the batch history read it.

Refused credentials or permission (401, 403) are a fault of the setup, never a lost job.
"""

from __future__ import annotations

import logging
from typing import Any

from flows.pipeline import Pipeline
from ledger import BatchRecord, Failure, Ledger, Verdict, redact

__all__ = ["LOST_STATE", "SUBMITTED_ENV", "give_up_if_lost", "lost_reason", "submitted_bound"]

SUBMITTED_ENV = "GEMINI_LEDGER_BATCH_SUBMITTED_S"
LOST_STATE = "lost"
_SETUP_CODES = frozenset({401, 403})


def submitted_bound() -> float:
    """GEMINI_LEDGER_BATCH_SUBMITTED_S: seconds a batch job may stay unpollable once sent."""
    from flows.settings import load_settings

    return load_settings().batch_submitted_s


def _api_code(exc: BaseException) -> int | None:
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        try:
            return int(exc.code)
        except (TypeError, ValueError):
            return None
    return None


def lost_reason(
    ledger: Ledger, rec: BatchRecord, exc: BaseException, *, bound: float | None = None
) -> str | None:
    """Why the poll failure ``exc`` means the job is lost for good, or None if it is not;
    ``bound``: the run's GEMINI_LEDGER_BATCH_SUBMITTED_S (read now when not given)."""
    code = _api_code(exc)
    if code == 404:
        return f"the API no longer knows {rec.name} (404: deleted or expired)"
    if code in _SETUP_CODES:
        return None
    bound = submitted_bound() if bound is None else bound
    age = ledger.clock() - (rec.submitted_at or rec.created_at)
    if age > bound:
        return (
            f"{rec.name} cannot be polled ({type(exc).__name__}) {age:.0f} s after it was"
            f" sent, beyond {SUBMITTED_ENV}={bound:.0f}"
        )
    return None


def give_up_if_lost(
    ledger: Ledger,
    p: Pipeline[Any],
    rec: BatchRecord,
    exc: BaseException,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    *,
    bound: float | None = None,
) -> int | None:
    """Return a lost job's rows to be sent again; how many, or None if the job is not lost."""
    assert rec.name is not None
    reason = lost_reason(ledger, rec, exc, bound=bound)
    if reason is None:
        return None
    failure = Failure(Verdict.RETRYABLE, "batch_lost", reason)
    returned = ledger.fail_outstanding(handle=rec.name, failure=failure, policy=p.policy)
    ledger.finish_batch(
        rec.name,
        state=LOST_STATE,
        summary={"lost": reason, "rows_returned": returned, "error": redact(str(exc))[:300]},
    )
    log.warning("%s: %s; %d rows returned to be sent again", p.name, reason, returned)
    return returned
