"""The edge: the SDK's and the HTTP client's exceptions, described for the domain core.

:func:`describe` is the only place that knows google-genai's and httpx's exception types,
including the interactions client's private ``google.genai._gaos.lib.compat_errors`` (imported
here by name, so an SDK that moves it fails at import, and ``tests/test_gemini_errors.py``
says so). It turns one into a neutral :class:`ledger.ApiFailure`; ``ledger.classify`` and
``ledger.setup_fault`` decide from that alone. :func:`classify` and :func:`setup_fault` are
those two with this adapter plugged in: what every channel calls where the API call failed.
:func:`http_code`, :func:`is_not_found` and :func:`certainly_refused` answer the narrower
questions other modules ask of a failed call, so none of them reads the SDK's types itself
(``tests/test_sdk_errors_edge.py`` holds every other module to that).
"""

from __future__ import annotations

import errno
import json
import math
import socket
import ssl
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import httpx2
from google.genai import errors as genai_errors
from google.genai._gaos.errors.genaierror import GenAiError
from google.genai._gaos.lib import compat_errors

import ledger
from ledger import ApiFailure, Failure, SetupFault, Transport
from ledger._wire import error_object, error_reasons, quota_ids, retry_delay_of

__all__ = [
    "certainly_refused",
    "classify",
    "describe",
    "http_code",
    "is_not_found",
    "may_have_been_carried_out",
    "setup_fault",
]

_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "ETIMEDOUT",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "EPIPE",
        "EHOSTDOWN",
        "ENOTCONN",
    )
    if hasattr(errno, name)
)

# httpx2 is what google-genai uses; httpx is what the rest of the stack (and a caller) may.
_TIMEOUTS = (httpx2.TimeoutException, httpx.TimeoutException, TimeoutError)
_CONNECTS = (httpx2.ConnectError, httpx.ConnectError, ConnectionRefusedError, socket.gaierror)
_DROPS = (
    httpx2.NetworkError,
    httpx2.RemoteProtocolError,
    httpx2.ProxyError,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    ConnectionError,
    ssl.SSLError,
)
_STATUS_ERRORS = (httpx2.HTTPStatusError, httpx.HTTPStatusError)


def classify(error: BaseException | ApiFailure | Any) -> Failure:
    """``ledger.classify`` with the SDK's and the transport's exceptions recognised."""
    return ledger.classify(error, describe)


def may_have_been_carried_out(exc: BaseException) -> bool:
    """The call failed ambiguously (a 5xx, a timeout, a dropped connection): what it asked
    for may exist at the API. An exception this edge does not recognise is not assumed so."""
    found = describe(exc)
    return found is not None and found.ambiguous


def http_code(exc: BaseException) -> int | None:
    """The HTTP status the API answered the failed call with; None when it answered none
    (a timeout, a dropped connection) or ``exc`` is not the SDK's or the transport's."""
    found = describe(exc)
    return found.http_code if found is not None else None


def is_not_found(exc: BaseException) -> bool:
    """The API answered 404: what the call named does not exist (or no longer does)."""
    return http_code(exc) == 404


def certainly_refused(exc: BaseException) -> bool:
    """The API answered a 4xx: the request was refused before any work (nothing created).
    A 5xx, a timeout or a dropped connection is ambiguous: what it asked for may exist."""
    code = http_code(exc)
    return code is not None and 400 <= code < 500


def setup_fault(error: BaseException | ApiFailure) -> SetupFault | None:
    """``ledger.setup_fault`` with the SDK's and the transport's exceptions recognised, and a
    fault about the key naming where the key was kept (a Secret block or the environment)."""
    from flows.gemini.gateway import key_source

    return ledger.setup_fault(error, describe, key=key_source())


