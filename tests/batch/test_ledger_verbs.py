"""The two ledger verbs the batch channel added: stream_reserved and count_members."""

from __future__ import annotations

from ledger import Ledger, NewJob


def test_stream_reserved_and_count_members(ledger_url: str) -> None:
    """stream_reserved yields exactly the rows reserve() claimed (as reserved() does, in any
    order); count_members counts only keys that went into that batch."""
    ledger = Ledger(ledger_url)
    ledger.enroll(
        (NewJob(f"k:{i:03d}", {"text": f"review {i}"}) for i in range(30)),
        pipeline="p",
        channel="batch",
        model="m",
    )
    assert ledger.reserve(pipeline="p", limit=12, reservation="r1", batch_model="m") == 12
    assert ledger.reserve(pipeline="p", limit=50, reservation="r2", batch_model="m") == 18
    streamed = list(ledger.stream_reserved("r1", batch=5))
    assert sorted(streamed) == list(ledger.reserved("r1"))
    assert {r.reservation for r in streamed} == {"r1"} and {r.attempts for r in streamed} == {1}
    r1_keys = [r.key for r in streamed]
    r2_keys = [r.key for r in ledger.reserved("r2")]
    assert ledger.count_members("r1", r1_keys + r2_keys[:5] + ["k:nobody"]) == 12
    assert ledger.count_members("r2", r2_keys) == 18
    ledger.bind_batch("r1", name="batches/one")
    assert list(ledger.stream_reserved("r1")) == []  # bound rows are no longer reserved
    assert ledger.count_members("r1", r1_keys) == 12  # membership is history: it stays
    ledger.dispose()
