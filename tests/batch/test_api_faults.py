"""The real API's faults on the batch channel keep the promise (issues #21 and #25): a refused
upload or batches.create costs no attempt and parks nothing, an ambiguous create is looked up
before anything is sent again, a transient 404 never resends a finished job's rows, a vanished
responses file brings its rows back, and a failed job's partial output is applied."""

from __future__ import annotations

from typing import Any

import pytest

from flows.gemini.gateway import gemini_client
from flows.ops.summary import build_summary, render_markdown
from flows.settings import load_settings
from flows.testing import HaltHistory, load_prices
from flows.tick import tick
from ledger import morning_view
from tests.ledgers import run_ledger

from .conftest import DAY, attempts_by_key, submissions, tick_until_settled

SPEC, NAME = "tests.batch.pipelines:small_reviews", "small"
ROWS = 40


def _billed_rows(emu: Any) -> int:
    return int(emu.stats()["billed"]["batch_rows"])


def test_refused_uploads_and_creates_cost_nothing_and_the_rows_go_out_after(
    batch_env: dict[str, Any],
) -> None:
    """An upload answered 503 and batches.create answered 503 twice (absent from the listing)
    and 429 once: four ticks, every row pending with 0 attempts, nothing parked, the refusals
    counted for the morning view; the fifth tick sends them, one attempt each."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1,
            "route_faults": {"upload": ["503"], "batches.create": ["503", "503", "429"]},
        }
    )
    ledger = run_ledger()
    for n in range(1, 5):
        report = tick(pipeline=SPEC, day=DAY)
        assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("pending", 0)}
        assert report.submitted == 0 and report.parked == {}
        assert report.submit.submission_refused == 1
        assert ledger.submission_refusals(NAME).refused == n
    assert emu.stats()["batches_created"] == 0 and _billed_rows(emu) == 0
    (view,) = [v for v in morning_view(ledger) if v.pipeline == NAME]
    assert view.submission_refused == 4 and view.submission_refused_since is not None
    summary = build_summary(ledger, DAY, load_prices(None), halts=HaltHistory([]))
    assert "small: batch submission refused 4 times since" in render_markdown(summary)

    sent = tick(pipeline=SPEC, day=DAY)
    assert sent.submitted == ROWS and ledger.submission_refusals(NAME).refused == 0
    tick_until_settled(SPEC, NAME, max_ticks=3)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("consumed", 1)}
    assert attempts_by_key(ledger, NAME) == submissions(emu, "small:")
    assert _billed_rows(emu) == ROWS


def test_refused_ticks_past_the_bound_halt_the_tick(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GEMINI_LEDGER_BATCH_REFUSED_HALT=2: the second refused tick in a row halts (Failed
    run, one line naming the refusals and the fix); nothing parked, nothing counted."""
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_REFUSED_HALT", "2")
    emu = batch_env["emulator"]
    emu.set_scenario({"route_faults": {"batches.create": ["429", "429", "ok"]}})
    ledger = run_ledger()
    first = tick(pipeline=SPEC, day=DAY)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("pending", 0)}
    assert first.submit.submission_refused == 1
    state = tick(pipeline=SPEC, day=DAY, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "refused small's batch submission 2 times in a row" in message
    assert "429" in message and "Fix:" in message and "\n" not in message
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("pending", 0)}
    tick_until_settled(SPEC, NAME, max_ticks=4)
    assert attempts_by_key(ledger, NAME) == submissions(emu, "small:")


def test_a_create_answered_504_after_the_job_was_made_binds_that_job(
    batch_env: dict[str, Any],
) -> None:
    """batches.create reached the API, then the caller got 504: the job is found by display
    name in batches.list and bound; one job, 40 rows billed for 40 (not 80)."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {"batch_polls_to_complete": 1, "route_faults": {"batches.create": ["accepted_504"]}}
    )
    first = tick(pipeline=SPEC, day=DAY)
    assert first.submitted == ROWS and first.submit.submission_refused == 0
    tick_until_settled(SPEC, NAME, max_ticks=3)
    ledger = run_ledger()
    assert emu.stats()["batches_created"] == 1
    assert _billed_rows(emu) == ROWS
    assert set(attempts_by_key(ledger, NAME).values()) == {1}
    assert attempts_by_key(ledger, NAME) == submissions(emu, "small:")


def test_an_ambiguous_create_the_listing_cannot_settle_is_left_for_recovery(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """batches.create answered 504 after making the job and batches.list answered 503: the
    reservation is left as it is (neither refused nor re-sent); the next tick's recovery finds
    the job by display name and binds it. One job, 40 billed."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1,
            "route_faults": {"batches.create": ["accepted_504"], "batches.list": ["503"]},
        }
    )
    first = tick(pipeline=SPEC, day=DAY)
    ledger = run_ledger()
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("reserving", 1)}
    assert first.submitted == 0 and first.submit.submission_refused == 0
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_STALE_S", "0")
    second = tick(pipeline=SPEC, day=DAY)
    assert (second.recover.bound, second.recover.recovered) == (1, ROWS)
    tick_until_settled(SPEC, NAME, max_ticks=3)
    assert emu.stats()["batches_created"] == 1 and _billed_rows(emu) == ROWS
    assert attempts_by_key(ledger, NAME) == submissions(emu, "small:")


