"""The SDK stays at the edge: ``flows.gemini._errors`` is the one adapter that knows the SDK's
and the HTTP client's errors, and the domain core decides from its neutral description."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import httpx2
import pytest

from flows.testing import certainly_refused, describe, http_code, is_not_found
from ledger import ApiFailure, SetupKind, Transport, Verdict, classify, setup_fault

# The private SDK module the adapter reaches into, and what it uses there.
_PRIVATE = "google.genai._gaos.lib.compat_errors"
_PRIVATE_NAMES = (
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
)


def test_the_private_sdk_module_the_adapter_uses_is_still_there():
    """google-genai still has compat_errors with the classes describe() tells apart."""
    try:
        module = importlib.import_module(_PRIVATE)
    except ImportError as exc:  # pragma: no cover - fails only after an SDK upgrade
        pytest.fail(f"google-genai moved {_PRIVATE}: update flows/gemini/_errors.py ({exc})")
    missing = [n for n in _PRIVATE_NAMES if not isinstance(getattr(module, n, None), type)]
    assert missing == [], f"google-genai changed {_PRIVATE}: update flows/gemini/_errors.py"
    # The interactions client still raises them: a refused connection is APIConnectionError.
    assert issubclass(module.APITimeoutError, module.APIConnectionError)


def test_no_domain_core_module_names_the_sdk_or_http_client():
    """No ledger/ source looks up an SDK or HTTP module, not even by string."""
    root = Path(__file__).resolve().parents[1] / "ledger"
    offenders = {
        path.name: word
        for path in root.glob("*.py")
        for word in ("google.genai", "httpx", "sys.modules", "import prefect", "from prefect")
        if word in path.read_text(encoding="utf-8").replace("flows.gemini._errors", "")
    }
    assert offenders == {}


def test_the_core_decides_from_the_description_alone():
    """An ApiFailure, with no exception behind it, gets the verdict and setup fault of its
    HTTP code, status, reason and transport."""
    busy = classify(ApiFailure(http_code=429, status="RESOURCE_EXHAUSTED", retry_delay_s=7.0))
    assert (busy.verdict, busy.error_class, busy.retry_delay) == (
        Verdict.RETRYABLE,
        "retryable:429",
        7.0,
    )
    assert setup_fault(ApiFailure(http_code=429, status="RESOURCE_EXHAUSTED")) is None
    refused = setup_fault(ApiFailure(http_code=400, reason="API_KEY_INVALID", message="bad key"))
    assert refused is not None and refused.kind is SetupKind.KEY_REFUSED
    down = setup_fault(ApiFailure(message="refused", transport=Transport.CONNECT))
    assert down is not None and down.kind is SetupKind.UNREACHABLE
    assert setup_fault(ApiFailure(message="reset", transport=Transport.DROPPED)) is None
    assert classify(ApiFailure(transport=Transport.DROPPED)).error_class == "retryable:connection"


def test_without_the_adapter_an_sdk_error_is_not_recognised():
    """The core alone does not know a transport error: describe() is what recognises it."""
    exc = httpx2.ConnectError("[Errno 111] Connection refused")
    assert classify(exc).error_class == "unknown:unknown"
    assert setup_fault(exc) is None
    assert describe(exc) == ApiFailure(
        message="ConnectError: [Errno 111] Connection refused", transport=Transport.CONNECT
    )
    fault = setup_fault(exc, describe)
    assert fault is not None and fault.kind is SetupKind.UNREACHABLE


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), FileNotFoundError(2, "No such file"), KeyError("x")],
)
def test_errors_outside_the_sdk_and_transport_have_no_description(exc):
    """describe() answers None for an error that is neither the SDK's nor the transport's."""
    assert describe(exc) is None


def test_a_dns_failure_is_a_connect_failure():
    """A name that does not resolve never connected: Transport.CONNECT, a setup fault."""
    found = describe(socket.gaierror(-2, "Name or service not known"))
    assert found is not None and found.transport is Transport.CONNECT


def _api_error(code: int) -> BaseException:
    from google.genai import errors

    return errors.APIError(code, {"error": {"code": code, "message": f"answered {code}"}})


@pytest.mark.parametrize(
    ("exc", "code", "not_found", "refused"),
    [
        (_api_error(404), 404, True, True),
        (_api_error(400), 400, False, True),
        (_api_error(429), 429, False, True),
        (_api_error(503), 503, False, False),
        (httpx2.ReadTimeout("timed out"), None, False, False),
        (ValueError("ours"), None, False, False),
    ],
)
def test_the_adapter_answers_what_other_modules_ask(exc, code, not_found, refused):
    """http_code, is_not_found and certainly_refused read an SDK error's answer; a timeout
    (no answer) or an error of ours is neither a 404 nor a refusal."""
    assert http_code(exc) == code
    assert is_not_found(exc) is not_found
    assert certainly_refused(exc) is refused
