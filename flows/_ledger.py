"""One Ledger per process and database URL, shared by the flows and tasks."""

from __future__ import annotations

import threading

from ledger import Ledger, database_url

__all__ = ["open_ledger"]

_ledgers: dict[str, Ledger] = {}
_lock = threading.Lock()


def open_ledger(url: str | None = None) -> Ledger:
    """The ledger at ``url`` (default: LEDGER_DATABASE_URL, else var/ledger.db)."""
    resolved = database_url(url)
    with _lock:
        if resolved not in _ledgers:
            _ledgers[resolved] = Ledger(resolved)
        return _ledgers[resolved]
