"""Real usage and the model version on each row, lost interactions, incomplete ones and
URI-coded interaction errors (issue 21): the ledger core, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from ledger import (
    INTERACTION_LOST,
    Failure,
    FailureRow,
    Ledger,
    LineSuccess,
    NewJob,
    Policy,
    ResultRow,
    Usage,
    Verdict,
    classify,
    parse_output_line,
)

POLICY = Policy(attempt_cap=4, unknown_cap=2)


class Label(BaseModel):
    label: str


@pytest.fixture
def ledger(ledger_url):
    led = Ledger(ledger_url)
    yield led
    led.dispose()


def _submitted(ledger: Ledger, keys: list[str], handle: str = "h1") -> None:
    ledger.enroll([NewJob(k, {"k": k}) for k in keys], pipeline="p", channel="batch", model="m")
    assert ledger.reserve(pipeline="p", limit=len(keys), reservation="r1") == len(keys)
    for k in keys:
        ledger.bind_handle(k, reservation="r1", handle=handle)


def test_rows_keep_thoughts_cached_audio_and_the_model_version(ledger: Ledger) -> None:
    """Results and failures add thinking, cached and audio tokens and keep the last answer's
    model version and response id; a failure with no answer keeps the earlier ones."""
    _submitted(ledger, ["a", "b"])
    ledger.apply_results(
        [ResultRow("a", '{"label":"x"}', 100, 20, 150, 30, 40, 10, "gemini-3.8-flash", "r-a")],
        handle="h1",
    )
    ledger.apply_failures(
        [FailureRow("b", Failure(Verdict.RETRYABLE, "503", "busy"), 7, 0, 9, 2, 1, 0, "v1", "r")],
        handle="h1",
        policy=POLICY,
    )
    a, b = ledger.get("a"), ledger.get("b")
    assert (a.thoughts_tokens, a.cached_tokens, a.audio_tokens) == (30, 40, 10)
    assert (a.model_version, a.response_id) == ("gemini-3.8-flash", "r-a")
    assert (b.total_tokens, b.thoughts_tokens, b.cached_tokens) == (9, 2, 1)
    assert (b.model_version, b.response_id) == ("v1", "r")
    assert ledger.counts().usage == Usage(107, 20, 159, 32, 41, 10)

    # Sent again; this time the failure brought no answer: the version stays, tokens add 0.
    assert ledger.reserve(pipeline="p", limit=1, reservation="r2", keys=["b"]) == 1
    ledger.bind_handle("b", reservation="r2", handle="h2")
    ledger.apply_failures(
        [FailureRow("b", Failure(Verdict.RETRYABLE, "503", "busy"))], handle="h2", policy=POLICY
    )
    again = ledger.get("b")
    assert (again.model_version, again.thoughts_tokens, again.attempts) == ("v1", 2, 2)
    by_model = {(u.model, u.model_version): u for u in ledger.usage_by_model()}
    assert by_model[("m", "gemini-3.8-flash")].usage.thoughts_tokens == 30
    assert by_model[("m", "v1")].rows == 1


def test_a_lost_interaction_is_retryable_with_its_attempt_and_a_duplicate_flag(
    ledger: Ledger,
) -> None:
    """retryable:interaction_lost keeps the attempt (it reached the API) and counts the row
    as a possible duplicate: its first sending may have been billed."""
    _submitted(ledger, ["a", "b"], handle="v1_1")
    lost = Failure(Verdict.RETRYABLE, INTERACTION_LOST, "interaction v1_1 no longer exists")
    other = Failure(Verdict.RETRYABLE, "503", "busy")
    ledger.apply_failures(
        [FailureRow("a", lost), FailureRow("b", other)], handle="v1_1", policy=POLICY
    )
    a, b = ledger.get("a"), ledger.get("b")
    assert (a.status, a.error_class, a.attempts, a.possible_duplicates) == (
        "retryable",
        "retryable:interaction_lost",
        1,
        1,
    )
    assert b.possible_duplicates == 0


def test_an_incomplete_interaction_is_truncated_whatever_its_errors_say() -> None:
    """Incomplete is deterministic (the output budget): parked as truncated even when its
    errors[] carry a retryable-looking code."""
    uri = "https://generativelanguage.googleapis.com/errors/internal"
    failure = classify({"status": "incomplete", "errors": [{"code": uri, "message": "cut"}]})
    assert (failure.verdict, failure.error_class) == (Verdict.PERMANENT, "truncated")
    assert "max_output_tokens" in failure.message and "cut" in failure.message


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("https://ai.google.dev/errors/model-overloaded.html?hl=en", "retryable:503"),
        ("https://generativelanguage.googleapis.com/errors/resource-exhausted", "retryable:429"),
        ("type.googleapis.com/google.rpc.Code.INTERNAL", "retryable:500"),
        ("https://generativelanguage.googleapis.com/errors/max-output-tokens", "truncated"),
        ("https://generativelanguage.googleapis.com/errors/invalid-request/", "permanent:400"),
        ("RATE_LIMITED", "retryable:429"),
    ],
)
def test_interaction_error_uris_name_the_error_type(code: str, error_class: str) -> None:
    """An interaction error's code is a URI naming the error type: its last word decides."""
    failure = classify({"status": "failed", "errors": [{"code": code, "message": "m"}]})
    assert failure.error_class == error_class


def _line(meta: dict[str, Any], **response: Any) -> bytes:
    body = {
        "candidates": [{"content": {"parts": [{"text": '{"label":"x"}'}]}, "finishReason": "STOP"}],
        "usageMetadata": meta,
        **response,
    }
    return orjson.dumps({"key": "k1", "response": body})


@pytest.mark.parametrize("details", [False, True], ids=["hot-path", "slow-path"])
def test_output_lines_carry_real_usage_and_the_model_version(details: bool) -> None:
    """A batch output line's thoughts, cached and audio prompt tokens, modelVersion and
    responseId reach its outcome, on the fast path and the lenient one."""
    meta: dict[str, Any] = {
        "promptTokenCount": 100,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 40,
        "totalTokenCount": 150,
    }
    if details:
        meta["promptTokensDetails"] = [
            {"modality": "TEXT", "tokenCount": 90},
            {"modality": "AUDIO", "tokenCount": 10},
        ]
    out = parse_output_line(_line(meta, modelVersion="gemini-3.8-flash", responseId="r1"), Label)
    assert isinstance(out, LineSuccess)
    assert out.usage == Usage(100, 20, 150, 30, 40, 10 if details else 0)
    assert (out.model_version, out.response_id) == ("gemini-3.8-flash", "r1")
