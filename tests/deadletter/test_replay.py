"""Replay: a dry run changes nothing; executing recovers what can be and leaves the rest."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from typer.testing import CliRunner

from flows.cli import app
from flows.tick import tick
from ledger import Failure, NewJob, Verdict
from tests.direct import pipelines
from tests.direct.conftest import DAY, SPEC, key_of, scripted
from tests.ledgers import run_ledger


def _rows(url: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT * FROM jobs ORDER BY key").fetchall()


def _park_two(emulator, monkeypatch) -> None:
    """One job parked permanent:400, one exhausted:429, one done."""
    scripted(emulator, {"fixed": ["400"], "busy": ["429"], "fine": ["ok"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "fixed,busy,fine")
    tick(pipeline=SPEC, day=DAY)
    ledger = run_ledger()
    assert ledger.get(key_of("fixed")).error_class == "permanent:400"
    assert ledger.get(key_of("busy")).error_class == "exhausted:429"


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["replay", *args])
    assert result.exit_code == 0, result.output
    return result


def test_replay_without_execute_changes_nothing(direct_env, monkeypatch, sqlite_url):
    """`gemini-ledger replay` without --execute lists the parked jobs and writes nothing."""
    _park_two(direct_env, monkeypatch)
    before, sent_before = _rows(sqlite_url), direct_env.stats()["submissions"]
    scripted(direct_env, {"fixed": ["ok"], "busy": ["ok"]})

    result = _cli("--pipeline", SPEC, "--json")
    report = json.loads(result.stdout)

    assert _rows(sqlite_url) == before
    assert direct_env.stats()["submissions"] == sent_before
    assert report["execute"] is False
    assert report["scanned"] == 2 and report["would_call"] == 2
    assert {j["key"] for j in report["jobs"]} == {key_of("fixed"), key_of("busy")}
    table = _cli("--pipeline", SPEC).stdout
    assert "dry run" in table and "would call 2" in table
    assert _rows(sqlite_url) == before


def test_replay_execute_recovers_fixed_jobs_and_leaves_the_rest(direct_env, monkeypatch):
    """With --execute a job whose cause is gone is done (replayed once); the rest stay parked."""
    _park_two(direct_env, monkeypatch)
    pipelines.DELIVERED.clear()
    scripted(direct_env, {"fixed": ["ok"], "busy": ["429"]})

    result = _cli("--execute", "--pipeline", SPEC, "--rate", "50", "--json")
    report = json.loads(result.stdout)

    ledger = run_ledger()
    fixed, busy = ledger.get(key_of("fixed")), ledger.get(key_of("busy"))
    assert (fixed.status, fixed.replayed, fixed.attempts) == ("consumed", 1, 2)
    assert (busy.status, busy.error_class, busy.replayed) == ("parked", "exhausted:429", 1)
    assert busy.attempts == 8  # a fresh allowance of 4 after the 4 already billed
    assert direct_env.stats()["submissions"][key_of("fixed")] == 2
    assert (report["scanned"], report["recovered"], report["still_failing"]) == (2, 1, 1)
    assert [k for k, _ in pipelines.DELIVERED] == [key_of("fixed")]
    assert ledger.get(key_of("fine")).replayed == 0


def test_replay_returns_queued_channels_oldest_first_within_limit_and_class(direct_env):
    """Batch jobs go back to pending: at most --limit, oldest first, only the chosen class."""
    ledger = run_ledger()
    keys = [f"batchy:{i}" for i in range(4)]
    ledger.enroll(
        [NewJob(k, {"text": k}) for k in keys], pipeline="batchy", channel="batch", model="m"
    )
    wanted = Failure(Verdict.PERMANENT, "400", "bad row")
    other = Failure(Verdict.RETRYABLE, "503", "overloaded")
    for k in keys[:3]:  # parked one after another: keys[0] is the oldest
        ledger.park(k, wanted, from_status=["pending"])
    ledger.park(keys[3], other, from_status=["pending"])

    from flows.ops.replay import replay

    report = replay(execute=True, limit=2, error_class="permanent:400", rate_per_second=100)

    assert [j["key"] for j in report["jobs"]] == keys[:2]
    assert report["returned_to_queue"] == 2 and report["recovered"] == 2
    assert [ledger.get(k).status for k in keys] == ["pending", "pending", "parked", "parked"]
    assert [ledger.get(k).replayed for k in keys] == [1, 1, 0, 0]


def test_replay_execute_calls_custom_direct_jobs_found_from_the_ledger(direct_env, monkeypatch):
    """Without --pipeline, in a process that never loaded the custom pipeline, replay finds it
    from the ledger's record and calls its parked direct jobs (not only re-queues them)."""

    _park_two(direct_env, monkeypatch)
    pipelines.DELIVERED.clear()
    scripted(direct_env, {"fixed": ["ok"], "busy": ["429"]})

    report = json.loads(_cli("--execute", "--rate", "50", "--json").stdout)

    assert report["recovered_direct"] == 1 and report["returned_to_queue"] == 0
    assert run_ledger().get(key_of("fixed")).status == "consumed"
    assert [k for k, _ in pipelines.DELIVERED] == [key_of("fixed")]
