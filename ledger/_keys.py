"""What an idempotency key and a pipeline name may be: the same rules on every backend.

A key is stored in ``jobs.key`` and ``batch_members.key`` (``varchar(512)``), written into a
batch's JSONL, sent as a label and in the ``x-gemini-ledger-key`` header of every call. SQLite
would store anything; PostgreSQL refuses a longer key or a NUL character, and an HTTP header
cannot carry a newline or other control characters (nor, in the SDK, a non-ASCII one), so
such a key either broke the whole day's enrollment on one backend or failed at sending time,
misread as a network fault. The rules are checked at enrollment instead, before a row exists,
and a key that breaks them is that item's own failure (``flows.run._deliver.enroll_day``):

- a ``str`` of 1 to :data:`KEY_MAX` characters,
- printable ASCII only (``0x20``-``0x7e``): no NUL, newline, tab or other control character,
  no character outside ASCII,
- no space at either end (a header value loses it on the way).

A pipeline's name is recorded in ``jobs.pipeline`` and ``pipelines.name`` (``varchar(128)``)
and is part of a batch reservation token (``gl-<name>-<8 hex>``, ``varchar(128)``): it is at
most :data:`PIPELINE_NAME_MAX` characters, checked when the pipeline is defined.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KEY_MAX", "PIPELINE_NAME_MAX", "RESERVATION_MAX", "key_problem", "shown_key"]

# jobs.key and batch_members.key are varchar(512) (ledger/_models.py, migration 0001).
KEY_MAX = 512
# jobs.reservation and batch_jobs.reservation are varchar(128).
RESERVATION_MAX = 128
# The longest reservation token around a name is a batch's: "gl-" + name + "-" + 8 hex
# digits (flows/channels/batch.py); the other tokens carry no name.
PIPELINE_NAME_MAX = RESERVATION_MAX - len("gl-") - len("-") - 8

_SHOWN = 60


def shown_key(key: object) -> str:
    """A key as one log line can show it: escaped (a newline stays ``\\n``) and shortened."""
    text = repr(key)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}...{text[-1]}"


def key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be an idempotency key, or None when it can."""
    if not isinstance(key, str):
        return f"key_of returned a {type(key).__name__}, not a str"
    # The common case in C: printable ASCII (space to ~), within the limit, not padded.
    if (
        0 < len(key) <= KEY_MAX
        and key.isascii()
        and key.isprintable()
        and key[0] != " "
        and key[-1] != " "
    ):
        return None
    if not key:
        return "key is empty"
    if len(key) > KEY_MAX:
        return f"key is {len(key)} characters long, the limit is {KEY_MAX}"
    for ch in key:
        if not " " <= ch <= "~":
            what = (
                "NUL"
                if ch == "\x00"
                else "a control character"
                if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F
                else "a character outside printable ASCII"
            )
            return f"key holds {what} (U+{ord(ch):04X})"
    if key[0] == " " or key[-1] == " ":
        return "key starts or ends with a space"
    return None
