"""The ledger's transitions, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import pytest

from ledger import (
    Failure,
    FailureRow,
    InvalidTransition,
    Ledger,
    LedgerMissing,
    NewJob,
    Policy,
    ResultRow,
    Status,
    UnknownJob,
    Usage,
    Verdict,
)

RETRY_503 = Failure(Verdict.RETRYABLE, "503", "The model is overloaded.")
PERM_400 = Failure(Verdict.PERMANENT, "400", "Invalid argument.")
UNKNOWN_409 = Failure(Verdict.UNKNOWN, "409", "Aborted.")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(ledger_url, clock):
    led = Ledger(ledger_url, clock=clock)
    yield led
    led.dispose()


def enroll(ledger: Ledger, n: int, pipeline: str = "p") -> list[str]:
    keys = [f"{pipeline}:k{i:03d}" for i in range(n)]
    ledger.enroll(
        (NewJob(k, {"contents": [{"parts": [{"text": k}]}]}) for k in keys),
        pipeline=pipeline,
        channel="batch",
        model="gemini-test",
    )
    return keys


def submit(ledger: Ledger, n: int, reservation: str = "r1", handle: str = "batches/1") -> None:
    assert ledger.reserve(pipeline="p", limit=n, reservation=reservation, batch_model="m") == n
    ledger.bind_batch(reservation, name=handle)


def test_enroll_inserts_new_and_never_changes_existing(ledger):
    """Enrolling an existing key is ignored and leaves the row as it was."""
    assert (
        ledger.enroll(
            [NewJob("a", {"x": 1}), NewJob("b", {"x": 2})], pipeline="p", channel="batch", model="m"
        )
        == 2
    )
    before = ledger.get("a")
    assert (
        ledger.enroll(
            [NewJob("a", {"x": 99}), NewJob("c", {"x": 3})],
            pipeline="p",
            channel="batch",
            model="m",
        )
        == 1
    )
    after = ledger.get("a")
    assert after.payload == before.payload == '{"x":1}'
    assert after.status == Status.PENDING
    assert ledger.counts().by_status == {"pending": 3}


def test_enroll_in_chunks_mixing_new_and_known_keys(ledger_url, clock):
    """Chunks of new keys, a chunk with a known key (and a key twice) and chunks after it
    enroll every new key once, keep the known row as it was, and count each kind; a row
    enrolled whole by COPY on PostgreSQL reads the same as one enrolled around a known key."""
    led = Ledger(ledger_url, clock=clock, chunk_size=3)
    try:
        assert led.enroll([NewJob("k4", {"x": "old"})], pipeline="p", channel="batch", model="m")
        items = [NewJob(f"k{i}", {"x": i}) for i in range(8)] + [NewJob("k7", {"x": "again"})]
        out = led.enroll_counted(items, pipeline="p", channel="batch", model="m")
        assert (out.enrolled, out.already_known, out.foreign) == (7, 2, 0)
        assert led.get("k4").payload == '{"x":"old"}'
        assert led.get("k7").payload == '{"x":7}'
        assert led.counts().by_status == {"pending": 8}
        # k0 is in the first chunk (all new), k3 in the one with k4, k6 in the one after.
        first, later = led.get("k0"), led.get("k6")
        assert led.get("k3").payload == '{"x":3}'
        for field in ("status", "attempts", "attempts_base", "unknown_failures", "due_at"):
            assert getattr(first, field) == getattr(later, field), field
        assert (first.prompt_tokens, first.created_at) == (0, clock.now)
    finally:
        led.dispose()


def test_get_unknown_key_raises(ledger):
    """Reading a key that was never enrolled raises UnknownJob."""
    with pytest.raises(UnknownJob):
        ledger.get("nope")


def test_reserve_claims_due_jobs_and_counts_an_attempt(ledger):
    """Reserve claims pending jobs up to the limit and counts one attempt each."""
    enroll(ledger, 5)
    assert ledger.reserve(pipeline="p", limit=3, reservation="r1", batch_model="m") == 3
    reserved = list(ledger.reserved("r1"))
    assert [r.key for r in reserved] == ["p:k000", "p:k001", "p:k002"]
    assert all(r.attempts == 1 for r in reserved)
    assert ledger.counts().by_status == {"pending": 2, "reserving": 3}
    assert ledger.batch("r1").rows == 3
    assert ledger.batch_members("r1") == ["p:k000", "p:k001", "p:k002"]
    # A second reservation only gets what is left.
    assert ledger.reserve(pipeline="p", limit=10, reservation="r2") == 2
    assert ledger.reserve(pipeline="p", limit=10, reservation="r3") == 0


def test_full_happy_path(ledger):
    """pending -> reserving -> submitted -> done -> consumed, with tokens recorded."""
    enroll(ledger, 2)
    submit(ledger, 2)
    assert {j.status for j in ledger.jobs()} == {"submitted"}
    applied = ledger.apply_results(
        [ResultRow("p:k000", '{"a":1}', 10, 5, 15), ResultRow("p:k001", '{"a":2}', 1, 2, 3)],
        handle="batches/1",
    )
    assert applied == 2
    assert ledger.done_unconsumed(pipeline="p") == [("p:k000", '{"a":1}'), ("p:k001", '{"a":2}')]
    assert ledger.consume(["p:k000", "p:k001"]) == 2
    job = ledger.get("p:k000")
    assert (job.status, job.attempts, job.total_tokens) == ("consumed", 1, 15)
    assert ledger.counts().total_tokens == 18


def test_applying_the_same_output_twice_changes_nothing(ledger):
    """A second apply of the same results (or a stale handle) leaves rows untouched."""
    enroll(ledger, 1)
    submit(ledger, 1)
    rows = [ResultRow("p:k000", '{"a":1}', 10, 5, 15)]
    assert ledger.apply_results(rows, handle="batches/1") == 1
    before = ledger.get("p:k000")
    assert ledger.apply_results(rows, handle="batches/1") == 0
    assert ledger.apply_results(rows, handle="batches/other") == 0
    assert ledger.get("p:k000") == before


def test_illegal_transitions_are_refused_without_changing_the_row(ledger):
    """Consume before done, bind twice, result without submission: refused, row unchanged."""
    enroll(ledger, 1)
    before = ledger.get("p:k000")
    with pytest.raises(InvalidTransition):
        ledger.consume_one("p:k000")
    with pytest.raises(InvalidTransition):
        ledger.record_result(ResultRow("p:k000", "{}"), handle="h")
    with pytest.raises(InvalidTransition):
        ledger.bind_handle("p:k000", reservation="r", handle="h")
    with pytest.raises(InvalidTransition):
        ledger.record_failure("p:k000", RETRY_503, policy=Policy(), handle="h")
    assert ledger.get("p:k000") == before
    ledger.reserve(pipeline="p", limit=1, reservation="r")
    ledger.bind_handle("p:k000", reservation="r", handle="interactions/1")
    bound = ledger.get("p:k000")
    with pytest.raises(InvalidTransition):
        ledger.bind_handle("p:k000", reservation="r", handle="interactions/2")
    with pytest.raises(InvalidTransition):
        ledger.replay(["p:k000"]) or ledger.consume_one("p:k000")
    assert ledger.get("p:k000") == bound


def test_retryable_failure_returns_job_until_the_cap_then_exhausts(ledger, clock):
    """A retryable failure re-queues the job; at the attempt cap it is parked exhausted."""
    enroll(ledger, 1)
    policy = Policy(attempt_cap=2)
    ledger.reserve(pipeline="p", limit=1, reservation="r1")
    ledger.bind_handle("p:k000", reservation="r1", handle="h1")
    assert ledger.record_failure("p:k000", RETRY_503, policy=policy, handle="h1") == "retryable"
    job = ledger.get("p:k000")
    assert (job.error_class, job.attempts, job.first_failure_at) == ("retryable:503", 1, clock.now)
    clock.now += 60
    ledger.reserve(pipeline="p", limit=1, reservation="r2")
    ledger.bind_handle("p:k000", reservation="r2", handle="h2")
    assert ledger.record_failure("p:k000", RETRY_503, policy=policy, handle="h2") == "parked"
    job = ledger.get("p:k000")
    assert (job.status, job.error_class, job.attempts) == ("parked", "exhausted:503", 2)
    assert job.last_failure_at == clock.now and job.first_failure_at == clock.now - 60
    assert ledger.reserve(pipeline="p", limit=1, reservation="r3") == 0


def test_permanent_failure_parks_after_one_attempt(ledger):
    """A permanent failure parks the job at once with its class."""
    enroll(ledger, 1)
    ledger.reserve(pipeline="p", limit=1, reservation="r1")
    status = ledger.record_failure("p:k000", PERM_400, policy=Policy(), reservation="r1")
    assert status == "parked"
    job = ledger.get("p:k000")
    assert (job.error_class, job.attempts, job.error_message) == (
        "permanent:400",
        1,
        "Invalid argument.",
    )


def test_unknown_failures_stop_at_their_own_cap(ledger):
    """Unknown failures park the job after unknown_cap of them, before the attempt cap."""
    enroll(ledger, 1)
    policy = Policy(attempt_cap=4, unknown_cap=2)
    statuses = []
    for i in range(2):
        ledger.reserve(pipeline="p", limit=1, reservation=f"r{i}")
        statuses.append(
            ledger.record_failure("p:k000", UNKNOWN_409, policy=policy, reservation=f"r{i}")
        )
    assert statuses == ["retryable", "parked"]
    assert ledger.get("p:k000").error_class == "unknown:409"


def test_retry_delay_makes_the_job_due_later(ledger, clock):
    """A server-sent retry delay keeps the job out of reserve until it has passed."""
    enroll(ledger, 1)
    ledger.reserve(pipeline="p", limit=1, reservation="r1")
    delayed = Failure(Verdict.RETRYABLE, "429", "slow down", retry_delay=30.0)
    ledger.record_failure("p:k000", delayed, policy=Policy(), reservation="r1")
    assert ledger.reserve(pipeline="p", limit=1, reservation="r2") == 0
    clock.now += 31
    assert ledger.reserve(pipeline="p", limit=1, reservation="r2") == 1


def test_latest_due_at_is_the_latest_of_the_rows_asked(ledger, clock):
    """A group's due time is its latest row's (a server delay on one holds the group back);
    keys the ledger does not know are not counted."""
    enroll(ledger, 3)
    ledger.reserve(pipeline="p", limit=1, reservation="r1", keys=["p:k001"])
    delayed = Failure(Verdict.RETRYABLE, "429", "slow down", retry_delay=30.0)
    ledger.record_failure("p:k001", delayed, policy=Policy(), reservation="r1")
    assert ledger.latest_due_at(["p:k000", "p:k001", "p:k002"]) == ledger.get("p:k001").due_at
    assert ledger.latest_due_at(["p:k000", "nobody"]) == ledger.get("p:k000").due_at
    assert ledger.latest_due_at(["nobody"]) is None
    assert ledger.get("p:k001").due_at >= clock.now + 30 > ledger.get("p:k000").due_at


def test_bulk_failures_and_missing_rows(ledger):
    """Bulk failures apply per row; rows the output never mentioned are failed as missing."""
    enroll(ledger, 4)
    submit(ledger, 4)
    policy = Policy()
    n = ledger.apply_failures(
        [FailureRow("p:k000", PERM_400), FailureRow("p:k001", RETRY_503, 3, 0, 3)],
        handle="batches/1",
        policy=policy,
    )
    assert n == 2
    ledger.apply_results([ResultRow("p:k002", "{}")], handle="batches/1")
    missing = Failure(Verdict.RETRYABLE, "missing_from_output", "not in the output")
    assert ledger.fail_outstanding(handle="batches/1", failure=missing, policy=policy) == 1
    statuses = {j.key: (j.status, j.error_class) for j in ledger.jobs()}
    assert statuses == {
        "p:k000": ("parked", "permanent:400"),
        "p:k001": ("retryable", "retryable:503"),
        "p:k002": ("done", None),
        "p:k003": ("retryable", "missing_from_output"),
    }
    assert ledger.get("p:k001").prompt_tokens == 3
    assert ledger.handle_counts("batches/1")[("parked", "permanent:400")] == 1


def test_bulk_paths_keep_first_of_repeated_keys_and_exact_text(ledger):
    """A key given twice in one bulk call counts once and keeps its first row; text with
    tabs, newlines, backslashes and non-ASCII survives intact (PostgreSQL stages by COPY)."""
    odd = 'tab\there\nnew line \\N back\\slash \u00e9\U0001f50b "q"'
    jobs = [NewJob("a", {"t": odd}), NewJob("a", {"t": "second"}), NewJob("b", {"t": 1})]
    assert ledger.enroll(jobs, pipeline="p", channel="batch", model="m") == 2
    assert ledger.get("a").payload_dict == {"t": odd}
    assert ledger.reserve(pipeline="p", limit=2, reservation="r1", batch_model="m") == 2
    ledger.bind_batch("r1", name="batches/1")
    results = [ResultRow("a", f'{{"v": "{odd}"}}', 5, 1, 6), ResultRow("a", "{}", 9, 9, 18)]
    assert ledger.apply_results(results, handle="batches/1") == 1
    a = ledger.get("a")
    assert (a.status, a.result, a.total_tokens) == ("done", results[0].result, 6)
    failures = [
        FailureRow("b", UNKNOWN_409, 2, 0, 2),
        FailureRow("b", PERM_400),
        FailureRow("c", PERM_400),  # never enrolled: refused, not counted
    ]
    handles = {"b": "batches/1", "c": "x"}
    assert ledger.apply_failures(failures, handle=handles, policy=Policy()) == 1
    b = ledger.get("b")
    assert (b.status, b.error_class, b.unknown_failures, b.prompt_tokens) == (
        "retryable",
        "unknown:409",
        1,
        2,
    )
    assert ledger.apply_failures(failures[:1], handle="batches/1", policy=Policy()) == 0


def test_bind_batch_is_idempotent_and_refuses_another_name(ledger):
    """Binding the same batch name twice is a no-op; a different name is refused."""
    enroll(ledger, 2)
    ledger.reserve(pipeline="p", limit=2, reservation="r1", batch_model="m")
    assert ledger.bind_batch("r1", name="batches/a") == 2
    assert ledger.bind_batch("r1", name="batches/a") == 0
    with pytest.raises(InvalidTransition):
        ledger.bind_batch("r1", name="batches/b")
    assert [b.name for b in ledger.submitted_batches(pipeline="p")] == ["batches/a"]
    assert ledger.finish_batch("batches/a", state="succeeded", summary={"ok": 2})
    assert not ledger.finish_batch("batches/a", state="succeeded", summary={"ok": 2})


def test_stale_reservations_are_taken_over_once(ledger, clock):
    """Only one taker wins a stale reservation; it is flagged as a possible duplicate."""
    enroll(ledger, 1)
    ledger.reserve(pipeline="p", limit=1, reservation="r1")
    assert ledger.stale_reservations(pipeline="p", older_than=300) == []
    clock.now += 301
    [stale] = ledger.stale_reservations(pipeline="p", older_than=300)
    assert stale.reservation == "r1"
    assert ledger.take_over(stale.key, old_reservation="r1", new_reservation="r2")
    assert not ledger.take_over(stale.key, old_reservation="r1", new_reservation="r3")
    job = ledger.get(stale.key)
    assert (job.reservation, job.possible_duplicates, job.attempts) == ("r2", 1, 1)


def test_stale_batch_lease_has_one_winner(ledger, clock):
    """Two ticks that find the same stale batch reservation: only one leases it."""
    enroll(ledger, 1)
    ledger.reserve(pipeline="p", limit=1, reservation="r1", batch_model="m")
    clock.now += 700
    [stale] = ledger.stale_batches(pipeline="p", older_than=600)
    assert ledger.lease_batch("r1", seen_lease=stale.leased_at)
    assert not ledger.lease_batch("r1", seen_lease=stale.leased_at)
    assert ledger.stale_batches(pipeline="p", older_than=600) == []


def test_release_gives_the_attempt_back(ledger):
    """Releasing a reservation that never reached the API restores the job and its attempts."""
    enroll(ledger, 1)
    ledger.reserve(pipeline="p", limit=1, reservation="r1", batch_model="m")
    assert ledger.release("r1") == 1
    job = ledger.get("p:k000")
    assert (job.status, job.attempts) == ("pending", 0)
    assert ledger.batch("r1").state == "released"


def test_release_keys_takes_rows_out_of_a_batch_before_it_is_sent(ledger):
    """Rows released from a batch reservation (its file was full) return to their queue with
    their attempt given back, leave the batch's members, and are not bound with it."""
    keys = enroll(ledger, 5)
    submit(ledger, 1, reservation="r0", handle="batches/0")
    ledger.apply_failures([FailureRow(keys[0], RETRY_503)], handle="batches/0", policy=Policy())
    assert ledger.reserve(pipeline="p", limit=5, reservation="r1", batch_model="m") == 5
    assert ledger.release_keys("r1", [keys[0], keys[4]]) == 2
    assert ledger.batch("r1").rows == 3
    assert ledger.batch_members("r1") == keys[1:4]
    assert ledger.bind_batch("r1", name="batches/1") == 3
    rows = {j.key: (j.status, j.attempts, j.handle) for j in ledger.jobs()}
    assert rows[keys[0]] == ("retryable", 1, None)
    assert rows[keys[4]] == ("pending", 0, None)
    assert {rows[k] for k in keys[1:4]} == {("submitted", 1, "batches/1")}


