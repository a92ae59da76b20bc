"""Context caches as ledger rows: reserved by prefix digest, bound, taken over from a dead
pass, reserved again when expiring, expired or deleted, and deletable only once every row of
the pipeline is final."""

from __future__ import annotations

import pytest

from ledger import (
    CACHE_EXPIRED,
    ApiFailure,
    CacheAction,
    CacheState,
    Failure,
    FailureRow,
    Ledger,
    NewJob,
    Policy,
    Status,
    Verdict,
    classify,
    setup_fault,
)
from ledger.testing import CACHE_MOVES

H = "c" * 64
P = "prefixed"


@pytest.fixture
def clocked(ledger_url):
    now = [1_000_000.0]
    led = Ledger(ledger_url, clock=lambda: now[0])
    led.enroll(
        [NewJob(k, {"text": k}) for k in ("r1", "r2")], pipeline=P, channel="direct", model="m"
    )
    yield led, now
    led.dispose()


def _reserve(led: Ledger, token: str, now: float):
    return led.reserve_cache(
        P, H, token=token, model="m", fresh_until=now + 100, stale_before=now - 50
    )


def test_one_cache_per_prefix_and_a_second_pass_waits(clocked) -> None:
    """The first pass reserves the cache; a second pass meanwhile waits (never creates a
    second one); once bound every pass uses it, with its name and token count."""
    led, now = clocked
    assert _reserve(led, "t1", now[0]).action is CacheAction.CREATE
    assert _reserve(led, "t2", now[0]).action is CacheAction.WAIT
    assert led.bind_cache(
        P, H, token="t1", name="cachedContents/a", expires_at=now[0] + 1000, tokens=4000
    )
    claim = _reserve(led, "t3", now[0])
    assert (claim.action, claim.record.name, claim.record.tokens, claim.record.creates) == (
        CacheAction.USE,
        "cachedContents/a",
        4000,
        1,
    )


def test_a_dead_pass_reservation_is_taken_over_and_its_bind_refused(clocked) -> None:
    """A reservation unrenewed past the stale age is taken over (flagged: look the cache up
    by display name first); the dead pass's late bind changes nothing."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    now[0] += 60
    claim = _reserve(led, "t2", now[0])
    assert (claim.action, claim.taken_over) == (CacheAction.CREATE, True)
    assert not led.bind_cache(P, H, token="t1", name="cachedContents/old", expires_at=0, tokens=1)
    assert led.bind_cache(
        P, H, token="t2", name="cachedContents/new", expires_at=now[0] + 1000, tokens=1
    )
    assert led.get_cache(P, H).name == "cachedContents/new"


def test_an_expiring_or_expired_cache_is_created_again(clocked) -> None:
    """A cache expiring before ``fresh_until`` is reserved anew; one a request found gone
    (``cache_expired``) too: the row is never sent naming a dead cache."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    led.bind_cache(P, H, token="t1", name="cachedContents/a", expires_at=now[0] + 50, tokens=1)
    assert _reserve(led, "t2", now[0]).action is CacheAction.CREATE
    led.bind_cache(P, H, token="t2", name="cachedContents/b", expires_at=now[0] + 999, tokens=1)
    assert not led.cache_expired(P, H, name="cachedContents/a")  # not the bound one
    assert led.cache_expired(P, H, name="cachedContents/b")
    assert led.get_cache(P, H).state == CacheState.EXPIRED.value
    assert _reserve(led, "t3", now[0]).action is CacheAction.CREATE
    assert led.get_cache(P, H).creates == 2


