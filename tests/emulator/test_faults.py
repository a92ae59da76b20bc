"""Every fault kind surfaces as the SDK's real exception or the real output-line shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai import errors, types
from google.genai._interactions import (
    APIStatusError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
)

from emulator import BUILTINS
from emulator.testing import RunningEmulator

from .helpers import MODEL, output_lines, upload_and_create
from .models import ReviewLabel

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def script(key: str, *steps: str, **extra: Any) -> dict[str, Any]:
    return {"scripts": [{"match": key, "steps": list(steps)}], **extra}


def generate(client: Any, key: str, text: str = "hello", **config: Any) -> Any:
    return client.models.generate_content(
        model=MODEL,
        contents=text,
        config=types.GenerateContentConfig(
            http_options=types.HttpOptions(headers={"x-gemini-ledger-key": key}), **config
        ),
    )


@pytest.mark.parametrize(
    ("step", "exc_type", "code", "status"),
    [
        ("429", errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        ("500", errors.ServerError, 500, "INTERNAL"),
        ("failed", errors.ServerError, 500, "INTERNAL"),
        ("503", errors.ServerError, 503, "UNAVAILABLE"),
        ("400", errors.ClientError, 400, "INVALID_ARGUMENT"),
        ("403", errors.ClientError, 403, "PERMISSION_DENIED"),
        ("404", errors.ClientError, 404, "NOT_FOUND"),
        ("unknown", errors.ClientError, 409, "ABORTED"),
        ("hang", errors.ServerError, 504, "DEADLINE_EXCEEDED"),
    ],
)
def test_generate_error_steps(
    emu: RunningEmulator, client: Any, step: str, exc_type: type, code: int, status: str
) -> None:
    """Error steps on generateContent raise ClientError/ServerError with code and status."""
    emu.set_scenario(script("k", step))
    with pytest.raises(exc_type) as info:
        generate(client, "k")
    assert info.value.code == code and info.value.status == status
    if step == "429":
        retry = [d for d in info.value.details["error"]["details"] if d["@type"] == RETRY_INFO]
        assert retry == [{"@type": RETRY_INFO, "retryDelay": "2s"}]
    stats = emu.stats()
    assert stats["submissions"] == {"k": 1}
    assert stats["billed"]["generate_calls"] == 0


def test_generate_answer_faults(emu: RunningEmulator, client: Any) -> None:
    """safety, blocked_prompt, empty and incomplete come back as answers of the real shape."""
    emu.set_scenario(
        {
            "scripts": [
                {"match": "safe", "steps": ["safety"]},
                {"match": "blocked", "steps": ["blocked_prompt"]},
                {"match": "empty", "steps": ["empty"]},
                {"match": "cut", "steps": ["incomplete"]},
            ]
        }
    )
    schema = {
        "response_mime_type": "application/json",
        "response_json_schema": ReviewLabel.model_json_schema(),
    }
    safe = generate(client, "safe", **schema)
    assert safe.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert safe.text is None
    blocked = generate(client, "blocked", **schema)
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert not blocked.candidates
    empty = generate(client, "empty", **schema)
    # finish STOP with a content that has no parts (python-genai #1289, litellm #24442)
    assert empty.candidates[0].finish_reason == types.FinishReason.STOP
    assert empty.candidates[0].content.parts is None and empty.text is None
    cut = generate(client, "cut", **schema)
    assert cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    with pytest.raises(ValueError):
        ReviewLabel.model_validate_json(cut.text)
    assert emu.stats()["billed"]["generate_calls"] == 4


def test_script_is_exact_then_repeats_last_step(emu: RunningEmulator, client: Any) -> None:
    """ "503, 503, ok": two ServerErrors, then answers, and the last step repeats."""
    emu.set_scenario(script("reviews:*:v1", "503", "503", "ok"))
    outcomes = []
    for _ in range(4):
        try:
            generate(client, "reviews:2026-11-22:r1:v1")
            outcomes.append("ok")
        except errors.ServerError as exc:
            outcomes.append(str(exc.code))
    assert outcomes == ["503", "503", "ok", "ok"]
    generate(client, "other-key")  # not matched by the glob
    stats = emu.stats()
    assert stats["submissions"] == {"reviews:2026-11-22:r1:v1": 4, "other-key": 1}
    assert stats["billed"]["generate_calls"] == 3


def test_rate_faults_apply_to_every_request(emu: RunningEmulator, client: Any) -> None:
    """rate_429=1 makes every generate call a 429; rate_503=1 a 503."""
    emu.set_scenario({"rate_429": 1.0, "retry_delay_s": 7})
    with pytest.raises(errors.ClientError) as info:
        generate(client, "x")
    assert {"@type": RETRY_INFO, "retryDelay": "7s"} in info.value.details["error"]["details"]
    emu.set_scenario({"rate_503": 1.0})
    with pytest.raises(errors.ServerError):
        generate(client, "x")


def test_empty_when_no_letters(emu: RunningEmulator, client: Any) -> None:
    """An emoji-only prompt gets an empty text when empty_when_no_letters is on."""
    emu.set_scenario({"empty_when_no_letters": True})
    assert not generate(client, "emoji", text="👍👍 🎉 123").text
    assert generate(client, "words", text="très bien 👍").text


def test_default_scenario_is_deterministic_per_key(emu: RunningEmulator, client: Any) -> None:
    """Under "default" each key's fate depends only on (seed, key, attempt), not on call order."""

    def fates(keys: list[str]) -> dict[str, str]:
        out = {}
        for key in keys:
            try:
                resp = generate(client, key, text=f"review {key}")
                out[key] = resp.candidates[0].finish_reason.value if resp.candidates else "blocked"
            except errors.APIError as exc:
                out[key] = str(exc.code)
        return out

    keys = [f"k{i}" for i in range(100)]
    no_latency = {**BUILTINS["default"], "latency_ms": {}}
    emu.set_scenario(no_latency, seed=5)
    emu.reset()
    first = fates(keys)
    emu.reset()
    assert fates(list(reversed(keys))) == first
    assert {"STOP", "429"} <= set(first.values())
    emu.set_scenario(no_latency, seed=6)
    emu.reset()
    assert fates(keys) != first