def test_park_keys_parks_rows_of_a_batch_reservation_in_one_step(ledger):
    """Rows no batch file can carry are parked from their reservation at once: attempt
    given back, out of the batch's members; rows of another reservation are untouched."""
    keys = enroll(ledger, 5)
    assert ledger.reserve(pipeline="p", limit=3, reservation="r1", batch_model="m") == 3
    assert ledger.reserve(pipeline="p", limit=2, reservation="r2", batch_model="m") == 2
    too_large = Failure(Verdict.PERMANENT, "request_too_large", "larger than a whole file")
    assert ledger.park_keys("r1", [keys[0], keys[3]], too_large) == 1  # keys[3] is r2's
    assert ledger.batch("r1").rows == 2
    assert ledger.batch_members("r1") == keys[1:3]
    rows = {j.key: (j.status, j.attempts, j.error_class) for j in ledger.jobs()}
    assert rows[keys[0]] == ("parked", 0, "permanent:request_too_large")
    assert {rows[k][0] for k in keys[1:]} == {"reserving"}
    assert ledger.get(keys[0]).reservation is None


def test_replay_returns_parked_jobs_with_history(ledger, clock):
    """Replay moves parked jobs back to pending, keeps attempts, and remembers it."""
    enroll(ledger, 3)
    for i, failure in enumerate([PERM_400, PERM_400, RETRY_503]):
        clock.now += 1
        ledger.reserve(pipeline="p", limit=1, reservation=f"r{i}")
        ledger.record_failure(
            f"p:k00{i}", failure, policy=Policy(attempt_cap=1), reservation=f"r{i}"
        )
    parked = ledger.select_for_replay(limit=10)
    assert [j.key for j in parked] == ["p:k000", "p:k001", "p:k002"]
    assert [j.key for j in ledger.select_for_replay(error_class="exhausted:503")] == ["p:k002"]
    assert [j.key for j in ledger.select_for_replay(limit=1)] == ["p:k000"]
    assert ledger.replay(["p:k000", "p:k001"]) == 2
    assert ledger.replay(["p:k000"]) == 0
    job = ledger.get("p:k000")
    assert (job.status, job.attempts, job.attempts_base, job.replayed) == ("pending", 1, 1, 1)
    # The cap counts again from the replay: one more attempt is allowed.
    ledger.reserve(pipeline="p", limit=1, reservation="again", keys=["p:k000"])
    assert ledger.get("p:k000").attempts == 2


