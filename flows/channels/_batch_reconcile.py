"""Reconcile one batch job's output file into the ledger: the hot loop, with no Prefect in it.

Each line is parsed and validated against the pipeline's output schema
(``ledger.parse_output_line``), then outcomes are applied in chunks with the ledger's bulk
verbs (one transaction per chunk, never one per row). The ledger applies an outcome only to
a row still ``submitted`` under this job's name, so running this twice, or after a crash
half-way, changes nothing that was already applied.

Memory does not grow with the file: lines are streamed, a chunk holds at most
``chunk_size`` outcomes, and when keys must be remembered across chunks (a second pass over
a partly applied output) they are kept in a scratch SQLite file on disk, not in a Python set.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel

from flows.crash import crash_point
from ledger import (
    FailureRow,
    Ledger,
    LineSuccess,
    Outcome,
    Policy,
    ResultRow,
    Status,
    parse_output_line,
    redact,
)

__all__ = [
    "PROCESS_WRITER_BYTES",
    "WRITER_ENV",
    "LineCounts",
    "SeenKeys",
    "Writer",
    "WriterChoice",
    "reconcile_lines",
    "writer_for",
]

DEFAULT_CHUNK = 20_000
# Output files at least this large (about 180,000 lines of a small schema) are applied by a
# writer process on SQLite (unless GEMINI_LEDGER_RECONCILE_WRITER says otherwise): below it,
# starting the process costs more than it saves.
PROCESS_WRITER_BYTES = 64 << 20

Writer = Literal["inline", "thread", "process"]
WriterChoice = Literal["auto", "inline", "thread", "process"]  # the setting: auto picks one
WRITER_ENV = "GEMINI_LEDGER_RECONCILE_WRITER"


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
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
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
    writer: Writer = "thread",
    parse: Callable[[bytes, type[BaseModel]], Outcome] = parse_output_line,
) -> LineCounts:
    """Apply every line of one batch job's output to the rows submitted under ``handle``.

    ``reservation`` is the batch's reservation token (its members tell an unknown key from
    a row already settled). Rows the output never mentions are left ``submitted``: the caller
    fails them as ``missing_from_output`` once the whole file has been read.

    ``writer`` says where chunks are applied while the calling thread parses the next one:
    ``"thread"`` (psycopg waits on the server without the GIL, so the two overlap),
    ``"process"`` (a writer process with its own connection: real parallelism on SQLite,
    whose per-row steps hand the GIL back and forth with a parsing thread; it costs a second
    to start, so it pays only for large files, see :func:`writer_for`) or ``"inline"``. At
    most two chunks exist at once (one being parsed, one being applied).

    ``parse`` reads one line against ``schema``: ``ledger.parse_output_line`` (answers
    validated against the output model) or, for an embedding pipeline,
    ``ledger.embedding_line_parser(dimension)`` (vectors checked by the core).
    """
    counts = LineCounts()
    # A line is applied only while its row is still submitted under this job, so every
    # applied line is the first for its key. When no row of the batch had been settled
    # before this pass (the usual first reconcile), a refused line for a member of the batch
    # can only repeat an earlier line: no key needs remembering. Otherwise (a second pass,
    # e.g. after a crash half-way) the keys met are kept on disk to tell the two apart.
    seen: SeenKeys | None = None
    sink: _ChunkWriter | _ProcessWriter
    if writer == "process":
        sink = _ProcessWriter(
            ledger.engine.url.render_as_string(hide_password=False),
            handle=handle,
            reservation=reservation,
            policy=policy,
            pristine=lambda: _pristine(ledger, handle, reservation),
            scratch_dir=scratch_dir,
        )
    else:
        seen = None if _pristine(ledger, handle, reservation) else SeenKeys(scratch_dir)
        sink = _ChunkWriter(
            ledger,
            seen,
            counts,
            handle=handle,
            reservation=reservation,
            policy=policy,
            threaded=writer == "thread",
        )
    success = LineSuccess
    to_json = schema.__pydantic_serializer__.to_json
    results: list[ResultRow] = []
    failures: list[FailureRow] = []
    in_chunk: set[str] = set()
    codes = counts.failure_codes
    lines_n = unparseable = unkeyed = duplicates = 0
    prompt_t = cand_t = total_t = 0
    try:
        for line in lines:
            lines_n += 1
            out = parse(line, schema)
            key = out.key
            if key is None:
                unparseable += 1
                unkeyed += 1
                continue
            if key in in_chunk:
                duplicates += 1
                continue
            in_chunk.add(key)
            usage = out.usage
            prompt_t += usage[0]
            cand_t += usage[1]
            total_t += usage[2]
            if type(out) is success:
                # A plain tuple in ResultRow's field order: cheaper to build and to pickle.
                results.append(
                    (key, to_json(out.result).decode(), *usage, out.model_version, out.response_id)  # type: ignore[arg-type]
                )
            else:
                failure = out.failure  # type: ignore[union-attr]
                if failure.code == "malformed_output":
                    unparseable += 1
                codes[failure.error_class] += 1
                failures.append(
                    FailureRow(key, failure, *usage, out.model_version, out.response_id)
                )
            if len(in_chunk) >= chunk_size:
                sink.put(results, failures)
                results, failures, in_chunk = [], [], set()
        if in_chunk:
            sink.put(results, failures)
        applied = sink.finish()
    finally:
        sink.stop()
        if seen is not None:
            seen.close()
    if applied is not None:  # counted in the writer process
        counts.succeeded, counts.failed = applied["succeeded"], applied["failed"]
        counts.unknown_keys, counts.already_settled = applied["unknown"], applied["settled"]
        counts.duplicate_keys, counts.chunks = applied["duplicates"], applied["chunks"]
    counts.lines = lines_n
    counts.unparseable = unparseable
    counts.unkeyed = unkeyed
    counts.duplicate_keys += duplicates
    counts.prompt_tokens, counts.candidates_tokens, counts.total_tokens = prompt_t, cand_t, total_t
    return counts


class _ChunkWriter:
    """The writer thread: applies one chunk at a time, in order, and counts what it did."""

    def __init__(
        self,
        ledger: Ledger,
        seen: SeenKeys | None,
        counts: LineCounts,
        *,
        handle: str,
        reservation: str,
        policy: Policy,
        threaded: bool,
    ) -> None:
        self.ledger, self.seen, self.counts = ledger, seen, counts
        self.handle, self.reservation, self.policy = handle, reservation, policy
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[list[ResultRow], list[FailureRow]] | None] = queue.Queue(
            maxsize=1
        )
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="reconcile-writer", daemon=True)
            self._thread.start()

    def put(self, results: list[ResultRow], failures: list[FailureRow]) -> None:
        if self._thread is None:
            self._apply(results, failures)
            return
        if self.error is not None:
            raise self.error
        self._queue.put((results, failures))

    def finish(self) -> None:
        """Wait for every chunk to be applied; re-raise the writer's error, if any."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain: the parser learns of the error at its next put
            try:
                self._apply(*item)
            except BaseException as exc:  # handed to the parsing thread
                self.error = exc

    def _apply(self, results: list[ResultRow], failures: list[FailureRow]) -> None:
        counts, ledger = self.counts, self.ledger
        if self.seen is not None:
            keys = [r[0] for r in results] + [f[0] for f in failures]
            repeated = self.seen.earlier(keys)
            if repeated:
                # A key met in an earlier chunk: its first line was applied (or refused)
                # then, so this later line is ignored, as the ledger would refuse it anyway.
                before = len(results) + len(failures)
                results = [r for r in results if r[0] not in repeated]
                failures = [f for f in failures if f[0] not in repeated]
                counts.duplicate_keys += before - len(results) - len(failures)
        # Key order walks the primary key and the row pages once, whatever order the output
        # file came in (a chunk's keys are distinct, so the order changes no outcome).
        results.sort()
        failures.sort(key=_first)
        ok = ledger.apply_results(results, handle=self.handle) if results else 0
        bad = (
            ledger.apply_failures(failures, handle=self.handle, policy=self.policy)
            if failures
            else 0
        )
        counts.succeeded += ok
        counts.failed += bad
        fresh = len(results) + len(failures)
        if fresh - ok - bad:
            fresh_keys = [r[0] for r in results] + [f[0] for f in failures]
            members = ledger.count_members(self.reservation, fresh_keys)
            counts.unknown_keys += fresh - members
            if self.seen is None:
                counts.duplicate_keys += members - ok - bad
            else:
                counts.already_settled += members - ok - bad
        counts.chunks += 1
        crash_point("batch.reconcile.after_chunk")