def test_batch_row_faults_become_output_lines(emu: RunningEmulator, client: Any) -> None:
    """Batch rows: errors become error lines, missing rows vanish, safety is a response line."""
    steps = [
        "429",
        "503",
        "400",
        "unknown",
        "failed",
        "missing",
        "safety",
        "blocked_prompt",
        "empty",
        "ok",
    ]
    emu.set_scenario(
        {
            "scripts": [{"match": f"row:{s}", "steps": [s]} for s in steps],
            "batch_error_style": "status",
        }
    )
    job = upload_and_create(client, {f"row:{s}": "text" for s in steps}, "faulty")
    job = client.batches.get(name=job.name)
    lines = {line["key"]: line for line in output_lines(client, job)}
    assert "row:missing" not in lines
    assert len(lines) == len(steps) - 1
    for step, code, status in [
        ("429", 429, "RESOURCE_EXHAUSTED"),
        ("503", 503, "UNAVAILABLE"),
        ("400", 400, "INVALID_ARGUMENT"),
        ("unknown", 409, "ABORTED"),
        ("failed", 500, "INTERNAL"),
    ]:
        err = lines[f"row:{step}"]["error"]
        assert (err["code"], err["status"]) == (code, status)
        assert err["message"]
    assert {"@type": RETRY_INFO, "retryDelay": "2s"} in lines["row:429"]["error"]["details"]
    safety = types.GenerateContentResponse.model_validate(lines["row:safety"]["response"])
    assert safety.candidates[0].finish_reason == types.FinishReason.SAFETY
    blocked = lines["row:blocked_prompt"]["response"]
    assert blocked["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in blocked
    assert lines["row:empty"]["response"]["candidates"][0]["content"] == {"role": "model"}
    stats = emu.stats()
    assert stats["submissions"] == {f"row:{s}": 1 for s in steps}
    assert stats["billed"]["batch_rows"] == 4  # safety, blocked_prompt, empty, ok


def test_batch_rate_missing_and_truncated_file(emu: RunningEmulator, client: Any) -> None:
    """rate_missing drops rows silently; rate_truncated_file cuts the last line in half."""
    emu.set_scenario({"rate_missing": 1.0})
    job = client.batches.get(name=upload_and_create(client, {"a": "x", "b": "y"}, "m").name)
    assert client.files.download(file=job.dest.file_name) == b""
    emu.set_scenario({"rate_truncated_file": 1.0})
    job = client.batches.get(name=upload_and_create(client, {"a": "x", "b": "y"}, "t").name)
    raw = client.files.download(file=job.dest.file_name).decode().splitlines()
    assert json.loads(raw[0])["key"] == "a"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[-1])


def test_batch_job_fail_rate(emu: RunningEmulator, client: Any) -> None:
    """batch_job_fail_rate=1 ends every job FAILED; batch_job_expire_rate=1 EXPIRED."""
    emu.set_scenario({"batch_job_fail_rate": 1.0})
    job = client.batches.get(name=upload_and_create(client, {"a": "x"}, "f").name)
    assert job.state == types.JobState.JOB_STATE_FAILED
    emu.set_scenario({"batch_job_expire_rate": 1.0})
    job = client.batches.get(name=upload_and_create(client, {"a": "x"}, "e").name)
    assert job.state == types.JobState.JOB_STATE_EXPIRED


