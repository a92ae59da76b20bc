"""Real Gemini API shapes, spoken by the emulator through the real SDK: the ledger ends right."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import Ledger
from tests.halt.conftest import CHANNELS, DAY, Channel, scenario, settle


def _scripted_tick(**kw: Any) -> Any:
    from flows.tick import tick

    return tick(pipeline="tests.batch.pipelines:scripted", day=DAY, **kw)


SCRIPTED = Channel("batch", "tests.batch.pipelines:scripted", "scripted", 6, _scripted_tick)


def _row(ledger: Ledger, prefix: str, item: str) -> Any:
    return next(j for j in ledger.jobs(pipeline=prefix) if f":{item}:" in j.key)


def test_batch_error_lines_with_numeric_grpc_codes(world):
    """Output lines ``{"error": {"code": 3|13, "message"}}`` with no status: code 3 is parked
    permanent:400 after one attempt, code 13 is retried and then delivered."""
    scenario(world, {"k-bad": ["400"], "k-flaky": ["500", "ok"]}, batch_error_style="grpc")
    ledger = Ledger(world["url"])
    settle(SCRIPTED, ledger)
    bad, flaky = _row(ledger, "scripted", "k-bad"), _row(ledger, "scripted", "k-flaky")
    assert (bad.status, bad.error_class, bad.attempts) == ("parked", "permanent:400", 1)
    assert "INVALID_ARGUMENT" in (bad.error_message or "")
    assert (flaky.status, flaky.attempts) == ("consumed", 2)
    assert ledger.counts(pipeline="scripted").by_status == {"consumed": 5, "parked": 1}


def test_failed_batch_job_reason_reaches_rows_and_report(world):
    """A FAILED operation's ``error {code, message}`` (unmapped by the SDK) is recorded on its
    rows and in the tick's report; the rows come back and the night settles."""
    reason = "Quota exceeded for batch prediction jobs of this model."
    scenario(world, {}, batch_job_outcomes=["FAILED", "SUCCEEDED"], batch_failed_error=[8, reason])
    ledger = Ledger(world["url"])
    first, second = SCRIPTED.tick(), SCRIPTED.tick()
    assert first.submitted == 6 and second.collect.reconciled == 1
    assert reason in second.collect.jobs[0]["reason"]
    row = _row(ledger, "scripted", "k-ok")
    assert row.error_class == "retryable:batch_failed"
    assert reason in (row.error_message or "")
    settle(SCRIPTED, ledger)
    assert ledger.counts(pipeline="scripted").by_status == {"consumed": 6}


def test_succeeded_job_whose_output_appears_later(world):
    """A SUCCEEDED job without its responses file yet fails no row: the tick waits, and once
    the file is there every row is delivered on its first (only billed) attempt."""
    scenario(world, {}, batch_output_delay_polls=2)
    ledger = Ledger(world["url"])
    reports = settle(SCRIPTED, ledger)
    assert sum(r.collect.missing_from_output for r in reports) == 0
    assert any(r.collect.running for r in reports)  # it did wait for the file
    assert {j.attempts for j in ledger.jobs(pipeline="scripted")} == {1}
    assert world["emulator"].stats()["batches_created"] == 1


def test_output_that_never_appears_fails_after_the_grace_bound(world, monkeypatch):
    """Past GEMINI_LEDGER_BATCH_OUTPUT_GRACE_S, a SUCCEEDED job still without output fails
    its rows as missing_from_output (retryable), not before."""
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_OUTPUT_GRACE_S", "0")
    scenario(world, {}, batch_output_delay_polls=1000)
    ledger = Ledger(world["url"])
    SCRIPTED.tick()
    report = SCRIPTED.tick()  # the job ended: past the (zero) grace, its rows are missing
    assert report.collect.missing_from_output == 6
    assert report.collect.retryable == {"missing_from_output": 6}
    assert {j.attempts for j in ledger.jobs(pipeline="scripted")} == {2}  # sent again


def test_max_tokens_is_parked_as_truncated(world):
    """finishReason MAX_TOKENS (a cut JSON answer) is parked as ``truncated`` after one
    attempt, with a message that says to raise max_output_tokens."""
    scenario(world, {"a": ["incomplete"]})
    ledger = Ledger(world["url"])
    settle(CHANNELS["direct"], ledger)
    row = _row(ledger, "direct-test", "a")
    assert (row.status, row.error_class, row.attempts) == ("parked", "truncated", 1)
    assert "max_output_tokens" in (row.error_message or "")


