"""The batch channel's files in the Files API: recorded when made, deleted once used.

The Files API holds 20 GB per project and keeps a file 48 h; it deletes nothing a batch job
used (the Gemini Files API docs: "store up to 20 GB of files per project, with a per-file
maximum size of 2 GB. Files are stored for 48 hours"). An input file is up to 2 GB, so a few
big nights would fill the project and every later upload would be refused
(429 RESOURCE_EXHAUSTED, quota ``FileStorageBytesPerProject``). So every input file is
recorded in the ledger (``batch_files``) as soon as it is uploaded, every responses file as
soon as its job is reconciled, and :func:`clean_files`, the last part of a tick's collect
step, deletes those whose use is over:

- an input file once its batch job is no longer reserving or submitted (terminal and
  reconciled, released before creation, or given up as lost);
- a responses file once reconciled (its outcomes are in the ledger).

A delete the API refuses is logged and counted on the file (``delete_failures``), never on a
row, and tried again on a later tick; a 404 means the file is already gone; a file recorded
longer ago than the API keeps files is marked gone without a call. Cleaning never halts a
tick and never fails one: the night goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.channels._batch_io import output_file_of
from flows.gemini._errors import is_not_found
from flows.pipeline import Pipeline
from ledger import BatchRecord, FileRole, Ledger, redact

__all__ = ["FILES_KEPT_S", "FilesCleaned", "clean_files", "note_input", "note_responses"]

# How long the Files API keeps a file (48 h): after that it is gone whatever we do.
FILES_KEPT_S = 48 * 3600.0
_DELETES_PER_TICK = 200
# Consecutive refused deletes after which a pass stops: the API (or the key) is refusing
# them all, and the next tick tries again.
_STOP_AFTER_FAILURES = 3

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(slots=True)
class FilesCleaned:
    """What one cleaning pass did."""

    deleted: int = 0  # files deleted (or found already gone) this pass
    deleted_bytes: int = 0
    delete_failures: int = 0  # deletes refused this pass (retried on a later tick)
    not_deleted: int = 0  # files still to delete after the pass
    not_deleted_bytes: int = 0


def note_input(
    ledger: Ledger, p: Pipeline[Any], reservation: str, file_name: str, size_bytes: int
) -> None:
    """Record an uploaded input file, to be deleted once its batch job is over."""
    ledger.note_file(
        file_name,
        reservation=reservation,
        pipeline=p.name,
        role=FileRole.INPUT,
        size_bytes=size_bytes,
    )


def note_responses(ledger: Ledger, p: Pipeline[Any], rec: BatchRecord, job: Any) -> None:
    """Record the responses file of a job just reconciled (if it has one), to be deleted."""
    name = output_file_of(job)
    if name is not None:
        ledger.note_file(name, reservation=rec.reservation, pipeline=p.name, role=FileRole.OUTPUT)


def clean_files(
    ledger: Ledger, p: Pipeline[Any], log: Log, *, client_of: Callable[[], Any]
) -> FilesCleaned:
    """Delete the pipeline's files whose use is over (``files.delete``); never raises for
    what the API answers: a refused delete is logged and left for a later tick.
    ``client_of``: the run's client (``RunContext.client``), asked for only when a file
    needs a call."""
    out = FilesCleaned()
    client: Any | None = None
    due = ledger.files_to_delete(pipeline=p.name, limit=_DELETES_PER_TICK)
    failures_in_a_row = 0
    for f in due:
        if ledger.clock() - f.recorded_at > FILES_KEPT_S:
            # The API has deleted it by now: no call needed (nor one that could fail).
            if ledger.file_deleted(f.name, note="expired: the Files API keeps files 48 h"):
                out.deleted += 1
            continue
        if client is None:
            try:
                client = client_of()
            except Exception as exc:  # no client, no delete: the files wait for a later tick
                log.warning("%s: no client to delete files with: %s", p.name, redact(str(exc)))
                break
        try:
            client.files.delete(name=f.name)
        except Exception as exc:
            if is_not_found(exc):  # deleted already (a crash after the call), or expired
                if ledger.file_deleted(f.name, note="already gone (404)"):
                    out.deleted += 1
                    out.deleted_bytes += f.size_bytes
                continue
            error = redact(f"{type(exc).__name__}: {exc}")[:500]
            ledger.file_delete_failed(f.name, error=error)
            out.delete_failures += 1
            failures_in_a_row += 1
            log.warning(
                "%s: cannot delete %s file %s (failed %d times; retried next tick): %s",
                p.name,
                f.role,
                f.name,
                f.delete_failures + 1,
                error,
            )
            if failures_in_a_row >= _STOP_AFTER_FAILURES:
                break
            continue
        failures_in_a_row = 0
        if ledger.file_deleted(f.name):
            out.deleted += 1
            out.deleted_bytes += f.size_bytes
    out.not_deleted, out.not_deleted_bytes = ledger.files_not_deleted(pipeline=p.name)
    if out.deleted:
        log.info(
            "%s: deleted %d batch files (%d bytes) from the Files API; %d left to delete",
            p.name,
            out.deleted,
            out.deleted_bytes,
            out.not_deleted,
        )
    return out
