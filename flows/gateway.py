"""The one place that builds google-genai clients.

The SDK's own retries are turned off everywhere (the interactions client retries five times
by default): every attempt must be counted in the ledger, and the classifier decides what is
retried. ``GOOGLE_GEMINI_BASE_URL`` points the SDK at the local emulator.

The API key comes from a Prefect ``Secret`` block (named by ``GEMINI_API_KEY_BLOCK``, default
``gemini-api-key``) when a Prefect API is configured and the block exists, else from
``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``. A deployed run thus gets the key without it ever being
written into a deployment, a job variable or a flow run's parameters.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import types

from flows._prefect_api import api_available
from ledger import ConfigurationError, register_secret

__all__ = [
    "API_KEY_BLOCK_ENV",
    "DEFAULT_API_KEY_BLOCK",
    "KEY_HEADER",
    "ApiKey",
    "GatewayConfigError",
    "find_api_key",
    "gemini_client",
    "keyed",
]

# Carries the ledger's idempotency key on every submission, so the emulator (and a
# proxy in front of the real API, if you run one) can count submissions per key.
KEY_HEADER = "x-gemini-ledger-key"


API_KEY_BLOCK_ENV = "GEMINI_API_KEY_BLOCK"
DEFAULT_API_KEY_BLOCK = "gemini-api-key"


class GatewayConfigError(ConfigurationError, RuntimeError):
    """The Gemini client cannot be built (no API key)."""


@dataclass(frozen=True)
class ApiKey:
    """The key and where it was found (``Secret block 'x'`` or the variable's name)."""

    value: str
    source: str

    def __repr__(self) -> str:  # never print the key itself
        return f"ApiKey(source={self.source!r})"


def _block_name() -> str:
    return os.environ.get(API_KEY_BLOCK_ENV, "").strip() or DEFAULT_API_KEY_BLOCK


def _key_from_block(name: str) -> str | None:
    """The block's value, or None when the block does not exist."""
    from prefect.blocks.system import Secret

    try:
        # _sync: a plain call even when an event loop runs in this thread (async flows).
        block: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None
    except Exception as exc:
        # Unreachable API, refused request: the key cannot be read where it was put.
        raise GatewayConfigError(
            f"cannot read the Prefect Secret block {name!r} ({type(exc).__name__}):"
            " is the Prefect API reachable (PREFECT_API_URL)?"
        ) from exc
    value = block.get()
    if not isinstance(value, str) or not value.strip():
        raise GatewayConfigError(f"the Prefect Secret block {name!r} does not hold a string")
    return value.strip()


_cache: dict[tuple[str, bool, str | None, str | None], ApiKey | None] = {}
_cache_lock = threading.Lock()


def find_api_key() -> ApiKey | None:
    """The Gemini API key and its source, or None; read once per process and setting."""
    name = _block_name()
    use_block = api_available()
    env_key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
    cache_key = (name, use_block, env_key, os.environ.get("PREFECT_API_URL"))
    with _cache_lock:
        if cache_key in _cache:
            return _cache[cache_key]
        found: ApiKey | None = None
        if use_block and (value := _key_from_block(name)) is not None:
            found = ApiKey(value, f"Prefect Secret block {name!r}")
        elif env_key:
            variable = "GEMINI_API_KEY" if os.environ.get("GEMINI_API_KEY") else "GOOGLE_API_KEY"
            found = ApiKey(env_key.strip(), variable)
        if found is not None:
            register_secret(found.value)
        _cache[cache_key] = found
        return found


def _api_key() -> str:
    found = find_api_key()
    if found is None:
        raise GatewayConfigError(
            f"no Gemini API key: store it in the Prefect Secret block {_block_name()!r}"
            " (gemini-ledger secret set api-key) or set GEMINI_API_KEY"
            " (any value works against the emulator)"
        )
    return found.value


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
