"""One Ledger per process and database URL, shared by the flows and tasks; where the URL is.

The ledger's URL is ``LEDGER_DATABASE_URL`` (default ``var/ledger.db``), or, when
``LEDGER_DATABASE_URL_BLOCK`` names one, the value of that Prefect ``Secret`` block: a
PostgreSQL URL carries its credentials, which then live in the block, not in a deployment's
job variables or a worker's shell (``gemini-ledger secret set ledger-url``). The block is read
by ``flows.settings.load_settings`` where a command or run starts (once per process, block
and Prefect API), and its value becomes ``settings.database_url``: everything below is given
that URL. The value is registered as a secret, so it is never logged.
"""

from __future__ import annotations

from typing import Any

from flows import _caches
from ledger import Ledger, LedgerConfigError, database_url, register_secret

__all__ = [
    "DATABASE_URL_BLOCK_ENV",
    "DEFAULT_DATABASE_URL_BLOCK",
    "open_ledger",
    "url_from_block",
]

DATABASE_URL_BLOCK_ENV = "LEDGER_DATABASE_URL_BLOCK"
#: The block ``gemini-ledger secret set ledger-url`` writes unless told another name.
DEFAULT_DATABASE_URL_BLOCK = "gemini-ledger-database-url"


def open_ledger(url: str) -> Ledger:
    """The ledger at ``url`` (a run's ``settings.database_url``), one per process and URL
    (kept in ``flows._caches``)."""
    resolved = database_url(url)
    with _caches.lock:
        if resolved not in _caches.ledgers:
            _caches.ledgers[resolved] = Ledger(resolved)
        return _caches.ledgers[resolved]


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "")


def url_from_block(name: str) -> str:
    """The ledger URL kept in the Secret block ``name``; one clear line when it cannot be read.

    Called by ``flows.settings.load_settings`` only, where a command or run starts; kept in
    ``flows._caches`` per block and Prefect API, so a process asks the server once."""
    api = _api_url()
    with _caches.lock:
        if (name, api) in _caches.ledger_url_blocks:
            return _caches.ledger_url_blocks[(name, api)]
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
    with _caches.lock:
        _caches.ledger_url_blocks[(name, api)] = value
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