def describe(exc: BaseException) -> ApiFailure | None:
    """The neutral description of an SDK or transport exception; None for anything else."""
    # google-genai models/batches/files clients: errors.APIError (ClientError, ServerError).
    if isinstance(exc, genai_errors.APIError) or _looks_like_genai_error(exc):
        return _from_genai_error(exc)
    # The interactions client's own hierarchy. APITimeoutError is an APIConnectionError.
    if isinstance(exc, compat_errors.APITimeoutError):
        return _transport(exc, Transport.TIMEOUT)
    if isinstance(exc, compat_errors.APIResponseValidationError):
        return ApiFailure(message=f"unexpected response: {_exc_text(exc)}")
    if isinstance(exc, compat_errors.APIConnectionError):
        # It wraps every transport error: what broke is its cause's kind (no cause: it never
        # connected). Only a failure to connect is the setup's; a read that broke off is not.
        cause = exc.__cause__
        if cause is None:
            return _transport(exc, Transport.CONNECT)
        inner = describe(cause)
        kind = inner.transport if inner is not None else None
        return _transport(exc, kind or Transport.DROPPED)
    if isinstance(exc, (compat_errors.APIStatusError, GenAiError)) or _looks_like_status_error(exc):
        return _from_status_error(exc)
    if isinstance(exc, _TIMEOUTS):
        return _transport(exc, Transport.TIMEOUT)
    if isinstance(exc, _STATUS_ERRORS):
        return _from_http_response_error(exc)
    if isinstance(exc, _CONNECTS):
        return _transport(exc, Transport.CONNECT)
    if isinstance(exc, _DROPS):
        return _transport(exc, Transport.DROPPED)
    if isinstance(exc, OSError) and (type(exc) is OSError or exc.errno in _NETWORK_ERRNOS):
        # A bare OSError from a socket, or one with a network errno. Its file-system
        # subclasses (FileNotFoundError, PermissionError, ...) are not transport trouble.
        return _transport(exc, Transport.DROPPED)
    return None


def _transport(exc: BaseException, kind: Transport) -> ApiFailure:
    return ApiFailure(message=_exc_text(exc), transport=kind)


def _looks_like_genai_error(exc: BaseException) -> bool:
    # errors.APIError's shape: an int ``code``, plus ``status`` and ``details``.
    code = getattr(exc, "code", None)
    return (
        isinstance(code, int)
        and not isinstance(code, bool)
        and hasattr(exc, "status")
        and hasattr(exc, "details")
        and not hasattr(exc, "status_code")
    )


def _looks_like_status_error(exc: BaseException) -> bool:
    # compat APIStatusError or the generated GenAiError: an int ``status_code`` and a ``body``.
    code = getattr(exc, "status_code", None)
    return isinstance(code, int) and not isinstance(code, bool) and hasattr(exc, "body")


def _from_genai_error(exc: BaseException) -> ApiFailure:
    details = getattr(exc, "details", None)
    error = error_object(details)
    delay = retry_delay_of(details)
    if delay is None:
        delay = _retry_after(getattr(exc, "response", None))
    message = getattr(exc, "message", None)
    if not message and error is not None:
        message = error.get("message")
    status = getattr(exc, "status", None) or (error.get("status") if error is not None else None)
    return _api_failure(
        getattr(exc, "code", None),
        status,
        error.get("details") if error is not None else None,
        delay,
        message if message else _exc_text(exc),
    )


def _from_status_error(exc: BaseException) -> ApiFailure:
    body = getattr(exc, "body", None)
    if isinstance(body, (str, bytes)):
        body = _maybe_json(body)
    return _from_body(exc, getattr(exc, "status_code", None), body, getattr(exc, "response", None))


def _from_http_response_error(exc: BaseException) -> ApiFailure:
    response = getattr(exc, "response", None)
    body: Any = None
    try:
        body = _maybe_json(response.text) if response is not None else None
    except Exception:
        body = None
    return _from_body(exc, getattr(response, "status_code", None), body, response)


def _from_body(exc: BaseException, code: Any, body: Any, response: Any) -> ApiFailure:
    error = error_object(body)
    message = error.get("message") if error is not None else None
    status = error.get("status") if error is not None else None
    if not message:
        message = body if isinstance(body, str) and body.strip() else _exc_text(exc)
    delay = retry_delay_of(body)
    if delay is None:
        delay = _retry_after(response)
    details = error.get("details") if error is not None else None
    return _api_failure(code, status, details, delay, message)


def _api_failure(
    code: Any, status: Any, details: Any, delay: float | None, message: Any
) -> ApiFailure:
    reasons = error_reasons(details)
    reason = "API_KEY_INVALID" if "API_KEY_INVALID" in reasons else next(iter(reasons), None)
    return ApiFailure(
        http_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        status=status if isinstance(status, str) and status else None,
        reason=reason,
        retry_delay_s=delay,
        message=str(message) if message is not None else "",
        quota_ids=quota_ids(details),
    )


def _retry_after(response: Any) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) on the error's HTTP response."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except Exception:
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        seconds = float(value.strip().lower().removesuffix("s"))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _maybe_json(body: str | bytes) -> Any:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def _exc_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
