"""The failure classifier: one verdict for every failure on every channel.

Whatever went wrong (an SDK exception on the ``direct`` channel, an error object in a batch
output line, a failed background interaction, a blocked or empty answer), :func:`classify`
or :func:`classify_response` turns it into a :class:`Failure`: a verdict (retryable,
permanent, unknown), a short code, a redacted message and the retry delay the server asked
for. The ledger records ``Failure.error_class`` on the row and ``Failure.parked_class()``
when the job is parked.

This module is part of the domain core: it imports no SDK, HTTP client or Prefect module.
An SDK or transport exception is recognised only through the ``describe`` function the caller
passes (``flows.gemini._errors.describe``), which turns it into a neutral
:class:`~ledger.ApiFailure`; the verdict is decided from that description alone.
"""

from __future__ import annotations

import enum
import html
import math
import re
from asyncio import CancelledError
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ledger._api_failure import ApiFailure, Transport
from ledger._redact import redact

__all__ = [
    "EMPTY_HINT",
    "INTERACTION_LOST",
    "MAX_MESSAGE_LEN",
    "POSSIBLY_BILLED_CODES",
    "TRUNCATED_HINT",
    "ClassifiedError",
    "Describe",
    "Failure",
    "Verdict",
    "as_mapping",
    "candidate_text",
    "classify",
    "classify_response",
    "empty_answer",
    "error_object",
    "error_reasons",
    "is_empty_answer",
    "quota_ids",
    "retry_delay_of",
    "validation_summary",
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
# An answer without text that a retry may fix (see EMPTY): ``empty``, ``empty:other``, ...
_EMPTY = "empty"

# The code of a background job whose interaction the API no longer knows (404 on get: deleted,
# or gone with its retention): its outcome is lost, it is sent again as ``retryable``.
INTERACTION_LOST = "interaction_lost"
# Failures after which the job may already have been billed although no answer was kept: the
# ledger counts the next sending in ``possible_duplicates`` so the cost stays visible.
POSSIBLY_BILLED_CODES = frozenset({INTERACTION_LOST})


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
        return code if _is_empty(code) else f"unknown:{code}"

    def parked_class(self) -> str:
        """The class recorded when the job is parked for this failure (at its attempt cap)."""
        if self.verdict is Verdict.PERMANENT:
            return self.error_class
        if self.verdict is Verdict.RETRYABLE:
            return f"exhausted:{self.code}"
        return self.code if _is_empty(self.code) else f"unknown:{self.code}"


def _is_empty(code: str) -> bool:
    return code == _EMPTY or code.startswith(_EMPTY + ":")


def is_empty_answer(failure: Failure) -> bool:
    """True for the failure of an answer that came without text (``empty``, ``empty:other``)."""
    return failure.verdict is Verdict.UNKNOWN and _is_empty(failure.code)


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
    "MODEL_OVERLOADED": "UNAVAILABLE",
    "SERVER_ERROR": "INTERNAL",
    "INVALID_REQUEST": "INVALID_ARGUMENT",
}

_SAFETY_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "MODEL_ARMOR",
        # JAILBREAK is a promptFeedback BlockedReason in google-genai 3.3.0 (types.py), not a
        # FinishReason: a blocked prompt is read from blockReason below. It stays here so a
        # finishReason spelled that way is still a safety stop, not an empty answer retried.
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
    "MAX_OUTPUT_TOKENS": ("truncated", Verdict.PERMANENT),
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

# An answer without text is not the row's fault when a retry may fix it: Gemini 2.5 returns
# finish STOP with a content that has no parts now and then, and the same request answers
# on a retry (python-genai issue 1289; litellm #24442 shows the body: ``"content": {"role":
# "model"}, "finishReason": "STOP"``). OTHER, MALFORMED_RESPONSE and CONTINUATION finishes can
# come without text too (google-genai types.FinishReason). Each is ``unknown`` (retried up to
# the pipeline's unknown cap), then parked under its own class: ``empty``, or ``empty:other``,
# ``empty:malformed_response``, ``empty:continuation`` naming the finish.
EMPTY_HINT = "empty answer (no text); a retry may fix it"
_EMPTY_FINISH = frozenset(
    {"STOP", "FINISH_REASON_UNSPECIFIED", "OTHER", "MALFORMED_RESPONSE", "CONTINUATION"}
)


