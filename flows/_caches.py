"""Everything a process remembers between runs, in one place, with one :func:`reset`.

A run's own state lives in its ``RunContext`` (``flows._channel``); what is kept here is only
what is costly to make again and the same for every run with the same settings:

- ``ledgers``: one ``Ledger`` (engine, connection pool, SQLite checkpoint thread) per URL
  (``flows._ledger.open_ledger``), and ``ledger_url_blocks``: the ledger URL a Secret block
  holds, per block name and Prefect API (``flows._ledger.url_from_block``);
- ``api_keys``: the Gemini API key found for a key setting (a Secret block read costs a
  request), and ``last_key`` for where the last one came from (``flows.gateway``);
- ``clients``: one shared SDK client per API endpoint and key, whose HTTP pool the threads
  of a run share (``flows.gateway.shared_client``);
- ``quota_limits``, ``quota_said``, ``quota_pauses``: the shared quota's limits read from
  the Prefect server, and the pauses a 429 set (``flows.quota``);
- ``schemas``: an output model's JSON schema, sent with every direct call (``flows.direct``).

Tests call :func:`reset` to start from nothing; a long-lived process never needs to (each
cache is keyed by everything that decides its value, or expires on its own).
"""

from __future__ import annotations

import threading
from typing import Any

from ledger import Ledger

__all__ = [
    "api_keys",
    "clients",
    "last_key",
    "ledger_url_blocks",
    "ledgers",
    "lock",
    "quota_limits",
    "quota_pauses",
    "quota_said",
    "reset",
    "schemas",
]

# One lock for every cache: each use is a lookup or an insert, never a long hold.
lock = threading.RLock()

ledgers: dict[str, Ledger] = {}
ledger_url_blocks: dict[tuple[str, str], str] = {}  # (block name, Prefect API URL) -> URL
api_keys: dict[tuple[Any, ...], Any] = {}  # (block, API available, env key, API URL) -> ApiKey
last_key: list[Any] = []  # the ApiKey the last client was built with (at most one item)
clients: dict[tuple[str, str], Any] = {}  # (base URL, key) -> google.genai.Client
quota_limits: dict[str, tuple[float, Any]] = {}  # model -> (read at, ModelLimits)
quota_said: set[str] = set()  # models whose limits were logged once
quota_pauses: dict[str, tuple[float, float]] = {}  # model -> (read at, not before)
schemas: dict[type, dict[str, Any]] = {}  # output model -> its JSON schema


def reset() -> None:
    """Forget everything this process remembered (tests; the ledgers' engines are closed)."""
    with lock:
        for ledger in ledgers.values():
            ledger.dispose()
        caches: tuple[dict[Any, Any], ...] = (
            ledgers,
            ledger_url_blocks,
            api_keys,
            clients,
            quota_limits,
            quota_pauses,
            schemas,
        )
        for cache in caches:
            cache.clear()
        quota_said.clear()
        last_key.clear()
