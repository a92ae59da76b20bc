"""Google's error wire, as Google names it: nothing here decides a verdict.

The ``google.rpc.Code`` numbers and names, the HTTP status Google's APIs send with each, the
other spellings of those names seen in the wild, and readers for what an error body carries
(the ``error`` object, ``RetryInfo`` delays, ``ErrorInfo`` reasons, ``QuotaFailure`` quota ids,
an error-type URI's last word, an interaction's ``errors[]``). ``ledger._verdicts`` decides
from what these read; ``flows.gemini._errors`` reads SDK errors' bodies with them.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CANONICAL",
    "GRPC_NAMES",
    "STATUS_TO_HTTP",
    "as_mapping",
    "canonical",
    "enum_text",
    "error_object",
    "error_reasons",
    "error_type_word",
    "field",
    "first_error_text",
    "quota_ids",
    "retry_delay_of",
    "safe_str",
    "text_of",
]

# google.rpc.Code numbers, as they appear in status objects that carry no HTTP status.
GRPC_NAMES = {
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
CANONICAL = frozenset(GRPC_NAMES.values())
# The HTTP status Google's APIs send with each canonical code, so a status-only error object
# gets the same class (``exhausted:429``) as the HTTP error it stands for. UNKNOWN and
# DATA_LOSS have no honest HTTP twin and keep their own name.
STATUS_TO_HTTP = {
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


def canonical(status: Any) -> str | None:
    """The canonical ``google.rpc.Code`` name a status string means, or None."""
    if not isinstance(status, str):
        return None
    s = re.sub(r"[\s\-]+", "_", status.strip()).upper()
    if s in CANONICAL:
        return s
    return _STATUS_ALIASES.get(s)


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


def field(m: Mapping[str, Any], camel: str, snake: str | None = None) -> Any:
    """A field of an answer under its JSON (camelCase) name, else its python (snake) name."""
    value = m.get(camel)
    if value is None and snake is not None:
        value = m.get(snake)
    return value


def enum_text(value: Any) -> str | None:
    if value is None:
        return None
    value = getattr(value, "value", value)  # SDK enums when a caller dumped in python mode
    return value.upper() if isinstance(value, str) else None


_URI_NOISE = frozenset({"HTML", "HTM", "JSON", "MD", "TXT"})


def error_type_word(code: str) -> str:
    """The last meaningful word of an error-type URI, upper-case with ``_`` separators."""
    text = code.strip()
    for sep in ("?",):
        text = text.split(sep, 1)[0]
    words = [re.sub(r"[^A-Za-z0-9]+", "_", w).strip("_").upper() for w in re.split(r"[/#:.]", text)]
    words = [w for w in words if w and w not in _URI_NOISE]
    return words[-1] if words else ""


def first_error_text(errors: Any) -> str:
    """The first ``code: message`` of an interaction's ``errors[]``, for a message."""
    if not isinstance(errors, list):
        return ""
    for entry in errors[:20]:
        m = as_mapping(entry)
        if m is None:
            continue
        parts = [text_of(m.get("code")), text_of(m.get("message"))]
        said = ": ".join(p for p in parts if p)
        if said:
            return said
    return ""


def safe_str(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def text_of(value: Any) -> str:
    """A one-line readable text: HTML error pages reduced to their words."""
    if value is None:
        return ""
    text = safe_str(value)
    if "<" in text and re.search(r"<(!doctype|html|head|body|title|p)\b", text, re.IGNORECASE):
        text = html.unescape(_TAG.sub(" ", text))
    return _SPACE.sub(" ", text).strip()
