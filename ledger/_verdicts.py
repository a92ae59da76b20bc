"""The verdict rules: one verdict for every failure on every channel.

Whatever went wrong (an SDK exception on the ``direct`` channel, an error object in a batch
output line, a failed background interaction, a blocked or empty answer), :func:`classify`
turns it into a :class:`~ledger.Failure`: a verdict (retryable, permanent, unknown), a short
code, a redacted message and the retry delay the server asked for. The rules are here: which
HTTP codes and status names retry, which park at once, what a batch job's or interaction's
terminal state means for its rows. Google's names and body readers are in ``ledger._wire``;
answers (finish reasons) are judged by ``ledger._finish``.

This module is part of the domain core: it imports no SDK, HTTP client or Prefect module.
An SDK or transport exception is recognised only through the ``describe`` function the caller
passes (``flows.gemini._errors.describe``), which turns it into a neutral
:class:`~ledger.ApiFailure`; the verdict is decided from that description alone.
"""

from __future__ import annotations

from asyncio import CancelledError
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from ledger._api_failure import ApiFailure, Transport
from ledger._failure import CACHE_EXPIRED, Failure, Verdict
from ledger._finish import TRUNCATED_HINT, answer_failure
from ledger._wire import (
    GRPC_NAMES,
    STATUS_TO_HTTP,
    as_mapping,
    canonical,
    error_type_word,
    first_error_text,
    retry_delay_of,
    safe_str,
    text_of,
)

__all__ = ["CACHE_EXPIRED", "Describe", "classify", "names_cached_content", "validation_summary"]

# --- the rules (README, "How it works") -----------------------------------------------------

_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_PERMANENT_HTTP = frozenset({400, 401, 403, 404, 422})
_RETRYABLE_STATUS = frozenset(
    {"RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
)
_PERMANENT_STATUS = frozenset(
    {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "NOT_FOUND", "UNAUTHENTICATED"}
)

# Words of an error-type URI that name what happened to the answer rather than a status.
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
        said = first_error_text(errors) or text_of(message)
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
            return Failure(verdict, name, text_of(message) or f"interaction {interaction_state}")

    if code is not None or canonical(status) is not None:
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
            return Failure(verdict, name, text_of(message) or f"batch job {state}")

    if "candidates" in m or "promptFeedback" in m or "prompt_feedback" in m:
        found_response = answer_failure(m)
        if found_response is not None:
            return found_response

    if isinstance(status, str) and status.strip():
        return _from_parts(None, status, message, None)
    return Failure(Verdict.UNKNOWN, "unknown", text_of(message) or "error without code or status")


def _from_error_type(code: str, message: Any) -> Failure | None:
    """An interaction error's ``code`` is a URI naming the error type (google-genai 3.3.0
    ``interactions.Error.code``: "A URI that identifies the error type"): read its last
    word, whatever the URI's form (``.../errors/resource-exhausted``, ``...#RATE_LIMITED``,
    ``.../model-overloaded.html?hl=en``, ``type.googleapis.com/google.rpc.Code.INTERNAL``)."""
    word = error_type_word(code)
    if not word:
        return None
    if word.isdigit():
        return _from_parts(int(word), None, message, None)
    name_of_word = canonical(word)
    if name_of_word is not None:
        return _from_parts(None, name_of_word, message or code, None)
    for marker, (name, verdict) in _CONTENT_WORDS.items():
        if marker in word:
            text = text_of(message) or code
            if name == "truncated":
                text = f"{TRUNCATED_HINT} ({text})"
            return Failure(verdict, name, text)
    slug = word.lower()[:64]
    return Failure(Verdict.UNKNOWN, slug, text_of(message) or code)


# The real API refuses a request naming a cache that is gone with "403 PERMISSION_DENIED:
# CachedContent not found (or permission denied)"; a 404 NOT_FOUND is also reported
# (https://forg.pro/tools/errors/google/404: "cached content past its TTL"), and a 400 naming
# it: all three are read the same way.
_CACHE_REFUSALS = frozenset({400, 403, 404})


# What says the cache is gone (rather than misused): "not found (or permission denied)" (the
# 403 above), "not found" (the 404), "has expired" / "expired" (a 400 naming it), and the
# other spellings of gone. Both readings of an unknown wording are safe: a refusal missing
# here is the row's ordinary failure, never a cache made again for every attempt. A 400 such
# as "CachedContent can not be used with GenerateContent request setting system_instruction"
# speaks of the cache but is the request's fault: made again, it would be refused again.
_CACHE_GONE = ("not found", "permission denied", "expired", "does not exist", "deleted")


def names_cached_content(message: Any) -> bool:
    """Whether an error's message says the request's cached content is gone (expired,
    deleted, not found or not ours): not any message that names it."""
    words = text_of(message).lower()
    if "cachedcontent" not in words and "cached content" not in words:
        return False
    return any(gone in words for gone in _CACHE_GONE)


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
        elif code in GRPC_NAMES:
            grpc_name = GRPC_NAMES[code]
    status_name = canonical(status) or grpc_name
    if http is None and status_name is not None:
        http = STATUS_TO_HTTP.get(status_name)

    if http in _CACHE_REFUSALS and names_cached_content(message):
        # The request's context cache expired or was deleted under it: the request was
        # refused (not billed) and the row is sent again once the cache is made anew
        # (flows.run._prefix_cache). Read by its words, never the code alone: a 403 about the
        # key stays a fault of the setup.
        return Failure(
            Verdict.RETRYABLE, CACHE_EXPIRED, f"cached content: {text_of(message)}", delay
        )
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
            status_name or (text_of(status)[:60] if isinstance(status, str) else None),
        )
        if part
    )
    body = text_of(message)
    text = f"{head}: {body}" if head and body else (head or body or "error")
    return Failure(verdict, code_str, text, delay)


def _exc_text(exc: BaseException) -> str:
    text = safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
