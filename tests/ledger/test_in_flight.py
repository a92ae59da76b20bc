"""Ledger.in_flight: rows per non-final state and how long the oldest has been in it."""

from __future__ import annotations

from ledger import Ledger, NewJob, ResultRow


def test_in_flight_counts_and_ages_by_time_in_state(ledger_url: str) -> None:
    """Each non-final state's age is measured from when its oldest row entered that state."""
    now = [1_800_000_000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    ledger.enroll(
        [NewJob(f"k{i}", {"i": i}) for i in range(3)], pipeline="p", channel="batch", model="m"
    )
    now[0] += 100
    ledger.reserve(pipeline="p", limit=2, reservation="r1", batch_model="m")
    now[0] += 50
    ledger.bind_batch("r1", name="batches/b1")
    now[0] += 10
    ledger.apply_results([ResultRow("k0", "{}")], handle="batches/b1")
    ledger.consume(["k0"])
    now[0] += 5
    assert ledger.in_flight() == {"pending": (1, 165.0), "submitted": (1, 15.0)}
    assert ledger.in_flight(pipeline="other") == {}
