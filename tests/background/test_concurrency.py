"""Two background ticks released at the same moment on one ledger (SQLite and PostgreSQL)
never submit or consume the same key twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from .conftest import DAY, PIPELINE, ROOT, Bench, key_of

FIRST = [f"first-{i}" for i in range(6)]
SECOND = [f"second-{i}" for i in range(6)]


@pytest.mark.parametrize(
    "bench",
    [None, pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
    ids=["sqlite", "postgres"],
)
def test_two_ticks_at_once_never_double_submit_or_consume(bench: Bench, monkeypatch) -> None:
    """Both ticks reclaim, deliver and submit over the same rows; every key is submitted once
    and its side effect completes once."""
    bench.set_items(FIRST, monkeypatch)
    setup = bench.tick()  # outstanding work for both ticks to reclaim and deliver
    assert setup.submitted == len(FIRST)
    bench.env["BG_TEST_ITEMS"] = ",".join(FIRST + SECOND)  # and new items for both to submit

    cmd = [sys.executable, "-m", "tests.background.ticker", PIPELINE, DAY.isoformat()]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=bench.sub_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in procs:  # release both together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = _reports(procs, timeout=120)
    finally:
        _kill(procs)

    monkeypatch.setenv("BG_TEST_ITEMS", bench.env["BG_TEST_ITEMS"])
    reports += [setup.as_dict(), bench.tick().as_dict()]
    # Across every tick, each key was submitted, completed and consumed exactly once (which
    # tick did what depends on how the two overlapped).
    everything = {key_of(i) for i in FIRST + SECOND}
    assert sum(r["submitted"] for r in reports) == len(everything)
    assert sum(r["completed"] for r in reports) == len(everything)
    assert sum(r["delivered"] for r in reports) == len(everything)
    ledger = bench.ledger()
    jobs = ledger.jobs(pipeline="bgtest")
    assert {j.key for j in jobs} == everything
    assert {j.status for j in jobs} == {"consumed"}
    assert all(j.attempts == 1 and j.possible_duplicates == 0 for j in jobs)
    assert bench.submissions() == {k: 1 for k in everything}
    assert bench.completions() == {k: 1 for k in everything}


@pytest.mark.system
@pytest.mark.parametrize(
    "bench",
    [None, pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
    ids=["sqlite", "postgres"],
)
def test_a_tick_starting_past_the_stale_age_never_repeats_a_live_ticks_side_effects(
    bench: Bench, monkeypatch
) -> None:
    """Issue 25's repro: a tick still delivering (20 side effects of 1 s) when a second tick
    starts after the 4 s stale age: the first renews its claims, the second takes none, and
    every side effect runs once."""
    items = [f"slow-{i}" for i in range(20)]
    bench.set_items(items, monkeypatch)
    assert bench.tick().submitted == len(items)
    env = bench.sub_env(BG_TEST_EFFECT_S="1", GEMINI_LEDGER_BACKGROUND_STALE_S="4")
    cmd = [sys.executable, "-m", "tests.background.ticker", PIPELINE, DAY.isoformat()]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]

    def go(proc: subprocess.Popen[str]) -> None:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()

    first, second = procs
    try:
        for proc in procs:  # both imported, so the second starts at once when told
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        go(first)
        # The second tick starts once the first has been delivering for longer than the
        # stale age (six side effects of 1 s done).
        deadline = time.monotonic() + 120
        while sum(bench.completions().values()) < 6:
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first tick never delivered"
            time.sleep(0.1)
        go(second)
        reports = _reports(procs, timeout=300)
    finally:
        _kill(procs)
    assert reports[0]["delivered"] == len(items) and reports[1]["delivered"] == 0
    assert bench.completions() == Counter({key_of(i): 1 for i in items})
    ledger = bench.ledger()
    assert {j.status for j in ledger.jobs(pipeline="bgtest")} == {"consumed"}


def _reports(procs: list[Any], *, timeout: float) -> list[dict[str, Any]]:
    """Each tick process's exit (0, or its stderr) and its JSON report (the last line)."""
    outputs = [proc.communicate(timeout=timeout) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def _kill(procs: list[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
