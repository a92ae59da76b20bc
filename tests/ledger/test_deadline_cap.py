"""A row whose batch job the deadline cancelled keeps that attempt counted but is never parked
for it, on both backends and by every failure path (one job's failure, a bulk of lines):
at its attempt cap it is still retryable, sent once more (directly), and parked only if that
attempt fails too, or if the deadline cancels it a second time."""

from __future__ import annotations

import pytest

from ledger import (
    DEADLINE_CANCELLED_CODE,
    Failure,
    FailureRow,
    Ledger,
    NewJob,
    Policy,
    Status,
    Verdict,
)

POLICY = Policy(attempt_cap=1, unknown_cap=2)
CANCELLED = Failure(Verdict.RETRYABLE, DEADLINE_CANCELLED_CODE, "cancelled for the deadline")
BUSY = Failure(Verdict.RETRYABLE, "503", "busy")


def _at_cap(ledger_url: str) -> Ledger:
    """One row submitted once under batches/b1: its one allowed attempt used."""
    ledger = Ledger(ledger_url)
    ledger.enroll([NewJob("k", {"i": 0})], pipeline="p", channel="batch", model="m")
    assert ledger.reserve(pipeline="p", limit=1, reservation="r1", batch_model="m") == 1
    ledger.bind_batch("r1", name="batches/b1")
    return ledger


@pytest.mark.parametrize("path", ["fail_outstanding", "apply_failures"])
def test_a_deadline_cancel_at_the_attempt_cap_leaves_the_row_retryable(
    ledger_url: str, path: str
) -> None:
    """attempt_cap 1, the batch attempt made: the deadline's failure leaves the row
    retryable:deadline with its attempt counted (1); a retryable failure of its next
    (direct) attempt parks it as exhausted, as any failure past the cap does."""
    ledger = _at_cap(ledger_url)
    if path == "fail_outstanding":
        assert ledger.fail_outstanding(handle="batches/b1", failure=CANCELLED, policy=POLICY) == 1
    else:
        rows = [FailureRow("k", CANCELLED)]
        assert ledger.apply_failures(rows, handle="batches/b1", policy=POLICY) == 1
    row = ledger.get("k")
    assert (row.status, row.error_class, row.attempts) == (
        Status.RETRYABLE,
        CANCELLED.error_class,
        1,
    )
    assert ledger.reserve(pipeline="p", limit=1, reservation="d1", keys=["k"]) == 1
    ledger.record_failure("k", BUSY, policy=POLICY, reservation="d1")
    row = ledger.get("k")
    assert (row.status, row.error_class, row.attempts) == (Status.PARKED, "exhausted:503", 2)


def test_a_second_deadline_cancel_past_the_cap_parks_the_row(ledger_url: str) -> None:
    """The allowance is one attempt: a row the deadline cancels again once past its cap is
    parked (exhausted:deadline), so no row goes round for ever."""
    ledger = _at_cap(ledger_url)
    ledger.fail_outstanding(handle="batches/b1", failure=CANCELLED, policy=POLICY)
    assert ledger.reserve(pipeline="p", limit=1, reservation="r2", batch_model="m") == 1
    ledger.bind_batch("r2", name="batches/b2")
    ledger.fail_outstanding(handle="batches/b2", failure=CANCELLED, policy=POLICY)
    row = ledger.get("k")
    assert (row.status, row.error_class, row.attempts) == (
        Status.PARKED,
        CANCELLED.parked_class(),
        2,
    )
