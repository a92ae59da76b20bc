"""What `gemini-ledger tick` prints: a few lines a person reads, every counter under --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.child_env import child_env
from tests.direct import pipelines
from tests.direct.conftest import DAY, SPEC, scripted

ROOT = Path(__file__).resolve().parents[2]


def _tick(prefect_api: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)})
    cmd = [sys.executable, "-m", "flows.cli", "tick", SPEC, "--day", DAY.isoformat(), *extra]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_tick_prints_delivered_parked_by_class_in_flight_and_cost(
    direct_env, monkeypatch, prefect_api
):
    """The human report says what was delivered and parked (by class) this tick, then where
    the pipeline stands: delivered, parked, retrying, in flight and cost."""
    scripted(direct_env, {"good": ["ok"], "bad": ["400"], "unsafe": ["safety"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "good,bad,unsafe")

    result = _tick(prefect_api)

    assert result.returncode == 0, result.stderr[-3000:]
    out = " ".join(result.stdout.split())  # rich may wrap a long line
    assert f"direct-test (direct) tick for {DAY.isoformat()}" in out
    assert "answers done 1, delivered 1, enrolled 3, submitted 3" in out
    assert "parked this tick: permanent:400 1, safety 1" in out
    assert "ledger now: delivered 1, parked 2, retrying 0, in flight 0" in out
    assert "cost $" in out
    assert len(result.stdout.splitlines()) <= 8


def test_tick_json_has_every_step_of_the_one_report(direct_env, monkeypatch, prefect_api):
    """`tick --json` is the same TickReport: totals, then each step's own counters."""
    scripted(direct_env, {"good": ["ok"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "good")

    result = _tick(prefect_api, "--json")

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["channel"], report["delivered"], report["submitted"]) == ("direct", 1, 1)
    assert set(report["steps"]) == {"recover", "collect", "deliver", "enroll", "submit"}
    assert report["steps"]["submit"]["outcomes"] == {"done": 1}
    assert report["steps"]["enroll"]["enrolled"] == 1
