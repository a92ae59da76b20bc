"""The batch channel end to end: real SDK against the emulator, real Prefect flow runs."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from flows.settings import load_settings
from flows.testing import batches_per_tick
from flows.tick import tick
from tests.ledgers import run_ledger

from .conftest import DAY, attempts_by_key, outstanding, submissions, tick_until_settled

SCRIPTED = "tests.batch.pipelines:scripted"


def _key(name: str) -> str:
    return f"scripted:{DAY.isoformat()}:{name}:v1"


def test_scripted_rows_end_in_their_exact_state(batch_env: dict[str, Any]) -> None:
    """Transient rows succeed within the cap, permanent ones park after one attempt, a row
    missing from the output is caught and resent, a row that keeps failing is exhausted."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1,
            "scripts": [
                {"match": _key("k-flaky"), "steps": ["503", "503", "ok"]},
                {"match": _key("k-bad"), "steps": ["400"]},
                {"match": _key("k-unsafe"), "steps": ["safety"]},
                {"match": _key("k-lost"), "steps": ["missing", "ok"]},
                {"match": _key("k-always503"), "steps": ["503"]},
            ],
        }
    )
    first = tick(pipeline=SCRIPTED, day=DAY)
    assert first.enrolled == 6 and first.submitted == 6 and first.submit.batch
    second = tick(pipeline=SCRIPTED, day=DAY)
    data = second.as_dict()
    assert json.loads(json.dumps(data)) == data  # the report renders as plain JSON
    assert second.collect.reconciled == 1
    assert second.collect.missing_from_output == 1
    assert second.collect.succeeded == 1
    assert second.collect.parked == {"permanent:400": 1, "safety": 1}
    assert second.collect.retryable == {"missing_from_output": 1, "retryable:503": 2}
    ledger = run_ledger()
    lost = ledger.get(_key("k-lost"))
    assert (lost.status, lost.error_class) in {
        ("retryable", "missing_from_output"),
        ("submitted", "missing_from_output"),
    }

    tick_until_settled(SCRIPTED, "scripted", max_ticks=8)
    jobs = {j.key.split(":")[2]: j for j in ledger.jobs(pipeline="scripted")}
    state = {k: (j.status, j.error_class, j.attempts) for k, j in jobs.items()}
    assert state == {
        "k-ok": ("consumed", None, 1),
        "k-flaky": ("consumed", None, 3),
        "k-bad": ("parked", "permanent:400", 1),
        "k-unsafe": ("parked", "safety", 1),
        "k-lost": ("consumed", None, 2),
        "k-always503": ("parked", "exhausted:503", 4),
    }
    assert attempts_by_key(ledger, "scripted") == submissions(emu, "scripted:")
    # One more tick finds nothing left to send.
    last = tick(pipeline=SCRIPTED, day=DAY)
    assert last.submitted == 0 and last.enrolled == 0
    assert not outstanding(ledger, "scripted")


def test_failed_batch_job_returns_every_row(batch_env: dict[str, Any]) -> None:
    """A batch job that ends FAILED returns all its rows for resubmission, attempts counted."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1, "batch_job_outcomes": ["FAILED"]})
    spec, name = "tests.batch.pipelines:small_reviews", "small"
    tick(pipeline=spec, day=DAY)
    second = tick(pipeline=spec, day=DAY)
    assert second.collect.jobs[0]["state"] == "FAILED"
    assert second.collect.job_failed_rows == 40
    assert second.collect.retryable == {"retryable:batch_failed": 40}
    assert second.submitted == 40  # the same rows went straight into the next batch
    tick_until_settled(spec, name, max_ticks=4)
    ledger = run_ledger()
    jobs = ledger.jobs(pipeline=name)
    assert {(j.status, j.attempts) for j in jobs} == {("consumed", 2)}
    assert attempts_by_key(ledger, name) == submissions(emu, f"{name}:")
    assert emu.stats()["batches_created"] == 2


def test_failing_side_effect_leaves_the_row_done_for_the_next_tick(
    batch_env: dict[str, Any],
) -> None:
    """on_result raising keeps its row done (never lost); the next tick delivers it."""
    from tests.batch import pipelines

    batch_env["emulator"].set_scenario({"batch_polls_to_complete": 1})
    spec, name = "tests.batch.pipelines:flaky_sink", "flaky-sink"
    tick(pipeline=spec, day=DAY)
    victim = f"{name}:{DAY.isoformat()}:rv-00002:v1"
    pipelines.sink_failures[victim] = 1
    second = tick(pipeline=spec, day=DAY)
    assert second.delivery_failed == 1
    assert second.delivered == 4
    ledger = run_ledger()
    assert ledger.get(victim).status == "done"
    third = tick(pipeline=spec, day=DAY)
    assert third.delivered == 1 and third.submitted == 0
    assert ledger.get(victim).status == "consumed" and ledger.get(victim).attempts == 1


def test_a_backlog_larger_than_the_batch_limit_goes_out_as_several_jobs(
    batch_env: dict[str, Any],
) -> None:
    """40 due rows with batch_size_limit=15 leave in one tick as jobs of 15, 15 and 10."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    spec = "tests.batch.pipelines:chunked_reviews"
    first = tick(pipeline=spec, day=DAY)
    assert first.submitted == 40 and len(first.submit.batches) == 3
    ledger = run_ledger()
    assert sorted(ledger.batch_named(b).rows for b in first.submit.batches) == [10, 15, 15]
    second = tick(pipeline=spec, day=DAY)
    assert second.collect.reconciled == 3 and second.delivered == 40
    assert emu.stats()["batches_created"] == 3
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline="chunked")} == {("consumed", 1)}


