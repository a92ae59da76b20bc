"""A schema failure of an answer asked under an earlier pipeline revision sends the row back;
the delivery claim lives in its own columns."""

from __future__ import annotations

from sqlalchemy import text

from ledger import (
    Failure,
    FailureRow,
    Ledger,
    NewJob,
    Policy,
    ResultRow,
    Status,
    Verdict,
    make_engine,
    upgrade,
)

SCHEMA = Failure(Verdict.PERMANENT, "schema", "answer is missing severity")
POLICY = Policy(attempt_cap=4, unknown_cap=2)


def _record(ledger: Ledger, fingerprint: str) -> int:
    change = ledger.record_pipeline(
        "p", spec="m:pipeline", channel="batch", model="m", schema_fingerprint=fingerprint
    )
    return change.record.revision


def _submit(ledger: Ledger, keys: list[str], token: str) -> None:
    ledger.reserve(pipeline="p", limit=len(keys), reservation=token, keys=keys)
    for k in keys:
        ledger.bind_handle(k, reservation=token, handle=f"h-{k}")


def test_schema_failure_of_an_earlier_revision_is_sent_back(ledger_url: str) -> None:
    """Old-revision rows go back to their queue (tokens kept, caps untouched); a row asked
    under the current revision is parked `schema` as before."""
    ledger = Ledger(ledger_url)
    assert _record(ledger, "v1") == 1
    keys = ["old-a", "old-b", "old-c", "new"]
    ledger.enroll([NewJob(k, {"k": k}) for k in keys], pipeline="p", channel="batch", model="m")
    _submit(ledger, ["old-a", "old-b", "old-c"], "r1")
    assert _record(ledger, "v2") == 2
    _submit(ledger, ["new"], "r2")
    assert {k: ledger.get(k).schema_revision for k in keys} == {
        "old-a": 1,
        "old-b": 1,
        "old-c": 1,
        "new": 2,
    }
    handles = {k: f"h-{k}" for k in keys}
    rows = [FailureRow(k, SCHEMA, 3, 4, 7) for k in ("old-a", "new")]
    assert ledger.apply_failures(rows, handle=handles, policy=POLICY) == 2
    # The one-row verb, as the direct channel may call it.
    assert ledger.record_failure("old-b", SCHEMA, policy=POLICY, handle="h-old-b") == "pending"
    # Another failure of an old-revision row is the row's own, as always.
    other = Failure(Verdict.PERMANENT, "safety", "blocked")
    assert ledger.record_failure("old-c", other, policy=POLICY, handle="h-old-c") == "parked"
    a, b, c, new = (ledger.get(k) for k in keys)
    assert (a.status, a.attempts, a.attempts_base, a.handle, a.error_class) == (
        Status.PENDING,
        1,
        1,
        None,
        None,
    )
    assert a.total_tokens == 7 and b.status == Status.PENDING
    assert (c.status, c.error_class) == (Status.PARKED, "safety")
    assert (new.status, new.error_class) == (Status.PARKED, "schema")
    # Sent again, the row is stamped with the current revision: a refusal now parks it.
    _submit(ledger, ["old-a"], "r3")
    again = ledger.get("old-a")
    assert (again.attempts, again.schema_revision) == (2, 2)
    ledger.apply_failures([FailureRow("old-a", SCHEMA)], handle="h-old-a", policy=POLICY)
    assert (ledger.get("old-a").status, ledger.get("old-a").error_class) == (
        Status.PARKED,
        "schema",
    )
    ledger.dispose()


def test_a_retryable_row_sent_back_stays_retryable(sqlite_url: str) -> None:
    """A row with an earlier failure still counted goes back as retryable, not pending."""
    ledger = Ledger(sqlite_url)
    _record(ledger, "v1")
    ledger.enroll([NewJob("k", {})], pipeline="p", channel="batch", model="m")
    _submit(ledger, ["k"], "r1")
    busy = Failure(Verdict.RETRYABLE, "503", "busy")
    assert ledger.record_failure("k", busy, policy=POLICY, handle="h-k") == "retryable"
    _submit(ledger, ["k"], "r2")
    _record(ledger, "v2")
    assert ledger.requeue_outdated([FailureRow("k", SCHEMA)], handle="h-k") == 1
    job = ledger.get("k")
    assert (job.status, job.attempts, job.attempts_base) == (Status.RETRYABLE, 2, 1)
    ledger.dispose()


def test_the_delivery_claim_has_its_own_columns(ledger_url: str) -> None:
    """claim_done writes delivery_claim and claimed_at, never the reservation; consuming
    clears the claim."""
    now = [100.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    ledger.enroll([NewJob("k", {})], pipeline="p", channel="batch", model="m")
    _submit(ledger, ["k"], "r1")
    ledger.apply_results([ResultRow("k", "{}")], handle="h-k")
    now[0] = 200.0
    assert [k for k, _ in ledger.claim_done(pipeline="p", token="t1")] == ["k"]
    job = ledger.get("k")
    assert (job.delivery_claim, job.claimed_at, job.reservation) == ("t1", 200.0, None)
    assert ledger.consume(["k"]) == 1
    job = ledger.get("k")
    assert (job.status, job.delivery_claim, job.claimed_at) == (Status.CONSUMED, None, None)
    ledger.dispose()


def test_upgrade_moves_held_claims_to_their_column(unmigrated_ledger_url: str) -> None:
    """A done row claimed under the old schema (token in reservation) keeps its claim,
    now in delivery_claim, with the claim's time; other rows' reservations stay."""
    engine = make_engine(unmigrated_ledger_url)
    upgrade(engine, revision="0004")
    insert = text(
        "INSERT INTO jobs (key, pipeline, channel, model, payload, fingerprint, status,"
        " reservation, attempts, attempts_base, unknown_failures, prompt_tokens,"
        " candidates_tokens, total_tokens, due_at, possible_duplicates, replayed, created_at,"
        " updated_at) VALUES (:key, 'p', 'batch', 'm', '{}', 'f', :status, :r, 1, 0, 0, 0, 0,"
        " 0, 0, 0, 0, 0, 50)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"key": "claimed", "status": Status.DONE.value, "r": "t1"})
        conn.execute(insert, {"key": "reserved", "status": Status.RESERVING.value, "r": "r1"})
    upgrade(engine)
    engine.dispose()
    ledger = Ledger(unmigrated_ledger_url)
    claimed, reserved = ledger.get("claimed"), ledger.get("reserved")
    assert (claimed.delivery_claim, claimed.claimed_at, claimed.reservation) == ("t1", 50, None)
    assert (reserved.delivery_claim, reserved.reservation) == (None, "r1")
    # The claim is stale by its time: another tick takes it over.
    assert [k for k, _ in ledger.claim_done(pipeline="p", token="t2")] == ["claimed"]
    ledger.dispose()
