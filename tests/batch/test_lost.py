"""A submitted batch job the API no longer knows, or cannot poll past its bound, is given up:
its rows are sent again (attempts kept) and the batch is recorded as lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors

from flows.reconcile import reconcile
from flows.settings import Settings
from flows.testing import SUBMITTED_ENV, lost_reason
from flows.tick import tick
from ledger import Ledger
from tests.child_env import child_env
from tests.ledgers import run_ledger

from .conftest import DAY, tick_until_settled

ROOT = Path(__file__).resolve().parents[2]
SPEC, NAME = "tests.batch.pipelines:small_reviews", "small"
LOST_AFTER_ENV = "GEMINI_LEDGER_BATCH_LOST_AFTER_S"


def test_a_batch_job_the_api_forgot_returns_its_rows(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator loses its memory: 404 on 3 polls in a row and no job of that display name
    in batches.list; only then the rows go out again, attempts 2."""
    monkeypatch.setenv(LOST_AFTER_ENV, "0")  # the poll count alone bounds it here
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    first = tick(pipeline=SPEC, day=DAY)
    assert first.submitted == 40
    emu.reset()  # the job is gone with the emulator's memory
    ledger = run_ledger()
    for _ in range(2):  # a 404 not yet repeated over the bound: only a poll error
        waiting = tick(pipeline=SPEC, day=DAY)
        assert (waiting.collect.lost, waiting.collect.poll_errors, waiting.submitted) == (0, 1, 0)
        assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("submitted", 1)}
    third = tick(pipeline=SPEC, day=DAY)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("submitted", 2)}
    lost = ledger.batch_named(first.submit.batch)
    assert lost is not None and lost.state == "lost"
    assert (third.collect.lost, third.collect.lost_rows, third.collect.poll_errors) == (1, 40, 0)
    assert third.submitted == 40  # straight into a new batch job
    tick_until_settled(SPEC, NAME, max_ticks=3)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("consumed", 2)}


def test_reconcile_of_a_forgotten_job_gives_it_up(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reconcile` on a job the API answers 404 for: not found until the 404 repeats over the
    bound, then its rows are returned instead of failing."""
    monkeypatch.setenv(LOST_AFTER_ENV, "0")
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_LOST_POLLS", "2")
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 5})
    first = tick(pipeline=SPEC, day=DAY)
    emu.reset()
    assert reconcile(job_name=first.submit.batch)["state"] == "NOT_FOUND"
    report = reconcile(job_name=first.submit.batch)
    assert report["state"] == "LOST" and report["lost_rows"] == 40
    ledger = run_ledger()
    assert {j.status for j in ledger.jobs(pipeline=NAME)} == {"retryable"}
    assert {j.error_class for j in ledger.jobs(pipeline=NAME)} == {"retryable:batch_lost"}


def _submitted(ledger: Ledger) -> Any:
    ledger.reserve(pipeline="p", limit=1, reservation="r1", batch_model="m")
    ledger.bind_batch("r1", name="batches/slow")
    rec = ledger.batch_named("batches/slow")
    assert rec is not None
    return rec


def test_unpollable_past_its_bound_is_lost_but_a_refused_key_never(
    sqlite_url: str,
) -> None:
    """A 503 while young is only a poll error; past the bound it is lost; a 401 never is."""
    bound = Settings.given(**{SUBMITTED_ENV: "3600"}).batch_submitted_s
    now = [1_800_000_000.0]
    ledger = Ledger(sqlite_url, clock=lambda: now[0])
    rec = _submitted(ledger)
    unavailable = errors.ServerError(503, {"error": {"code": 503, "message": "unavailable"}})
    refused = errors.ClientError(401, {"error": {"code": 401, "message": "bad key"}})
    assert lost_reason(ledger, rec, unavailable, bound=bound) is None
    now[0] += 3601
    reason = lost_reason(ledger, rec, unavailable, bound=bound)
    assert reason is not None and SUBMITTED_ENV in reason and "ServerError" in reason
    assert lost_reason(ledger, rec, refused, bound=bound) is None
    with pytest.raises(ValueError, match=SUBMITTED_ENV):
        Settings.given(**{SUBMITTED_ENV: "soon"})


def test_reconcile_of_an_unknown_job_is_one_clear_line(sqlite_url: str) -> None:
    """`gemini-ledger reconcile batches/<unknown>`: one error line, exit 1, no traceback."""
    env = child_env({"LEDGER_DATABASE_URL": sqlite_url}, drop=lambda k: k.startswith("PREFECT_API"))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "reconcile", "batches/never-made"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: no batch job named 'batches/never-made' in the ledger"]
    assert proc.stdout == ""
