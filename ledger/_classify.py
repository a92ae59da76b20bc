"""The failure classifier: one verdict for every failure on every channel.

Whatever went wrong (an SDK exception on the ``direct`` channel, an error object in a batch
output line, a failed background interaction, a blocked or empty answer), :func:`classify`
or :func:`classify_response` turns it into a :class:`Failure`: a verdict (retryable,
permanent, unknown), a short code, a redacted message and the retry delay the server asked
for. The ledger records ``Failure.error_class`` on the row and ``Failure.parked_class()``
when the job is parked.

This module is part of the domain core: it imports no SDK, HTTP client or Prefect module.
SDK and transport exception classes are looked up in ``sys.modules`` only, so they are
recognised when the caller has loaded them (an instance cannot exist otherwise) and cost
nothing when it has not; unknown shapes are duck-typed on their attributes.
"""

from __future__ import annotations

import enum
import errno
import html
import math
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from ledger._redact import redact

__all__ = [
    "MAX_MESSAGE_LEN",
    "TRUNCATED_HINT",
    "ClassifiedError",
    "Failure",
    "Verdict",
    "classify",
    "classify_response",
]

MAX_MESSAGE_LEN = 500


class Verdict(enum.StrEnum):
    """What the ledger does with a failed job."""

    RETRYABLE = "retryable"  # try again later, up to the retry cap, then park as exhausted
    PERMANENT = "permanent"  # park now: the same request will fail the same way
    UNKNOWN = "unknown"  # try a small number of times, then park


# Codes recorded under their own name rather than "<verdict>:<code>": they describe the
# answer, not the transport, and are what an operator filters the dead letters by.
_BARE_PERMANENT = {
    "safety": "safety",
    "blocked_prompt": "safety",
    "recitation": "recitation",
    "schema": "schema",
    "malformed_output": "malformed_output",
    "truncated": "truncated",
}
_BARE_RETRYABLE = frozenset({"missing_from_output", "malformed_output"})


@dataclass(frozen=True, slots=True)
class Failure:
    """One classified failure: verdict, short code, redacted message, server retry delay."""

    verdict: Verdict
    code: str
    message: str
    retry_delay: float | None = None

    def __post_init__(self) -> None:
        # Enforced here rather than in each constructor so that no Failure, however it was
        # built, can carry a secret or an unbounded payload into the ledger.
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        object.__setattr__(self, "code", str(self.code) or "unknown")
        object.__setattr__(self, "message", _shorten(redact(_safe_str(self.message))))
        delay = self.retry_delay
        if delay is not None:
            try:
                delay = float(delay)
            except (TypeError, ValueError):
                delay = None
            if delay is not None and (math.isnan(delay) or math.isinf(delay) or delay < 0):
                delay = None
            object.__setattr__(self, "retry_delay", delay)

    @property
    def error_class(self) -> str:
        """The class recorded on the row for this failure (``permanent:400``, ``safety``, ...)."""
        code = self.code
        if self.verdict is Verdict.PERMANENT:
            bare = _BARE_PERMANENT.get(code)
            return bare if bare is not None else f"permanent:{code}"
        if self.verdict is Verdict.RETRYABLE:
            return code if code in _BARE_RETRYABLE else f"retryable:{code}"
        return f"unknown:{code}"

    def parked_class(self) -> str:
        """The class recorded when the job is parked for this failure (at its attempt cap)."""
        if self.verdict is Verdict.PERMANENT:
            return self.error_class
        if self.verdict is Verdict.RETRYABLE:
            return f"exhausted:{self.code}"
        return f"unknown:{self.code}"


class ClassifiedError(Exception):
    """An exception that already carries its :class:`Failure`.

    Raise it where a failure is found without an exception (a blocked or non-conforming
    answer on the ``direct`` channel) so the retry condition can still call :func:`classify`.
    """

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.error_class}: {failure.message}")
        self.failure = failure


# --- the rules (README, "How it works") -----------------------------------------------------