def empty_answer(finish: str | None = None) -> Failure:
    """The failure of an answer that came without text (finish ``finish``)."""
    if finish is None or finish in ("STOP", "FINISH_REASON_UNSPECIFIED"):
        return Failure(Verdict.UNKNOWN, _EMPTY, EMPTY_HINT)
    return Failure(
        Verdict.UNKNOWN, f"{_EMPTY}:{finish.lower()}", f"{EMPTY_HINT} (finishReason {finish})"
    )


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
    "incomplete": ("truncated", Verdict.PERMANENT),  # the output budget: see _classify_mapping
    "budget_exceeded": ("budget_exceeded", Verdict.PERMANENT),  # same budget, same outcome
    "cancelled": ("cancelled", Verdict.UNKNOWN),
}

_MAX_DEPTH = 6


# --- public entry points -----------------------------------------------------------------


# Turns an SDK or transport exception into its neutral description (None: not one of those).
Describe = Callable[[BaseException], ApiFailure | None]


def classify(
    error: BaseException | ApiFailure | Mapping[str, Any], describe: Describe | None = None
) -> Failure:
    """Classify an API failure, an exception or an error/status mapping. Never raises.

    ``describe`` (``flows.gemini._errors.describe``) is what recognises SDK and transport
    exceptions, on ``error`` and on whatever it wraps; without it they are ``unknown``.
    """
    try:
        return _classify(error, 0, describe)
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


def _classify(error: Any, depth: int, describe: Describe | None = None) -> Failure:
    if isinstance(error, BaseException):
        return _classify_exception(error, depth, describe)
    if isinstance(error, ApiFailure):
        return _from_api_failure(error)
    if isinstance(error, Failure):
        return error
    mapping = as_mapping(error)
    if mapping is not None:
        return _classify_mapping(mapping, depth)
    if isinstance(error, str):
        return Failure(Verdict.UNKNOWN, "unknown", error)
    return Failure(Verdict.UNKNOWN, "unknown", f"unrecognised error {type(error).__name__}")


def _classify_exception(exc: BaseException, depth: int, describe: Describe | None) -> Failure:
    carried = getattr(exc, "failure", None)
    if isinstance(carried, Failure):
        return carried

    described = describe(exc) if describe is not None else None
    if described is not None:
        return _from_api_failure(described)

    if isinstance(exc, CancelledError):
        return Failure(Verdict.UNKNOWN, "cancelled", _exc_text(exc) or "cancelled")
    if isinstance(exc, ValidationError):
        return Failure(Verdict.PERMANENT, "schema", validation_summary(exc))

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
            found = _classify(inner, depth + 1, describe)
            if not (found.verdict is Verdict.UNKNOWN and found.code == "unknown"):
                return Failure(
                    found.verdict,
                    found.code,
                    f"{type(exc).__name__}: {found.message}",
                    found.retry_delay,
                )

    return Failure(Verdict.UNKNOWN, "unknown", _exc_text(exc))


def _from_api_failure(api: ApiFailure) -> Failure:
    if api.transport is Transport.TIMEOUT:
        return Failure(Verdict.RETRYABLE, "timeout", api.message or "timed out")
    if api.transport is not None:
        return Failure(Verdict.RETRYABLE, "connection", api.message or "connection failed")
    return _from_parts(api.http_code, api.status, api.message, api.retry_delay_s)


# --- mappings: batch error objects, interaction errors, job states -----------------------


