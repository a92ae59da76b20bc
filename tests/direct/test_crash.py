"""A run killed mid-call (SIGKILL, a real subprocess) is resolved by the next run's sweep."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from flows.tick import tick
from tests.child_env import child_env
from tests.direct import pipelines
from tests.direct.conftest import DAY, SPEC, key_of, scripted
from tests.ledgers import run_ledger
from tests.prewarmed import run_cli

ROOT = Path(__file__).resolve().parents[2]


def _killed_run(point: str, prefect_api: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    env = child_env(
        {
            "PREFECT_API_URL": prefect_api,
            "GEMINI_LEDGER_CRASH_AT": point,
            "GEMINI_LEDGER_CRASH_TRACE": str(trace),
            "PYTHONPATH": str(ROOT),
        }
    )
    # A process of its own, forked from one that has done the imports (tests/prewarmed.py).
    proc = run_cli(["tick", SPEC, "--day", DAY.isoformat()], env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert trace.read_text().splitlines()[-1] == point


@pytest.mark.parametrize(
    ("point", "sent_before", "attempts", "error_class"),
    [
        # Killed before the call left: the reservation is released, the attempt given back.
        ("direct.after_reserve", 0, 1, None),
        # Killed after the call: it may have been billed; counted, retried as unknown.
        ("direct.after_call", 1, 2, None),
    ],
)
def test_next_run_resolves_a_run_killed_mid_call(
    direct_env, monkeypatch, prefect_api, tmp_path, point, sent_before, attempts, error_class
):
    """After a kill at a crash point, the next run sweeps the row and finishes the job once."""
    scripted(direct_env, {"k": ["ok"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "k")
    _killed_run(point, prefect_api, tmp_path)
    assert direct_env.stats()["submissions"].get(key_of("k"), 0) == sent_before

    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_STALE_S", "0")
    report = tick(pipeline=SPEC, day=DAY)

    job = run_ledger().get(key_of("k"))
    assert (job.status, job.attempts, job.error_class) == ("consumed", attempts, error_class)
    assert direct_env.stats()["submissions"][key_of("k")] == sent_before + 1
    swept = report.recover
    assert (swept.released, swept.interrupted) == (1 - sent_before, sent_before)