_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_PERMANENT_HTTP = frozenset({400, 401, 403, 404, 422})
_RETRYABLE_STATUS = frozenset(
    {"RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
)
_PERMANENT_STATUS = frozenset(
    {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "NOT_FOUND", "UNAUTHENTICATED"}
)

# google.rpc.Code numbers, as they appear in status objects that carry no HTTP status.
_GRPC_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_CANONICAL = frozenset(_GRPC_NAMES.values())
# The HTTP status Google's APIs send with each canonical code, so a status-only error object
# gets the same class (``exhausted:429``) as the HTTP error it stands for. UNKNOWN and
# DATA_LOSS have no honest HTTP twin and keep their own name.
_STATUS_TO_HTTP = {
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "UNAUTHENTICATED": 401,
}
# Spellings seen in error-type URIs and status strings that mean a canonical code.
_STATUS_ALIASES = {
    "RATE_LIMIT": "RESOURCE_EXHAUSTED",
    "RATE_LIMITED": "RESOURCE_EXHAUSTED",
    "RATE_LIMIT_EXCEEDED": "RESOURCE_EXHAUSTED",
    "QUOTA_EXCEEDED": "RESOURCE_EXHAUSTED",
    "TOO_MANY_REQUESTS": "RESOURCE_EXHAUSTED",
    "OVERLOADED": "UNAVAILABLE",
    "SERVICE_UNAVAILABLE": "UNAVAILABLE",
    "INTERNAL_ERROR": "INTERNAL",
    "INTERNAL_SERVER_ERROR": "INTERNAL",
    "BAD_REQUEST": "INVALID_ARGUMENT",
    "FORBIDDEN": "PERMISSION_DENIED",
    "UNAUTHORIZED": "UNAUTHENTICATED",
    "CANCELED": "CANCELLED",
}

_SAFETY_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "MODEL_ARMOR",
        "JAILBREAK",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
_RECITATION_FINISH = frozenset({"RECITATION", "IMAGE_RECITATION"})
# The answer hit the output token limit: the same request is cut the same way, and the fix
# (a higher max_output_tokens, a shorter answer) is the operator's, so it is parked as its
# own class with the fix in its message.
TRUNCATED_HINT = (
    "answer cut at the output token limit (MAX_TOKENS): raise max_output_tokens"
    " or ask for a shorter answer, then replay"
)
_CONTENT_WORDS = {
    "MAX_TOKENS": ("truncated", Verdict.PERMANENT),
    "MODEL_ARMOR": ("safety", Verdict.PERMANENT),
    "JAILBREAK": ("safety", Verdict.PERMANENT),
    "SPII": ("safety", Verdict.PERMANENT),
    "BLOCKLIST": ("safety", Verdict.PERMANENT),
    "SAFETY": ("safety", Verdict.PERMANENT),
    "BLOCKED": ("safety", Verdict.PERMANENT),
    "PROHIBITED_CONTENT": ("safety", Verdict.PERMANENT),
    "RECITATION": ("recitation", Verdict.PERMANENT),
    "TIMEOUT": ("timeout", Verdict.RETRYABLE),
    "TIMED_OUT": ("timeout", Verdict.RETRYABLE),
}

# Terminal states of a whole batch job or background interaction that fail its rows.
_BATCH_STATES = {
    # A failed job says nothing about its rows (their answers were never judged): resubmit
    # them under the attempt cap rather than parking good rows after two bad jobs.
    "FAILED": ("batch_failed", Verdict.RETRYABLE),
    "EXPIRED": ("batch_expired", Verdict.RETRYABLE),  # never ran: resubmitting is safe
    "CANCELLED": ("batch_cancelled", Verdict.UNKNOWN),
}
_INTERACTION_STATES = {
    "failed": ("interaction_failed", Verdict.UNKNOWN),
    "incomplete": ("interaction_incomplete", Verdict.UNKNOWN),
    "budget_exceeded": ("budget_exceeded", Verdict.PERMANENT),  # same budget, same outcome
    "cancelled": ("cancelled", Verdict.UNKNOWN),
}

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

_MAX_DEPTH = 6


# --- public entry points -----------------------------------------------------------------


def classify(error: BaseException | Mapping[str, Any]) -> Failure:
    """Classify an SDK/transport exception or an error/status mapping. Never raises."""
    try:
        return _classify(error, 0)
    except Exception as exc:  # the classifier must never be what crashes a tick
        return Failure(Verdict.UNKNOWN, "unknown", f"unclassifiable error ({type(exc).__name__})")


def classify_response(response: Mapping[str, Any]) -> Failure | None:
    """Classify an answer that arrived: a Failure for a blocked/empty one, None if it has text."""
    try:
        return _classify_response(response)
    except Exception as exc:
        return Failure(
            Verdict.RETRYABLE, "malformed_output", f"unreadable response ({type(exc).__name__})"
        )


# --- exceptions --------------------------------------------------------------------------


def _classify(error: Any, depth: int) -> Failure:
    if isinstance(error, BaseException):
        return _classify_exception(error, depth)
    if isinstance(error, Failure):
        return error
    mapping = _as_mapping(error)
    if mapping is not None:
        return _classify_mapping(mapping, depth)
    if isinstance(error, str):
        return Failure(Verdict.UNKNOWN, "unknown", error)
    return Failure(Verdict.UNKNOWN, "unknown", f"unrecognised error {type(error).__name__}")


def _module_attr(module: str, name: str) -> Any:
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def _isinstance(obj: object, module: str, name: str) -> bool:
    cls = _module_attr(module, name)
    return isinstance(cls, type) and isinstance(obj, cls)


def _classify_exception(exc: BaseException, depth: int) -> Failure:
    carried = getattr(exc, "failure", None)
    if isinstance(carried, Failure):
        return carried

    # google-genai models/batches/files clients: errors.APIError (ClientError, ServerError).
    if _isinstance(exc, "google.genai.errors", "APIError") or _looks_like_genai_error(exc):
        return _from_genai_error(exc)

    # The interactions client's own hierarchy (google.genai._gaos.lib.compat_errors).
    compat = "google.genai._gaos.lib.compat_errors"
    if _isinstance(exc, compat, "APITimeoutError"):
        return _timeout(exc)
    if _isinstance(exc, compat, "APIResponseValidationError"):
        return Failure(Verdict.UNKNOWN, "unknown", f"unexpected response: {_exc_text(exc)}")
    if _isinstance(exc, compat, "APIConnectionError"):
        cause = exc.__cause__
        if cause is not None and _is_timeout(cause):
            return _timeout(exc)
        return _connection(exc)
    if _looks_like_status_error(exc):
        return _from_status_error(exc)

    # Transport: httpx2 (what google-genai uses) and httpx.
    for mod in ("httpx2", "httpx"):
        if _isinstance(exc, mod, "TimeoutException"):
            return _timeout(exc)
        if _isinstance(exc, mod, "HTTPStatusError"):
            return _from_http_response_error(exc)
        for name in ("NetworkError", "RemoteProtocolError", "ProxyError"):
            if _isinstance(exc, mod, name):
                return _connection(exc)

    if _is_timeout(exc):
        return _timeout(exc)
    if _is_connection(exc):
        return _connection(exc)

    if _isinstance(exc, "asyncio", "CancelledError"):
        return Failure(Verdict.UNKNOWN, "cancelled", _exc_text(exc) or "cancelled")
    if _isinstance(exc, "pydantic_core", "ValidationError"):
        return Failure(Verdict.PERMANENT, "schema", _validation_summary(exc))

    # Wrappers (a continuation error, a task framework's wrapper): classify what they wrap.
    if depth < _MAX_DEPTH:
        inner: BaseException | None = None
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            inner = exc.exceptions[0]
        elif exc.__cause__ is not None:
            inner = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            inner = exc.__context__
        if inner is not None and inner is not exc:
            found = _classify(inner, depth + 1)
            if not (found.verdict is Verdict.UNKNOWN and found.code == "unknown"):
                return Failure(
                    found.verdict,
                    found.code,
                    f"{type(exc).__name__}: {found.message}",
                    found.retry_delay,
                )

    return Failure(Verdict.UNKNOWN, "unknown", _exc_text(exc))


def _looks_like_genai_error(exc: BaseException) -> bool:
    # errors.APIError without importing it: an int ``code``, plus ``status`` and ``details``.
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


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return any(_isinstance(exc, mod, "TimeoutException") for mod in ("httpx2", "httpx"))


def _is_connection(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError):
        return True
    if _isinstance(exc, "socket", "gaierror") or _isinstance(exc, "ssl", "SSLError"):
        return True
    if isinstance(exc, OSError):
        # A bare OSError from a socket, or one with a network errno. Its file-system
        # subclasses (FileNotFoundError, PermissionError, ...) are not transport trouble.
        return type(exc) is OSError or exc.errno in _NETWORK_ERRNOS
    return False


def _timeout(exc: BaseException) -> Failure:
    return Failure(Verdict.RETRYABLE, "timeout", _exc_text(exc) or "timed out")


def _connection(exc: BaseException) -> Failure:
    return Failure(Verdict.RETRYABLE, "connection", _exc_text(exc) or "connection failed")


def _from_genai_error(exc: BaseException) -> Failure:
    details = getattr(exc, "details", None)
    error = _error_object(details)
    delay = _retry_delay(details)
    if delay is None:
        delay = _retry_after(getattr(exc, "response", None))
    message = getattr(exc, "message", None)
    if not message and error is not None:
        message = error.get("message")
    return _from_parts(
        getattr(exc, "code", None),
        getattr(exc, "status", None),
        message if message else _exc_text(exc),
        delay,
    )


def _from_status_error(exc: BaseException) -> Failure:
    body = getattr(exc, "body", None)
    if isinstance(body, (str, bytes)):
        body = _maybe_json(body)
    error = _error_object(body)
    message: Any = None
    status: Any = None
    if error is not None:
        message = error.get("message")
        status = error.get("status")
    if not message:
        message = body if isinstance(body, str) and body.strip() else _exc_text(exc)
    delay = _retry_delay(body)
    if delay is None:
        delay = _retry_after(getattr(exc, "response", None))
    return _from_parts(getattr(exc, "status_code", None), status, message, delay)


def _from_http_response_error(exc: BaseException) -> Failure:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    body: Any = None
    try:
        body = _maybe_json(response.text) if response is not None else None
    except Exception:
        body = None
    error = _error_object(body)
    message = error.get("message") if error is not None else None
    status = error.get("status") if error is not None else None
    if not message:
        message = body if isinstance(body, str) and body.strip() else _exc_text(exc)
    delay = _retry_delay(body)
    if delay is None:
        delay = _retry_after(response)
    return _from_parts(code, status, message, delay)


# --- mappings: batch error objects, interaction errors, job states -----------------------


def _classify_mapping(m: Mapping[str, Any], depth: int) -> Failure:
    if depth >= _MAX_DEPTH:
        return Failure(Verdict.UNKNOWN, "unknown", "error object nested too deeply")

    # {"error": {...}} bodies and operations that carry an operation-level error.
    inner = _as_mapping(m.get("error"))
    if inner is not None:
        return _classify_mapping(inner, depth + 1)

    code = m.get("code")
    status = m.get("status")
    message = m.get("message")
    status_map = _as_mapping(status)
    if status_map is not None:
        return _classify_mapping(status_map, depth + 1)

    # A background interaction (lower-case status, e.g. "failed"): its ``errors`` entries,
    # else its terminal status. Checked first: "cancelled" is also a canonical code name.
    errors = m.get("errors")
    interaction_state = (
        status if isinstance(status, str) and status in _INTERACTION_STATES else None
    )
    if code is None and (interaction_state is not None or isinstance(errors, list)):
        if isinstance(errors, list) and errors:
            first: Failure | None = None
            for entry in errors[:20]:
                entry_failure = _classify(entry, depth + 1)
                if entry_failure.verdict is not Verdict.UNKNOWN:
                    return entry_failure
                first = first or entry_failure
            if first is not None and first.code != "unknown":
                return first
        if interaction_state is not None:
            name, verdict = _INTERACTION_STATES[interaction_state]
            return Failure(verdict, name, _text(message) or f"interaction {interaction_state}")

    if code is not None or _canonical(status) is not None:
        if isinstance(code, str) and not code.strip().isdigit():
            found = _from_error_type(code, message)
            if found is not None:
                return found
        return _from_parts(code, status, message, _retry_delay(m.get("details")))

    # A batch job (or its operation's metadata) in a terminal failed state.
    state = m.get("state")
    if state is None:
        meta = _as_mapping(m.get("metadata"))
        state = meta.get("state") if meta is not None else None
    if isinstance(state, str):
        suffix = state.rsplit("_STATE_", 1)[-1].upper()
        if suffix in _BATCH_STATES:
            name, verdict = _BATCH_STATES[suffix]
            return Failure(verdict, name, _text(message) or f"batch job {state}")

    if "candidates" in m or "promptFeedback" in m or "prompt_feedback" in m:
        found_response = _classify_response(m)
        if found_response is not None:
            return found_response

    if isinstance(status, str) and status.strip():
        return _from_parts(None, status, message, None)
    return Failure(Verdict.UNKNOWN, "unknown", _text(message) or "error without code or status")


def _from_error_type(code: str, message: Any) -> Failure | None:
    """An interaction error's ``code`` is a URI naming the error type: read its last word."""
    word = re.split(r"[/#:.]", code.strip().rstrip("/"))[-1]
    word = re.sub(r"[^A-Za-z0-9]+", "_", word).strip("_").upper()
    if not word:
        return None
    if word.isdigit():
        return _from_parts(int(word), None, message, None)
    canonical = _canonical(word)
    if canonical is not None:
        return _from_parts(None, canonical, message or code, None)
    for marker, (name, verdict) in _CONTENT_WORDS.items():
        if marker in word:
            text = _text(message) or code
            if name == "truncated":
                text = f"{TRUNCATED_HINT} ({text})"
            return Failure(verdict, name, text)
    slug = word.lower()[:64]
    return Failure(Verdict.UNKNOWN, slug, _text(message) or code)


# --- shared helpers ----------------------------------------------------------------------


def _canonical(status: Any) -> str | None:
    if not isinstance(status, str):
        return None
    s = re.sub(r"[\s\-]+", "_", status.strip()).upper()
    if s in _CANONICAL:
        return s
    return _STATUS_ALIASES.get(s)


def _from_parts(code: Any, status: Any, message: Any, delay: float | None) -> Failure:
    """Decide from an HTTP (or google.rpc) code and a status name, HTTP status first."""
    http: int | None = None
    grpc_name: str | None = None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code.strip())
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool):
        if code >= 100:
            http = code
        elif code in _GRPC_NAMES:
            grpc_name = _GRPC_NAMES[code]
    status_name = _canonical(status) or grpc_name
    if http is None and status_name is not None:
        http = _STATUS_TO_HTTP.get(status_name)

    if http in _RETRYABLE_HTTP or (
        http not in _PERMANENT_HTTP and status_name in _RETRYABLE_STATUS
    ):
        verdict = Verdict.RETRYABLE
    elif http in _PERMANENT_HTTP or status_name in _PERMANENT_STATUS:
        verdict = Verdict.PERMANENT
    else:
        verdict = Verdict.UNKNOWN

    if http is not None:
        code_str = str(http)
    elif status_name is not None:
        code_str = status_name.lower()
    elif isinstance(code, int) and not isinstance(code, bool):
        code_str = str(code)
    else:
        code_str = "unknown"

    head = " ".join(
        part
        for part in (
            str(http) if http is not None else None,
            status_name or (_text(status)[:60] if isinstance(status, str) else None),
        )
        if part
    )
    body = _text(message)
    text = f"{head}: {body}" if head and body else (head or body or "error")
    return Failure(verdict, code_str, text, delay)


