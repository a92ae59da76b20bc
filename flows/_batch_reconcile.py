"""Reconcile one batch job's output file into the ledger: the hot loop, with no Prefect in it.

Each line is parsed and validated against the pipeline's output schema
(``ledger.parse_output_line``), then outcomes are applied in chunks with the ledger's bulk
verbs (one transaction per chunk, never one per row). The ledger applies an outcome only to
a row still ``submitted`` under this job's name, so running this twice, or after a crash
half-way, changes nothing that was already applied.

Memory does not grow with the file: lines are streamed, a chunk holds at most
``chunk_size`` outcomes, and the keys already seen (to count duplicate lines) are kept in a
scratch SQLite file on disk, not in a Python set.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flows.crash import crash_point
from ledger import FailureRow, Ledger, LineSuccess, Policy, ResultRow, parse_output_line

__all__ = ["LineCounts", "SeenKeys", "reconcile_lines"]

DEFAULT_CHUNK = 20_000


@dataclass
class LineCounts:
    """What one pass over an output file found and did."""

    lines: int = 0
    succeeded: int = 0  # results applied (rows now done)
    failed: int = 0  # failures applied (rows now retryable or parked)
    unknown_keys: int = 0  # lines for rows that were never in this batch
    duplicate_keys: int = 0  # second and later lines for one key (ignored)
    already_settled: int = 0  # lines for rows of this batch no longer submitted under it
    unparseable: int = 0  # lines that are not a readable output line
    unkeyed: int = 0  # unparseable lines whose key could not be recovered at all
    chunks: int = 0
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    failure_codes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "unknown_keys": self.unknown_keys,
            "duplicate_keys": self.duplicate_keys,
            "already_settled": self.already_settled,
            "unparseable": self.unparseable,
            "unkeyed": self.unkeyed,
            "chunks": self.chunks,
            "tokens": {
                "prompt": self.prompt_tokens,
                "candidates": self.candidates_tokens,
                "total": self.total_tokens,
            },
            "failure_codes": dict(sorted(self.failure_codes.items())),
        }


class SeenKeys:
    """Keys met so far in one output file, on disk (bounded memory whatever the file size)."""

    def __init__(self, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="gl-seen-", suffix=".db", dir=directory)
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4096;"
            " PRAGMA temp_store=FILE;"
            " CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID;"
            " CREATE TABLE chunk (key TEXT PRIMARY KEY) WITHOUT ROWID;"
        )

    def earlier(self, keys: list[str]) -> set[str]:
        """Record ``keys`` (distinct) and return those already recorded by an earlier call."""
        db = self._db
        db.execute("BEGIN")
        db.execute("DELETE FROM chunk")
        db.executemany("INSERT INTO chunk (key) VALUES (?)", [(k,) for k in keys])
        repeated = {
            row[0]
            for row in db.execute("SELECT key FROM chunk WHERE key IN (SELECT key FROM seen)")
        }
        db.execute("INSERT OR IGNORE INTO seen (key) SELECT key FROM chunk")
        db.execute("COMMIT")
        return repeated

    def close(self) -> None:
        self._db.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)


def reconcile_lines(
    ledger: Ledger,
    lines: Iterable[bytes],
    *,
    handle: str,
    reservation: str,
    schema: type[BaseModel],
    policy: Policy,
    chunk_size: int = DEFAULT_CHUNK,
    scratch_dir: str | None = None,
) -> LineCounts:
    """Apply every line of one batch job's output to the rows submitted under ``handle``.

    ``reservation`` is the batch's reservation token (its members tell an unknown key from
    a row already settled). Rows the output never mentions are left ``submitted``: the caller
    fails them as ``missing_from_output`` once the whole file has been read.
    """
    counts = LineCounts()
    seen = SeenKeys(scratch_dir)
    parse = parse_output_line
    success = LineSuccess
    to_json = schema.__pydantic_serializer__.to_json
    results: list[ResultRow] = []
    failures: list[FailureRow] = []
    in_chunk: set[str] = set()
    codes = counts.failure_codes

    def flush() -> None:
        nonlocal results, failures
        keys = list(in_chunk)
        repeated = seen.earlier(keys)
        if repeated:
            # A key met in an earlier chunk: its first line was applied (or refused) then,
            # so this later line is ignored, as the ledger would refuse it anyway.
            counts.duplicate_keys += sum(1 for r in results if r[0] in repeated) + sum(
                1 for f in failures if f[0] in repeated
            )
            results = [r for r in results if r[0] not in repeated]
            failures = [f for f in failures if f[0] not in repeated]
        applied_ok = ledger.apply_results(results, handle=handle) if results else 0
        applied_bad = (
            ledger.apply_failures(failures, handle=handle, policy=policy) if failures else 0
        )
        counts.succeeded += applied_ok
        counts.failed += applied_bad
        fresh = len(results) + len(failures)
        refused = fresh - applied_ok - applied_bad
        if refused:
            fresh_keys = [r[0] for r in results] + [f[0] for f in failures]
            members = ledger.count_members(reservation, fresh_keys)
            counts.unknown_keys += fresh - members
            counts.already_settled += members - applied_ok - applied_bad
        counts.chunks += 1
        results = []
        failures = []
        in_chunk.clear()
        crash_point("batch.reconcile.after_chunk")

    try:
        for line in lines:
            counts.lines += 1
            out = parse(line, schema)
            key = out.key
            if key is None:
                counts.unparseable += 1
                counts.unkeyed += 1
                continue
            if key in in_chunk:
                counts.duplicate_keys += 1
                continue
            in_chunk.add(key)
            usage = out.usage
            counts.prompt_tokens += usage[0]
            counts.candidates_tokens += usage[1]
            counts.total_tokens += usage[2]
            if type(out) is success:
                results.append(
                    ResultRow(key, to_json(out.result).decode(), usage[0], usage[1], usage[2])
                )
            else:
                failure = out.failure  # type: ignore[union-attr]
                if failure.code == "malformed_output":
                    counts.unparseable += 1
                codes[failure.error_class] += 1
                failures.append(FailureRow(key, failure, usage[0], usage[1], usage[2]))
            if len(in_chunk) >= chunk_size:
                flush()
        if in_chunk:
            flush()
    finally:
        seen.close()
    return counts
