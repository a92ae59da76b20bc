"""Two background ticks released at the same moment on one ledger (SQLite and PostgreSQL)
never submit or consume the same key twice."""

from __future__ import annotations

import json
import subprocess
import sys

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
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

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
