"""interactions.create answered 5xx or not at all (issue #25 item 3): the interaction may exist
and interactions cannot be listed, so the row is sent again flagged as a possible duplicate
(its attempt counted: the request reached the API), the ambiguity is counted, and the row is
never parked for it, until the flags reach the attempt cap (then it is the row's own failure)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import ApiFailure, Transport

from .conftest import Bench, key_of

KEY = key_of("alpha")
CAP = 3  # tests.background.pipelines:tiny's attempt_cap


def _row(bench: Bench) -> Any:
    return bench.ledger().get(KEY)


def _billed_equals_counted(bench: Bench) -> None:
    """Each request the API received is an attempt (no kill here, so no uncounted orphan)."""
    assert bench.submissions().get(KEY, 0) == _row(bench).attempts


def test_accepted_then_504_sends_again_flagged_and_never_parks(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three creates made the interaction and answered 504 (as many as the attempt cap): each
    tick counts one ambiguous create, the row stays queued (its attempts counted, at the cap
    too) with one more possible duplicate, nothing parked; the fourth create goes through and
    it is delivered once."""
    bench.set_items(["alpha"], monkeypatch)
    bench.emulator.set_scenario({"route_faults": {"interactions.create": ["accepted_504"] * CAP}})
    for n in range(1, CAP + 1):
        report = bench.tick()
        row = _row(bench)
        assert (row.status, row.attempts, row.possible_duplicates) == ("retryable", n, n)
        assert row.error_class == "ambiguous:504"
        assert report.submit.ambiguous == 1 and report.parked == {}, report
        _billed_equals_counted(bench)
    assert bench.emulator.stats()["interactions_created"] == CAP  # each one was made
    sent = bench.tick()
    assert sent.submitted == 1 and sent.submit.ambiguous == 0
    bench.tick()
    row = _row(bench)
    assert (row.status, row.attempts, row.possible_duplicates) == ("consumed", CAP + 1, CAP)
    assert bench.completions() == {KEY: 1}
    _billed_equals_counted(bench)


def test_a_row_always_answered_5xx_still_ends_parked_within_bounded_ticks(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create answered 504 every time: flagged up to the attempt cap, then the next one is
    the row's own failure and parks it ``exhausted:504``, after cap + 1 ticks."""
    bench.set_items(["alpha"], monkeypatch)
    bench.emulator.set_scenario(
        {"route_faults": {"interactions.create": ["accepted_504"] * (2 * CAP)}}
    )
    for _ in range(CAP + 1):
        bench.tick()
    row = _row(bench)
    assert (row.status, row.error_class) == ("parked", "exhausted:504")
    assert (row.attempts, row.possible_duplicates) == (CAP + 1, CAP)
    _billed_equals_counted(bench)


@pytest.mark.parametrize(
    ("failure", "ambiguous"),
    [
        (ApiFailure(http_code=504, status="DEADLINE_EXCEEDED"), True),
        (ApiFailure(http_code=500, status="INTERNAL"), True),
        (ApiFailure(http_code=503, status="UNAVAILABLE"), True),
        (ApiFailure(transport=Transport.TIMEOUT), True),
        (ApiFailure(transport=Transport.DROPPED), True),
        (ApiFailure(transport=Transport.CONNECT), False),
        (ApiFailure(http_code=429, status="RESOURCE_EXHAUSTED"), False),
        (ApiFailure(http_code=400, status="INVALID_ARGUMENT"), False),
    ],
)
def test_which_failures_are_ambiguous(failure: ApiFailure, ambiguous: bool) -> None:
    """A 5xx, a timeout or a dropped connection may have been carried out; a 4xx or a failed
    connect certainly was not."""
    assert failure.ambiguous is ambiguous


def test_the_interactions_clients_timeout_is_ambiguous_and_a_failed_connect_is_not() -> None:
    """The interactions client's APITimeoutError may have created the interaction; its
    APIConnectionError (never connected) did not (a fault of the setup: unreachable)."""
    import httpx2
    from google.genai import _interactions_errors as sdk

    from flows.testing import may_have_been_carried_out

    request = httpx2.Request("POST", "http://127.0.0.1:9/v1beta/interactions")
    assert may_have_been_carried_out(sdk.APITimeoutError(request=request))
    assert not may_have_been_carried_out(sdk.APIConnectionError(request=request))
