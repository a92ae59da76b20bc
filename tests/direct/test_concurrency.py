"""Two direct runs side by side (real processes, one ledger) never send or deliver a job twice."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.child_env import child_env
from tests.direct import pipelines
from tests.direct.conftest import DAY, SPEC, key_of
from tests.ledgers import run_ledger

ROOT = Path(__file__).resolve().parents[2]


def test_two_runs_at_once_send_and_deliver_each_job_once(
    direct_env, monkeypatch, prefect_api, tmp_path
):
    """Each key reaches the emulator once and on_result runs once, whichever run got it."""
    # Both runs load their items behind a barrier, then need ~1 s of calls (24 calls of
    # 300 ms on 8 workers): they overlap.
    items = [f"c{i}" for i in range(24)]
    direct_env.set_scenario({"name": "slow", "latency_ms": {"generate": {"mean": 300}}})
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    delivered = tmp_path / "delivered.txt"
    env = child_env(
        {
            "PREFECT_API_URL": prefect_api,
            "PYTHONPATH": str(ROOT),
            pipelines.ITEMS_ENV: ",".join(items),
            "DIRECT_TEST_DELIVERED": str(delivered),
            "DIRECT_TEST_BARRIER": f"{barrier}:2",
        }
    )
    cmd = [sys.executable, "-m", "flows.cli", "tick", SPEC, "--day", DAY.isoformat(), "--json"]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-2000:]
        reports.append(json.loads(out))

    done = [r["steps"]["submit"]["outcomes"].get("done", 0) for r in reports]
    assert sum(done) == len(items)
    assert min(done) > 0, f"the runs did not overlap: {reports}"
    sent = direct_env.stats()["submissions"]
    assert {key_of(i): 1 for i in items} == {k: n for k, n in sent.items() if "direct-test" in k}
    assert Counter(delivered.read_text().split()) == {key_of(i): 1 for i in items}
    ledger = run_ledger()
    assert all(ledger.get(key_of(i)).status == "consumed" for i in items)
    assert ledger.counts().attempts == len(items)
