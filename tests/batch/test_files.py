"""The batch channel's files in the Files API: each deleted once its job is over, so night
after night the project's storage stays bounded; a refused delete costs no row anything."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flows.tick import tick
from ledger import BatchState, FileRole, Ledger, NewJob, Status
from tests.ledgers import run_ledger

from .conftest import DAY, attempts_by_key, outstanding

SPEC = "tests.batch.pipelines:daily_reviews"


def _night(emu: Any, days: int, *, closing_tick: bool = True) -> list[dict[str, Any]]:
    """One tick per day for ``days`` days (then one more on the last day, which finds the
    last job finished); the emulator's Files API storage after each tick."""
    stored = []
    for n in range(days):
        tick(pipeline=SPEC, day=DAY + timedelta(days=n))
        stored.append(emu.stats()["files"])
    if closing_tick:
        tick(pipeline=SPEC, day=DAY + timedelta(days=days - 1))
        stored.append(emu.stats()["files"])
    return stored


@pytest.mark.system  # twelve nights of ticks
def test_a_long_run_keeps_the_files_api_storage_bounded(batch_env: dict[str, Any]) -> None:
    """Twelve nights of batch jobs: after every tick at most the one input file of the job
    in flight is stored, and once the last job is reconciled nothing is."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    stored = _night(emu, 12)
    ledger = run_ledger()
    assert not outstanding(ledger, "daily")
    assert set(attempts_by_key(ledger, "daily").values()) == {1}
    assert len(attempts_by_key(ledger, "daily")) == 12 * 8
    assert emu.stats()["batches_created"] == 12
    assert max(s["stored"] for s in stored) == 1
    one_input = max(s["stored_bytes"] for s in stored[:-1])
    assert all(s["stored_bytes"] <= one_input for s in stored)
    assert stored[-1]["stored"] == 0 and stored[-1]["stored_bytes"] == 0
    assert stored[-1]["deleted"] == 24  # every input file and every responses file
    assert ledger.files_not_deleted(pipeline="daily") == (0, 0)


def test_a_small_storage_limit_never_refuses_an_upload(batch_env: dict[str, Any]) -> None:
    """With room for about two input files, night after night still goes out: used files are
    deleted before the next upload, so the API never answers the storage quota's 429."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1, "files_storage_limit_bytes": 22_000})
    stored = _night(emu, 6)
    ledger = run_ledger()
    jobs = ledger.jobs(pipeline="daily")
    assert {(j.status, j.attempts) for j in jobs} == {(Status.CONSUMED, 1)}
    assert len(jobs) == 6 * 8
    assert emu.stats()["files"]["refused_full"] == 0
    assert emu.stats()["batches_created"] == 6
    assert stored[-1]["stored_bytes"] == 0


def test_a_refused_delete_is_retried_on_a_later_tick_and_costs_no_attempt(
    batch_env: dict[str, Any],
) -> None:
    """files.delete answered 503 twice: the files stay recorded with their failures, the
    tick carries on, a later tick deletes them; every row delivered on its one attempt."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1, "route_faults": {"files.delete": ["503"] * 2}})
    first = tick(pipeline=SPEC, day=DAY)
    second = tick(pipeline=SPEC, day=DAY)  # reconciles the job; both deletes refused
    assert second.collect.reconciled == 1
    assert second.collect.file_delete_failures == 2
    assert second.collect.files_not_deleted == 2
    ledger = run_ledger()
    assert ledger.files_not_deleted(pipeline="daily")[0] == 2
    assert {f.delete_failures for f in ledger.files_to_delete(pipeline="daily")} == {1}
    assert emu.stats()["files"]["stored"] == 2
    third = tick(pipeline=SPEC, day=DAY)
    assert third.collect.files_deleted == 2 and third.collect.file_delete_failures == 0
    assert emu.stats()["files"]["stored"] == 0
    assert ledger.files_not_deleted(pipeline="daily") == (0, 0)
    assert first.submitted == 8
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline="daily")} == {(Status.CONSUMED, 1)}


def test_a_file_already_gone_counts_as_deleted(batch_env: dict[str, Any]) -> None:
    """A 404 on files.delete (deleted by hand, or a crash after the call): marked deleted."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    tick(pipeline=SPEC, day=DAY)
    ledger = run_ledger()
    (input_file,) = _recorded(ledger)
    client = emu.client()
    client.files.delete(name=input_file)
    report = tick(pipeline=SPEC, day=DAY)
    assert report.collect.files_deleted == 2 and report.collect.file_delete_failures == 0
    assert ledger.files_not_deleted(pipeline="daily") == (0, 0)