def test_poison_inputs_group_parked_payloads(ledger):
    """The same payload parked under several keys is reported as a poison input."""
    ledger.enroll(
        [NewJob(f"k{i}", {"same": True}) for i in range(3)],
        pipeline="p",
        channel="direct",
        model="m",
    )
    ledger.reserve(pipeline="p", limit=3, reservation="r")
    for i in range(3):
        ledger.record_failure(f"k{i}", PERM_400, policy=Policy(), reservation="r")
    [(fingerprint, keys, cls)] = ledger.poison_inputs()
    assert keys == 3 and cls == "permanent:400"
    assert fingerprint == ledger.get("k0").fingerprint


def test_webhook_deliveries_are_recorded_once(ledger):
    """A repeated webhook id is recognised."""
    assert ledger.record_delivery("msg_1", event_type="batch.succeeded", subject="batches/1")
    assert not ledger.record_delivery("msg_1", event_type="batch.succeeded", subject="batches/1")


def test_snapshots_tell_an_empty_day_from_a_missing_one(ledger):
    """A day summarised with nothing parked reads as {}, a day never summarised as None."""
    ledger.save_snapshot("2026-11-21", {})
    ledger.save_snapshot("2026-11-22", {"permanent:400": 2})
    ledger.save_snapshot("2026-11-22", {"permanent:400": 3, "safety": 1})
    assert ledger.snapshot("2026-11-21") == {}
    assert ledger.snapshot("2026-11-22") == {"permanent:400": 3, "safety": 1}
    assert ledger.snapshot("2026-11-20") is None