@pytest.mark.parametrize(
    ("step", "exc_type", "code"),
    [
        ("429", RateLimitError, 429),
        ("503", InternalServerError, 503),
        ("500", InternalServerError, 500),
        ("400", BadRequestError, 400),
        ("403", PermissionDeniedError, 403),
        ("unknown", ConflictError, 409),
    ],
)
def test_interaction_create_errors(
    emu: RunningEmulator, client: Any, step: str, exc_type: type, code: int
) -> None:
    """Error steps on interactions.create raise the interactions client's APIStatusError kinds."""
    emu.set_scenario(script("ik", step))
    with pytest.raises(exc_type) as info:
        client.interactions.create(
            model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "ik"}
        )
    assert isinstance(info.value, APIStatusError)
    assert info.value.status_code == code
    assert info.value.body["error"]["code"] == code
    if step == "429":
        assert {"@type": RETRY_INFO, "retryDelay": "2s"} in info.value.body["error"]["details"]
    stats = emu.stats()
    assert stats["submissions"] == {"ik": 1}  # one attempt: the SDK's retries are off
    assert stats["interactions_created"] == 0


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [
        ("failed", "failed", "INTERNAL"),
        ("cancelled", "cancelled", "CANCELLED"),
        ("incomplete", "incomplete", "MAX_TOKENS"),
        ("budget_exceeded", "budget_exceeded", "BUDGET_EXCEEDED"),
        ("safety", "failed", "SAFETY"),
        ("blocked_prompt", "failed", "BLOCKED_PROMPT"),
    ],
)
def test_interaction_terminal_statuses(
    emu: RunningEmulator, client: Any, step: str, status: str, code: str
) -> None:
    """Terminal-status steps end a background interaction in that status with errors whose
    code is a URI naming the error type (or the bare name, in the "name" style)."""
    emu.set_scenario(script("ik", step))
    created = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "ik"}
    )
    assert created.status == "in_progress"
    done = client.interactions.get(created.id)
    assert done.status == status
    assert done.errors and done.errors[0].code.startswith("https://")
    assert done.errors[0].code.endswith("/" + code.lower().replace("_", "-"))
    emu.set_scenario({**script("ik2", step), "interaction_error_style": "name"})
    named = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "ik2"}
    )
    again = client.interactions.get(named.id)
    assert again.errors and again.errors[0].code == code


def test_interaction_hang_and_empty(emu: RunningEmulator, client: Any) -> None:
    """A "hang" interaction never completes; an "empty" one completes with no text."""
    emu.set_scenario(
        {"scripts": [{"match": "h", "steps": ["hang"]}, {"match": "e", "steps": ["empty"]}]}
    )
    hang = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "h"}
    )
    for _ in range(5):
        assert client.interactions.get(hang.id).status == "in_progress"
    empty = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "e"}
    )
    done = client.interactions.get(empty.id)
    assert done.status == "completed" and not done.output_text


# --- the real API's setup faults and answers a retry may fix (issue 21) -------------------

QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
HELP = "type.googleapis.com/google.rpc.Help"


def _details(exc: Any) -> list[dict[str, Any]]:
    details = exc.details if isinstance(exc, errors.APIError) else exc.body
    return list(details["error"].get("details", []))


def test_a_retired_model_is_404_on_every_generation_route(
    emu: RunningEmulator, client: Any
) -> None:
    """generateContent, batchGenerateContent, interactions.create and models.get for a retired
    model answer 404 NOT_FOUND naming it, as the real API does; nothing is counted or billed."""
    emu.set_scenario({"retired_models": [MODEL]})
    with pytest.raises(errors.ClientError) as gen:
        generate(client, "k")
    assert (gen.value.code, gen.value.status) == (404, "NOT_FOUND")
    assert f"models/{MODEL} is not found for API version v1" in gen.value.message
    assert "Call ListModels" in gen.value.message
    with pytest.raises(errors.ClientError) as batch:
        upload_and_create(client, {"row": "text"}, "retired")
    assert "not supported for batchGenerateContent" in batch.value.message
    with pytest.raises(APIStatusError) as inter:
        client.interactions.create(model=MODEL, input="x", background=True)
    assert inter.value.status_code == 404
    with pytest.raises(errors.ClientError):
        client.models.get(model=MODEL)
    client.models.get(model="gemini-2.5-flash-lite")  # another model is still served
    stats = emu.stats()
    assert stats["submissions"] == {} and stats["batches_created"] == 0