def _recorded(ledger: Ledger) -> list[str]:
    """Every file of the ``daily`` pipeline not deleted yet, deletable now or not."""
    from sqlalchemy import text

    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name FROM batch_files WHERE pipeline = 'daily' AND deleted_at IS NULL")
        ).all()
    return [str(r[0]) for r in rows]


def test_an_input_file_is_deletable_only_once_its_job_is_over(ledger_url: str) -> None:
    """Reserving or submitted: kept (the job may still read it); released, finished or lost:
    deletable. A responses file is deletable as soon as it is recorded."""
    now = [1000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    ledger.enroll(
        [NewJob(f"k{i}", {"text": "t"}) for i in range(4)], pipeline="p", channel="batch", model="m"
    )

    def deletable() -> set[str]:
        return {f.name for f in ledger.files_to_delete(pipeline="p")}

    assert ledger.reserve(pipeline="p", limit=2, reservation="r1", batch_model="m") == 2
    ledger.note_file("files/in1", reservation="r1", pipeline="p", role=FileRole.INPUT)
    assert deletable() == set()
    ledger.bind_batch("r1", name="batches/1")
    assert deletable() == set()
    ledger.note_file("files/out1", reservation="r1", pipeline="p", role=FileRole.OUTPUT)
    assert deletable() == {"files/out1"}
    ledger.finish_batch("batches/1", state="succeeded", summary={})
    assert deletable() == {"files/in1", "files/out1"}
    assert ledger.reserve(pipeline="p", limit=2, reservation="r2", batch_model="m") == 2
    ledger.note_file("files/in2", reservation="r2", pipeline="p", role=FileRole.INPUT)
    assert not ledger.note_file("files/in2", reservation="r2", pipeline="p", role=FileRole.INPUT)
    ledger.release("r2")  # a refused create: the reservation is closed
    assert ledger.batch("r2").state == BatchState.RELEASED
    assert deletable() == {"files/in1", "files/out1", "files/in2"}
    ledger.file_delete_failed("files/in1", error="503")
    assert [f.name for f in ledger.files_to_delete(pipeline="p")][-1] == "files/in1"
    assert ledger.file_deleted("files/in1") and not ledger.file_deleted("files/in1")
    assert deletable() == {"files/out1", "files/in2"}
    assert ledger.files_not_deleted(pipeline="p")[0] == 2


def test_a_file_older_than_the_api_keeps_files_is_marked_gone_without_a_call(
    sqlite_url: str,
) -> None:
    """A file recorded over 48 h ago is gone from the API anyway: marked, no call made."""
    import logging

    from flows.testing import FILES_KEPT_S, clean_files
    from tests.batch.pipelines import daily_reviews

    now = [1000.0]
    ledger = Ledger(sqlite_url, clock=lambda: now[0])
    ledger.note_file("files/old", reservation="r", pipeline="daily", role=FileRole.OUTPUT)
    now[0] += FILES_KEPT_S + 1
    cleaned = clean_files(ledger, daily_reviews, logging.getLogger("test"), client_of=object)
    assert cleaned.deleted == 1 and cleaned.delete_failures == 0
    assert ledger.files_not_deleted(pipeline="daily") == (0, 0)
