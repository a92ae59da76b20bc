# The case tables below are kept one case per line (fmt: skip) so they read as tables.
# ruff: noqa: E501
"""The failure classifier on real SDK exceptions, transport errors, batch error objects and
blocked or empty answers.

SDK exceptions are raised by the SDK's own code paths: a real ``genai.Client`` whose HTTP
client (httpx2, as the SDK uses) answers through a ``MockTransport`` with the error bodies
Gemini sends, so the exception types, attributes and bodies are exactly what a pipeline sees.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.genai._gaos.lib import compat_errors
from google.genai._gaos.types.interactions.error import Error as InteractionError
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.testing import classify
from ledger import Failure, Verdict, classify_response, redact, register_secret
from ledger.testing import MAX_MESSAGE_LEN, ClassifiedError, quota_ids

API_KEY = "AIzaSyD-test-classifier-key-000000000000"
MODEL = "gemini-2.5-flash"

RETRY_INFO_7S = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}

BODY_429 = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: "
        "https://ai.google.dev/gemini-api/docs/rate-limits.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": MODEL},
                        "quotaValue": "10",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            RETRY_INFO_7S,
        ],
    }
}
BODY_503 = {
    "error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
    }
}
BODY_500 = {
    "error": {
        "code": 500,
        "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL",
    }
}
BODY_504 = {
    "error": {
        "code": 504,
        "message": "The request timed out. Please try again.",
        "status": "DEADLINE_EXCEEDED",
    }
}
BODY_400 = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    }
}
BODY_400_PRECONDITION = {
    "error": {
        "code": 400,
        "message": "User location is not supported for the API use.",
        "status": "FAILED_PRECONDITION",
    }
}
BODY_401 = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials.",
        "status": "UNAUTHENTICATED",
    }
}
BODY_403 = {
    "error": {
        "code": 403,
        "message": "Method doesn't allow unregistered callers (callers without established "
        "identity). Please use API Key or other form of API consumer identity to call this API.",
        "status": "PERMISSION_DENIED",
    }
}
BODY_404 = {
    "error": {
        "code": 404,
        "message": "models/gemini-9-ultra is not found for API version v1, or is not supported "
        "for generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
        "status": "NOT_FOUND",
    }
}
BODY_409 = {"error": {"code": 409, "message": "The operation was aborted.", "status": "ABORTED"}}
BODY_499 = {
    "error": {"code": 499, "message": "The operation was cancelled.", "status": "CANCELLED"}
}
HTML_500 = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">
  <title>Error 500 (Server Error)!!1</title>
  <style>
    *{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}html{background:#fff}
  </style>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>500.</b> <ins>That’s an error.</ins>
  <p>There was an error. Please try again later.  <ins>That’s all we know.</ins>
"""


# --- raising through the real SDK ----------------------------------------------------------


