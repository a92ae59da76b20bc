"""The real API's setup faults that look like a row's failure (a 404, a 429, a 403), raised by
the real SDK and recognised as faults of the setup, each with one line naming the cause and
the fix; the look-alikes that are a row's or a job's own stay the classifier's."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.testing import (
    daily_quota,
    help_only_429,
    model_not_found,
    no_quota,
    project_fault,
    step_status,
)
from flows.testing import classify, forget_api_keys, setup_fault
from ledger import ApiFailure, SetupKind
from tests.ledger.test_classify import (
    BODY_404,
    BODY_429,
    RETRY_INFO_7S,
    _answer,
    _client,
    _raise_for,
    interactions_error,
    models_error,
)

MODEL = "gemini-1.5-pro-002"


@pytest.fixture(autouse=True)
def _no_key_found_yet() -> None:
    """No key found by an earlier test in this process: a fault's fix is the general one
    (where this process's key was found would name it)."""
    forget_api_keys()


def _body(status_obj: dict[str, Any]) -> dict[str, Any]:
    return {"error": status_obj}


def _batches_create_error(status: int, body: dict[str, Any]) -> BaseException:
    client = _client(_answer(status, body))
    try:
        client.batches.create(
            model=MODEL, src=[{"contents": [{"parts": [{"text": "x"}], "role": "user"}]}]
        )
    except BaseException as exc:
        return exc
    raise AssertionError("the SDK did not raise")


def _fault(exc: BaseException) -> Any:
    fault = setup_fault(exc)
    assert fault is not None, classify(exc)
    assert "\n" not in str(fault) and "Fix:" in str(fault)
    return fault


@pytest.mark.parametrize("surface", ["models", "batches-create", "interactions"])
def test_a_retired_model_is_a_setup_fault_naming_the_model(surface: str) -> None:
    """404 "models/X is not found for API version v1beta, or is not supported for
    generateContent" on generate_content, batches.create or interactions.create halts: the
    line names the model and says to change the pipeline's model."""
    body = _body(model_not_found(MODEL, "v1beta"))
    if surface == "models":
        exc = models_error(404, body)
    elif surface == "interactions":
        exc = interactions_error(404, body)
    else:
        exc = _batches_create_error(
            404, _body(model_not_found(MODEL, "v1beta", "batchGenerateContent"))
        )
    fault = _fault(exc)
    assert fault.kind is SetupKind.MODEL_NOT_FOUND
    assert f"model {MODEL} " in fault.cause
    assert "model=" in fault.fix and MODEL in fault.fix


def test_the_classifier_test_bodys_retired_model_is_recognised_too() -> None:
    """The v1 wording of the same 404 (the classifier's table) names its model as well."""
    fault = _fault(models_error(404, BODY_404))
    assert fault.kind is SetupKind.MODEL_NOT_FOUND and "gemini-9-ultra" in fault.cause


@pytest.mark.parametrize(
    "message",
    [
        "Batch batches/abc123 not found.",
        "Requested entity was not found.",
        "Interaction v1_abc not found.",
        "File files/batch-123 not found.",
    ],
)
def test_a_404_about_a_job_or_a_file_is_not_a_setup_fault(message: str) -> None:
    """A 404 for a batch job, an interaction, a file or an unnamed entity is about that thing:
    the classifier's, never a halt."""
    body = {"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}
    assert setup_fault(_raise_for(_answer(404, body), "batches")) is None
    assert setup_fault(_raise_for(_answer(404, body), "interactions-get")) is None


def test_a_spent_per_day_quota_halts_and_says_it_resets_at_midnight_pacific() -> None:
    """429 whose QuotaFailure quotaId is per day, no RetryInfo: a setup fault naming the
    quota and the model, and that per-day quotas reset at midnight Pacific time."""
    exc = models_error(429, _body(daily_quota("gemini-2.5-flash")))
    fault = _fault(exc)
    assert fault.kind is SetupKind.DAILY_QUOTA
    assert "GenerateRequestsPerDayPerProjectPerModel-FreeTier" in fault.cause
    assert "gemini-2.5-flash" in fault.cause
    assert "midnight Pacific time" in fault.fix
    assert _fault(interactions_error(429, _body(daily_quota(MODEL)))).kind is SetupKind.DAILY_QUOTA


def test_a_per_day_quota_with_a_retry_info_says_when_it_resets() -> None:
    """When the API says when (RetryInfo), the fix line says it instead of midnight."""
    status = daily_quota("gemini-2.5-flash")
    status["details"].append({**RETRY_INFO_7S, "retryDelay": "11520s"})
    fault = _fault(models_error(429, _body(status)))
    assert "resets in 3 h 12 min" in fault.fix and "midnight" not in fault.fix


@pytest.mark.parametrize(
    "quota_id",
    [
        "GenerateRequestsPerDayPerProjectPerModel",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        "GenerateContentInputTokensPerModelPerDay-FreeTier",
    ],
)
def test_every_per_day_quota_id_is_a_spent_day(quota_id: str) -> None:
    """Per-day quotaIds, the -FreeTier variants and the token-per-day ones, halt."""
    status = daily_quota("gemini-2.5-flash")
    status["details"][0]["violations"][0]["quotaId"] = quota_id
    assert _fault(models_error(429, _body(status))).kind is SetupKind.DAILY_QUOTA


def test_limit_0_is_no_quota_at_all() -> None:
    """429 "limit: 0" (a model the project's tier has no quota for): a setup fault whose fix
    is billing or another model, though the message says "Please retry in 5s"."""
    fault = _fault(models_error(429, _body(no_quota("gemini-3.1-pro"))))
    assert fault.kind is SetupKind.NO_QUOTA
    assert "gemini-3.1-pro" in fault.cause and "limit: 0" in fault.cause
    assert "billing" in fault.fix


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: models_error(429, BODY_429), id="per-minute-with-retry-info"),
        pytest.param(lambda: models_error(429, _body(help_only_429())), id="help-link-only"),
        pytest.param(
            lambda: models_error(429, _body(step_status("429", 2.0))), id="emulator-per-minute"
        ),
        pytest.param(lambda: interactions_error(429, BODY_429), id="interactions-per-minute"),
    ],
)
def test_a_per_minute_429_stays_the_rows_retryable_failure(make: Any) -> None:
    """A per-minute quota, or a 429 that names no quota: retryable as before, no halt."""
    exc = make()
    assert setup_fault(exc) is None
    failure = classify(exc)
    assert failure.error_class == "retryable:429" and failure.parked_class() == "exhausted:429"