def _first(row: FailureRow) -> str:
    return row[0]


def _pristine(ledger: Ledger, handle: str, reservation: str) -> bool:
    """True when every member of the batch is still submitted under its job."""
    record = ledger.batch(reservation)
    if record is None:
        return False
    submitted = sum(
        n for (status, _), n in ledger.handle_counts(handle).items() if status == Status.SUBMITTED
    )
    return submitted == record.rows


def writer_for(ledger: Ledger, size_bytes: int, choice: WriterChoice) -> Writer:
    """Where to apply the chunks of an output file of ``size_bytes`` (see reconcile_lines).

    ``GEMINI_LEDGER_RECONCILE_WRITER`` chooses: ``auto`` (the default: a writer process for
    SQLite files of at least :data:`PROCESS_WRITER_BYTES`, else a thread), ``thread``,
    ``inline`` or ``process``. Measured on 1,000,000 lines (bench/reconcile.py, 2 cores): the
    process reconciled 114,000 lines/s against the thread's 71,000; on small files its start
    costs more than it saves. ``choice``: the run's setting.
    """
    if choice == "auto":
        big = size_bytes >= PROCESS_WRITER_BYTES
        return "process" if big and ledger.engine.dialect.name == "sqlite" else "thread"
    return choice


class _ProcessWriter:
    """Chunks go over a pipe to a writer process that applies them with its own ledger.

    The process is ``python -c`` importing this module (not multiprocessing's spawn, which
    re-imports the caller's main module: a flow run from an unguarded script would run
    twice). The pipe's small buffer is the back-pressure: a chunk is sent only once the
    writer has taken the previous one, so at most two chunks exist at a time. If this
    process is killed, the writer reads end-of-file and exits; what it applied stays applied.
    """

    def __init__(
        self,
        url: str,
        *,
        handle: str,
        reservation: str,
        policy: Policy,
        pristine: Callable[[], bool],
        scratch_dir: str | None,
    ) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from flows.channels._batch_reconcile import _writer_main; _writer_main()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._send = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        try:
            # Checked now, while the writer's interpreter starts (its imports take about half
            # a CPU second, which nothing else here can hide: the writer is the slower side).
            start = (url, handle, reservation, policy, pristine(), scratch_dir)
            self._put(("start", start))
        except BaseException:
            self.stop()
            raise

    def _put(self, item: Any) -> None:
        try:
            self._send.send(item)
        except OSError:  # BrokenPipeError included
            self._raise_from_writer()

    def put(self, results: list[ResultRow], failures: list[FailureRow]) -> None:
        self._put((results, failures))
        crash_point("batch.reconcile.after_chunk")

    def finish(self) -> dict[str, int]:
        self._put(None)
        try:
            kind, value = self._recv.recv()
        except (EOFError, OSError):
            self._raise_from_writer()
        if kind != "ok":
            raise RuntimeError(f"reconcile writer process failed: {value}")
        self._proc.wait(timeout=60)
        return dict(value)

    def _raise_from_writer(self) -> NoReturn:
        with contextlib.suppress(Exception):
            if self._recv.poll(5):
                kind, value = self._recv.recv()
                if kind == "error":
                    raise RuntimeError(f"reconcile writer process failed: {value}")
        raise RuntimeError(f"reconcile writer process died (exit code {self._proc.poll()})")

    def stop(self) -> None:
        for conn in (self._send, self._recv):
            with contextlib.suppress(OSError):
                conn.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _writer_main() -> None:
    """The writer process: apply each chunk received on stdin; report counts on stdout."""
    # The channel back is a copy of stdout; stdout itself goes to stderr, so a stray print
    # or log line can never corrupt it.
    back = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    inbox = Connection(os.dup(0), writable=False)
    seen: SeenKeys | None = None
    try:
        _, (url, handle, reservation, policy, pristine, scratch_dir) = inbox.recv()
        seen = None if pristine else SeenKeys(scratch_dir)
        counts = LineCounts()
        ledger = Ledger(url, migrate=False)
        # What the imports and the set-up made lives as long as the process: out of the
        # cyclic collector's way, its full passes walk only the chunks (which hold no cycles).
        gc.freeze()
        writer = _ChunkWriter(
            ledger,
            seen,
            counts,
            handle=handle,
            reservation=reservation,
            policy=policy,
            threaded=False,
        )
        while (item := inbox.recv()) is not None:
            writer._apply(*item)
        ledger.dispose()
        back.send(
            (
                "ok",
                {
                    "succeeded": counts.succeeded,
                    "failed": counts.failed,
                    "unknown": counts.unknown_keys,
                    "settled": counts.already_settled,
                    "duplicates": counts.duplicate_keys,
                    "chunks": counts.chunks,
                },
            )
        )
    except EOFError:
        pass  # the parsing process is gone: stop; what was applied stays applied
    except BaseException as exc:
        with contextlib.suppress(Exception):
            back.send(("error", redact(f"{type(exc).__name__}: {exc}")))
    finally:
        if seen is not None:
            seen.close()