def _client(handler: Callable[[httpx2.Request], httpx2.Response]) -> genai.Client:
    return genai.Client(
        api_key=API_KEY,
        http_options=types.HttpOptions(
            base_url="http://gemini.test",
            httpx_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )


def _answer(
    status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None
) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(body, str):
            return httpx2.Response(
                status,
                text=body,
                headers={"content-type": "text/html; charset=UTF-8", **(headers or {})},
            )
        return httpx2.Response(status, json=body, headers=headers)

    return handler


def _raise_for(handler: Callable[[httpx2.Request], httpx2.Response], surface: str) -> BaseException:
    client = _client(handler)
    try:
        if surface == "models":
            client.models.generate_content(model=MODEL, contents="Classify this review.")
        elif surface == "batches":
            client.batches.get(name="batches/abc123")
        elif surface == "interactions":
            client.interactions.create(model=MODEL, input="Classify this review.", background=True)
        else:
            client.interactions.get("int-abc123")
    except BaseException as exc:
        return exc
    raise AssertionError("the SDK did not raise")


def models_error(status: int, body: Any, headers: dict[str, str] | None = None) -> BaseException:
    return _raise_for(_answer(status, body, headers), "models")


def interactions_error(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> BaseException:
    return _raise_for(_answer(status, body, headers), "interactions")


def transport_error(exc_type: type[Exception], surface: str) -> BaseException:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc_type("simulated transport failure", request=request)  # type: ignore[call-arg]

    return _raise_for(handler, surface)


# (id, exception factory, verdict, code, error_class, parked_class, retry_delay)
SDK_CASES: list[tuple[str, Callable[[], BaseException], Verdict, str, str, str, float | None]] = [
    ("models-429-retryinfo", lambda: models_error(429, BODY_429),
     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", 7.0),
    ("models-503", lambda: models_error(503, BODY_503),
     Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503", None),
    ("models-503-retry-after", lambda: models_error(503, BODY_503, {"Retry-After": "30"}),
     Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503", 30.0),
    ("models-500-internal", lambda: models_error(500, BODY_500),
     Verdict.RETRYABLE, "500", "retryable:500", "exhausted:500", None),
    ("models-504-deadline", lambda: models_error(504, BODY_504),
     Verdict.RETRYABLE, "504", "retryable:504", "exhausted:504", None),
    ("models-500-html", lambda: models_error(500, HTML_500),
     Verdict.RETRYABLE, "500", "retryable:500", "exhausted:500", None),
    ("models-400-invalid-argument", lambda: models_error(400, BODY_400),
     Verdict.PERMANENT, "400", "permanent:400", "permanent:400", None),
    ("models-400-failed-precondition", lambda: models_error(400, BODY_400_PRECONDITION),
     Verdict.PERMANENT, "400", "permanent:400", "permanent:400", None),
    ("models-401", lambda: models_error(401, BODY_401),
     Verdict.PERMANENT, "401", "permanent:401", "permanent:401", None),
    ("models-403", lambda: models_error(403, BODY_403),
     Verdict.PERMANENT, "403", "permanent:403", "permanent:403", None),
    ("models-404", lambda: models_error(404, BODY_404),
     Verdict.PERMANENT, "404", "permanent:404", "permanent:404", None),
    ("models-409-aborted", lambda: models_error(409, BODY_409),
     Verdict.UNKNOWN, "409", "unknown:409", "unknown:409", None),
    ("models-499-cancelled", lambda: models_error(499, BODY_499),
     Verdict.UNKNOWN, "499", "unknown:499", "unknown:499", None),
    ("batches-get-429", lambda: _raise_for(_answer(429, BODY_429), "batches"),
     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", 7.0),
    ("batches-get-404", lambda: _raise_for(_answer(404, BODY_404), "batches"),
     Verdict.PERMANENT, "404", "permanent:404", "permanent:404", None),
    ("interactions-429-retryinfo", lambda: interactions_error(429, BODY_429),
     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", 7.0),
    ("interactions-503-retry-after", lambda: interactions_error(503, BODY_503, {"retry-after": "4"}),
     Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503", 4.0),
    ("interactions-500-html", lambda: interactions_error(500, HTML_500),
     Verdict.RETRYABLE, "500", "retryable:500", "exhausted:500", None),
    ("interactions-400", lambda: interactions_error(400, BODY_400),
     Verdict.PERMANENT, "400", "permanent:400", "permanent:400", None),
    ("interactions-403", lambda: interactions_error(403, BODY_403),
     Verdict.PERMANENT, "403", "permanent:403", "permanent:403", None),
    ("interactions-get-404", lambda: _raise_for(_answer(404, BODY_404), "interactions-get"),
     Verdict.PERMANENT, "404", "permanent:404", "permanent:404", None),
    ("interactions-409-aborted", lambda: interactions_error(409, BODY_409),
     Verdict.UNKNOWN, "409", "unknown:409", "unknown:409", None),
    ("models-read-timeout", lambda: transport_error(httpx2.ReadTimeout, "models"),
     Verdict.RETRYABLE, "timeout", "retryable:timeout", "exhausted:timeout", None),
    ("models-connect-error", lambda: transport_error(httpx2.ConnectError, "models"),
     Verdict.RETRYABLE, "connection", "retryable:connection", "exhausted:connection", None),
    ("interactions-timeout", lambda: transport_error(httpx2.ReadTimeout, "interactions"),
     Verdict.RETRYABLE, "timeout", "retryable:timeout", "exhausted:timeout", None),
    ("interactions-connect-error", lambda: transport_error(httpx2.ConnectError, "interactions"),
     Verdict.RETRYABLE, "connection", "retryable:connection", "exhausted:connection", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "verdict", "code", "error_class", "parked_class", "retry_delay"),
    [pytest.param(*case[1:], id=case[0]) for case in SDK_CASES],
)
def test_sdk_exceptions(
    make: Callable[[], BaseException],
    verdict: Verdict,
    code: str,
    error_class: str,
    parked_class: str,
    retry_delay: float | None,
) -> None:
    """Each real SDK exception gets the verdict, code, classes and retry delay of the rules."""
    failure = classify(make())
    assert failure.verdict is verdict
    assert failure.code == code
    assert failure.error_class == error_class
    assert failure.parked_class() == parked_class
    assert failure.retry_delay == retry_delay
    assert failure.message
    assert len(failure.message) <= MAX_MESSAGE_LEN


def test_sdk_exception_types_are_the_real_ones() -> None:
    """The table really exercises both SDK error hierarchies, not look-alikes."""
    assert isinstance(models_error(429, BODY_429), genai_errors.ClientError)
    assert isinstance(models_error(503, BODY_503), genai_errors.ServerError)
    assert isinstance(interactions_error(429, BODY_429), compat_errors.RateLimitError)
    assert isinstance(interactions_error(500, HTML_500), compat_errors.InternalServerError)
    assert isinstance(
        transport_error(httpx2.ReadTimeout, "interactions"), compat_errors.APITimeoutError
    )
    assert isinstance(
        transport_error(httpx2.ConnectError, "interactions"), compat_errors.APIConnectionError
    )
    assert isinstance(transport_error(httpx2.ReadTimeout, "models"), httpx2.TimeoutException)


def test_raise_for_response_with_html_body() -> None:
    """APIError.raise_for_response on a non-JSON 500 page is retryable with a readable message."""
    response = httpx2.Response(
        500,
        text=HTML_500,
        headers={"content-type": "text/html; charset=UTF-8"},
        request=httpx2.Request("POST", f"http://gemini.test/v1/models/{MODEL}:generateContent"),
    )
    with pytest.raises(genai_errors.ServerError) as info:
        genai_errors.APIError.raise_for_response(response)
    failure = classify(info.value)
    assert (failure.verdict, failure.code) == (Verdict.RETRYABLE, "500")
    assert "<" not in failure.message
    assert "Please try again later" in failure.message


def test_retry_after_http_date() -> None:
    """A Retry-After given as an HTTP date becomes a non-negative delay in seconds."""
    failure = classify(
        models_error(503, BODY_503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    )
    assert failure.verdict is Verdict.RETRYABLE
    assert failure.retry_delay == 0.0


# --- transport and other exceptions --------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "verdict", "code"),
    [
        pytest.param(TimeoutError("read timed out"), Verdict.RETRYABLE, "timeout", id="builtin-timeout"),
        pytest.param(TimeoutError(errno.ETIMEDOUT, "Connection timed out"), Verdict.RETRYABLE, "timeout", id="etimedout"),
        pytest.param(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Verdict.RETRYABLE, "connection", id="refused"),
        pytest.param(ConnectionResetError(), Verdict.RETRYABLE, "connection", id="reset"),
        pytest.param(BrokenPipeError(), Verdict.RETRYABLE, "connection", id="broken-pipe"),
        pytest.param(socket.gaierror(-3, "Temporary failure in name resolution"), Verdict.RETRYABLE, "connection", id="dns"),
        pytest.param(OSError(errno.ENETUNREACH, "Network is unreachable"), Verdict.RETRYABLE, "connection", id="oserror-netunreach"),
        pytest.param(OSError("socket closed"), Verdict.RETRYABLE, "connection", id="bare-oserror"),
        pytest.param(httpx.ReadTimeout("slow"), Verdict.RETRYABLE, "timeout", id="httpx-timeout"),
        pytest.param(httpx.ConnectError("refused"), Verdict.RETRYABLE, "connection", id="httpx-connect"),
        pytest.param(httpx2.PoolTimeout("pool"), Verdict.RETRYABLE, "timeout", id="httpx2-pool-timeout"),
        pytest.param(httpx2.RemoteProtocolError("peer closed"), Verdict.RETRYABLE, "connection", id="httpx2-protocol"),
        pytest.param(FileNotFoundError(errno.ENOENT, "no such file"), Verdict.UNKNOWN, "unknown", id="file-not-found"),
        pytest.param(ValueError("something odd"), Verdict.UNKNOWN, "unknown", id="valueerror"),
        pytest.param(asyncio.CancelledError(), Verdict.UNKNOWN, "cancelled", id="cancelled"),
        pytest.param(KeyboardInterrupt(), Verdict.UNKNOWN, "unknown", id="keyboard-interrupt"),
    ],
)  # fmt: skip
def test_transport_and_other_exceptions(exc: BaseException, verdict: Verdict, code: str) -> None:
    """Timeouts and connection errors are retryable; anything unrecognised is unknown."""
    failure = classify(exc)
    assert (failure.verdict, failure.code) == (verdict, code)


def test_httpx_status_error() -> None:
    """An httpx2 HTTPStatusError (from raise_for_status) is classified by its response."""
    request = httpx2.Request("GET", "http://gemini.test/v1/files/abc:download?alt=media")
    response = httpx2.Response(
        429, json=BODY_429, request=request, headers={"content-type": "application/json"}
    )
    with pytest.raises(httpx2.HTTPStatusError) as info:
        response.raise_for_status()
    failure = classify(info.value)
    assert (failure.verdict, failure.code, failure.retry_delay) == (Verdict.RETRYABLE, "429", 7.0)


def test_wrapped_exception_uses_its_cause() -> None:
    """An unrecognised wrapper is classified by the exception it was raised from."""
    try:
        try:
            raise models_error(503, BODY_503)
        except genai_errors.APIError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        failure = classify(outer)
    assert (failure.verdict, failure.code) == (Verdict.RETRYABLE, "503")
    assert failure.message.startswith("RuntimeError")


def test_exception_group_uses_first_member() -> None:
    """An exception group is classified by its first member."""
    group = ExceptionGroup("tasks", [TimeoutError("slow"), ValueError("x")])
    assert classify(group).code == "timeout"


def test_classified_error_carries_its_failure() -> None:
    """ClassifiedError hands back the Failure it was raised with."""
    failure = Failure(Verdict.PERMANENT, "safety", "answer blocked")
    assert classify(ClassifiedError(failure)) is failure


def test_pydantic_validation_error_is_schema() -> None:
    """A Pydantic ValidationError (an answer that does not fit the schema) is permanent schema."""
    from pydantic import BaseModel, ValidationError

    class Answer(BaseModel):
        score: int

    with pytest.raises(ValidationError) as info:
        Answer.model_validate_json('{"score": "high"}')
    failure = classify(info.value)
    assert (failure.verdict, failure.error_class) == (Verdict.PERMANENT, "schema")
    assert "high" not in failure.message


def test_exception_whose_str_raises() -> None:
    """An exception whose __str__ itself raises still gets a Failure."""

    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert classify(Nasty()).verdict is Verdict.UNKNOWN


# --- error objects: batch output lines, operations, interactions ---------------------------


@pytest.mark.parametrize(
    ("obj", "verdict", "code", "error_class", "parked", "delay"),
    [
        pytest.param({"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]},
                     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", 2.0, id="429-retryinfo"),
        pytest.param({"code": 429, "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]},
                     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", 1.5, id="fractional-delay"),
        pytest.param({"code": 429, "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                   "retryDelay": {"seconds": 3, "nanos": 500000000}}]},
                     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", 3.5, id="duration-object"),
        pytest.param(BODY_503, Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503", None, id="wrapped-503"),
        pytest.param({"code": 500, "message": "Internal error", "status": "INTERNAL"},
                     Verdict.RETRYABLE, "500", "retryable:500", "exhausted:500", None, id="500"),
        pytest.param({"code": 502, "message": "Bad Gateway"},
                     Verdict.RETRYABLE, "502", "retryable:502", "exhausted:502", None, id="502-code-only"),
        pytest.param({"code": 408, "message": "Request Timeout"},
                     Verdict.RETRYABLE, "408", "retryable:408", "exhausted:408", None, id="408"),
        pytest.param({"code": 8, "message": "quota", "status": "RESOURCE_EXHAUSTED"},
                     Verdict.RETRYABLE, "429", "retryable:429", "exhausted:429", None, id="grpc-8"),
        pytest.param({"code": 14, "message": "unavailable"},
                     Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503", None, id="grpc-14-code-only"),
        pytest.param({"code": 4}, Verdict.RETRYABLE, "504", "retryable:504", "exhausted:504", None, id="grpc-deadline"),
        pytest.param({"status": "UNAVAILABLE", "message": "try later"},
                     Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503", None, id="status-only"),
        pytest.param({"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"},
                     Verdict.PERMANENT, "400", "permanent:400", "permanent:400", None, id="400"),
        pytest.param({"code": 3, "message": "bad request"},
                     Verdict.PERMANENT, "400", "permanent:400", "permanent:400", None, id="grpc-3"),
        pytest.param({"code": 422, "message": "Unprocessable"},
                     Verdict.PERMANENT, "422", "permanent:422", "permanent:422", None, id="422"),
        pytest.param({"code": 403, "status": "PERMISSION_DENIED", "message": "denied"},
                     Verdict.PERMANENT, "403", "permanent:403", "permanent:403", None, id="403"),
        pytest.param({"code": "404", "status": "NOT_FOUND"},
                     Verdict.PERMANENT, "404", "permanent:404", "permanent:404", None, id="string-404"),
        pytest.param({"code": 409, "status": "ABORTED"},
                     Verdict.UNKNOWN, "409", "unknown:409", "unknown:409", None, id="409"),
        pytest.param({"code": 10, "message": "aborted"},
                     Verdict.UNKNOWN, "409", "unknown:409", "unknown:409", None, id="grpc-aborted"),
        pytest.param({"code": 2, "status": "UNKNOWN"},
                     Verdict.UNKNOWN, "unknown", "unknown:unknown", "unknown:unknown", None, id="grpc-unknown"),
        pytest.param({"code": 418, "message": "teapot"},
                     Verdict.UNKNOWN, "418", "unknown:418", "unknown:418", None, id="weird-code"),
        pytest.param({"message": "something happened"},
                     Verdict.UNKNOWN, "unknown", "unknown:unknown", "unknown:unknown", None, id="message-only"),
        pytest.param({}, Verdict.UNKNOWN, "unknown", "unknown:unknown", "unknown:unknown", None, id="empty"),
    ],
)  # fmt: skip
def test_batch_error_objects(
    obj: dict[str, Any],
    verdict: Verdict,
    code: str,
    error_class: str,
    parked: str,
    delay: float | None,
) -> None:
    """Status objects from batch output lines are classified like the HTTP errors they stand for."""
    failure = classify(obj)
    assert (failure.verdict, failure.code, failure.retry_delay) == (verdict, code, delay)
    assert failure.error_class == error_class
    assert failure.parked_class() == parked


@pytest.mark.parametrize(
    ("obj", "verdict", "code"),
    [
        pytest.param({"status": "failed", "errors": [{"code": "https://ai.google.dev/errors/resource-exhausted",
                                                      "message": "Quota exceeded"}]},
                     Verdict.RETRYABLE, "429", id="errors-uri-resource-exhausted"),
        pytest.param({"status": "failed", "errors": [{"code": "UNAVAILABLE", "message": "overloaded"}]},
                     Verdict.RETRYABLE, "503", id="errors-canonical"),
        pytest.param({"status": "failed", "errors": [{"code": "invalid_argument", "message": "bad"}]},
                     Verdict.PERMANENT, "400", id="errors-lowercase"),
        pytest.param({"status": "failed", "errors": [{"code": "safety_block", "message": "blocked"}]},
                     Verdict.PERMANENT, "safety", id="errors-safety"),
        pytest.param({"status": "failed", "errors": [{"code": "model_crashed", "message": "?"}]},
                     Verdict.UNKNOWN, "model_crashed", id="errors-unknown-type"),
        pytest.param({"status": "failed"}, Verdict.UNKNOWN, "interaction_failed", id="failed"),
        pytest.param({"status": "incomplete"}, Verdict.PERMANENT, "truncated", id="incomplete"),
        pytest.param({"status": "budget_exceeded"}, Verdict.PERMANENT, "budget_exceeded", id="budget"),
        pytest.param({"status": "cancelled"}, Verdict.UNKNOWN, "cancelled", id="interaction-cancelled"),
        pytest.param({"name": "batches/123", "done": True, "metadata": {"state": "BATCH_STATE_EXPIRED"}},
                     Verdict.RETRYABLE, "batch_expired", id="batch-expired"),
        pytest.param({"state": "JOB_STATE_FAILED"}, Verdict.RETRYABLE, "batch_failed", id="batch-failed"),
        pytest.param({"state": "BATCH_STATE_CANCELLED"}, Verdict.UNKNOWN, "batch_cancelled", id="batch-cancelled"),
        pytest.param({"name": "batches/123", "done": True, "error": {"code": 13, "message": "internal"}},
                     Verdict.RETRYABLE, "500", id="operation-error"),
    ],
)  # fmt: skip
def test_interaction_and_batch_job_failures(
    obj: dict[str, Any], verdict: Verdict, code: str
) -> None:
    """Failed interactions and batch jobs are classified by their errors, else their state."""
    failure = classify(obj)
    assert (failure.verdict, failure.code) == (verdict, code)


def test_interaction_error_model_object() -> None:
    """The interactions SDK's own Error object (not a dict) is read by duck typing."""
    failure = classify(InteractionError(code="RESOURCE_EXHAUSTED", message="slow down"))
    assert (failure.verdict, failure.code) == (Verdict.RETRYABLE, "429")


# --- answers that arrived: blocked, recited, empty -----------------------------------------


def _response(
    text: str | None = '{"ok": true}', finish: str | None = "STOP", **extra: Any
) -> dict[str, Any]:
    parts = [] if text is None else [{"text": text}]
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
        **extra,
    }


SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
]


@pytest.mark.parametrize(
    ("response", "verdict", "code", "error_class"),
    [
        pytest.param({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS},
                      "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}},
                     Verdict.PERMANENT, "blocked_prompt", "safety", id="blocked-prompt"),
        pytest.param({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}},
                     Verdict.PERMANENT, "blocked_prompt", "safety", id="blocked-prohibited"),
        pytest.param({"prompt_feedback": {"block_reason": "OTHER"}},
                     Verdict.PERMANENT, "blocked_prompt", "safety", id="blocked-snake-case"),
        pytest.param({"candidates": [{"finishReason": "SAFETY", "safetyRatings": SAFETY_RATINGS, "index": 0}]},
                     Verdict.PERMANENT, "safety", "safety", id="finish-safety"),
        pytest.param(_response("partial", "PROHIBITED_CONTENT"),
                     Verdict.PERMANENT, "safety", "safety", id="finish-prohibited"),
        pytest.param(_response(None, "BLOCKLIST"), Verdict.PERMANENT, "safety", "safety", id="finish-blocklist"),
        pytest.param(_response(None, "SPII"), Verdict.PERMANENT, "safety", "safety", id="finish-spii"),
        pytest.param(_response("The quick brown", "RECITATION"),
                     Verdict.PERMANENT, "recitation", "recitation", id="recitation"),
        pytest.param({"candidates": [], "usageMetadata": {"promptTokenCount": 3}},
                     Verdict.UNKNOWN, "empty", "empty", id="no-candidates"),
        pytest.param({}, Verdict.UNKNOWN, "empty", "empty", id="empty-object"),
        pytest.param(_response(""), Verdict.UNKNOWN, "empty", "empty", id="empty-text"),
        pytest.param(_response("  \n"), Verdict.UNKNOWN, "empty", "empty", id="blank-text"),
        pytest.param(_response(None), Verdict.UNKNOWN, "empty", "empty", id="no-parts"),
        pytest.param({"candidates": [{"content": {"role": "model"}, "finishReason": "STOP", "index": 0}],
                      "usageMetadata": {"promptTokenCount": 3130, "totalTokenCount": 3130}},
                     Verdict.UNKNOWN, "empty", "empty", id="stop-content-without-parts"),
        pytest.param(_response(None, None), Verdict.UNKNOWN, "empty", "empty", id="no-finish-no-parts"),
        pytest.param(_response(None, "OTHER"), Verdict.UNKNOWN, "empty:other", "empty:other", id="finish-other"),
        pytest.param(_response("", "MALFORMED_RESPONSE"), Verdict.UNKNOWN, "empty:malformed_response",
                     "empty:malformed_response", id="finish-malformed-response"),
        pytest.param(_response(None, "CONTINUATION"), Verdict.UNKNOWN, "empty:continuation",
                     "empty:continuation", id="finish-continuation"),
        pytest.param(_response(None, "LANGUAGE"), Verdict.PERMANENT, "schema", "schema", id="finish-language"),
        pytest.param({"promptFeedback": {"blockReason": "JAILBREAK"}},
                     Verdict.PERMANENT, "blocked_prompt", "safety", id="blocked-jailbreak"),
        pytest.param(_response(None, "MAX_TOKENS"), Verdict.PERMANENT, "truncated", "truncated", id="max-tokens-no-parts"),
        pytest.param(_response('{"category": "oth', "MAX_TOKENS"),
                     Verdict.PERMANENT, "truncated", "truncated", id="max-tokens-cut-json"),
        pytest.param({"candidates": [{"finishReason": "MODEL_ARMOR"}]},
                     Verdict.PERMANENT, "safety", "safety", id="model-armor"),
        pytest.param({"candidates": [{"finishReason": "JAILBREAK"}]},
                     Verdict.PERMANENT, "safety", "safety", id="jailbreak"),
        pytest.param({"candidates": [{"content": {"parts": [{"text": "thinking...", "thought": True}]},
                                      "finishReason": "STOP"}]},
                     Verdict.UNKNOWN, "empty", "empty", id="only-thoughts"),
        pytest.param({"candidates": [{"finish_reason": "SAFETY"}]},
                     Verdict.PERMANENT, "safety", "safety", id="snake-case-finish"),
    ],
)  # fmt: skip
def test_classify_response_failures(
    response: dict[str, Any], verdict: Verdict, code: str, error_class: str
) -> None:
    """Blocked prompts, safety and recitation stops are permanent failures; an answer without
    text (finish STOP, OTHER, MALFORMED_RESPONSE, CONTINUATION) is unknown, class ``empty``."""
    failure = classify_response(response)
    assert failure is not None
    assert (failure.verdict, failure.code, failure.error_class) == (verdict, code, error_class)
    assert failure.parked_class() == error_class


def test_empty_answer_message() -> None:
    """An empty answer says so, and that a retry may fix it; a finish other than STOP is
    named in the message."""
    failure = classify_response(_response(""))
    assert failure is not None and failure.message == "empty answer (no text); a retry may fix it"
    other = classify_response(_response(None, "OTHER"))
    assert other is not None and "finishReason OTHER" in other.message


def test_an_answer_with_text_and_an_odd_finish_is_left_to_the_schema() -> None:
    """OTHER or MALFORMED_RESPONSE with text: the text is validated like any other answer."""
    assert classify_response(_response('{"category": "other"}', "OTHER")) is None
    assert classify_response(_response('{"category": "x"}', "MALFORMED_RESPONSE")) is None


def test_classify_response_with_text_is_none() -> None:
    """An answer with text is left to schema validation (None)."""
    assert classify_response(_response('{"category": "other"}')) is None
    assert classify_response(_response("x", None)) is None


def test_truncated_answer_says_how_to_fix_it() -> None:
    """A MAX_TOKENS answer is parked as truncated, its message naming max_output_tokens."""
    failure = classify_response(_response("cut off", "MAX_TOKENS"))
    assert failure is not None and failure.parked_class() == "truncated"
    assert "max_output_tokens" in failure.message


def test_classify_response_on_sdk_object() -> None:
    """A GenerateContentResponse SDK object is accepted as well as its dict form."""
    blocked = types.GenerateContentResponse(
        prompt_feedback=types.GenerateContentResponsePromptFeedback(
            block_reason=types.BlockedReason.SAFETY
        )
    )
    failure = classify_response(blocked)  # type: ignore[arg-type]
    assert failure is not None and failure.code == "blocked_prompt"


def test_classify_mapping_with_a_blocked_response() -> None:
    """classify() on a response mapping defers to classify_response."""
    assert classify({"candidates": [{"finishReason": "RECITATION"}]}).code == "recitation"


# --- Failure's own rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "code", "error_class", "parked"),
    [
        (Verdict.PERMANENT, "400", "permanent:400", "permanent:400"),
        (Verdict.PERMANENT, "safety", "safety", "safety"),
        (Verdict.PERMANENT, "blocked_prompt", "safety", "safety"),
        (Verdict.PERMANENT, "recitation", "recitation", "recitation"),
        (Verdict.PERMANENT, "schema", "schema", "schema"),
        (Verdict.PERMANENT, "malformed_output", "malformed_output", "malformed_output"),
        (Verdict.PERMANENT, "budget_exceeded", "permanent:budget_exceeded", "permanent:budget_exceeded"),
        (Verdict.RETRYABLE, "503", "retryable:503", "exhausted:503"),
        (Verdict.RETRYABLE, "timeout", "retryable:timeout", "exhausted:timeout"),
        (Verdict.RETRYABLE, "missing_from_output", "missing_from_output", "exhausted:missing_from_output"),
        (Verdict.RETRYABLE, "malformed_output", "malformed_output", "exhausted:malformed_output"),
        (Verdict.RETRYABLE, "batch_expired", "retryable:batch_expired", "exhausted:batch_expired"),
        (Verdict.UNKNOWN, "409", "unknown:409", "unknown:409"),
        (Verdict.UNKNOWN, "empty", "empty", "empty"),
        (Verdict.UNKNOWN, "empty:other", "empty:other", "empty:other"),
        (Verdict.UNKNOWN, "emptyish", "unknown:emptyish", "unknown:emptyish"),
        (Verdict.UNKNOWN, "interaction_failed", "unknown:interaction_failed", "unknown:interaction_failed"),
    ],
)  # fmt: skip
def test_error_and_parked_classes(
    verdict: Verdict, code: str, error_class: str, parked: str
) -> None:
    """error_class and parked_class follow the naming rules for each verdict."""
    failure = Failure(verdict, code, "m")
    assert failure.error_class == error_class
    assert failure.parked_class() == parked


def test_quota_ids_are_read_from_every_quota_failure_violation() -> None:
    """quota_ids lists each QuotaFailure violation's quotaId once, in order; other details
    and odd shapes are ignored."""
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"},
            {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"},
            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"},
            "odd", {"quotaId": 7}]},
        RETRY_INFO_7S,
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": "odd"},
    ]  # fmt: skip
    assert quota_ids(details) == (
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    )
    assert quota_ids(None) == () and quota_ids({"violations": []}) == ()


def test_failure_message_is_short_and_one_line() -> None:
    """A Failure's message is at most MAX_MESSAGE_LEN characters on a single line."""
    failure = classify({"code": 500, "message": "line\n" * 1000})
    assert len(failure.message) <= MAX_MESSAGE_LEN
    assert "\n" not in failure.message


def test_failure_rejects_bad_retry_delay() -> None:
    """Negative or non-finite delays are dropped rather than stored."""
    assert Failure(Verdict.RETRYABLE, "429", "m", -1.0).retry_delay is None
    assert Failure(Verdict.RETRYABLE, "429", "m", float("nan")).retry_delay is None
    assert Failure(Verdict.RETRYABLE, "429", "m", 2).retry_delay == 2.0


def test_classify_never_raises_on_odd_input() -> None:
    """classify() returns a Failure for inputs of any type, including nonsense."""
    for odd in (None, 42, "text", b"bytes", [1, 2], object(), {"code": object()}, {"error": "x"}):
        assert isinstance(classify(odd), Failure)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["code", "status", "message", "details", "error", "errors", "state",
                             "@type", "retryDelay", "metadata", "candidates"]) | st.text(max_size=5),
            children,
            max_size=5,
        ),
        max_leaves=12,
    )
)  # fmt: skip
def test_classify_never_raises_on_generated_objects(obj: Any) -> None:
    """No JSON-like object, however odd, makes classify or classify_response raise."""
    assert isinstance(classify(obj), Failure)
    result = classify_response(obj)
    assert result is None or isinstance(result, Failure)


# --- secrets -------------------------------------------------------------------------------


def test_api_key_in_sdk_error_is_redacted() -> None:
    """An SDK error that echoes the API key (registered) or a key= URL never stores it."""
    register_secret(API_KEY)
    body = {
        "error": {
            "code": 400,
            "message": f"API key not valid: {API_KEY}. Request: "
            f"https://generativelanguage.googleapis.com/v1/models?key={API_KEY}&alt=json "
            "webhook secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "status": "INVALID_ARGUMENT",
        }
    }
    failure = classify(models_error(400, body))
    assert API_KEY not in failure.message
    assert "whsec_MfKQ" not in failure.message
    assert "[redacted]" in failure.message
    interaction_failure = classify(interactions_error(400, body))
    assert API_KEY not in interaction_failure.message


def test_unregistered_key_shapes_are_redacted() -> None:
    """A key= query parameter and a Google API key shape are redacted even if unregistered."""
    text = redact(
        "GET /v1/files?alt=media&key=abcDEF123 failed; AIzaSyA1234567890abcdefghijklmnopqrstu"
    )
    assert "abcDEF123" not in text
    assert "AIzaSyA1234567890" not in text
    assert "alt=media" in text


@settings(max_examples=50, deadline=None)
@given(
    secret=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789", min_size=12,
                   max_size=40).map(lambda s: "sk-" + s),
    before=st.text(max_size=600),
    after=st.text(max_size=200),
    code=st.sampled_from([400, 429, 500, 503, 8, 3, 409]),
)  # fmt: skip
def test_registered_secret_never_in_message(
    secret: str, before: str, after: str, code: int
) -> None:
    """A secret registered with register_secret never appears in a Failure's message."""
    register_secret(secret)
    message = before + secret + after
    for failure in (
        classify({"code": code, "message": message}),
        classify(RuntimeError(message)),
        classify(TimeoutError(message)),
        Failure(Verdict.UNKNOWN, "unknown", message),
    ):
        assert secret not in failure.message


def test_domain_core_imports_no_sdk_http_or_prefect() -> None:
    """Importing the domain core (classifier, setup faults, line parser) loads no SDK, HTTP
    client or Prefect module."""
    import subprocess
    import sys

    code = (
        "import sys, ledger, ledger.testing\n"
        "roots = {'google', 'httpx', 'httpx2', 'prefect', 'fastapi', 'starlette', 'uvicorn',"
        " 'requests', 'aiohttp'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=root,
    )
    assert out.stdout.strip() == "[]"
