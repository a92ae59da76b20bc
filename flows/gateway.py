"""The one place that builds google-genai clients.

The SDK's own retries are turned off everywhere (the interactions client retries five times
by default): every attempt must be counted in the ledger, and the classifier decides what is
retried. ``GOOGLE_GEMINI_BASE_URL`` points the SDK at the local emulator.
"""

from __future__ import annotations

import os

from google import genai
from google.genai import types

from ledger import register_secret

__all__ = ["KEY_HEADER", "GatewayConfigError", "gemini_client", "keyed"]

# Carries the ledger's idempotency key on every submission, so the emulator (and a
# proxy in front of the real API, if you run one) can count submissions per key.
KEY_HEADER = "x-gemini-ledger-key"


class GatewayConfigError(RuntimeError):
    """The Gemini client cannot be built (no API key)."""


def _api_key() -> str:
    key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
    if not key:
        raise GatewayConfigError(
            "no Gemini API key: set GEMINI_API_KEY (any value works against the emulator)"
        )
    register_secret(key)
    return key


def gemini_client(*, timeout_s: float = 120.0) -> genai.Client:
    """A client with retries off and a request timeout."""
    return genai.Client(
        api_key=_api_key(),
        http_options=types.HttpOptions(
            retry_options=types.HttpRetryOptions(attempts=1),
            timeout=int(timeout_s * 1000),
        ),
    )


def keyed(key: str, *, timeout_s: float = 120.0) -> types.HttpOptions:
    """Per-request HTTP options carrying the idempotency key."""
    return types.HttpOptions(
        headers={KEY_HEADER: key},
        retry_options=types.HttpRetryOptions(attempts=1),
        timeout=int(timeout_s * 1000),
    )
