"""A batch night with a deadline (issue #23, item 3): jobs slower than the night are cancelled
when the time left is no more than the direct channel needs, whatever they answered is
applied, the rest is sent directly, every row delivered once before the deadline, and the
morning view says what the fallback cost above the batch price. Real ticks, the emulator and
the real SDK, a real SQLite ledger; the deadline's clock is moved instead of waited for."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from flows import Deadline
from flows.cli import app
from flows.ops.summary import build_summary, render_markdown
from flows.reconcile import reconcile
from flows.testing import HaltHistory, deadline_clock, load_prices
from flows.tick import tick
from ledger import FileRole, Status
from tests.batch.deadline_pipelines import DECLARED_DEADLINE, DELIVERIES_ENV, ROWS, deliveries
from tests.ledgers import run_ledger

from .conftest import DAY, attempts_by_key, submissions

SPEC, NAME = "tests.batch.deadline_pipelines:late", "late"
# gemini-2.5-flash in the shipped price table, USD per million tokens; batch pays half.
PROMPT_PRICE, ANSWER_PRICE, BATCH_MULTIPLIER = 0.30, 2.50, 0.5


def _deadline_in(seconds: float, zone: str = "Europe/Paris") -> tuple[str, float]:
    """A deadline ``seconds`` from now in ``zone`` ("HH:MM:SS Zone"), and its epoch."""
    at = datetime.fromtimestamp(int(datetime.now(UTC).timestamp() + seconds), ZoneInfo(zone))
    return f"{at:%H:%M:%S} {zone}", at.timestamp()


@pytest.fixture
def night(batch_env: dict[str, Any], monkeypatch, tmp_path: Path) -> dict[str, Any]:
    """The batch environment, the deliveries file, and jobs that would run past the night."""
    path = tmp_path / "deliveries.txt"
    monkeypatch.setenv(DELIVERIES_ENV, str(path))
    return {**batch_env, "deliveries": path}


@pytest.mark.parametrize("partial", [0.5, 0.0], ids=["responses-file", "no-responses-file"])
def test_a_night_past_its_deadline_is_finished_directly_before_it(
    night: dict[str, Any], partial: float, monkeypatch
) -> None:
    """The batch job would run 1000 polls: at 22:00 and at 2 h before the deadline the tick
    keeps batch; 10 min before it (less than the direct channel needs with its margin) it
    cancels the job, applies what its responses file holds (half the rows, or none when the
    cancelled job leaves no file), sends the rest directly, and delivers every row once,
    each billed once per attempt: the answered rows 1, the others 2 (the batch send and the
    direct one); the morning view reports the fallback's cost above the batch price."""
    emu = night["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1000, "batch_partial_output": partial})
    deadline, due = _deadline_in(6 * 3600)
    if not partial:  # a responses file is waited for to the end of the cancel wait: keep it short
        monkeypatch.setenv("GEMINI_LEDGER_DEADLINE_CANCEL_WAIT_S", "1")

    first = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    assert first.submit.batch is not None and first.submit.deadline is None
    with deadline_clock(lambda: due - 2 * 3600):
        second = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    assert second.submit.deadline is None and second.submit.batches == []
    assert second.collect.still_running == 1

    with deadline_clock(lambda: due - 600):
        third = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    switched = third.submit.deadline
    answered = int(ROWS * partial)
    assert switched is not None
    assert switched.cancelled == [first.submit.batch]
    assert (switched.answered_by_batch, switched.sent_direct) == (answered, ROWS - answered)
    assert switched.outcomes == {Status.DONE: ROWS - answered}

    ledger = run_ledger()
    jobs = ledger.jobs(pipeline=NAME)
    assert {j.status for j in jobs} == {Status.CONSUMED}
    delivered = deliveries(night["deliveries"])
    assert sorted(delivered) == sorted(j.key for j in jobs)  # each key once
    direct = [j for j in jobs if (j.handle or "").startswith("direct:")]
    assert len(direct) == ROWS - answered
    assert {j.attempts for j in direct} == {2}
    assert {j.attempts for j in jobs if j not in direct} <= {1}
    assert attempts_by_key(ledger, NAME) == submissions(emu, "late:")
    billed = emu.stats()["billed"]
    assert (billed["batch_rows"], billed["generate_calls"]) == (answered, ROWS - answered)

    report = build_summary(ledger, DAY, load_prices(None), halts=HaltHistory([]))
    (row,) = [p for p in report["pipelines"] if p["pipeline"] == NAME]
    at_direct = (
        sum(
            j.prompt_tokens * PROMPT_PRICE
            + (j.candidates_tokens + j.thoughts_tokens) * ANSWER_PRICE
            for j in direct
        )
        / 1_000_000
    )
    assert row["deadline_direct_rows"] == ROWS - answered
    assert row["deadline_extra_usd"] == pytest.approx(at_direct * (1 - BATCH_MULTIPLIER), abs=1e-6)
    assert report["cost"]["deadline_extra_usd"] == pytest.approx(row["deadline_extra_usd"])
    assert "sent directly to meet the deadline" in render_markdown(report)
    printed = CliRunner().invoke(app, ["dead-letter", "--day", DAY.isoformat()])
    assert printed.exit_code == 0, printed.output
    assert f"late: {ROWS - answered} rows sent directly to meet the deadline" in printed.output

    fourth = tick(pipeline=SPEC, day=DAY, deadline=deadline)  # nothing left: nothing sent
    assert fourth.submit.deadline is None and fourth.submit.batches == []
    assert len(deliveries(night["deliveries"])) == ROWS


def test_a_deadline_far_enough_away_leaves_the_batch_running(night: dict[str, Any]) -> None:
    """With the pipeline's rows still out and more time left than the direct channel needs
    (its margin included), nothing is cancelled and no row is sent directly."""
    emu = night["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1000})
    deadline, due = _deadline_in(6 * 3600, "UTC")
    tick(pipeline=SPEC, day=DAY, deadline=deadline)
    with deadline_clock(lambda: due - 1300):  # need: 3 rounds of 10 s + 900 + 300
        report = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    assert report.submit.deadline is None
    assert emu.stats()["billed"]["generate_calls"] == 0
    assert {j.status for j in run_ledger().jobs(pipeline=NAME)} == {Status.SUBMITTED}


def test_a_refused_cancel_leaves_the_rows_with_their_job_until_the_next_tick(
    night: dict[str, Any], monkeypatch
) -> None:
    """batches.cancel answered 503 and a job still running when the (zero) wait ends: its
    rows stay submitted under it, none is sent directly; the next tick cancels it again,
    applies its half and sends the other half, each row delivered once."""
    emu = night["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1000,
            "batch_partial_output": 0.5,
            "route_faults": {"batches.cancel": ["503"]},
        }
    )
    monkeypatch.setenv("GEMINI_LEDGER_DEADLINE_CANCEL_WAIT_S", "0")
    deadline, due = _deadline_in(6 * 3600)
    first = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    with deadline_clock(lambda: due - 600):
        refused = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit.deadline
        assert refused is not None
        assert (refused.cancelled, refused.cancel_errors) == ([], 1)
        assert (refused.unfinished_jobs, refused.sent_direct) == (1, 0)
        assert {j.status for j in run_ledger().jobs(pipeline=NAME)} == {Status.SUBMITTED}
        switched = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit.deadline
    assert switched is not None and switched.cancelled == [first.submit.batch]
    assert (switched.answered_by_batch, switched.sent_direct) == (ROWS // 2, ROWS // 2)
    jobs = run_ledger().jobs(pipeline=NAME)
    assert {j.status for j in jobs} == {Status.CONSUMED}
    assert sorted(deliveries(night["deliveries"])) == sorted(j.key for j in jobs)


def _all_delivered_once(night: dict[str, Any], name: str) -> list[Any]:
    """Every row of ``name`` consumed and delivered once; its rows."""
    jobs = run_ledger().jobs(pipeline=name)
    assert {j.status for j in jobs} == {Status.CONSUMED}
    assert sorted(deliveries(night["deliveries"])) == sorted(j.key for j in jobs)
    return jobs


LATE_DECLARED = "tests.batch.deadline_pipelines:late_declared"


def _declared_job_cancelled_by_hand(emu: Any) -> tuple[str, float, Any]:
    """The late_declared pipeline's batch job, submitted six hours before its deadline, then
    cancelled through the API (as the switch-over does): the job, the deadline's time and the
    client (kept: a client is closed once it is collected)."""
    due = Deadline.of(DECLARED_DEADLINE).first_after(time.time())
    with deadline_clock(lambda: due - 6 * 3600):
        job = tick(pipeline=LATE_DECLARED, day=DAY).submit.batch
    assert job is not None
    client = emu.client()
    client.batches.cancel(name=job)
    return job, due, client


def test_the_reconcile_flow_settles_a_job_the_deadline_cancelled_as_the_tick_does(
    night: dict[str, Any],
) -> None:
    """A pipeline declaring its deadline, its batch job cancelled (as the switch-over does)
    and settled first by the reconcile flow (what the webhook batch.cancelled starts): its
    answered half applied, its other rows retryable:deadline, never unknown:batch_cancelled
    (which two cut-off direct calls would park); the next tick sends them directly."""
    emu = night["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1000, "batch_partial_output": 0.5})
    spec, name = LATE_DECLARED, "late_declared"
    job, due, _client = _declared_job_cancelled_by_hand(emu)
    assert reconcile(job_name=job)["reconciled"] == 1
    rows = run_ledger().jobs(pipeline=name)
    failed = Counter(j.error_class for j in rows if j.status == Status.RETRYABLE)
    assert failed == {"retryable:deadline": ROWS // 2}
    with deadline_clock(lambda: due - 600):
        switched = tick(pipeline=spec, day=DAY).submit.deadline
    assert switched is not None and switched.sent_direct == ROWS // 2
    _all_delivered_once(night, name)


def test_a_row_on_its_last_attempt_is_still_sent_directly(night: dict[str, Any]) -> None:
    """attempt_cap 1: the batch send is every row's last attempt; the deadline's cancel
    counts it but parks none: the unanswered half goes out directly (attempts 2), every row
    delivered once, none parked exhausted:deadline."""
    emu = night["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1000, "batch_partial_output": 0.5})
    spec, name = "tests.batch.deadline_pipelines:late_once", "late_once"
    deadline, due = _deadline_in(6 * 3600)
    tick(pipeline=spec, day=DAY, deadline=deadline)
    with deadline_clock(lambda: due - 600):
        switched = tick(pipeline=spec, day=DAY, deadline=deadline).submit.deadline
    assert switched is not None
    assert (switched.answered_by_batch, switched.sent_direct) == (ROWS // 2, ROWS // 2)
    jobs = _all_delivered_once(night, name)
    assert Counter(j.attempts for j in jobs) == {1: ROWS // 2, 2: ROWS // 2}


def test_a_cancelled_jobs_responses_file_a_poll_late_is_waited_for(
    night: dict[str, Any],
) -> None:
    """The cancelled job shows its responses file only a poll after it shows CANCELLED
    (batch_output_delay_polls, as a SUCCEEDED job may): the switch-over polls it again within
    its cancel wait, applies its answered half (billed once, never sent again), sends only
    the other half directly, and records the file, which the next tick deletes."""
    emu = night["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1000,
            "batch_partial_output": 0.5,
            "batch_output_delay_polls": 2,
        }
    )
    deadline, due = _deadline_in(6 * 3600)
    tick(pipeline=SPEC, day=DAY, deadline=deadline)
    with deadline_clock(lambda: due - 600):
        switched = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit.deadline
    assert switched is not None
    assert (switched.answered_by_batch, switched.sent_direct) == (ROWS // 2, ROWS // 2)
    billed = emu.stats()["billed"]
    assert (billed["batch_rows"], billed["generate_calls"]) == (ROWS // 2, ROWS // 2)
    _all_delivered_once(night, NAME)
    ledger = run_ledger()
    outputs = [f for f in ledger.files_to_delete(pipeline=NAME) if f.role == FileRole.OUTPUT]
    assert len(outputs) == 1
    after = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    assert after.collect.files_deleted >= 1
    assert ledger.files_to_delete(pipeline=NAME) == []


def test_the_reconcile_flow_leaves_a_cancelled_job_whose_file_is_late(
    night: dict[str, Any],
) -> None:
    """On a pipeline with a deadline, batch.cancelled's reconcile flow polls the job before
    its responses file shows: it leaves the job submitted (no row failed, none sent again);
    the tick that reads the file applies the answered half and sends only the rest."""
    emu = night["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1000,
            "batch_partial_output": 0.5,
            "batch_output_delay_polls": 2,
        }
    )
    spec, name = LATE_DECLARED, "late_declared"
    job, due, _client = _declared_job_cancelled_by_hand(emu)
    report = reconcile(job_name=job)
    assert (report["state"], report["reconciled"]) == ("CANCELLED", 0)
    assert {j.status for j in run_ledger().jobs(pipeline=name)} == {Status.SUBMITTED}
    with deadline_clock(lambda: due - 600):
        later = tick(pipeline=spec, day=DAY)
    assert later.collect.succeeded == ROWS // 2
    assert later.submit.deadline is not None and later.submit.deadline.sent_direct == ROWS // 2
    assert emu.stats()["billed"]["batch_rows"] == ROWS // 2
    _all_delivered_once(night, name)


def _enrolled_a_day_earlier(day: date) -> None:
    """The rows of ``day`` as if enrolled a day before they were: an earlier night's."""
    with run_ledger().engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET created_at = created_at - 86400 WHERE key LIKE :k"),
            {"k": f"{NAME}:{day.isoformat()}:%"},
        )


def test_a_late_row_of_an_earlier_night_takes_back_only_its_own_job(
    night: dict[str, Any],
) -> None:
    """An earlier night's batch job still out past its deadline, tonight's rows hours before
    theirs: the tick cancels only the earlier job and sends only its unanswered rows
    directly; tonight's rows go by batch in the same tick (billed at the batch rate), every
    row delivered once, each row's attempts what the API was sent."""
    emu = night["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1000, "batch_partial_output": 0.5})
    deadline, _ = _deadline_in(6 * 3600, "UTC")
    yesterday = DAY - timedelta(days=1)
    earlier = tick(pipeline=SPEC, day=yesterday, deadline=deadline).submit.batch
    assert earlier is not None
    _enrolled_a_day_earlier(yesterday)  # due 18 h ago: late

    tonight = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit
    switched = tonight.deadline
    assert switched is not None
    assert (switched.answered_by_batch, switched.sent_direct) == (ROWS // 2, ROWS // 2)
    assert len(tonight.batches) == 1 and tonight.batches != [earlier]
    assert (switched.cancelled, switched.rows_near) == ([earlier], ROWS)
    ledger = run_ledger()
    mine = [j for j in ledger.jobs(pipeline=NAME) if j.key.startswith(f"{NAME}:{DAY}:")]
    assert {(j.status, j.handle) for j in mine} == {(Status.SUBMITTED, tonight.batches[0])}

    emu.set_scenario({"batch_polls_to_complete": 1})  # tonight's job ends at its next poll
    after = tick(pipeline=SPEC, day=DAY, deadline=deadline)
    assert after.submit.deadline is None
    jobs = _all_delivered_once(night, NAME)
    direct = [j for j in jobs if (j.handle or "").startswith("direct:")]
    assert len(direct) == ROWS // 2
    assert {j.key.split(":")[1] for j in direct} == {yesterday.isoformat()}
    assert {j.attempts for j in direct} == {2}
    assert {j.attempts for j in jobs if j not in direct} == {1}
    assert attempts_by_key(ledger, NAME) == submissions(emu, f"{NAME}:")
    billed = emu.stats()["billed"]
    assert (billed["batch_rows"], billed["generate_calls"]) == (ROWS // 2 + ROWS, ROWS // 2)


def test_the_reconcile_flow_knows_a_job_a_tick_parameters_deadline_cancelled(
    night: dict[str, Any], monkeypatch
) -> None:
    """A deadline given only as the tick's parameter: its switch-over cancels the job but
    cannot read it (batches.get refused, no wait), so the job is left submitted; the
    reconcile flow (what the webhook batch.cancelled starts), which never sees that deadline,
    settles it from the job's mark: its answered half applied, its other rows
    retryable:deadline, never unknown:batch_cancelled; the next tick sends them directly."""
    emu = night["emulator"]
    scenario: dict[str, Any] = {"batch_polls_to_complete": 1000, "batch_partial_output": 0.5}
    emu.set_scenario(scenario)
    monkeypatch.setenv("GEMINI_LEDGER_DEADLINE_CANCEL_WAIT_S", "0")
    deadline, due = _deadline_in(6 * 3600)
    job = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit.batch
    assert job is not None
    # The next tick's collect polls the job; its switch-over's one poll is refused.
    emu.set_scenario({**scenario, "route_faults": {"batches.get": ["ok", "503"]}})
    with deadline_clock(lambda: due - 600):
        switched = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit.deadline
    assert switched is not None and switched.cancelled == [job]
    assert (switched.unfinished_jobs, switched.sent_direct) == (1, 0)
    assert reconcile(job_name=job)["reconciled"] == 1
    rows = run_ledger().jobs(pipeline=NAME)
    failed = Counter(j.error_class for j in rows if j.status == Status.RETRYABLE)
    assert failed == {"retryable:deadline": ROWS // 2}
    with deadline_clock(lambda: due - 600):
        switched = tick(pipeline=SPEC, day=DAY, deadline=deadline).submit.deadline
    assert switched is not None and switched.sent_direct == ROWS // 2
    _all_delivered_once(night, NAME)
