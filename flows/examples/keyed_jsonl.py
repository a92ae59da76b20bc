"""A day's results file for the examples: one JSON line per item, upserted by the item's id.

A repeated delivery of the same result changes nothing, a new key version replaces the
item's line. The file is rewritten whole under an exclusive lock (a temporary file, fsynced,
then ``os.replace``), so concurrent deliveries never lose a line and a crash never leaves
half a file. Used by the ``receipts`` and ``review-embeddings`` examples.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

__all__ = ["read_rows", "upsert_row"]


def read_rows(path: Path, by: str) -> dict[str, dict[str, Any]]:
    """The file's lines by their ``by`` field (empty when the file is not there yet)."""
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            row = orjson.loads(line)
            out[str(row[by])] = row
    return out


def upsert_row(path: Path, by: str, row: dict[str, Any]) -> None:
    """Write ``row`` into the file in place of the line with the same ``by`` field."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_rows(path, by)
        rows[str(row[by])] = row
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                for name in sorted(rows):
                    fh.write(orjson.dumps(rows[name]) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
