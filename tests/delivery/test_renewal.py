"""A pass renews what it holds while it works: delivery claims, a reservation being sent, a
batch lease. A hold that stopped being renewed is taken over; a live one never is."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date

from flows.channels.background import BackgroundChannel
from flows.settings import Settings
from flows.testing import BatchLease, RunContext, send_batch
from ledger import Ledger, NewJob, ResultRow, Status

from . import pipelines
from .pipelines import SharedClock

AGE = 0.4  # renewed every 0.1 s of real time


def _eventually(condition: Callable[[], bool]) -> bool:
    """Wait (bounded) for a renewal thread to have done its work."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)
    return True


def _enroll(ledger: Ledger, name: str, n: int) -> list[str]:
    keys = [f"{name}:{i}" for i in range(n)]
    prompts = (NewJob(k, {"text": f"about {k}"}) for k in keys)
    ledger.enroll(prompts, pipeline=name, channel="batch", model="m")
    return keys


def _claimed_by_a(ledger_url: str, n: int) -> tuple[SharedClock, Ledger, list[str]]:
    """``n`` rows of pipeline ``p`` answered by a batch job, all claimed by the pass ``a``."""
    clock = SharedClock()
    ledger = Ledger(ledger_url, clock=clock)
    keys = _enroll(ledger, "p", n)
    ledger.reserve(pipeline="p", limit=n, reservation="r", batch_model="m")
    ledger.bind_batch("r", name="batches/r")
    ledger.apply_results([ResultRow(k, "{}") for k in keys], handle="batches/r")
    assert len(ledger.claim_done(pipeline="p", token="a", older_than=10)) == n
    return clock, ledger, keys


def test_consume_with_a_token_records_only_rows_the_pass_still_holds(ledger_url: str) -> None:
    """A claim taken over (stale) is no longer the first pass's: its renewal and its consume
    change nothing, the new holder's do."""
    clock, ledger, keys = _claimed_by_a(ledger_url, 2)
    clock.advance(5)
    assert ledger.renew_delivery("a", key=keys[0]) == 1  # a keeps the first row fresh
    clock.advance(6)
    assert [k for k, _ in ledger.claim_done(pipeline="p", token="b", older_than=10)] == [keys[1]]
    assert ledger.renew_delivery("a", key=keys[1]) == 0
    assert ledger.consume([keys[1]], token="a") == 0
    assert ledger.consume([keys[1]], token="b") == 1
    assert ledger.renew_delivery("a") == 1
    assert ledger.consume([keys[0]], token="a") == 1
    assert {j.status for j in ledger.jobs(pipeline="p")} == {Status.CONSUMED}


def test_consume_and_renew_records_one_row_and_keeps_the_next_in_one_write(
    ledger_url: str,
) -> None:
    """The pass's write after a side effect consumes that row and renews its claim on the
    next one; each half moves only a row the pass still holds, and says so."""
    clock, ledger, keys = _claimed_by_a(ledger_url, 3)
    clock.advance(5)
    assert ledger.consume_and_renew(keys[0], token="a", next_key=keys[1]) == (1, 1)
    assert ledger.get(keys[0]).status == Status.CONSUMED
    clock.advance(6)  # keys[1] renewed 6 s ago, keys[2] 11 s ago: only keys[2] is stale
    assert [k for k, _ in ledger.claim_done(pipeline="p", token="b", older_than=10)] == [keys[2]]
    assert ledger.consume_and_renew(keys[1], token="a", next_key=keys[2]) == (1, 0)
    assert ledger.consume_and_renew(keys[2], token="a", next_key=keys[1]) == (0, 0)
    assert ledger.get(keys[2]).status == Status.DONE  # b's, still to deliver