def _error_object(body: Any) -> Mapping[str, Any] | None:
    """The ``{"code", "message", "status", "details"}`` object inside an error body."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not (type(body) is dict or isinstance(body, Mapping)):
        return None
    inner = body.get("error")
    if type(inner) is dict or isinstance(inner, Mapping):
        return inner
    return body


def _retry_delay(obj: Any, depth: int = 0) -> float | None:
    """The ``retryDelay`` of a google.rpc.RetryInfo found anywhere in an error's details."""
    if depth > 4:
        return None
    if type(obj) is dict or isinstance(obj, Mapping):
        kind = obj.get("@type")
        if isinstance(kind, str) and kind.endswith("RetryInfo"):
            delay = _duration(obj.get("retryDelay", obj.get("retry_delay")))
            if delay is not None:
                return delay
        for key in ("error", "details"):
            if key in obj:
                found = _retry_delay(obj[key], depth + 1)
                if found is not None:
                    return found
        return None
    if isinstance(obj, list):
        for item in obj[:20]:
            found = _retry_delay(item, depth + 1)
            if found is not None:
                return found
    return None


def _duration(value: Any) -> float | None:
    """A protobuf Duration as JSON ("7s", "1.5s") or as {"seconds", "nanos"}."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str):
            text = value.strip().lower()
            seconds = float(text[:-1] if text.endswith("s") else text)
        elif isinstance(value, Mapping):
            seconds = float(value.get("seconds", 0) or 0) + float(value.get("nanos", 0) or 0) / 1e9
        else:
            return None
    except (TypeError, ValueError):
        return None
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds


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
    seconds = _duration(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _maybe_json(body: str | bytes) -> Any:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        import json  # only on the error path

        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def _as_mapping(obj: Any) -> Mapping[str, Any] | None:
    # type() checks first: an ABC isinstance costs a Python-level call on every lookup.
    if type(obj) is dict:
        return obj
    if obj is None or isinstance(obj, (str, bytes, int, float, list, BaseException)):
        return None
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)  # SDK pydantic objects (interaction Error, ...)
    if callable(dump):
        try:
            dumped = dump(mode="json", by_alias=True, exclude_none=True)
        except Exception:
            return None
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _safe_str(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


def _exc_text(exc: BaseException) -> str:
    text = _safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def _text(value: Any) -> str:
    """A one-line readable text: HTML error pages reduced to their words."""
    if value is None:
        return ""
    text = _safe_str(value)
    if "<" in text and re.search(r"<(!doctype|html|head|body|title|p)\b", text, re.IGNORECASE):
        text = html.unescape(_TAG.sub(" ", text))
    return _SPACE.sub(" ", text).strip()


def _shorten(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE_LEN:
        text = text[: MAX_MESSAGE_LEN - 1].rstrip() + "…"
    return text


def _validation_summary(exc: BaseException) -> str:
    errors_fn = getattr(exc, "errors", None)
    title = getattr(exc, "title", "answer")
    try:
        errors = errors_fn(include_input=False, include_url=False) if callable(errors_fn) else []
    except Exception:
        errors = []
    if not errors:
        return f"does not match {title}"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"does not match {title}: {loc}: {first.get('msg', 'invalid')}{more}"


# --- answers -----------------------------------------------------------------------------


def _g(m: Mapping[str, Any], camel: str, snake: str | None = None) -> Any:
    value = m.get(camel)
    if value is None and snake is not None:
        value = m.get(snake)
    return value


def _enum_text(value: Any) -> str | None:
    if value is None:
        return None
    value = getattr(value, "value", value)  # SDK enums when a caller dumped in python mode
    return value.upper() if isinstance(value, str) else None


def _classify_response(response: Any) -> Failure | None:
    resp = _as_mapping(response)
    if resp is None:
        return Failure(Verdict.RETRYABLE, "malformed_output", "response is not an object")

    feedback = _as_mapping(_g(resp, "promptFeedback", "prompt_feedback"))
    if feedback is not None:
        reason = _enum_text(_g(feedback, "blockReason", "block_reason"))
        if reason:
            detail = _text(_g(feedback, "blockReasonMessage", "block_reason_message"))
            return Failure(
                Verdict.PERMANENT,
                "blocked_prompt",
                f"prompt blocked: {reason}" + (f" ({detail})" if detail else ""),
            )

    candidates = resp.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return Failure(Verdict.PERMANENT, "schema", "empty answer")
    first = _as_mapping(candidates[0])
    if first is None:
        return Failure(Verdict.PERMANENT, "schema", "empty answer")

    finish = _enum_text(_g(first, "finishReason", "finish_reason"))
    if finish in _SAFETY_FINISH:
        flagged = _flagged_categories(_g(first, "safetyRatings", "safety_ratings"))
        return Failure(
            Verdict.PERMANENT,
            "safety",
            f"answer blocked: finishReason {finish}" + (f" ({flagged})" if flagged else ""),
        )
    if finish in _RECITATION_FINISH:
        return Failure(Verdict.PERMANENT, "recitation", f"answer blocked: finishReason {finish}")
    if finish == "MAX_TOKENS":
        # Checked before the text: a cut JSON answer would otherwise fail as a schema error.
        return Failure(Verdict.PERMANENT, "truncated", TRUNCATED_HINT)

    text = candidate_text(first)
    if text is None or not text.strip():
        suffix = f" (finishReason {finish})" if finish and finish != "STOP" else ""
        return Failure(Verdict.PERMANENT, "schema", "empty answer" + suffix)
    return None


def candidate_text(candidate: Mapping[str, Any]) -> str | None:
    """Concatenated text of a candidate's non-thought parts; None when it has no text part."""
    content = _as_mapping(candidate.get("content"))
    if content is None:
        return None
    parts = content.get("parts")
    if not isinstance(parts, list):
        return None
    texts = [
        p["text"]
        for p in parts
        if (type(p) is dict or isinstance(p, Mapping))
        and isinstance(p.get("text"), str)
        and not p.get("thought")
    ]
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else "".join(texts)


def _flagged_categories(ratings: Any) -> str:
    if not isinstance(ratings, list):
        return ""
    flagged = []
    for rating in ratings[:20]:
        if not isinstance(rating, Mapping):
            continue
        probability = _enum_text(rating.get("probability")) or ""
        if rating.get("blocked") or probability in ("HIGH", "MEDIUM"):
            category = _enum_text(rating.get("category")) or "?"
            flagged.append(category.removeprefix("HARM_CATEGORY_").lower())
    return ", ".join(flagged)