def test_a_night_is_split_within_the_request_and_file_size_limits(
    batch_env: dict[str, Any],
) -> None:
    """With 15 requests per job and 8,000-byte input files, 40 rows go out as jobs that each
    respect both limits, over several ticks when a tick may create only 3 jobs; every row is
    sent once and delivered once."""
    from flows.gemini.gateway import gemini_client

    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    spec = "tests.batch.pipelines:split_reviews"
    with batches_per_tick(3):
        first = tick(pipeline=spec, day=DAY)
        assert len(first.submit.batches) == 3 and first.submitted < 40
        reports = [first, *tick_until_settled(spec, "split")]
    names = [b for r in reports for b in r.submit.batches]
    ledger = run_ledger()
    # Each input file is recorded under its batch's reservation with its size (and deleted
    # from the Files API once its job is over: none is left there).
    with ledger.engine.connect() as conn:
        uploaded = dict(
            conn.execute(
                text("SELECT reservation, size_bytes FROM batch_files WHERE role = 'input'")
            ).all()
        )
    sizes = [uploaded[ledger.batch_named(name).reservation] for name in names]
    client = gemini_client(load_settings())  # held: the pager needs its client alive
    assert not list(client.files.list())
    assert all(ledger.batch_named(name).rows <= 15 for name in names)
    assert len(names) >= 6 and max(sizes) <= 8_000 and min(sizes) > 0
    assert sum(ledger.batch_named(n).rows for n in names) == 40
    assert submissions(emu, "split:") == dict.fromkeys(attempts_by_key(ledger, "split"), 1)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline="split")} == {("consumed", 1)}


def test_a_request_larger_than_a_whole_file_is_parked_unsent(batch_env: dict[str, Any]) -> None:
    """A row whose request line alone passes the file size limit is parked as
    permanent:request_too_large without an attempt; the rows that fit go out one per file."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    tick_until_settled("tests.batch.pipelines:oversized_reviews", "oversized")
    ledger = run_ledger()
    jobs = ledger.jobs(pipeline="oversized")
    assert sorted((j.status, j.error_class, j.attempts) for j in jobs) == sorted(
        [("consumed", None, 1)] * 2 + [("parked", "permanent:request_too_large", 0)] * 38
    )
    assert len(submissions(emu, "oversized:")) == 2 and emu.stats()["batches_created"] == 2


def test_a_refused_batch_create_keeps_the_reserved_rows_pending(
    batch_env: dict[str, Any], monkeypatch
) -> None:
    """batches.create answered with an API error (here a real 404 from the emulator for a
    file that does not exist): no row was carried, so none is charged or parked; the batch
    reservation is closed as refused (not left for orphan recovery) and counted."""
    import flows.channels.batch as batch

    batch_env["emulator"].set_scenario({"batch_polls_to_complete": 1})
    monkeypatch.setattr(batch, "upload_requests", lambda *a, **k: "files/never-uploaded")
    report = tick(pipeline="tests.batch.pipelines:small_reviews", day=DAY)
    assert report.submitted == 0 and report.submit.batch is None
    ledger = run_ledger()
    assert {(j.status, j.error_class, j.attempts) for j in ledger.jobs(pipeline="small")} == {
        ("pending", None, 0)
    }
    assert report.submit.refused == {} and report.submit.submission_refused == 1
    assert not ledger.stale_batches(pipeline="small", older_than=-1.0)
    assert ledger.submission_refusals("small").refused == 1
    assert batch_env["emulator"].stats()["batches_created"] == 0
