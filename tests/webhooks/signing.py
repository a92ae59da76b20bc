"""Helpers for driving the receiver: the test secret, signed headers, polling with a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

__all__ = ["OTHER_SECRET", "SECRET", "signed", "wait_until"]

SECRET = "whsec_" + "c2VjcmV0LWZvci13ZWJob29rLXRlc3RzLTAxMjM0NTY3"  # base64 of 33 bytes
OTHER_SECRET = "whsec_" + "b3RoZXItc2VjcmV0LW5vdC10aGUtcmlnaHQtb25lLTk="


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def signed(
    payload: bytes | str,
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    at: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for ``payload``, signed with ``secret`` at ``at``."""
    body = payload.decode() if isinstance(payload, bytes) else payload
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(int(time.time() if at is None else at), tz=UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
    }