def test_messages_are_redacted(ledger):
    """A secret in an error message never reaches the ledger."""
    from ledger import register_secret

    register_secret("sk-very-secret-value")
    enroll(ledger, 1)
    ledger.reserve(pipeline="p", limit=1, reservation="r")
    leaky = Failure(Verdict.PERMANENT, "400", "bad key sk-very-secret-value in request")
    ledger.record_failure("p:k000", leaky, policy=Policy(), reservation="r")
    assert "sk-very-secret-value" not in (ledger.get("p:k000").error_message or "")


def test_fresh_ledger_is_created_on_purpose_only_and_reopens(unmigrated_ledger_url):
    """A database without a ledger is refused unless created on purpose; reopening it then
    is a no-op."""
    ledger_url = unmigrated_ledger_url
    with pytest.raises(LedgerMissing, match="gemini-ledger db upgrade"):
        Ledger(ledger_url)
    first = Ledger(ledger_url, create=True)
    first.enroll([NewJob("a", {})], pipeline="p", channel="direct", model="m")
    first.dispose()
    second = Ledger(ledger_url)
    assert second.get("a").status == "pending"
    second.dispose()


def test_counts_carry_tokens_as_one_usage(ledger):
    """Counts hold the tokens as one Usage value; as_dict still reports the three counts."""
    enroll(ledger, 2)
    submit(ledger, 2)
    ledger.apply_results(
        [ResultRow("p:k000", '{"a":1}', 10, 5, 15), ResultRow("p:k001", '{"a":2}', 1, 2, 3)],
        handle="batches/1",
    )
    counts = ledger.counts()
    assert counts.usage == Usage(11, 7, 18)
    assert (counts.prompt_tokens, counts.candidates_tokens, counts.total_tokens) == (11, 7, 18)
    assert counts.as_dict()["tokens"] == {
        "prompt": 11,
        "candidates": 7,
        "total": 18,
        "thoughts": 0,
        "cached": 0,
        "audio": 0,
    }
