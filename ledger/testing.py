"""What the tests and benches may reach inside ``ledger`` beyond its public names.

``ledger``'s public surface is its ``__all__``. The tests also check parts a user never
calls on their own (the transition table, the schema's revisions, the SQLite checkpoint
thread, the output line's models, the classifier's message bound) and turn a knob a real
wait would take too long to reach; this module names those parts, so that a test or bench
never imports a private ``ledger._x`` module or a ``_name`` (``tests/test_private_imports.py``
holds it). Nothing in ``ledger`` imports this module; these names may change with the code
they reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ledger import _db
from ledger._db import _Checkpointer as Checkpointer
from ledger._db import atomic, checkpointer, current_revision, head_revision
from ledger._failure import MAX_MESSAGE_LEN, ClassifiedError
from ledger._lines import (
    ErrorStatus,
    GenerateContentResponseLine,
    OutputLine,
    parse_output_record,
)
from ledger._transitions import CACHE_MOVES, TRANSITIONS, transition
from ledger._wire import quota_ids

__all__ = [
    "CACHE_MOVES",
    "MAX_MESSAGE_LEN",
    "TRANSITIONS",
    "Checkpointer",
    "ClassifiedError",
    "ErrorStatus",
    "GenerateContentResponseLine",
    "OutputLine",
    "atomic",
    "checkpointer",
    "current_revision",
    "head_revision",
    "parse_output_record",
    "quota_ids",
    "sqlite_busy_timeout",
    "transition",
]


@contextmanager
def sqlite_busy_timeout(seconds: float) -> Iterator[None]:
    """Within the block, new SQLite engines wait ``seconds`` for a held lock (60 s otherwise)
    before the driver answers "database is locked"."""
    kept = _db._SQLITE_BUSY_TIMEOUT_S
    _db._SQLITE_BUSY_TIMEOUT_S = seconds
    try:
        yield
    finally:
        _db._SQLITE_BUSY_TIMEOUT_S = kept