def test_a_spent_daily_quota_names_its_per_day_quota_id(emu: RunningEmulator, client: Any) -> None:
    """quota_fault per_day: 429 RESOURCE_EXHAUSTED with a per-day QuotaFailure quotaId, a Help
    link and no RetryInfo, on generateContent and interactions.create."""
    emu.set_scenario({"quota_fault": "per_day"})
    with pytest.raises(errors.ClientError) as gen:
        generate(client, "k")
    assert (gen.value.code, gen.value.status) == (429, "RESOURCE_EXHAUSTED")
    kinds = [d["@type"] for d in _details(gen.value)]
    assert kinds == [QUOTA_FAILURE, HELP]
    quota = _details(gen.value)[0]["violations"][0]
    assert quota["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert quota["quotaDimensions"]["model"] == MODEL
    with pytest.raises(RateLimitError) as inter:
        client.interactions.create(model=MODEL, input="x", background=True)
    assert "PerDay" in json.dumps(inter.value.body)


def test_no_quota_at_all_says_limit_0(emu: RunningEmulator, client: Any) -> None:
    """quota_fault limit_zero: 429 whose message says ``limit: 0`` for the model."""
    emu.set_scenario({"quota_fault": "limit_zero"})
    with pytest.raises(errors.ClientError) as gen:
        generate(client, "k")
    assert gen.value.code == 429 and f"limit: 0, model: {MODEL}" in gen.value.message


@pytest.mark.parametrize(
    ("step", "kinds"),
    [("429_daily", [QUOTA_FAILURE, HELP]), ("429_help", [HELP])],
)
def test_per_key_quota_steps(
    emu: RunningEmulator, client: Any, step: str, kinds: list[str]
) -> None:
    """The 429_daily and 429_help steps: a per-day 429, and one with only a Help link; neither
    carries a RetryInfo."""
    emu.set_scenario(script("k", step, "ok"))
    with pytest.raises(errors.ClientError) as info:
        generate(client, "k")
    assert info.value.code == 429
    assert [d["@type"] for d in _details(info.value)] == kinds
    assert generate(client, "k").text  # the next call answers
    assert emu.stats()["submissions"] == {"k": 2}


def test_an_unrestricted_key_is_blocked_with_its_reason(emu: RunningEmulator, client: Any) -> None:
    """project_fault key_unrestricted: 403 PERMISSION_DENIED with ErrorInfo reason
    API_KEY_SERVICE_BLOCKED on every keyed request, as reported since 2026-06-18."""
    emu.set_scenario({"project_fault": "key_unrestricted"})
    with pytest.raises(errors.ClientError) as info:
        generate(client, "k")
    assert (info.value.code, info.value.status) == (403, "PERMISSION_DENIED")
    reasons = [d.get("reason") for d in _details(info.value)]
    assert "API_KEY_SERVICE_BLOCKED" in reasons
    with pytest.raises(PermissionDeniedError):
        client.interactions.create(model=MODEL, input="x", background=True)


@pytest.mark.parametrize(
    ("step", "finish"),
    [("empty", "STOP"), ("finish_other", "OTHER"), ("malformed_response", "MALFORMED_RESPONSE")],
)
def test_answers_without_text(emu: RunningEmulator, client: Any, step: str, finish: str) -> None:
    """empty, finish_other and malformed_response: a candidate with its finishReason and a
    content without parts, on generateContent and in a batch output line; billed."""
    emu.set_scenario(script("k*", step))
    answer = generate(client, "k1")
    assert answer.candidates[0].finish_reason.value == finish
    assert answer.candidates[0].content.parts is None
    assert answer.usage_metadata.candidates_token_count is None
    job = upload_and_create(client, {"k2": "text"}, f"no-text-{step}")
    job = client.batches.get(name=job.name)
    (line,) = output_lines(client, job)
    assert line["response"]["candidates"][0] == {
        "content": {"role": "model"},
        "finishReason": finish,
        "index": 0,
    }
    assert emu.stats()["billed"]["generate_calls"] == 1


def test_batch_error_lines_carry_numeric_grpc_codes_by_default(
    emu: RunningEmulator, client: Any
) -> None:
    """By default a failed row's output line is ``{"error": {"code": 3, "message"}}``: a
    numeric gRPC code and no status string (python-genai #2693)."""
    emu.set_scenario(script("row:*", "400"))
    job = client.batches.get(name=upload_and_create(client, {"row:a": "text"}, "grpc").name)
    (line,) = output_lines(client, job)
    assert line["error"] == {"code": 3, "message": "Request contains an invalid argument."}


def test_jailbreak_is_a_block_reason_not_a_finish_reason(emu: RunningEmulator, client: Any) -> None:
    """blocked_prompt_reason JAILBREAK: the prompt's promptFeedback.blockReason, which the SDK
    reads as types.BlockedReason; a finishReason of JAILBREAK is refused by the scenario."""
    emu.set_scenario(script("k", "blocked_prompt", blocked_prompt_reason="JAILBREAK"))
    blocked = generate(client, "k")
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.JAILBREAK
    assert not blocked.candidates
    with pytest.raises(ValueError):
        emu.set_scenario({"safety_finish_reason": "JAILBREAK"})
