"""The crash matrix: for every crash point of the batch, background and direct channels, a
tick in a real subprocess is SIGKILLed at that point, ordinary ticks follow until the night
settles, and the invariants hold: nothing lost, no side effect completed twice (except the
key in hand at the kill), nothing submitted beyond its attempts (except flagged orphans)."""

from __future__ import annotations

import pytest

from .harness import World
from .matrix import MATRIX


@pytest.mark.parametrize(("channel", "point", "prep"), MATRIX, ids=[m[1] for m in MATRIX])
def test_kill_at_point_then_settle(make_world, channel: str, point: str, prep: int) -> None:
    """A SIGKILL at this point, then ordinary ticks: every invariant holds."""
    world: World = make_world(channel)
    for _ in range(prep):
        world.tick()
    run = world.tick_subprocess(crash_at=point)
    assert run.killed, f"returncode {run.returncode}: {run.stderr[-3000:]}"
    assert run.trace and run.trace[-1] == point, run.trace
    in_hand = world.in_hand()
    ticks = world.settle(max_ticks=8)
    verdict = world.check(allowed_repeats=in_hand)
    assert verdict.ok, (ticks, verdict.problems)
    assert verdict.consumed == world.items - 1 and verdict.parked_by_class == {
        "permanent:400": 1
    }, verdict.as_dict()