def test_one_transient_404_on_a_succeeded_job_resends_nothing(batch_env: dict[str, Any]) -> None:
    """A job SUCCEEDED; one poll answers 404: the next tick reads its output. 40 rows billed
    for 40 (today's code declared it lost at once: 80)."""
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 0, "route_faults": {"batches.get": ["404"]}})
    tick(pipeline=SPEC, day=DAY)
    second = tick(pipeline=SPEC, day=DAY)
    assert (second.collect.lost, second.collect.poll_errors, second.submitted) == (0, 1, 0)
    tick_until_settled(SPEC, NAME, max_ticks=3)
    ledger = run_ledger()
    assert emu.stats()["batches_created"] == 1 and _billed_rows(emu) == ROWS
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("consumed", 1)}


def test_a_404_past_the_bound_is_not_lost_while_batches_list_has_the_job(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """batches.get answers 404 on every poll past the bound, but batches.list has the job:
    it is read from the listing, never declared lost; 40 billed for 40."""
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_LOST_AFTER_S", "0")
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 0, "route_faults": {"batches.get": ["404"] * 10}})
    tick_until_settled(SPEC, NAME, max_ticks=5)
    ledger = run_ledger()
    assert emu.stats()["batches_created"] == 1 and _billed_rows(emu) == ROWS
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("consumed", 1)}


def test_a_responses_file_gone_brings_its_rows_back(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SUCCEEDED job's responses file is deleted (404 on download): after the bound its rows
    come back as retryable:output_lost with their attempt kept, go out again and settle."""
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_LOST_AFTER_S", "0")
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 0})
    first = tick(pipeline=SPEC, day=DAY)
    client = gemini_client(load_settings())
    job = client.batches.get(name=first.submit.batch)
    client.files.delete(name=job.dest.file_name)  # deleted, or gone with its retention
    ledger = run_ledger()
    for _ in range(2):
        waiting = tick(pipeline=SPEC, day=DAY)
        assert waiting.collect.reconcile_errors == 1 and waiting.submitted == 0
    third = tick(pipeline=SPEC, day=DAY)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("submitted", 2)}
    assert third.collect.output_lost == ROWS and third.submitted == ROWS
    finished = ledger.batch_named(first.submit.batch)
    assert finished is not None and finished.state == "output_lost"
    tick_until_settled(SPEC, NAME, max_ticks=3)
    assert {(j.status, j.attempts) for j in ledger.jobs(pipeline=NAME)} == {("consumed", 2)}
    assert attempts_by_key(ledger, NAME) == submissions(emu, "small:")


@pytest.mark.parametrize("outcome", ["CANCELLED", "FAILED"])
def test_a_failed_or_cancelled_jobs_partial_output_is_applied_first(
    batch_env: dict[str, Any], outcome: str
) -> None:
    """A job ends CANCELLED or FAILED having answered half its rows in a responses file: those
    20 keep their answers; only the other 20 go out again (60 requests, not 80)."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1,
            "batch_job_outcomes": [outcome],
            "batch_partial_output": 0.5,
        }
    )
    tick(pipeline=SPEC, day=DAY)
    second = tick(pipeline=SPEC, day=DAY)
    assert second.collect.succeeded == ROWS // 2
    assert second.collect.job_failed_rows == ROWS // 2
    tick_until_settled(SPEC, NAME, max_ticks=3)
    ledger = run_ledger()
    sent = submissions(emu, "small:")
    assert sum(sent.values()) == ROWS + ROWS // 2
    assert attempts_by_key(ledger, NAME) == sent
    assert {j.status for j in ledger.jobs(pipeline=NAME)} == {"consumed"}


def test_inlined_responses_read_as_output_lines(batch_env: dict[str, Any]) -> None:
    """A job's inlined responses (the SDK's objects) become output lines keyed by each
    request's metadata key, which the line parser reads like a responses file's lines."""
    from flows.examples.reviews import ReviewLabel
    from flows.testing import inlined_lines
    from ledger import LineSuccess, parse_output_line

    client = gemini_client(load_settings())
    src = [
        {
            "contents": [{"role": "user", "parts": [{"text": f"inline {i}"}]}],
            "metadata": {"key": f"inline:{i}"},
            "config": {
                "response_mime_type": "application/json",
                "response_json_schema": ReviewLabel.model_json_schema(),
            },
        }
        for i in range(3)
    ]
    job = client.batches.create(model="gemini-2.5-flash", src=src, config={"display_name": "il"})
    lines = inlined_lines(client.batches.get(name=job.name))
    assert lines is not None
    parsed = [parse_output_line(line, ReviewLabel) for line in lines]
    assert [p.key for p in parsed] == ["inline:0", "inline:1", "inline:2"]
    assert all(type(p) is LineSuccess for p in parsed)