def test_a_help_only_429_has_no_retry_delay() -> None:
    """A 429 with only a Help link carries no delay: the shared quota's default applies."""
    assert classify(models_error(429, _body(help_only_429()))).retry_delay is None


def test_a_key_blocked_for_having_no_restrictions_is_a_setup_fault() -> None:
    """403 PERMISSION_DENIED with reason API_KEY_SERVICE_BLOCKED (the body reported when
    unrestricted keys began to be refused): halts, the fix says to restrict the key."""
    body = project_fault("key_unrestricted")
    for exc in (models_error(403, body), interactions_error(403, body)):
        fault = _fault(exc)
        assert fault.kind is SetupKind.KEY_UNRESTRICTED
        assert "API_KEY_SERVICE_BLOCKED" in fault.cause
        assert "restrict the API key to the Gemini API" in fault.fix


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (403, "PERMISSION_DENIED", "Requests from unrestricted API keys are blocked."),
        (400, "INVALID_ARGUMENT", "API key has no API restrictions. Restrict the key to use it."),
        (400, "FAILED_PRECONDITION", "Unrestricted API keys are not accepted by this API."),
    ],
)
def test_both_readings_of_an_unrestricted_key_refusal(code: int, status: str, message: str) -> None:
    """Its exact body is not documented: a 403 or a 400 whose words speak of an unrestricted
    key or missing restrictions is read as the same fault, with the same fix."""
    body = {"error": {"code": code, "message": message, "status": status}}
    fault = _fault(models_error(code, body))
    assert fault.kind is SetupKind.KEY_UNRESTRICTED


def test_other_refusals_keep_their_kind() -> None:
    """A key without permission, billing, a refused key: unchanged by the new readings."""
    permission = _fault(models_error(403, project_fault("permission_denied")))
    precondition = _fault(models_error(400, project_fault("failed_precondition")))
    assert permission.kind is SetupKind.PERMISSION
    assert precondition.kind is SetupKind.PRECONDITION


def test_the_core_reads_quota_ids_from_a_described_failure() -> None:
    """The neutral ApiFailure carries the QuotaFailure quotaIds the edge adapter read."""
    from flows.testing import describe

    described = describe(models_error(429, _body(daily_quota("gemini-2.5-flash"))))
    assert described is not None
    assert described.quota_ids == ("GenerateRequestsPerDayPerProjectPerModel-FreeTier",)
    assert setup_fault(ApiFailure(http_code=429, status="RESOURCE_EXHAUSTED")) is None
    daily = ApiFailure(
        http_code=429,
        status="RESOURCE_EXHAUSTED",
        quota_ids=("GenerateRequestsPerDayPerProjectPerModel",),
    )
    fault = setup_fault(daily)
    assert fault is not None and fault.kind is SetupKind.DAILY_QUOTA


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (project_fault("key_unrestricted"), 403, "restrict the API key"),
        (_body(daily_quota("gemini-2.5-flash")), 429, "midnight Pacific time"),
        (_body(no_quota("gemini-2.5-flash")), 429, "enable billing"),
    ],
)
def test_doctor_gives_the_same_fix_line(body: dict[str, Any], code: int, words: str) -> None:
    """``doctor --live`` explains these faults with the tick's own fix, as fatal for the run
    (every further call fails the same way), not as a generic 403 or a minute's wait."""
    from flows.testing import explain

    detail, fix, fatal = explain(models_error(code, body), body)
    assert words in fix and fatal
    assert detail


def test_the_files_api_storage_quota_is_a_fault_of_the_setup() -> None:
    """A 429 naming FileStorageBytesPerProject (or the file_storage_bytes metric) halts with
    the fix (delete files); a 429 naming a per-minute quota stays the row's."""
    from ledger import ApiFailure, SetupKind, setup_fault

    by_id = ApiFailure(
        http_code=429, status="RESOURCE_EXHAUSTED", quota_ids=("FileStorageBytesPerProject",)
    )
    by_metric = ApiFailure(
        http_code=429,
        status="RESOURCE_EXHAUSTED",
        message="Quota exceeded for metric: generativelanguage.googleapis.com/file_storage_bytes",
    )
    for api in (by_id, by_metric):
        fault = setup_fault(api)
        assert fault is not None and fault.kind is SetupKind.FILE_STORAGE
        assert "delete Files API files" in fault.fix
    per_minute = ApiFailure(
        http_code=429,
        status="RESOURCE_EXHAUSTED",
        quota_ids=("GenerateRequestsPerMinutePerProjectPerModel",),
    )
    assert setup_fault(per_minute) is None