def _classify_mapping(m: Mapping[str, Any], depth: int) -> Failure:
    if depth >= _MAX_DEPTH:
        return Failure(Verdict.UNKNOWN, "unknown", "error object nested too deeply")

    # {"error": {...}} bodies and operations that carry an operation-level error.
    inner = as_mapping(m.get("error"))
    if inner is not None:
        return _classify_mapping(inner, depth + 1)

    code = m.get("code")
    status = m.get("status")
    message = m.get("message")
    status_map = as_mapping(status)
    if status_map is not None:
        return _classify_mapping(status_map, depth + 1)

    # A background interaction (lower-case status, e.g. "failed"): its ``errors`` entries,
    # else its terminal status. Checked first: "cancelled" is also a canonical code name.
    errors = m.get("errors")
    interaction_state = (
        status if isinstance(status, str) and status in _INTERACTION_STATES else None
    )
    if code is None and interaction_state == "incomplete":
        # Incomplete is deterministic (the output budget was reached): the same request ends
        # the same way, whatever its errors[] entries say (a retryable-looking code included).
        said = _first_error_text(errors) or _text(message)
        return Failure(
            Verdict.PERMANENT, "truncated", TRUNCATED_HINT + (f" ({said})" if said else "")
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
        return _from_parts(code, status, message, retry_delay_of(m.get("details")))

    # A batch job (or its operation's metadata) in a terminal failed state.
    state = m.get("state")
    if state is None:
        meta = as_mapping(m.get("metadata"))
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


_URI_NOISE = frozenset({"HTML", "HTM", "JSON", "MD", "TXT"})


def _error_type_word(code: str) -> str:
    """The last meaningful word of an error-type URI, upper-case with ``_`` separators."""
    text = code.strip()
    for sep in ("?",):
        text = text.split(sep, 1)[0]
    words = [re.sub(r"[^A-Za-z0-9]+", "_", w).strip("_").upper() for w in re.split(r"[/#:.]", text)]
    words = [w for w in words if w and w not in _URI_NOISE]
    return words[-1] if words else ""


def _first_error_text(errors: Any) -> str:
    """The first ``code: message`` of an interaction's ``errors[]``, for a message."""
    if not isinstance(errors, list):
        return ""
    for entry in errors[:20]:
        m = as_mapping(entry)
        if m is None:
            continue
        parts = [_text(m.get("code")), _text(m.get("message"))]
        said = ": ".join(p for p in parts if p)
        if said:
            return said
    return ""


def _from_error_type(code: str, message: Any) -> Failure | None:
    """An interaction error's ``code`` is a URI naming the error type (google-genai 3.3.0
    ``interactions.Error.code``: "A URI that identifies the error type"): read its last
    word, whatever the URI's form (``.../errors/resource-exhausted``, ``...#RATE_LIMITED``,
    ``.../model-overloaded.html?hl=en``, ``type.googleapis.com/google.rpc.Code.INTERNAL``)."""
    word = _error_type_word(code)
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


def error_object(body: Any) -> Mapping[str, Any] | None:
    """The ``{"code", "message", "status", "details"}`` object inside an error body."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not (type(body) is dict or isinstance(body, Mapping)):
        return None
    inner = body.get("error")
    if type(inner) is dict or isinstance(inner, Mapping):
        return inner
    return body


def retry_delay_of(obj: Any, depth: int = 0) -> float | None:
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
                found = retry_delay_of(obj[key], depth + 1)
                if found is not None:
                    return found
        return None
    if isinstance(obj, list):
        for item in obj[:20]:
            found = retry_delay_of(item, depth + 1)
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


def error_reasons(details: Any) -> tuple[str, ...]:
    """The ``reason`` of every google.rpc.ErrorInfo among an error's details, in order."""
    out: list[str] = []
    if isinstance(details, list):
        for item in details[:20]:
            if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("ErrorInfo"):
                reason = item.get("reason")
                if isinstance(reason, str) and reason not in out:
                    out.append(reason)
    return tuple(out)


def quota_ids(details: Any) -> tuple[str, ...]:
    """The ``quotaId`` of every google.rpc.QuotaFailure violation among an error's details
    (``GenerateRequestsPerMinutePerProjectPerModel-FreeTier``, ``...PerDay...``), in order."""
    out: list[str] = []
    if isinstance(details, list):
        for item in details[:20]:
            kind = item.get("@type", "") if isinstance(item, Mapping) else ""
            if not (isinstance(item, Mapping) and str(kind).endswith("QuotaFailure")):
                continue
            violations = item.get("violations")
            for violation in violations[:20] if isinstance(violations, list) else ():
                quota = violation.get("quotaId") if isinstance(violation, Mapping) else None
                if isinstance(quota, str) and quota and quota not in out:
                    out.append(quota)
    return tuple(out)


def as_mapping(obj: Any) -> Mapping[str, Any] | None:
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


def validation_summary(exc: BaseException) -> str:
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
    resp = as_mapping(response)
    if resp is None:
        return Failure(Verdict.RETRYABLE, "malformed_output", "response is not an object")

    feedback = as_mapping(_g(resp, "promptFeedback", "prompt_feedback"))
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
        return empty_answer()
    first = as_mapping(candidates[0])
    if first is None:
        return empty_answer()

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
        if finish is None or finish in _EMPTY_FINISH:
            return empty_answer(finish)
        # Another finish without text (LANGUAGE, NO_IMAGE, a tool-call finish): the same
        # request ends the same way.
        return Failure(Verdict.PERMANENT, "schema", f"empty answer (finishReason {finish})")
    return None


def candidate_text(candidate: Mapping[str, Any]) -> str | None:
    """Concatenated text of a candidate's non-thought parts; None when it has no text part."""
    content = as_mapping(candidate.get("content"))
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
