"""What a classified failure is: :class:`Failure`, its :class:`Verdict` and its classes.

A :class:`Failure` is what the ledger records for a failed row: ``error_class`` while it is
retried, ``parked_class()`` once parked. ``ledger._verdicts`` and ``ledger._finish`` build
them; nothing here decides which verdict a failure gets.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from ledger._redact import redact
from ledger._wire import safe_str

__all__ = [
    "CACHE_EXPIRED",
    "DEADLINE_CANCELLED_CODE",
    "EMPTY",
    "FREE_ATTEMPT_CODES",
    "GRACE_ATTEMPT_CODES",
    "INTERACTION_LOST",
    "MAX_MESSAGE_LEN",
    "POSSIBLY_BILLED_CODES",
    "ClassifiedError",
    "Failure",
    "Verdict",
    "is_empty_answer",
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
# An answer without text that a retry may fix (ledger._finish): ``empty``, ``empty:other``, ...
EMPTY = "empty"

# The code of a background job whose interaction the API no longer knows (404 on get: deleted,
# or gone with its retention): its outcome is lost, it is sent again as ``retryable``.
INTERACTION_LOST = "interaction_lost"
# Failures after which the job may already have been billed although no answer was kept: the
# ledger counts the next sending in ``possible_duplicates`` so the cost stays visible.
POSSIBLY_BILLED_CODES = frozenset({INTERACTION_LOST})
# A request refused because the context cache it named is gone (expired or deleted under it):
# not the row's fault and, refused, not billed; the row is sent again naming a new cache.
CACHE_EXPIRED = "cache_expired"
# Failures that give the row its attempt back (``ledger._sql.FAILURE_SET``): the request was
# refused for a reason of ours, so the row's retries are not spent on it.
FREE_ATTEMPT_CODES = frozenset({CACHE_EXPIRED})
# The code of a row whose batch job was cancelled to meet its pipeline's deadline
# (``flows.channels._deadline``): retryable, sent directly next. Its attempt stays counted
# (the batch send was made and may be billed), unlike a free one.
DEADLINE_CANCELLED_CODE = "deadline"
# Failures that keep their attempt counted but never park the row at its attempt cap: the
# row did nothing wrong, so it is allowed one attempt beyond the cap (``ledger._sql._PARKS``):
# a row on its last attempt when the deadline cancels its job still goes out directly, and is
# parked if that attempt fails too (or the deadline cancels it again: the grace is one).
GRACE_ATTEMPT_CODES = frozenset({DEADLINE_CANCELLED_CODE})


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
        object.__setattr__(self, "message", _shorten(redact(safe_str(self.message))))
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
    return code == EMPTY or code.startswith(EMPTY + ":")


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


_SPACE = re.compile(r"\s+")


def _shorten(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE_LEN:
        text = text[: MAX_MESSAGE_LEN - 1].rstrip() + "…"
    return text
