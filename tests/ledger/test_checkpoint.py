"""The SQLite ledger's write-ahead log is copied back by the helper thread, not the writer."""

from __future__ import annotations

import shutil
import sqlite3

from ledger import Ledger, NewJob
from ledger.testing import Checkpointer, checkpointer


def test_bulk_writes_are_checkpointed_into_the_database_file(sqlite_url, tmp_path) -> None:
    """After a bulk enroll settles, the database file alone (without its log) holds every row."""
    ledger = Ledger(sqlite_url, chunk_size=5_000)
    items = [NewJob(f"k{i:06d}", {"text": "x" * 200, "n": i}) for i in range(20_000)]
    assert ledger.enroll(items, pipeline="p", channel="batch", model="m") == 20_000
    helper = checkpointer(ledger.engine)
    assert helper is not None and helper.settle(timeout=60)
    # ~8 MB of log: under SQLite's own (raised) threshold, so only the helper copied it back.
    path = ledger.engine.url.database
    assert path is not None
    alone = tmp_path / "alone.db"
    shutil.copyfile(path, alone)
    with sqlite3.connect(alone) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (20_000,)
    ledger.dispose()


def test_postgres_ledgers_have_no_checkpointer(postgres_url) -> None:
    """Only SQLite engines get the helper thread."""
    ledger = Ledger(postgres_url)
    assert checkpointer(ledger.engine) is None
    ledger.dispose()


def test_a_removed_ledger_file_is_not_recreated_by_the_helper(tmp_path) -> None:
    """A poke for a ledger file that is gone settles without creating an empty database."""
    gone = tmp_path / "gone.db"
    helper = Checkpointer(str(gone))
    helper.poke()
    assert helper.settle(timeout=60)
    assert not gone.exists()
