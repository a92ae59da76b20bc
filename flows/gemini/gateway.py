"""The one place that builds google-genai clients.

The SDK's own retries are turned off everywhere (the interactions client retries five times
by default): every attempt must be counted in the ledger, and the classifier decides what is
retried. ``GOOGLE_GEMINI_BASE_URL`` points the SDK at the local emulator.

The API key comes from a Prefect ``Secret`` block (named by ``GEMINI_API_KEY_BLOCK``, default
``gemini-api-key``) when a Prefect API is configured and the block exists, else from
``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``. A deployed run thus gets the key without it ever being
written into a deployment, a job variable or a flow run's parameters. Where the key was found
(:func:`key_source`) goes into every fault about it: the fix of a refused key kept in the block
is ``gemini-ledger secret set api-key``, never a variable the block takes precedence over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from google import genai
from google.genai import types

from flows import _caches
from flows._prefect_api import api_available
from flows.settings import Settings
from ledger import ConfigurationError, KeySource, register_secret

__all__ = [
    "API_KEY_BLOCK_ENV",
    "DEFAULT_API_KEY_BLOCK",
    "KEY_HEADER",
    "ApiKey",
    "GatewayConfigError",
    "find_api_key",
    "gemini_client",
    "key_source",
    "keyed",
    "shared_client",
]

# Carries the ledger's idempotency key on every submission, so the emulator (and a
# proxy in front of the real API, if you run one) can count submissions per key.
KEY_HEADER = "x-gemini-ledger-key"


API_KEY_BLOCK_ENV = "GEMINI_API_KEY_BLOCK"
DEFAULT_API_KEY_BLOCK = "gemini-api-key"
_ENVIRONMENT = "the worker's environment"


class GatewayConfigError(ConfigurationError, RuntimeError):
    """The Gemini client cannot be built: no API key, or its Secret block cannot be read.

    ``cause`` says where the key was looked for, ``fix`` what to do there; ``kind`` is the
    ``ledger.SetupKind`` value the halted tick reports.
    """

    def __init__(self, cause: str, fix: str, kind: str = "no_key") -> None:
        self.cause, self.fix, self.kind = cause, fix, kind
        super().__init__(f"{cause}. Fix: {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cause, self.fix, self.kind))


@dataclass(frozen=True)
class ApiKey:
    """The key and where it was found (a Secret block, or a variable of the environment)."""

    value: str
    key: KeySource

    @property
    def source(self) -> str:
        return self.key.where

    def __repr__(self) -> str:  # never print the key itself
        return f"ApiKey(source={self.source!r})"


def _named_block(settings: Settings) -> str | None:
    """The block ``GEMINI_API_KEY_BLOCK`` names, when it is set."""
    return settings.api_key_block


def _block_name(settings: Settings) -> str:
    return _named_block(settings) or DEFAULT_API_KEY_BLOCK


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "")


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
            f"cannot read the Secret block {name!r}: the Prefect API at {_api_url() or '?'}"
            f" did not answer ({type(exc).__name__})",
            "check PREFECT_API_URL and that the Prefect server is up (prefect server start)",
            "prefect_unreachable",
        ) from exc
    value = block.get()
    if not isinstance(value, str) or not value.strip():
        raise GatewayConfigError(
            f"the Secret block {name!r} does not hold a string",
            f"store the key in it: {_store_command(name)}",
        )
    return value.strip()


def _store_command(name: str) -> str:
    block = "" if name == DEFAULT_API_KEY_BLOCK else f" --block {name}"
    return f"gemini-ledger secret set api-key{block}"


def _secret_blocks() -> list[str] | None:
    """The names of the Secret blocks on the Prefect API, or None when they cannot be read."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            found = client.read_block_documents_by_type("secret", include_secrets=False)
    except Exception:
        return None
    return sorted(str(b.name) for b in found if b.name and not b.is_anonymous)


def _block_key(name: str) -> KeySource:
    return KeySource(
        where=f"Secret block {name!r}",
        replace=f"{_store_command(name)} (a valid key of this project; the block takes"
        " precedence over GEMINI_API_KEY)",
    )


def _environment_key(variable: str, missing_block: str | None) -> KeySource:
    where = f"{variable} ({_ENVIRONMENT})"
    replace = f"set {variable} in {_ENVIRONMENT} to a valid key of this project"
    if missing_block is not None:
        # The block the user named is not there, so the environment's key was used instead.
        where = (
            f"{variable} ({_ENVIRONMENT}; {API_KEY_BLOCK_ENV} names the Secret block"
            f" {missing_block!r}, which does not exist)"
        )
        replace += f", or store it in that block: {_store_command(missing_block)}"
    return KeySource(where, replace)


def _env_key(settings: Settings) -> str | None:
    secret = settings.api_key
    return secret.get_secret_value().strip() or None if secret is not None else None


