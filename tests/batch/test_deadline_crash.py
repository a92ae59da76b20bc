"""A tick killed (SIGKILL, a real process) anywhere in a deadline's switch-over from batch to
direct: the next tick settles every row exactly once (delivered once, billed once per
attempt, at most the one call cut off in flight counted and never answered)."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.tick import tick
from ledger import Status
from tests.batch.deadline_pipelines import DELIVERIES_ENV, ROWS, deliveries
from tests.child_env import child_env
from tests.ledgers import run_ledger
from tests.prewarmed import run_cli

from .conftest import DAY, attempts_by_key, submissions

ROOT = Path(__file__).resolve().parents[2]
SPEC, NAME = "tests.batch.deadline_pipelines:late", "late"

pytestmark = pytest.mark.system


@pytest.mark.parametrize(
    ("point", "exact"),
    [
        # The job cancelled, nothing read: the next collect reconciles the CANCELLED job.
        ("deadline.after_cancel", True),
        # Its output applied, the other rows retryable:deadline: sent directly next tick.
        ("deadline.after_partial_apply", True),
        # A row reserved for its direct call (others may be in flight): released, or swept
        # as unknown:interrupted, and sent again.
        ("direct.after_reserve", False),
        # A direct answer lost before it was recorded: swept as interrupted, sent again
        # (another call bound at that moment may not have left yet: one attempt more).
        ("direct.after_call", False),
        # Every direct answer recorded, nothing delivered: the next tick delivers.
        ("deadline.after_direct", True),
    ],
)
def test_a_tick_killed_in_the_switch_over_is_settled_by_the_next(
    batch_env: dict[str, Any], monkeypatch, tmp_path: Path, point: str, exact: bool
) -> None:
    """After a kill at each point of the switch-over, one more tick leaves every row
    consumed and delivered once, the cancelled job's answered half kept (billed once),
    and each row's attempts equal to what the API was sent (after a kill while direct calls
    are in flight, at most one attempt more for a row whose call was bound but never left)."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1000, "batch_partial_output": 0.5})
    out = tmp_path / "deliveries.txt"
    monkeypatch.setenv(DELIVERIES_ENV, str(out))
    first = tick(pipeline=SPEC, day=DAY)  # no deadline yet: the batch job goes out
    assert first.submit.batch is not None
    # A minute away: less than the direct channel needs, so the next tick switches.
    deadline = f"{datetime.now(UTC) + timedelta(seconds=60):%H:%M:%S} UTC"

    trace = tmp_path / "trace.txt"
    env = child_env(
        {
            "PREFECT_API_URL": batch_env["prefect_api"],
            "GEMINI_LEDGER_CRASH_AT": point,
            "GEMINI_LEDGER_CRASH_TRACE": str(trace),
        }
    )
    args = ["tick", SPEC, "--day", DAY.isoformat(), "--deadline", deadline]
    proc = run_cli(args, env=env, cwd=ROOT, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert trace.read_text().split()[-1] == point
    assert deliveries(out) == []

    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_STALE_S", "0")  # the dead tick's calls are old
    tick(pipeline=SPEC, day=DAY, deadline=deadline)

    ledger = run_ledger()
    jobs = ledger.jobs(pipeline=NAME)
    assert {j.status for j in jobs} == {Status.CONSUMED}
    assert sorted(deliveries(out)) == sorted(j.key for j in jobs)  # each once
    assert emu.stats()["billed"]["batch_rows"] == ROWS // 2
    sent = submissions(emu, "late:")
    attempts = attempts_by_key(ledger, NAME)
    assert set(sent) == set(attempts)
    extra = {k: attempts[k] - sent[k] for k in attempts}
    if exact:
        assert set(extra.values()) == {0}
    else:
        assert set(extra.values()) <= {0, 1}
    if point.startswith("deadline."):
        # The cancelled rows came back retryable:deadline, not unknown: no unknown_cap spent.
        assert {j.unknown_failures for j in jobs} == {0}
    answered = [j for j in jobs if not (j.handle or "").startswith("direct:")]
    assert len(answered) == ROWS // 2 and {j.attempts for j in answered} == {1}

    again = tick(pipeline=SPEC, day=DAY, deadline=deadline)  # nothing left to do
    assert again.submit.deadline is None and again.submit.batches == []
    assert len(deliveries(out)) == ROWS
