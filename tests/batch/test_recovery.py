"""Crashes and repeats: a killed tick recovered through the listing, reconcile run twice."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from flows.examples.reviews import ReviewLabel
from flows.gemini.gateway import gemini_client
from flows.reconcile import reconcile
from flows.settings import load_settings
from flows.testing import download_output, iter_lines, output_file_of, reconcile_lines
from flows.tick import tick
from ledger import Ledger
from tests.child_env import child_env
from tests.ledgers import run_ledger
from tests.prewarmed import CliRun, run_cli

from .conftest import DAY, attempts_by_key, submissions, tick_until_settled

ROOT = Path(__file__).resolve().parents[2]
SMALL = "tests.batch.pipelines:small_reviews"


def _tick_in_subprocess(env_extra: dict[str, str], trace: Path) -> CliRun:
    """One CLI tick in a process of its own (forked from one that has done the imports:
    tests/prewarmed.py), killed where ``env_extra`` arms a crash point."""
    env = child_env(env_extra)
    env["GEMINI_LEDGER_CRASH_TRACE"] = str(trace)
    return run_cli(["tick", SMALL, "--day", DAY.isoformat()], env=env, cwd=ROOT, timeout=180)


def _snapshot(ledger: Ledger, pipeline: str) -> list[Any]:
    return [
        (j.key, j.status, j.attempts, j.result, j.error_class, j.total_tokens, j.updated_at)
        for j in ledger.jobs(pipeline=pipeline)
    ]


def test_killed_after_create_is_bound_through_the_listing(
    batch_env: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    """A tick killed (SIGKILL) after batches.create but before binding leaves an orphan; the
    next tick finds it by display name in batches.list and binds it: no second batch job."""
    emu = batch_env["emulator"]
    trace = tmp_path / "trace.txt"
    proc = _tick_in_subprocess(
        {
            "GEMINI_LEDGER_CRASH_AT": "batch.after_create",
            "PREFECT_API_URL": batch_env["prefect_api"],
        },
        trace,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert trace.read_text().split() == [
        "batch.after_reserve",
        "batch.after_upload",
        "batch.after_create",
    ]
    ledger = run_ledger()
    assert ledger.counts(pipeline="small").by_status == {"reserving": 40}
    assert emu.stats()["batches_created"] == 1

    monkeypatch.setenv("GEMINI_LEDGER_BATCH_STALE_S", "0")
    first = tick(pipeline=SMALL, day=DAY)
    orphans = first.recover
    assert (orphans.stale, orphans.bound, orphans.resent, orphans.skipped) == (1, 1, 0, 0)
    assert (orphans.recovered, orphans.errors) == (40, 0)
    assert first.submitted == 0  # nothing else was due
    tick_until_settled(SMALL, "small", max_ticks=4)
    assert emu.stats()["batches_created"] == 1
    assert {j.status for j in ledger.jobs(pipeline="small")} == {"consumed"}
    assert attempts_by_key(ledger, "small") == submissions(emu, "small:")
    assert set(attempts_by_key(ledger, "small").values()) == {1}


def test_killed_after_reserve_is_resent_once(
    batch_env: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    """A tick killed after reserving (nothing sent) is re-sent by the next tick under the
    same reservation, without counting a second attempt."""
    emu = batch_env["emulator"]
    proc = _tick_in_subprocess(
        {
            "GEMINI_LEDGER_CRASH_AT": "batch.after_reserve",
            "PREFECT_API_URL": batch_env["prefect_api"],
        },
        tmp_path / "trace.txt",
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert emu.stats()["batches_created"] == 0
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_STALE_S", "0")
    first = tick(pipeline=SMALL, day=DAY)
    assert first.recover.resent == 1 and first.recover.recovered == 40
    tick_until_settled(SMALL, "small", max_ticks=4)
    ledger = run_ledger()
    assert emu.stats()["batches_created"] == 1
    assert attempts_by_key(ledger, "small") == submissions(emu, "small:")
    assert set(attempts_by_key(ledger, "small").values()) == {1}


def test_reconciling_the_same_output_twice_changes_nothing(
    batch_env: dict[str, Any], tmp_path: Path
) -> None:
    """The reconcile flow run twice on one job, and the core run again on its output file
    (with a duplicate, an unknown key and a broken line added), change no row."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {"batch_polls_to_complete": 1, "rate_503": 0.15, "rate_400": 0.1, "rate_missing": 0.1},
        seed=3,
    )
    submitted = tick(pipeline=SMALL, day=DAY)
    job_name = submitted.submit.batch
    first = reconcile(job_name)  # the webhook receiver's call: pipeline from the ledger
    assert first["reconciled"] == 1 and first["state"] == "SUCCEEDED"
    assert first["succeeded"] + first["failed"] + first["missing_from_output"] == 40
    assert first["missing_from_output"] > 0 and first["failed"] > 0
    ledger = run_ledger()
    before = _snapshot(ledger, "small")
    counts_before = ledger.counts(pipeline="small")

    again = reconcile(job_name, pipeline=SMALL)
    assert again["reconciled"] == 0 and again["already_reconciled"] is True
    assert _snapshot(ledger, "small") == before
    # The same from the command line (a repeated webhook, an operator's retry).
    env = child_env({"PREFECT_API_URL": batch_env["prefect_api"]})
    cli = subprocess.run(
        [sys.executable, "-m", "flows.cli", "reconcile", job_name, "--pipeline", SMALL, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert orjson.loads(cli.stdout)["already_reconciled"] is True
    assert _snapshot(ledger, "small") == before

    client = gemini_client(load_settings())
    job = client.batches.get(name=job_name)
    out = tmp_path / "output.jsonl"
    download_output(client, output_file_of(job), out)
    lines = list(iter_lines(out))
    extra = [
        lines[0],  # a duplicate key
        orjson.dumps({"key": "small:2026-11-22:nobody:v1", "response": {}}) + b"\n",
        b'{"key": "small:2026-11-22:rv-0\n',  # a truncated line
    ]
    out.write_bytes(b"".join(lines + extra))
    rec = ledger.batch_named(job_name)
    assert rec is not None
    p = __import__("flows.registry", fromlist=["get_pipeline"]).get_pipeline(SMALL, load_settings())
    counts = reconcile_lines(
        ledger,
        iter_lines(out),
        handle=job_name,
        reservation=rec.reservation,
        schema=ReviewLabel,
        policy=p.policy,
        chunk_size=7,
    )
    assert counts.succeeded == counts.failed == 0
    assert counts.already_settled == len(lines)
    assert counts.duplicate_keys == 1
    assert counts.unknown_keys == 1
    assert counts.unparseable == 1
    assert _snapshot(ledger, "small") == before
    assert ledger.counts(pipeline="small") == counts_before


def test_first_pass_counts_duplicates_unknown_and_broken_lines(
    batch_env: dict[str, Any], tmp_path: Path
) -> None:
    """On a job's first reconcile, a repeated key is applied once (its first line wins), a
    key never sent and a broken line are counted, and rows with no line stay for missing."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1, "rate_missing": 0.1}, seed=5)
    job_name = tick(pipeline=SMALL, day=DAY).submit.batch
    ledger = run_ledger()
    client = gemini_client(load_settings())
    job = client.batches.get(name=job_name)
    out = tmp_path / "output.jsonl"
    download_output(client, output_file_of(job), out)
    lines = list(iter_lines(out))
    assert 0 < len(lines) < 40
    first_key = orjson.loads(lines[0])["key"]
    failure_for_first = orjson.dumps(
        {"key": first_key, "error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "x"}}
    )
    extra = [
        failure_for_first + b"\n",  # a later line for a key already answered: ignored
        orjson.dumps({"key": "small:2026-11-22:nobody:v1", "response": {}}) + b"\n",
        b'{"key": "small:2026-11-22:rv-0\n',
    ]
    out.write_bytes(b"".join(lines + extra))
    rec = ledger.batch_named(job_name)
    assert rec is not None
    policy = (
        __import__("flows.registry", fromlist=["get_pipeline"])
        .get_pipeline(SMALL, load_settings())
        .policy
    )
    counts = reconcile_lines(
        ledger,
        iter_lines(out),
        handle=job_name,
        reservation=rec.reservation,
        schema=ReviewLabel,
        policy=policy,
        chunk_size=8,
    )
    assert counts.succeeded == len(lines) and counts.failed == 0
    assert (counts.duplicate_keys, counts.unknown_keys, counts.unparseable) == (1, 1, 1)
    assert ledger.get(first_key).status == "done"
    missing = 40 - len(lines)
    assert ledger.counts(pipeline="small").by_status == {"done": len(lines), "submitted": missing}
    report = reconcile(job_name)
    assert report["missing_from_output"] == missing and report["succeeded"] == 0
    assert report["already_settled"] == len(lines)
    assert ledger.counts(pipeline="small").by_status == {
        "consumed": len(lines),
        "retryable": missing,
    }


def test_killed_mid_reconcile_is_finished_by_the_next_tick(
    batch_env: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    """A tick killed after applying a chunk of output (job not yet marked reconciled) leaves
    applied rows done; the next tick reads the output again, changes none of them, fails the
    missing rows and finishes the job."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1, "rate_missing": 0.1}, seed=5)
    tick(pipeline=SMALL, day=DAY)
    proc = _tick_in_subprocess(
        {
            "GEMINI_LEDGER_CRASH_AT": "batch.reconcile.after_chunk",
            "PREFECT_API_URL": batch_env["prefect_api"],
        },
        tmp_path / "trace.txt",
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ledger = run_ledger()
    by_status = ledger.counts(pipeline="small").by_status
    missing = by_status["submitted"]
    assert by_status == {"done": 40 - missing, "submitted": missing} and missing > 0
    done_before = {j.key: (j.result, j.total_tokens) for j in ledger.jobs(status="done")}

    report = tick(pipeline=SMALL, day=DAY)
    assert report.collect.reconciled == 1
    assert report.collect.already_settled == 40 - missing and report.collect.succeeded == 0
    assert report.collect.missing_from_output == missing
    after = {j.key: (j.result, j.total_tokens) for j in ledger.jobs(pipeline="small")}
    assert all(after[k] == v for k, v in done_before.items())  # tokens not counted twice
    tick_until_settled(SMALL, "small", max_ticks=4)
    assert attempts_by_key(ledger, "small") == submissions(emu, "small:")
    assert ledger.counts(pipeline="small").total_tokens == emu.stats()["billed"]["total_tokens"]


def test_killed_inside_the_side_effect_delivers_each_result_once(
    batch_env: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    """A tick killed inside on_result (its third) has recorded the two before it; the next
    tick (once the claim is stale) runs only the one in hand again, and consumes every row
    once."""
    from sqlalchemy import func, select

    from flows.examples.reviews import ReviewLabelRow, results_engine

    batch_env["emulator"].set_scenario({"batch_polls_to_complete": 1})
    tick(pipeline=SMALL, day=DAY)
    proc = _tick_in_subprocess(
        {
            "GEMINI_LEDGER_CRASH_AT": "batch.inside_side_effect@3",
            "PREFECT_API_URL": batch_env["prefect_api"],
        },
        tmp_path / "trace.txt",
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ledger = run_ledger()
    # Each side effect is recorded right after it ran: only the one in hand is not.
    assert ledger.counts(pipeline="small").by_status == {"consumed": 2, "done": 38}
    with results_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(ReviewLabelRow)).scalar() == 3
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_STALE_S", "0")
    report = tick(pipeline=SMALL, day=DAY)
    assert report.delivered == 38 and report.submitted == 0
    with results_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(ReviewLabelRow)).scalar() == 40
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline="small")} == {("consumed", 1)}