@pytest.mark.parametrize("reason", ["MODEL_ARMOR", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST"])
def test_safety_finish_reasons_are_parked_as_safety(world, reason):
    """Every blocking finishReason is parked as ``safety`` with the reason in its message."""
    scenario(world, {"a": ["safety"]}, safety_finish_reason=reason)
    ledger = Ledger(world["url"])
    settle(CHANNELS["direct"], ledger)
    row = _row(ledger, "direct-test", "a")
    assert (row.status, row.error_class, row.attempts) == ("parked", "safety", 1)
    assert reason in (row.error_message or "")


@pytest.mark.parametrize("reason", ["JAILBREAK", "MODEL_ARMOR", "OTHER"])
def test_blocked_prompt_reasons_are_parked_as_safety(world, reason):
    """A prompt blocked with promptFeedback.blockReason JAILBREAK (a BlockedReason, not a
    FinishReason, in google-genai 3.3.0), MODEL_ARMOR or OTHER is parked as ``safety`` after
    one attempt, the reason in its message."""
    scenario(world, {"a": ["blocked_prompt"]}, blocked_prompt_reason=reason)
    ledger = Ledger(world["url"])
    settle(CHANNELS["direct"], ledger)
    row = _row(ledger, "direct-test", "a")
    assert (row.status, row.error_class, row.attempts) == ("parked", "safety", 1)
    assert f"prompt blocked: {reason}" in (row.error_message or "")


@pytest.mark.parametrize(("code", "cls"), [(8, "retryable:429"), (14, "retryable:503")])
def test_interaction_step_errors_are_classified_by_their_code(world, code, cls):
    """A failed interaction whose ``model_output`` step carries a google.rpc.Status (8
    RESOURCE_EXHAUSTED, 14 UNAVAILABLE) is retryable by that code, then delivered."""
    scenario(world, {"a": ["failed", "ok"]}, interaction_step_error_code=code)
    ledger = Ledger(world["url"])
    ch = CHANNELS["background"]
    ch.tick()
    ch.tick()  # reclaims the failed interaction
    assert _row(ledger, "bgtest", "a").error_class == cls
    settle(ch, ledger)
    row = _row(ledger, "bgtest", "a")
    assert (row.status, row.attempts) == ("consumed", 2)


# Which item gets which answer without text, per channel (batch: the scripted pipeline's ids).
_NO_TEXT_ITEMS = {
    "batch": {"once": "k-ok", "twice": "k-flaky", "other": "k-bad", "malformed": "k-unsafe"},
    "background": {"once": "a", "twice": "b", "other": "c", "malformed": "d"},
    "direct": {"once": "a", "twice": "b", "other": "c", "malformed": "d"},
}


@pytest.mark.parametrize("channel", ["batch", "background", "direct"])
def test_answers_without_text_are_retried_then_parked_as_their_own_class(world, channel):
    """An empty answer (finish STOP, no parts: python-genai #1289) and OTHER /
    MALFORMED_RESPONSE finishes without text are retried under the unknown cap (2): one that
    answers on the retry is delivered; one empty twice is parked ``empty`` (``empty:other``
    naming its finish where the API gives one), never ``schema`` after one attempt."""
    items = _NO_TEXT_ITEMS[channel]
    scenario(
        world,
        {
            items["once"]: ["empty", "ok"],
            items["twice"]: ["empty"],
            items["other"]: ["finish_other"],
            items["malformed"]: ["malformed_response", "ok"],
        },
    )
    ch = SCRIPTED if channel == "batch" else CHANNELS[channel]
    ledger = Ledger(world["url"])
    settle(ch, ledger)
    rows = {name: _row(ledger, ch.pipeline, item) for name, item in items.items()}
    # Interactions have no finishReason: an OTHER finish is an interaction without text.
    other = "empty" if channel == "background" else "empty:other"
    assert {n: (r.status, r.error_class, r.attempts) for n, r in rows.items()} == {
        "once": ("consumed", None, 2),
        "twice": ("parked", "empty", 2),
        "other": ("parked", other, 2),
        "malformed": ("consumed", None, 2),
    }
    assert "a retry may fix it" in (rows["twice"].error_message or "")
    counts = ledger.counts(pipeline=ch.pipeline)
    assert counts.by_status == {"consumed": ch.rows - 2, "parked": 2}
    sent = world["emulator"].stats()["submissions"]
    assert counts.attempts == sum(n for k, n in sent.items() if k.startswith(f"{ch.pipeline}:"))
