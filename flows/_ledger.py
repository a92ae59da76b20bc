"""One Ledger per process and database URL, shared by the flows and tasks."""

from __future__ import annotations

from flows import _caches
from ledger import Ledger, database_url

__all__ = ["open_ledger"]


def open_ledger(url: str) -> Ledger:
    """The ledger at ``url`` (a run's ``settings.database_url``), one per process and URL
    (kept in ``flows._caches``)."""
    resolved = database_url(url)
    with _caches.lock:
        if resolved not in _caches.ledgers:
            _caches.ledgers[resolved] = Ledger(resolved)
        return _caches.ledgers[resolved]
