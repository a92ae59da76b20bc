"""The ledger's reads a deadline works from, on both backends: the rows still out and the
oldest's enrolment, the median time of a model's last direct calls, and the usage of the rows
a batch pipeline sent directly."""

from __future__ import annotations

from ledger import Ledger, NewJob, ResultRow, Status


def test_rows_out_call_seconds_and_usage_sent_as(ledger_url: str) -> None:
    """Four rows of a batch pipeline: one answered by its batch job, two sent directly
    (answered in 3 s and 5 s), one still pending; rows_out counts the pending one from its
    enrolment; call_seconds is the median of the direct calls only; usage_sent_as sums the
    two direct rows' tokens, under their own (batch) channel; outstanding filters by prefix."""
    now = [1_800_000_000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    ledger.enroll(
        [NewJob(f"k{i}", {"i": i}) for i in range(4)], pipeline="p", channel="batch", model="m"
    )
    enrolled = now[0]
    now[0] += 10
    ledger.reserve(
        pipeline="p", limit=3, reservation="r1", batch_model="m", keys=["k0", "k1", "k2"]
    )
    ledger.bind_batch("r1", name="batches/b1")
    assert ledger.rows_out(pipeline="p") == (4, enrolled)
    ledger.apply_results([ResultRow("k0", "{}", 100, 10, 120)], handle="batches/b1")
    assert ledger.outstanding(pipeline="p", handle_prefix="direct:") == []
    assert len(ledger.outstanding(pipeline="p", handle_prefix="batches/")) == 2
    assert ledger.call_seconds(model="m", handle_prefix="direct:") is None
    for key, seconds in (("k1", 3.0), ("k2", 5.0)):
        # Cancelled for the deadline, then called directly.
        assert ledger.unsubmit(key, handle="batches/b1")
        now[0] += 1
        assert ledger.reserve(pipeline="p", limit=1, reservation=f"direct-{key}", keys=[key]) == 1
        ledger.bind_handle(key, reservation=f"direct-{key}", handle=f"direct:{key}")
        now[0] += seconds
        ledger.record_result(ResultRow(key, "{}", 200, 20, 250), handle=f"direct:{key}")
    assert ledger.rows_out(pipeline="p") == (1, enrolled)
    assert ledger.get("k3").status == Status.PENDING
    # The median of 3 s and 5 s (the upper of two) : the batch row is not a direct call.
    assert ledger.call_seconds(model="m", handle_prefix="direct:") == 5.0
    assert ledger.call_seconds(model="other", handle_prefix="direct:") is None
    (line,) = ledger.usage_sent_as(pipeline="p", handle_prefix="direct:")
    assert (line.channel, line.rows) == ("batch", 2)
    assert (line.usage.prompt_tokens, line.usage.total_tokens) == (400, 500)


def _mark(ledger: Ledger, name: str) -> float | None:
    rec = ledger.batch_named(name)
    assert rec is not None
    return rec.deadline_cancel_at


def test_rows_due_by_an_instant_their_jobs_and_the_deadline_mark(ledger_url: str) -> None:
    """Two nights of one pipeline, each in its own batch job: rows_out and batches_holding
    enrolled_by an instant between them see only the first night's rows and job;
    reserve enrolled_after it claims only the second night's; mark_deadline_cancel stamps a
    submitted job once (the first mark kept) and refuses one no longer submitted."""
    now = [1_800_000_000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    for night in (1, 2):
        ledger.enroll(
            [NewJob(f"n{night}-{i}", {"i": i}) for i in range(2)],
            pipeline="p",
            channel="batch",
            model="m",
        )
        ledger.reserve(pipeline="p", limit=2, reservation=f"r{night}", batch_model="m")
        ledger.bind_batch(f"r{night}", name=f"batches/n{night}")
        now[0] += 86_400
    first = 1_800_000_000.0
    between = first + 3_600
    ledger.enroll([NewJob("n3-0", {"i": 0})], pipeline="p", channel="batch", model="m")
    assert ledger.rows_out(pipeline="p", enrolled_by=between) == (2, first)
    assert ledger.rows_out(pipeline="p") == (5, first)
    assert [b.name for b in ledger.batches_holding(pipeline="p", enrolled_by=between)] == [
        "batches/n1"
    ]
    assert ledger.reserve(pipeline="p", limit=5, reservation="r3", enrolled_after=now[0]) == 0
    assert ledger.reserve(pipeline="p", limit=5, reservation="r3", enrolled_after=between) == 1
    assert _mark(ledger, "batches/n1") is None
    assert ledger.mark_deadline_cancel("batches/n1")
    marked = now[0]
    now[0] += 5
    assert ledger.mark_deadline_cancel("batches/n1")
    assert _mark(ledger, "batches/n1") == marked
    ledger.finish_batch("batches/n2", state="cancelled", summary={})
    assert not ledger.mark_deadline_cancel("batches/n2")