def test_a_background_reservation_being_sent_is_renewed_not_taken_over(
    ledger_url: str,
) -> None:
    """While a tick holds its reservation (sending it) the rows stay fresh however long that
    takes; once it stops renewing (it died) they are stale for the next tick."""
    clock = SharedClock()
    ledger = Ledger(ledger_url, clock=clock)
    name = pipelines.background.name
    _enroll(ledger, name, 3)
    assert ledger.reserve(pipeline=name, limit=3, reservation="bg-submit-x") == 3
    ctx = RunContext(
        spec="tests.delivery.pipelines:background",
        pipeline=pipelines.background,
        ledger=ledger,
        settings=Settings.given(database_url=ledger_url, background_stale_s=AGE),
        day=date(2026, 12, 6),
    )
    channel = BackgroundChannel(ctx)

    def renewed_since(t: float) -> bool:
        return all((j.reserved_at or 0) >= t for j in ledger.jobs(pipeline=name))

    with channel._holding("bg-submit-x"):
        clock.advance(3 * AGE)  # a send that takes longer than the stale age
        assert _eventually(lambda: renewed_since(clock()))
        assert ledger.stale_reservations(pipeline=name, older_than=AGE) == []
    clock.advance(3 * AGE)  # the pass is gone: nothing renews its rows any more
    assert len(ledger.stale_reservations(pipeline=name, older_than=AGE)) == 3


def test_a_batch_reservation_taken_over_is_not_sent_by_its_old_pass(ledger_url: str) -> None:
    """A live batch pass keeps its lease while it works; once another tick has leased the
    reservation (this pass went unrenewed), the old pass uploads and creates nothing."""
    clock = SharedClock()
    ledger = Ledger(ledger_url, clock=clock)
    name = pipelines.batch.name
    _enroll(ledger, name, 3)
    ledger.reserve(pipeline=name, limit=3, reservation="gl-x", batch_model="m")
    with BatchLease(ledger, "gl-x", AGE) as lease:
        clock.advance(3 * AGE)
        first = lease.seen
        assert _eventually(lambda: lease.seen != first)
        assert ledger.stale_batches(pipeline=name, older_than=AGE) == []
        # Another tick takes it over (as it would once this one stopped renewing).
        with lease.renewal.exclusive():
            clock.advance(3 * AGE)  # stale for the other tick: this one went unrenewed
            rec = ledger.batch("gl-x")
            assert rec is not None
            assert ledger.lease_batch("gl-x", seen_lease=rec.leased_at)
        # No client: the old pass must not get as far as an upload.
        sent = send_batch(ledger, None, pipelines.batch, "gl-x", lease)
    assert sent["batch"] is None and sent["taken_over"]
    assert {j.status for j in ledger.jobs(pipeline=name)} == {Status.RESERVING}


def test_claim_done_says_which_claims_a_dead_pass_held_and_when(ledger_url: str) -> None:
    """Claims taken over (unrenewed past the age) are counted with the dead pass's last
    renewal; free rows, a live pass's claims and the pass's own are not."""
    from ledger import TakenOver

    clock = SharedClock()
    ledger = Ledger(ledger_url, clock=clock)
    keys = _enroll(ledger, "p", 5)
    ledger.reserve(pipeline="p", limit=5, reservation="r", batch_model="m")
    ledger.bind_batch("r", name="batches/r")
    ledger.apply_results([ResultRow(k, "{}") for k in keys[:4]], handle="batches/r")
    assert len(ledger.claim_done(pipeline="p", token="dead", limit=2, older_than=10)) == 2
    clock.advance(3)
    ledger.renew_delivery("dead", key=keys[1])  # its last sign of life, at 1_000_003
    clock.advance(1)
    assert len(ledger.claim_done(pipeline="p", token="alive", limit=1, older_than=10)) == 1
    clock.advance(9.5)  # the dead pass's claims are older than 10 s, the live one's are not
    ledger.apply_results([ResultRow(keys[4], "{}")], handle="batches/r")

    claimed = ledger.claim_done(pipeline="p", token="next", older_than=10)

    assert sorted(k for k, _ in claimed) == [keys[0], keys[1], keys[3], keys[4]]
    assert claimed.taken_over == TakenOver(2, 1_000_003.0)
    again = ledger.claim_done(pipeline="p", token="next", older_than=10)
    assert len(again) == 4 and again.taken_over == TakenOver()  # its own claims are not
