"""The ledger's night-by-night read (issue 23, the morning summary's trend): each row counted on
the night its own timestamps fall in, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from ledger import (
    Failure,
    FailureRow,
    Ledger,
    NewJob,
    Policy,
    ResultRow,
    UsageError,
    Verdict,
)

POLICY = Policy(attempt_cap=4, unknown_cap=2)
# Three nights, UTC midnight to midnight: 4, 5 and 6 December 2026.
BOUNDS = [datetime(2026, 12, d, tzinfo=UTC).timestamp() for d in (4, 5, 6, 7)]
HOUR = 3600.0


class _Clock:
    def __init__(self) -> None:
        self.now = BOUNDS[0]

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def ledger(ledger_url, clock):
    led = Ledger(ledger_url, clock=clock)
    yield led
    led.dispose()


def _sent(ledger: Ledger, pipeline: str, keys: list[str], model: str = "m") -> None:
    ledger.enroll(
        [NewJob(k, {"k": k}) for k in keys], pipeline=pipeline, channel="batch", model=model
    )
    reservation = f"r-{keys[0]}"
    assert ledger.reserve(pipeline=pipeline, limit=len(keys), reservation=reservation) == len(keys)
    for k in keys:
        ledger.bind_handle(k, reservation=reservation, handle=f"h-{pipeline}")


def _answered(ledger: Ledger, pipeline: str, keys: list[str], tokens: int) -> None:
    ledger.apply_results(
        [ResultRow(k, '{"label":"x"}', tokens, 10, tokens + 10) for k in keys],
        handle=f"h-{pipeline}",
    )


def test_each_row_counts_on_the_night_of_its_own_timestamps(ledger: Ledger, clock) -> None:
    """Delivered by consumed_at, parked by parked_at, usage by the last answer's night; rows
    outside the window are left out and quiet nights are zeros."""
    clock.now = BOUNDS[0] - HOUR  # before the window: answered and delivered, never counted
    _sent(ledger, "p", ["old"])
    _answered(ledger, "p", ["old"], 1000)
    ledger.consume(["old"])

    clock.now = BOUNDS[0] + 2 * HOUR  # night 0: three answers, two delivered at once
    _sent(ledger, "p", ["a", "b", "c", "bad"])
    _answered(ledger, "p", ["a", "b", "c"], 100)
    ledger.consume(["a", "b"])

    clock.now = BOUNDS[1] + 3 * HOUR  # night 1: the third delivered; one answer parked
    ledger.consume(["c"])
    failure = Failure(Verdict.PERMANENT, "400", "bad request")
    ledger.apply_failures([FailureRow("bad", failure, 7, 0, 7)], handle="h-p", policy=POLICY)

    clock.now = BOUNDS[2] + HOUR  # night 2: another pipeline delivers one
    _sent(ledger, "q", ["q1"], model="n")
    _answered(ledger, "q", ["q1"], 50)
    ledger.consume(["q1"])

    clock.now = BOUNDS[3] + HOUR  # after the window: never counted
    _sent(ledger, "p", ["late"])
    _answered(ledger, "p", ["late"], 1000)
    ledger.consume(["late"])

    nights = ledger.nightly(BOUNDS)

    assert sorted(nights) == ["p", "q"]
    p, q = nights["p"], nights["q"]
    assert [(n.start, n.end) for n in p] == list(itertools.pairwise(BOUNDS))
    assert [n.delivered for n in p] == [2, 1, 0]
    assert [n.parked for n in p] == [0, 1, 0]
    assert [sum(u.usage.prompt_tokens for u in n.usage) for n in p] == [300, 7, 0]
    assert [sum(u.rows for u in n.usage) for n in p] == [3, 1, 0]
    assert [n.delivered for n in q] == [0, 0, 1]
    assert [(u.model, u.channel, u.usage.total_tokens) for u in q[2].usage] == [("n", "batch", 60)]
    assert list(ledger.nightly(BOUNDS, pipeline="q")) == ["q"]


def test_a_replayed_row_leaves_the_night_it_was_parked(ledger: Ledger, clock) -> None:
    """A parked row sent back by replay is no longer counted as parked that night."""
    clock.now = BOUNDS[0] + HOUR
    _sent(ledger, "p", ["x"])
    ledger.apply_failures(
        [FailureRow("x", Failure(Verdict.PERMANENT, "400", "bad"), 1, 0, 1)],
        handle="h-p",
        policy=POLICY,
    )
    assert [n.parked for n in ledger.nightly(BOUNDS)["p"]] == [1, 0, 0]

    ledger.replay(["x"])

    assert [n.parked for n in ledger.nightly(BOUNDS)["p"]] == [0, 0, 0]


def test_bounds_must_increase(ledger: Ledger) -> None:
    """Fewer than two bounds, or bounds out of order, are refused before any read."""
    with pytest.raises(UsageError):
        ledger.nightly([BOUNDS[0]])
    with pytest.raises(UsageError):
        ledger.nightly([BOUNDS[1], BOUNDS[0]])
