"""Two real processes claiming from one ledger at once get disjoint jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from ledger import Ledger, NewJob

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_claim_disjoint_jobs(ledger_url):
    """Every job is claimed by exactly one of two workers racing on the same ledger."""
    ledger = Ledger(ledger_url)
    keys = [f"k{i:05d}" for i in range(3000)]
    ledger.enroll((NewJob(k, {"i": k}) for k in keys), pipeline="p", channel="batch", model="m")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.ledger.claimer", ledger_url, "7"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    claims = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        claims.append(orjson.loads(out.strip().splitlines()[-1]))
    first, second = (set(c) for c in claims)
    assert first and second, "both workers should have claimed something"
    assert not first & second
    assert first | second == set(keys)
    assert sum(len(c) for c in claims) == len(keys)
    assert ledger.counts().by_status == {"reserving": len(keys)}
    assert ledger.counts().attempts == len(keys)
    ledger.dispose()
