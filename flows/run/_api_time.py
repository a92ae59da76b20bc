"""An API timestamp (a file's ``expiration_time``, a cache's ``expire_time``) as epoch
seconds: the SDK gives a ``datetime`` (naive read as UTC) or, from a raw answer, an RFC 3339
string ending in ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["epoch_of"]


def epoch_of(value: Any, default: float) -> float:
    """``value`` in epoch seconds; ``default`` when the API left it out."""
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