def find_api_key(settings: Settings) -> ApiKey | None:
    """The Gemini API key and its source, or None; read once per process and setting
    (``flows._caches.api_keys``)."""
    env_key = _env_key(settings)
    name, use_block = _block_name(settings), api_available()
    cache_key = (name, use_block, env_key, _api_url() if use_block else None)
    with _caches.lock:
        if cache_key in _caches.api_keys:
            found: ApiKey | None = _caches.api_keys[cache_key]
        else:
            found = None
            if use_block and (value := _key_from_block(name)) is not None:
                found = ApiKey(value, _block_key(name))
            elif env_key:
                missing = (use_block and _named_block(settings)) or None
                found = ApiKey(env_key, _environment_key(settings.api_key_variable, missing))
            if found is not None:
                register_secret(found.value)
            _caches.api_keys[cache_key] = found
        if found is not None:
            _caches.last_key[:] = [found]
        return found


def key_source() -> KeySource | None:
    """Where the key of this process's last client was found (None: none found yet).

    Read from what :func:`find_api_key` last found (the run's client is built before its
    first call): never a request.
    """
    with _caches.lock:
        found = _caches.last_key[0] if _caches.last_key else None
    return found.key if found is not None else None


def _emulator_note(settings: Settings) -> str:
    """ " (any value works against the emulator ...)" when the base URL is a local one."""
    base = (settings.gemini_base_url or "").strip()
    host = urlsplit(base).hostname if base else None
    if host in ("127.0.0.1", "localhost", "::1"):
        return f" (any value works against the local emulator at {base})"
    return ""


def _no_key(settings: Settings) -> GatewayConfigError:
    """No key anywhere: where it was looked for, and the fix for where it belongs."""
    from flows._prefect_api import temporary_api_url

    name, named = _block_name(settings), _named_block(settings)
    variables = "neither GEMINI_API_KEY nor GOOGLE_API_KEY is set in " + _ENVIRONMENT
    set_variable = f"set GEMINI_API_KEY in {_ENVIRONMENT}{_emulator_note(settings)}"
    if not api_available():
        return GatewayConfigError(
            f"no Gemini API key: {variables}, and no Prefect API is configured to read the"
            f" Secret block {name!r} from",
            f"{set_variable}, or set PREFECT_API_URL and run {_store_command(name)}",
        )
    url = _api_url()
    if url and url == temporary_api_url():
        return GatewayConfigError(
            f"no Gemini API key: {variables}, and this run's Prefect server is a temporary"
            " one, which holds no Secret block",
            f"{set_variable}, or set PREFECT_API_URL to the server that holds the Secret"
            f" block {name!r}",
        )
    if named is not None and named != DEFAULT_API_KEY_BLOCK:
        return _missing_named_block(named, url)
    return GatewayConfigError(
        f"no Gemini API key: no Secret block {name!r} on {url or 'the Prefect API'}, and"
        f" {variables}",
        f"{_store_command(name)}, or {set_variable}",
    )


def _missing_named_block(name: str, url: str) -> GatewayConfigError:
    """GEMINI_API_KEY_BLOCK names a block that is not there: say so, and which ones are."""
    blocks = _secret_blocks()
    if blocks is None:
        there = "its Secret blocks could not be listed"
    elif blocks:
        shown = ", ".join(repr(b) for b in blocks[:6]) + (" ..." if len(blocks) > 6 else "")
        there = f"the Secret blocks there: {shown}"
    else:
        there = "there is no Secret block there"
    if blocks and len(blocks) == 1:
        fix = f"set {API_KEY_BLOCK_ENV}={blocks[0]}"
    elif blocks:
        fix = f"set {API_KEY_BLOCK_ENV} to one of them"
    else:
        fix = f"correct {API_KEY_BLOCK_ENV}"
    return GatewayConfigError(
        f"{API_KEY_BLOCK_ENV} names the Secret block {name!r}, which does not exist on"
        f" {url or 'the Prefect API'} ({there})",
        f"{fix}, or store the key in {name!r}: {_store_command(name)}",
    )


def _api_key(settings: Settings) -> str:
    found = find_api_key(settings)
    if found is None:
        raise _no_key(settings)
    return found.value


def gemini_client(settings: Settings, *, timeout_s: float = 120.0) -> genai.Client:
    """A new client with retries off and a request timeout, at the settings' API
    (``GOOGLE_GEMINI_BASE_URL``) with their key. The caller owns it (and may close it)."""
    return _new_client(settings, _api_key(settings), timeout_s)


def _new_client(settings: Settings, key: str, timeout_s: float) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=settings.gemini_base_url or None,
            retry_options=types.HttpRetryOptions(attempts=1),
            timeout=int(timeout_s * 1000),
        ),
    )


def shared_client(settings: Settings) -> genai.Client:
    """The process's one client for the settings' API and key (``flows._caches.clients``):
    its HTTP pool is shared by a run's threads. Never close it."""
    key = _api_key(settings)
    ident = (settings.gemini_base_url or "", key)
    with _caches.lock:
        client = _caches.clients.get(ident)
        if client is None:
            client = _caches.clients[ident] = _new_client(settings, key, 120.0)
        return client


def keyed(key: str, *, timeout_s: float = 120.0) -> types.HttpOptions:
    """Per-request HTTP options carrying the idempotency key."""
    return types.HttpOptions(
        headers={KEY_HEADER: key},
        retry_options=types.HttpRetryOptions(attempts=1),
        timeout=int(timeout_s * 1000),
    )
