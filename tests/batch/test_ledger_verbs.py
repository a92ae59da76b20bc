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


def test_refused_submissions_count_since_the_last_bound_job(ledger_url: str) -> None:
    """release(refused=...) gives the attempts back and records the batch as refused;
    submission_refusals counts those since the pipeline's last bound job, on both backends."""
    now = [1_800_000_000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    ledger.enroll((NewJob(f"k:{i}", {"text": "t"}) for i in range(4)), **_BATCH)
    for n, token in enumerate(("r1", "r2"), start=1):
        now[0] += 60
        ledger.reserve(pipeline="p", limit=4, reservation=token, batch_model="m")
        assert ledger.release(token, refused=f"exhausted:503: try {n}") == 4
        refusals = ledger.submission_refusals("p")
        assert (refusals.refused, refusals.last_reason) == (n, f"exhausted:503: try {n}")
    assert refusals.since == 1_800_000_060.0 and refusals.last_at == now[0]
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline="p")} == {("pending", 0)}
    assert ledger.batch("r1") is not None and ledger.batch("r1").state == "refused"
    now[0] += 60
    ledger.reserve(pipeline="p", limit=4, reservation="r3", batch_model="m")
    ledger.bind_batch("r3", name="batches/three")
    assert ledger.submission_refusals("p").refused == 0  # a job was created since
    ledger.dispose()


def test_failed_reads_of_a_job_are_counted_until_a_poll_succeeds(ledger_url: str) -> None:
    """note_batch_miss counts 404 polls and failed downloads apart, each since its first;
    clear_batch_misses ends the run of 404s only."""
    now = [1_800_000_000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    ledger.enroll([NewJob("k:1", {"text": "t"})], **_BATCH)
    ledger.reserve(pipeline="p", limit=1, reservation="r1", batch_model="m")
    ledger.bind_batch("r1", name="batches/one")
    assert ledger.note_batch_miss("batches/one") == (1, now[0])
    now[0] += 30
    assert ledger.note_batch_miss("batches/one") == (2, now[0] - 30)
    assert ledger.note_batch_miss("batches/one", output=True) == (1, now[0])
    ledger.clear_batch_misses("batches/one")
    rec = ledger.batch_named("batches/one")
    assert rec is not None and (rec.misses, rec.missed_since, rec.output_misses) == (0, None, 1)
    ledger.dispose()


_BATCH = {"pipeline": "p", "channel": "batch", "model": "m"}
