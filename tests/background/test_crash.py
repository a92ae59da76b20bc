"""A real SIGKILL at each step boundary of a background tick, then further ticks: every item
ends consumed, each side effect completes once per key (twice only for the key killed inside
or right after it), and nothing is submitted twice except the flagged orphans."""

from __future__ import annotations

import signal

import pytest

from .conftest import Bench, key_of

ITEMS = ["north", "south", "east", "west"]

# point -> (submit in-process before the kill?, killed inside or after the side effect?)
POINTS = {
    "background.after_reserve": (False, False),
    "background.after_create": (False, False),
    "background.after_bind": (False, False),
    "background.after_done": (True, False),
    "background.inside_side_effect": (True, True),
    "background.before_consume": (True, True),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_step_boundary_then_recover(bench: Bench, monkeypatch, point: str) -> None:
    """Killing the tick process at one boundary loses nothing and publishes nothing twice."""
    submit_first, side_effect_repeats = POINTS[point]
    bench.set_items(ITEMS, monkeypatch)
    if submit_first:
        assert bench.tick().submitted == len(ITEMS)

    trace = bench.tmp / "trace.txt"
    proc = bench.cli_tick(GEMINI_LEDGER_CRASH_AT=point, GEMINI_LEDGER_CRASH_TRACE=str(trace))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert point in trace.read_text().split()

    # Later ticks (cron's next launches); stale_s=0 so the dead tick's reservations and
    # delivery claims count as stale at once instead of after five minutes.
    ledger = bench.ledger()
    for _ in range(4):
        bench.tick(stale_s=0)
        if {j.status for j in ledger.jobs(pipeline="bgtest")} == {"consumed"}:
            break
    jobs = ledger.jobs(pipeline="bgtest")
    assert [j.status for j in jobs] == ["consumed"] * len(ITEMS)

    completions = bench.completions()
    assert set(completions) == {key_of(i) for i in ITEMS}
    repeated = {k: n for k, n in completions.items() if n != 1}
    if side_effect_repeats:
        assert list(repeated.values()) == [2]  # only the key in hand when the process died
    else:
        assert repeated == {}

    subs = bench.submissions()
    for job in jobs:
        assert job.attempts == 1, job.key
        assert 1 <= subs[job.key] <= job.attempts + job.possible_duplicates, job.key
        if job.possible_duplicates == 0:
            assert subs[job.key] == job.attempts, job.key
    flagged = sum(j.possible_duplicates for j in jobs)
    if point == "background.after_reserve":
        assert flagged == len(ITEMS)  # all reserved, none sent: resubmitted once each
        assert all(subs[j.key] == 1 for j in jobs)
    elif point == "background.after_create":
        assert flagged == len(ITEMS)
        assert any(subs[j.key] == 2 for j in jobs)  # the orphan the kill left behind
    elif point == "background.after_bind":
        assert flagged == len(ITEMS) - 1  # the first bound survived; the rest were orphans
    else:
        assert flagged == 0
