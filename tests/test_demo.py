"""The README's main command, end to end: the demo night and its morning report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from ledger import Ledger
from tests.child_env import child_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_a_night_and_reports_what_the_ledger_holds():
    """`bash scripts/demo.sh` exits 0, settles every job, and its report matches the ledger."""
    env = child_env(drop=lambda k: k.startswith("PREFECT_") or k == "LEDGER_DATABASE_URL")
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the morning report" in done.stdout
    assert "Results: the review labels are in the `review_labels` table" in done.stdout
    assert "…" not in done.stdout, "piped, no column is cut"
    report = json.loads((ROOT / "var/demo/report.json").read_text())
    ledger = Ledger(report["ledger_url"])
    try:
        for name, printed in report["pipelines"].items():
            counts = ledger.counts(pipeline=name)
            assert printed == counts.as_dict()
            assert set(counts.by_status) <= {"consumed", "parked"}, counts.by_status
            assert counts.by_status.get("consumed", 0) > 0
            # The delivered count is what the terminal showed.
            assert f"{counts.by_status.get('consumed', 0)}" in done.stdout
            for cls in counts.by_error_class:
                assert cls in done.stdout
        total_attempts = sum(p["attempts"] for p in report["pipelines"].values())
        assert total_attempts == report["emulator_submissions"]
        parked = sum(sum(p["by_error_class"].values()) for p in report["pipelines"].values())
        assert report["replay_would_return"] == min(20, parked)
    finally:
        ledger.dispose()
    # The emulator was stopped.
    with pytest.raises(httpx.HTTPError):
        httpx.get(report["emulator_url"] + "/_emulator/stats", timeout=2)