def test_released_create_leaves_no_row(clocked) -> None:
    """A refused create removes the reservation: the next pass reserves it again."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    assert not led.release_cache(P, H, token="other")
    assert led.release_cache(P, H, token="t1")
    assert led.get_cache(P, H) is None


def test_deletable_only_once_every_row_is_final(clocked) -> None:
    """While any row of the pipeline may still be sent, its cache stays; once every row is
    done or parked it is due for deletion, and deleted once."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    led.bind_cache(P, H, token="t1", name="cachedContents/a", expires_at=now[0] + 999, tokens=1)
    assert led.caches_to_delete(pipeline=P) == []
    led.park("r1", Failure(Verdict.PERMANENT, "400", "bad"), from_status=[Status.PENDING])
    assert led.caches_to_delete(pipeline=P) == []
    led.park("r2", Failure(Verdict.PERMANENT, "400", "bad"), from_status=[Status.PENDING])
    due = led.caches_to_delete(pipeline=P)
    assert [c.name for c in due] == ["cachedContents/a"]
    led.cache_delete_failed(P, H, error="503")
    assert led.get_cache(P, H).delete_failures == 1
    assert led.cache_deleted(P, H, name="cachedContents/a")
    assert not led.cache_deleted(P, H, name="cachedContents/a")
    assert led.get_cache(P, H).state == CacheState.DELETED.value
    assert led.caches_to_delete(pipeline=P) == []


def _finish_rows(led: Ledger) -> None:
    for key in ("r1", "r2"):
        led.park(key, Failure(Verdict.PERMANENT, "400", "bad"), from_status=[Status.PENDING])


def test_a_superseded_cache_is_kept_and_deleted_once_every_row_is_final(clocked) -> None:
    """A cache superseded for expiring too soon keeps its name in a retired row (rows
    submitted naming it may still read it): both caches are due once every row is final,
    and each is deleted once."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    led.bind_cache(P, H, token="t1", name="cachedContents/a", expires_at=now[0] + 50, tokens=1)
    assert _reserve(led, "t2", now[0]).action is CacheAction.CREATE
    led.bind_cache(P, H, token="t2", name="cachedContents/b", expires_at=now[0] + 999, tokens=1)
    assert led.caches_to_delete(pipeline=P) == []
    _finish_rows(led)
    due = led.caches_to_delete(pipeline=P)
    assert sorted(c.name for c in due) == ["cachedContents/a", "cachedContents/b"]
    for rec in due:
        assert led.cache_deleted(P, rec.prefix_hash, name=rec.name)
    assert led.caches_to_delete(pipeline=P) == []
    assert {c.state for c in led.caches(P)} == {CacheState.DELETED.value}
    assert led.get_cache(P, H).creates == 2


def test_a_superseded_cache_survives_a_refused_create(clocked) -> None:
    """The create superseding an expired cache is refused (its reservation removed): the
    old cache's name is still recorded and deleted at the end."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    led.bind_cache(P, H, token="t1", name="cachedContents/a", expires_at=now[0] + 999, tokens=1)
    assert led.cache_expired(P, H, name="cachedContents/a")
    _reserve(led, "t2", now[0])
    assert led.release_cache(P, H, token="t2")
    _finish_rows(led)
    assert [c.name for c in led.caches_to_delete(pipeline=P)] == ["cachedContents/a"]


def test_a_dead_pass_reservation_is_cleaned_up_once_stale(clocked) -> None:
    """A reservation whose pass died (its create may have made a cache) is due for cleanup
    once stale and every row is final, and is marked deleted once; a fresh one is not."""
    led, now = clocked
    _reserve(led, "t1", now[0])
    _finish_rows(led)
    assert led.caches_to_delete(pipeline=P, stale_before=now[0] - 1) == []
    (due,) = led.caches_to_delete(pipeline=P, stale_before=now[0] + 1)
    assert (due.state, due.token) == (CacheState.RESERVING.value, "t1")
    assert not led.abandoned_cache_deleted(P, H, token="other")
    assert led.abandoned_cache_deleted(P, H, token="t1")
    assert led.get_cache(P, H).state == CacheState.DELETED.value
    assert led.caches_to_delete(pipeline=P, stale_before=now[0] + 1) == []


