"""One Ledger per process and database URL, shared by the flows and tasks; where the URL is.

The ledger's URL is ``LEDGER_DATABASE_URL`` (default ``var/ledger.db``), or, when
``LEDGER_DATABASE_URL_BLOCK`` names one, the value of that Prefect ``Secret`` block: a
PostgreSQL URL carries its credentials, which then live in the block, not in a deployment's
job variables or a worker's shell (``gemini-ledger secret set ledger-url``). The block is read
once per process and name; its value is registered as a secret, so it is never logged.
"""

from __future__ import annotations

import threading
from typing import Any

from ledger import Ledger, LedgerConfigError, database_url, register_secret

__all__ = [
    "DATABASE_URL_BLOCK_ENV",
    "DEFAULT_DATABASE_URL_BLOCK",
    "ledger_url",
    "open_ledger",
    "url_from_block",
]

DATABASE_URL_BLOCK_ENV = "LEDGER_DATABASE_URL_BLOCK"
#: The block ``gemini-ledger secret set ledger-url`` writes unless told another name.
DEFAULT_DATABASE_URL_BLOCK = "gemini-ledger-database-url"

_ledgers: dict[str, Ledger] = {}
_lock = threading.Lock()
_from_blocks: dict[tuple[str, str], str] = {}


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "")


def url_from_block(name: str) -> str:
    """The ledger URL kept in the Secret block ``name``; one clear line when it cannot be read."""
    api = _api_url()
    with _lock:
        if (name, api) in _from_blocks:
            return _from_blocks[(name, api)]
    if not api:
        raise LedgerConfigError(
            f"{DATABASE_URL_BLOCK_ENV} names the Secret block {name!r}, but no Prefect API is"
            " configured to read it from: set PREFECT_API_URL"
        )
    from prefect.blocks.system import Secret

    store = "gemini-ledger secret set ledger-url" + (
        "" if name == DEFAULT_DATABASE_URL_BLOCK else f" --block {name}"
    )
    try:
        # _sync: a plain call even when an event loop runs in this thread (async flows).
        block: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:  # Prefect's "Unable to find block document named ..."
        raise LedgerConfigError(
            f"{DATABASE_URL_BLOCK_ENV} names the Secret block {name!r}, which does not exist"
            f" on {api}: store the ledger's URL in it ({store})"
        ) from None
    except Exception as exc:
        raise LedgerConfigError(
            f"cannot read the Secret block {name!r} holding the ledger's URL: the Prefect API"
            f" at {api} did not answer ({type(exc).__name__})"
        ) from exc
    value = block.get()
    if not isinstance(value, str) or not value.strip():
        raise LedgerConfigError(f"the Secret block {name!r} does not hold a URL: {store}")
    value = value.strip()
    _register(value)
    with _lock:
        _from_blocks[(name, api)] = value
    return value


def _register(url: str) -> None:
    """The URL and its password are secrets from here on (redact() hides them)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    register_secret(url)
    try:
        password = make_url(url).password
    except ArgumentError:
        return  # database_url() says what is wrong with it
    if password:
        register_secret(str(password))


def ledger_url(url: str | None = None) -> str:
    """``url``, else the ledger URL the settings give (a Secret block's, or the variable's)."""
    if url:
        return database_url(url)
    from flows.settings import load_settings

    return database_url(load_settings().database_url)


def open_ledger(url: str | None = None) -> Ledger:
    """The ledger at ``url`` (default: :func:`ledger_url`)."""
    resolved = ledger_url(url)
    with _lock:
        if resolved not in _ledgers:
            _ledgers[resolved] = Ledger(resolved)
        return _ledgers[resolved]
