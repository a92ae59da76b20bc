"""One tick run in a real subprocess armed to SIGKILL itself at a crash point
(``flows.crash``), as the crash tests of uploads and context caches start it: the test then
proves what the next tick makes of what the dead one left."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

from tests.child_env import child_env

__all__ = ["tick_killed_at"]

ROOT = Path(__file__).resolve().parents[1]


def tick_killed_at(
    point: str, *, spec: str, day: date, prefect_api: str, trace: Path | None = None
) -> None:
    """Run ``flows.cli tick spec`` killed at ``point``; assert it died by SIGKILL and, given
    a ``trace`` file, that ``point`` is the last crash point it passed."""
    values = {
        "PREFECT_API_URL": prefect_api,
        "GEMINI_LEDGER_CRASH_AT": point,
        "PYTHONPATH": str(ROOT),
    }
    if trace is not None:
        values["GEMINI_LEDGER_CRASH_TRACE"] = str(trace)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "tick", spec, "--day", day.isoformat()],
        env=child_env(values),
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    if trace is not None:
        assert trace.read_text().splitlines()[-1] == point
