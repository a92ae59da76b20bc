"""Four ticks of one pipeline started at the same moment, real processes on one ledger
(SQLite and PostgreSQL), for the batch and the background channel: the invariants hold, and
no key is held by two batch jobs for one attempt."""

from __future__ import annotations

import pytest

from .harness import World, batch_holders

TICKS = 4
FIRST, MORE = 6, 12


@pytest.mark.parametrize("channel", ["batch", "background"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_four_ticks_at_once(make_world, request, channel: str, backend: str) -> None:
    """Four overlapping ticks reclaim, deliver and submit over the same rows; every key is
    settled, published once and submitted once per attempt."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    world: World = make_world(channel, items=FIRST, ledger_url=url)
    world.tick()  # work in flight for all four to reconcile and deliver
    world.items = MORE  # and new items for all four to enroll and submit
    runs = world.ticks_together(TICKS)
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    reports = [run.report() for run in runs]
    assert all(r is not None for r in reports)
    # Between them the four consumed every row the ledger now shows consumed, each once.
    consumed_now = world.ledger().counts(pipeline=world.channel.pipeline).by_status["consumed"]
    assert sum(r["delivered"] for r in reports if r) == consumed_now >= FIRST - 2

    world.settle(max_ticks=6, stale_s=None)
    verdict = world.check()
    assert verdict.ok, verdict.problems
    assert (verdict.consumed, verdict.parked) == (MORE - 1, 1)
    # The proof scenario answers one background create 503 (ambiguous): that row is flagged.
    assert verdict.possible_duplicates == (1 if channel == "background" else 0)
    subs = world.emulator.stats()["submissions"]
    jobs = {j.key: j for j in world.ledger().jobs(pipeline=world.channel.pipeline)}
    assert {k: subs.get(k, 0) for k in jobs} == {k: j.attempts for k, j in jobs.items()}
    if channel == "batch":
        holders = batch_holders(world.ledger_url, world.channel.pipeline)
        assert holders == {k: j.attempts for k, j in jobs.items()}