def test_moves_are_declared_once() -> None:
    """Every cache verb's target is a CacheState (or removal), declared in one table."""
    assert set(CACHE_MOVES) == {
        "reserve_cache",
        "bind_cache",
        "release_cache",
        "cache_expired",
        "cache_deleted",
        "retire_cache",
        "abandoned_cache_deleted",
    }
    assert CACHE_MOVES["reserve_cache"][1] is CacheState.RESERVING


@pytest.mark.parametrize(
    "error",
    [
        # What the API answers for a gone cache: 403 (google.rpc code 7 on a batch line) ...
        {
            "code": 403,
            "status": "PERMISSION_DENIED",
            "message": "CachedContent not found (or permission denied)",
        },
        {"code": 7, "message": "CachedContent not found (or permission denied)"},
        # ... and the other readings reported: 404, or a 400 naming the cached content.
        {
            "code": 404,
            "status": "NOT_FOUND",
            "message": "Cached content cachedContents/x not found",
        },
        {"code": 400, "status": "INVALID_ARGUMENT", "message": "CachedContent has expired"},
    ],
)
def test_a_request_refused_for_its_cache_is_retried_never_a_setup_fault(error) -> None:
    """Any reading of "the request's cache is gone" is the row's retryable cache_expired
    (made again for its next attempt), and never a fault of the key that halts the tick."""
    failure = classify({"error": error})
    assert (failure.verdict, failure.code) == (Verdict.RETRYABLE, CACHE_EXPIRED)
    api = ApiFailure(
        http_code=error["code"] if error["code"] > 99 else 403, message=error["message"]
    )
    assert setup_fault(api) is None


def _send(led: Ledger, n: int) -> None:
    led.reserve(pipeline=P, limit=1, reservation=f"res{n}", keys=["r1"])
    led.bind_handle("r1", reservation=f"res{n}", handle=f"h{n}")


@pytest.mark.parametrize("bulk", [False, True])
def test_a_request_refused_for_its_gone_cache_costs_no_attempt(clocked, bulk) -> None:
    """A cache_expired refusal (refused, not billed, not the row's fault) gives the row its
    attempt back: it comes back retryable however often, never parked at the cap; another
    retryable failure still counts."""
    led, _ = clocked
    policy = Policy(attempt_cap=2)
    gone = Failure(Verdict.RETRYABLE, CACHE_EXPIRED, "cached content: gone")
    for n in range(3):
        _send(led, n)
        if bulk:
            led.apply_failures([FailureRow("r1", gone)], handle=f"h{n}", policy=policy)
        else:
            led.record_failure("r1", gone, policy=policy, handle=f"h{n}")
        view = led.get("r1")
        assert (view.status, view.attempts) == (Status.RETRYABLE.value, 0)
    _send(led, 9)
    busy = Failure(Verdict.RETRYABLE, "503", "busy")
    led.record_failure("r1", busy, policy=policy, handle="h9")
    assert led.get("r1").attempts == 1


@pytest.mark.parametrize(
    "message",
    [
        "CachedContent can not be used with GenerateContent request setting"
        " system_instruction, tools or tool_config.",
        "Model used by GenerateContent request (models/a) and CachedContent (models/b) has"
        " to be the same.",
        "Cached content is too small. total_token_count=10, min_total_token_count=1024",
    ],
)
def test_a_request_misusing_its_cache_is_not_a_gone_cache(message) -> None:
    """A 400 naming the cached content for a reason of the request (a system instruction
    beside it, another model, too small) is not cache_expired: the cache would be made
    again for every attempt."""
    failure = classify({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}})
    assert failure.code != CACHE_EXPIRED
    assert failure.verdict is Verdict.PERMANENT


def test_a_plain_permission_refusal_is_still_a_fault_of_the_setup() -> None:
    """A 403 that does not speak of a cache stays the setup's permission fault."""
    api = ApiFailure(
        http_code=403, status="PERMISSION_DENIED", message="The caller does not have permission"
    )
    assert setup_fault(api) is not None
    assert classify({"error": {"code": 403, "message": "denied"}}).code == "403"
