"""The batch channel: :class:`BatchChannel`, its steps of a tick (run by ``flows.tick``).
:meth:`BatchChannel.settle` settles one submitted job; the ``reconcile`` flow
(``flows.reconcile``, what the webhook receiver starts) runs it for its one job.

A tick's steps on this channel:

1. recover: a batch reservation never bound to a job (the tick that made it died between
   ``batches.create`` and binding) is looked up by its display name, which is the
   reservation token, in ``batches.list``; bound if found, re-sent only if not;
2. collect: every submitted batch job that has finished (``batches.get``) is reconciled
   (``BatchChannel.settle``, one job at a time):
   its output (the responses file, streamed into the ledger row by row in chunks, or the
   inlined responses) is applied whatever the job's state, so a FAILED or CANCELLED job's
   answered rows keep their answers; then rows a SUCCEEDED job's output never mentions fail
   as ``missing_from_output``, and the unanswered rows of a FAILED, CANCELLED or EXPIRED job
   with the classifier's class, so they come back (their attempt was counted). A 404 on the
   job, or on its responses file, is given up only once it repeats over a bound
   (``flows.channels._batch_lost``);
   last, the files whose use is over are deleted from the Files API (``_batch_files``:
   input files of terminal jobs, responses files once reconciled; a refused delete is
   retried on a later tick and never counts as a row's attempt);
3. deliver: rows ``done`` but not ``consumed`` get ``on_result`` and are then consumed;
   a side effect that raises leaves its row done for the next tick;
4. submit (after the tick enrolled the day's items): reserve the pending and retryable rows
   (never succeeded, parked or in-flight ones), write one JSONL, upload it, create the batch
   job, bind it. A refused upload or create carries no row: the reservation is released with
   its attempts given back and counted as refused; an ambiguous create (5xx, timeout) is
   first looked up by display name. After GEMINI_LEDGER_BATCH_REFUSED_HALT refused ticks in a
   row the tick halts (``submission_refused``).

An embedding pipeline (``Pipeline(embedding=...)``) takes the same steps: its file holds
embed requests (``_batch_io.write_embed_requests``), its job is an embeddings batch job
(``batches.create_embeddings``), and its output lines are read by
``ledger.embedding_line_parser`` (each vector checked by the core before it is stored).

A crash point sits at every boundary (``batch.after_reserve``, ``batch.after_upload``,
``batch.after_create``, ``batch.after_bind``, ``batch.reconcile.after_chunk``,
``batch.reconcile.before_finish``,
``batch.after_done``, ``batch.inside_side_effect``, ``batch.before_consume``), and every
boundary is one the next tick recovers from.

Settings (``flows.settings``): ``GEMINI_LEDGER_BATCH_STALE_S`` (default 120): age after
which a batch reservation that was never bound, or a delivery claim, is taken over once its
pass stopped renewing it (the pass renews both while it works: ``flows.run._renewal``);
``GEMINI_LEDGER_BATCH_SUBMITTED_S`` (default 72 h): a submitted job still unpollable after
that long is lost and its rows go out again; ``GEMINI_LEDGER_BATCH_LOST_POLLS`` /
``GEMINI_LEDGER_BATCH_LOST_AFTER_S`` (3 / 600 s): how long a 404 must repeat before a job
absent from ``batches.list`` is lost (``flows.channels._batch_lost``);
``GEMINI_LEDGER_BATCH_REFUSED_HALT`` (6): refused submissions in a row before a tick halts.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import orjson

from flows.channels._batch_files import FilesCleaned, clean_files, note_input, note_responses
from flows.channels._batch_io import (
    create_batch_job,
    create_embeddings_job,
    download_output,
    find_batch_job,
    get_batch_job,
    iter_lines,
    job_state,
    operation_error,
    output_ended_at,
    output_file_of,
    upload_requests,
    write_embed_requests,
    write_requests,
)
from flows.channels._batch_lost import LostBounds, judge_poll_failure, output_lost
from flows.channels._batch_reconcile import LineCounts, WriterChoice, reconcile_lines, writer_for
from flows.channels._channel import (
    Collected,
    Recovered,
    RunContext,
    Submitted,
    TickOptions,
    own_pipeline,
    pick,
    run_logger,
)
from flows.channels._deadline import (
    DEADLINE_CANCELLED,
    DEFAULT_CONCURRENCY,
    Switched,
    deadline_of,
    switch_if_due,
)
from flows.channels.direct import sweep_interrupted
from flows.crash import crash_point
from flows.gemini._api_settings import record_api_settings
from flows.gemini._errors import certainly_refused, classify, is_not_found, setup_fault
from flows.gemini.quota import note_failure, request_slot
from flows.pipeline import Pipeline
from flows.run._budget import reserve
from flows.run._deliver import Delivery, DeliveryPoints, deliver_done
from flows.run._prefix_cache import PrefixCache
from flows.run._renewal import Renewal
from flows.run._stop import stop_requested
from flows.run._upload_rows import ledger_uploads
from flows.run._uploads import RowUploads
from ledger import (
    BatchRecord,
    Channel,
    Failure,
    Ledger,
    SetupFault,
    SetupKind,
    Status,
    Usage,
    Verdict,
    embedding_line_parser,
    parse_output_line,
    redact,
)

__all__ = [
    "MISSING_FROM_OUTPUT",
    "STALE_ENV",
    "BatchChannel",
    "BatchCollected",
    "BatchRecovered",
    "BatchSubmitted",
    "Settle",
    "Settled",
    "output_pending",
    "reconcile_batch",
]

STALE_ENV = "GEMINI_LEDGER_BATCH_STALE_S"
# How long a SUCCEEDED job may go without its output file before its rows are failed as
# missing_from_output (the state has been seen before output.responsesFile is filled).
_DELIVER_GROUP = 100  # rows claimed at a time (each is consumed right after its side effect)
_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})
_MAX_BATCHES_PER_TICK = 20  # a backlog beyond batch_size_limit goes out as several jobs

_TOO_LARGE = Failure(
    Verdict.PERMANENT,
    "request_too_large",
    "the request alone is larger than the batch input file limit (batch_bytes_limit)",
)
MISSING_FROM_OUTPUT = Failure(
    Verdict.RETRYABLE, "missing_from_output", "the batch output file has no line for this row"
)


# --- helpers --------------------------------------------------------------------------------


def output_pending(
    ledger: Ledger, job: Any, rec: BatchRecord, *, grace_s: float, cancelled: bool = False
) -> bool:
    """A finished job whose output may still come, inside ``grace_s`` of its end: wait for it.

    A SUCCEEDED job without its output file (one third-party client reports SUCCEEDED before
    ``output.responsesFile`` is filled, unverified). With ``cancelled``, a CANCELLED one too:
    the deadline's own cancel, whose answered rows were billed; whether a cancelled job leaves
    a responses file is not documented (the batch docs say nothing of it: read it if present),
    so it is waited for as a SUCCEEDED job's is, rather than its answered rows sent directly
    and billed twice. The switch-over bounds that wait by its cancel wait
    (``flows.channels._deadline``)."""
    state = job_state(job)
    if state != "SUCCEEDED" and not (cancelled and state == "CANCELLED"):
        return False
    if output_file_of(job) is not None:
        return False
    dest = getattr(job, "dest", None)
    if dest is not None and (
        getattr(dest, "inlined_responses", None)
        or getattr(dest, "inlined_embed_content_responses", None)
    ):
        return False
    ended = output_ended_at(job) or rec.submitted_at or 0.0
    return ledger.clock() - ended < grace_s


def _reservation_token(p: Pipeline[Any]) -> str:
    # The token doubles as the batch job's display name: how an orphan is found again.
    return f"gl-{p.name}-{uuid.uuid4().hex[:8]}"


def _parked_and_retryable(ledger: Ledger, handle: str) -> dict[str, Any]:
    """Where the rows last submitted under ``handle`` stand now."""
    out: dict[str, Any] = {"succeeded": 0, "retryable": {}, "parked": {}, "other": 0}
    for (status, cls), n in ledger.handle_counts(handle).items():
        if status in (Status.DONE, Status.CONSUMED):
            out["succeeded"] += n
        elif status == Status.RETRYABLE:
            out["retryable"][cls or "unclassified"] = n
        elif status == Status.PARKED:
            out["parked"][cls or "unclassified"] = n
        else:
            out["other"] += n
    return out


# --- sending one reservation (used by submit and by orphan re-send) -------------------------


class _Lease:
    """A batch reservation this pass holds: its lease (``batch_jobs.leased_at``) renewed
    while the pass writes, uploads and creates, so another tick takes it over only once
    this one is dead (renewals stopped for the stale age)."""

    def __init__(self, ledger: Ledger, reservation: str, stale_s: float) -> None:
        rec = ledger.batch(reservation)
        self.ledger, self.reservation = ledger, reservation
        self.seen: float | None = rec.leased_at if rec is not None else None
        self.renewal = Renewal(
            self._renew,
            age_s=stale_s,
            what=f"batch reservation {reservation}",
            log=run_logger("gemini_ledger.batch"),
        )

    def _renew(self) -> bool:
        if self.seen is None:
            return False
        self.seen = self.ledger.renew_batch_lease(self.reservation, seen_lease=self.seen)
        return self.seen is not None

    def held(self) -> bool:
        """Renew now: True while the reservation is still this pass's to send."""
        if self.renewal.lost.is_set():
            return False
        with self.renewal.exclusive():
            return self._renew()

    def __enter__(self) -> _Lease:
        self.renewal.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.renewal.__exit__(None, None, None)


def _refuse(ledger: Ledger, p: Pipeline[Any], reservation: str, exc: BaseException) -> str:
    """The API refused the upload or ``batches.create`` (and no job of this display name
    exists): no row was carried, so none is charged. The reservation is released with the
    attempts given back and recorded as refused (what the streak of refusals counts); a 429
    also pauses the model's shared quota. Returns the reason."""
    failure = classify(exc)
    reason = redact(f"{failure.error_class}: {failure.message}")[:300]
    released = ledger.release(reservation, refused=reason)
    if failure.code == "429":
        note_failure(p.model, failure)
    run_logger("gemini_ledger.batch").warning(
        "%s: submission of %s refused (%s): %d rows back to their queue, attempts given back",
        p.name,
        reservation,
        reason,
        released,
    )
    return reason


def _halt_if_setup(ledger: Ledger, reservation: str, exc: BaseException) -> None:
    """A fault of the setup (refused key, no permission or billing, upload type refused, API
    unreachable): give the reservation back with its attempts (the API accepted nothing, so
    nothing was billed) and halt the channel instead of failing the rows."""
    fault = setup_fault(exc)
    if fault is not None:
        crash_point("batch.before_release_on_halt")
        ledger.release(reservation)
        raise fault from exc


def _send(
    ledger: Ledger, client: Any, p: Pipeline[Any], reservation: str, lease: _Lease
) -> dict[str, Any]:
    """Write the rows reserved under ``reservation`` to a JSONL file, upload it, create the
    batch job (display name = reservation) and bind it; nothing is sent once ``lease`` is
    no longer this pass's (another tick took the reservation over)."""
    log = run_logger("gemini_ledger.batch")
    schema = p.output.model_json_schema()
    left_out: list[str] = []
    too_large: list[str] = []
    refused: Counter[str] = Counter()
    # Media parts are uploaded (once per content) as their rows are written; a row whose
    # upload failed is settled after the file is written (flows.run._uploads).
    media = RowUploads(ledger_uploads(client, ledger, p.name))
    # The night's cache of the pipeline's shared prefix, named by every line (made once,
    # a ledger row: flows.run._prefix_cache); None: the prefix goes inline on each line.
    cached_content: str | None = None
    if p.cached_prefix is not None:
        try:
            cached_content = PrefixCache(client, ledger, p).name(verify=True)
        except SetupFault:
            ledger.release(reservation)  # nothing sent: every row back with its attempt
            raise
    with tempfile.TemporaryDirectory(prefix="gl-batch-") as tmp:
        path = Path(tmp) / f"{reservation}.jsonl"
        reserved = ((r.key, r.payload) for r in ledger.stream_reserved(reservation))
        with path.open("wb") as fh:
            if p.embedding is not None:  # embed requests (text only: no media to upload)
                rows = write_embed_requests(
                    reserved,
                    p.embedding,
                    fh,
                    max_bytes=p.batch_bytes_limit,
                    left_out=left_out,
                    too_large=too_large,
                )
            else:
                rows = write_requests(
                    reserved,
                    schema,
                    fh,
                    base=p.generation,
                    max_bytes=p.batch_bytes_limit,
                    left_out=left_out,
                    too_large=too_large,
                    resolve=media,
                    prefix=p.cached_prefix,
                    cached_content=cached_content,
                )
        if media.fault is not None:
            # A fault of the setup while uploading (storage full, key refused): nothing was
            # sent, every row goes back with its attempt.
            ledger.release(reservation)
            raise media.fault
        if media.failed or media.later:
            split_media = media.settle(
                ledger,
                p,
                reservation,
                give_back=lambda keys: ledger.release_keys(reservation, keys),
            )
            refused.update({k: v for k, v in split_media.items() if v})
        if left_out or too_large:
            # Rows past the file's size limit wait for the next batch job (their attempt
            # given back: they were never sent). A request larger than a whole file is the
            # row's own fault: parked, never sent.
            ledger.release_keys(reservation, left_out)
            ledger.park_keys(reservation, too_large, _TOO_LARGE)
            refused[f"parked {_TOO_LARGE.parked_class()}"] += len(too_large)
            log.info(
                "%s: %s split at the %d-byte file limit: %d rows left for the next job",
                p.name,
                reservation,
                p.batch_bytes_limit,
                len(left_out),
            )
        split = {
            "left_out": len(left_out),
            "too_large": len(too_large),
            "bytes": path.stat().st_size,
            "refused": dict(refused),
        }
        if rows == 0 or stop_requested():
            # Nothing to send, or a stop (SIGTERM) before anything left: the reservation
            # goes back with its attempts (no job can exist under its display name).
            ledger.release(reservation)
            return {"rows": 0, "batch": None, **split}
        split["refused_submission"] = None
        if not lease.held():
            return _lost_lease(p, reservation, split)
        try:
            file_name = upload_requests(client, path, display_name=reservation)
        except Exception as exc:  # no job without a file: nothing was carried, nothing billed
            _halt_if_setup(ledger, reservation, exc)
            reason = _refuse(ledger, p, reservation, exc)
            return {"rows": 0, "batch": None, **split, "refused_submission": reason}
        note_input(ledger, p, reservation, file_name, path.stat().st_size)  # deleted when over
        crash_point("batch.after_upload")
        if not lease.held():
            return _lost_lease(p, reservation, split)
        try:
            with request_slot(p.model):  # the shared quota counts one request per job
                create = create_embeddings_job if p.is_embedding else create_batch_job
                job = create(client, model=p.model, file_name=file_name, display_name=reservation)
        except Exception as exc:
            _halt_if_setup(ledger, reservation, exc)
            found = (
                None
                if certainly_refused(exc)
                else _look_up_after(ledger, client, p, exc, reservation)
            )
            if found is _UNANSWERED:
                return {"rows": 0, "batch": None, **split, "unanswered": rows}
            if found is None:
                reason = _refuse(ledger, p, reservation, exc)
                return {"rows": 0, "batch": None, **split, "refused_submission": reason}
            job = found
    crash_point("batch.after_create")
    bound = ledger.bind_batch(reservation, name=job.name)
    crash_point("batch.after_bind")
    log.info("%s: batch job %s (%s) created with %d rows", p.name, job.name, reservation, rows)
    return {"rows": bound or rows, "batch": job.name, **split}


def _lost_lease(p: Pipeline[Any], reservation: str, split: dict[str, Any]) -> dict[str, Any]:
    """Another tick took the reservation over (this one went unrenewed for the stale age):
    it is that tick's to look up and send; this one sends nothing."""
    run_logger("gemini_ledger.batch").warning(
        "%s: %s was taken over by another tick before it was sent: left to it",
        p.name,
        reservation,
    )
    return {"rows": 0, "batch": None, **split, "taken_over": True}


_UNANSWERED = object()  # the job may exist and the listing could not tell


def _look_up_after(
    ledger: Ledger, client: Any, p: Pipeline[Any], exc: BaseException, reservation: str
) -> Any:
    """``batches.create`` for ``reservation`` may have reached the API (a 5xx, a timeout, a
    dropped connection): look the job up by its display name before anything is sent again.
    Returns the job if it exists, None if it does not (a refusal), or ``_UNANSWERED`` when
    the listing failed too: the reservation stays for orphan recovery, which asks again."""
    log = run_logger("gemini_ledger.batch")
    said = redact(f"{type(exc).__name__}: {exc}")
    try:
        job = find_batch_job(client, reservation)
    except Exception as list_exc:
        fault = setup_fault(list_exc)
        if fault is not None:
            raise fault from list_exc  # the reservation stays: the job may exist
        log.warning(
            "%s: batches.create for %s did not answer clearly (%s) and batches.list failed"
            " (%s); left for orphan recovery",
            p.name,
            reservation,
            said,
            redact(f"{type(list_exc).__name__}: {list_exc}"),
        )
        return _UNANSWERED
    if job is not None:
        log.warning(
            "%s: batches.create for %s answered %s, but the job exists: %s",
            p.name,
            reservation,
            said,
            job.name,
        )
    return job


# --- reconciling one finished batch job -----------------------------------------------------


def _inlined_lines(job: Any) -> list[bytes] | None:
    """A job's inlined responses as output lines (``{"key", "response"|"error"}``), or None
    when it has none. The key is the one each request carried in its metadata."""
    dest = getattr(job, "dest", None)
    inlined = getattr(dest, "inlined_responses", None) if dest is not None else None
    # An embeddings job's inlined answers (google-genai 3.6.1 BatchJobDestination
    # .inlined_embed_content_responses: response {embedding, tokenCount}, error, metadata).
    inlined = inlined or getattr(dest, "inlined_embed_content_responses", None)
    if not inlined:
        return None
    lines = []
    for item in inlined:
        line: dict[str, Any] = {"key": (getattr(item, "metadata", None) or {}).get("key")}
        if getattr(item, "error", None) is not None:
            line["error"] = item.error.model_dump(mode="json", exclude_none=True)
        if getattr(item, "response", None) is not None:
            line["response"] = item.response.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude={"sdk_http_response"}
            )
        lines.append(orjson.dumps(line))
    return lines


def _read_output(
    ledger: Ledger,
    client: Any,
    p: Pipeline[Any],
    rec: BatchRecord,
    job: Any,
    *,
    writer: WriterChoice,
    bounds: LostBounds,
) -> LineCounts | int | None:
    """Apply a finished job's output, its responses file or inlined responses, to its rows.

    Returns what the lines did; None when the job has no output; an int (the rows returned
    as ``retryable:output_lost``) when its responses file could not be downloaded over the
    bound (``flows.channels._batch_lost.output_lost``). Before that bound a failed download raises:
    the job stays submitted and the next poll reads it again."""
    assert rec.name is not None
    common: dict[str, Any] = {
        "handle": rec.name,
        "reservation": rec.reservation,
        "schema": p.output,
        "policy": p.policy,
        # An embedding pipeline's lines hold vectors, checked by the core (ledger._lines).
        "parse": (
            parse_output_line
            if p.embedding is None
            else embedding_line_parser(p.embedding.output_dimensionality)
        ),
    }
    file_name = output_file_of(job)
    with tempfile.TemporaryDirectory(prefix="gl-output-") as tmp:
        if file_name is None:
            inlined = _inlined_lines(job)
            if inlined is None:
                return None
            return reconcile_lines(ledger, inlined, scratch_dir=tmp, writer="inline", **common)
        path = Path(tmp) / "output.jsonl"
        try:
            size = download_output(client, file_name, path)
        except Exception as exc:
            fault = setup_fault(exc)
            if fault is not None:
                raise fault from exc
            returned = output_lost(ledger, p, rec, exc, run_logger("gemini_ledger.batch"), bounds)
            if returned is None:
                raise
            return returned
        return reconcile_lines(
            ledger,
            iter_lines(path),
            scratch_dir=tmp,
            writer=writer_for(ledger, size, writer),
            **common,
        )


def reconcile_batch(
    ledger: Ledger,
    client: Any,
    p: Pipeline[Any],
    rec: BatchRecord,
    job: Any,
    *,
    writer: WriterChoice,
    bounds: LostBounds,
    cancelled_for: Failure | None = None,
) -> dict[str, Any]:
    """Apply one finished batch job's outcome to its rows; returns what it did. ``writer``:
    the run's GEMINI_LEDGER_RECONCILE_WRITER (see ``flows.channels._batch_reconcile.writer_for``);
    ``bounds``: when an output that cannot be downloaded is given up (``_batch_lost``).

    Whatever output the job has is applied first, whatever its state: a FAILED or CANCELLED
    job's rows answered before it ended were billed and keep their answers. Then a SUCCEEDED
    job's rows the output never mentions fail as ``missing_from_output``, and the other
    states' rows with the job's own failure; a job this tick cancelled itself
    (``cancelled_for``: the deadline's switch-over, ``flows.channels._deadline``) fails its
    unanswered rows with that failure instead, when it ended CANCELLED."""
    assert rec.name is not None
    log = run_logger("gemini_ledger.batch")
    state = job_state(job)
    counts = LineCounts()
    missing = 0
    job_failed = 0
    lost = 0
    reason: str | None = None
    started = time.monotonic()
    read = _read_output(ledger, client, p, rec, job, writer=writer, bounds=bounds)
    if isinstance(read, int):
        lost = read  # the batch is finished as output_lost: no other row is failed here
    elif read is not None:
        counts = read
    if isinstance(read, int):
        pass
    elif state == "SUCCEEDED":
        if read is None:
            log.warning("%s: %s succeeded without an output file", p.name, rec.name)
        missing = ledger.fail_outstanding(
            handle=rec.name, failure=MISSING_FROM_OUTPUT, policy=p.policy
        )
    else:
        error = operation_error(client, job) or {}
        said = error.get("message")
        code = error.get("code")
        message = f"batch job ended {state}"
        if said:
            message += f": {said}" + (f" (code {code})" if code is not None else "")
        failure = classify({"state": f"BATCH_STATE_{state}", "message": message})
        if cancelled_for is not None and state == "CANCELLED":
            failure = cancelled_for
        reason = failure.message
        job_failed = ledger.fail_outstanding(handle=rec.name, failure=failure, policy=p.policy)
        log.warning(
            "%s: %s ended %s; %d rows answered before it ended applied, %d rows returned (%s: %s)",
            p.name,
            rec.name,
            state,
            counts.succeeded + counts.failed,
            job_failed,
            failure.error_class,
            failure.message,
        )
    standing = _parked_and_retryable(ledger, rec.name)
    report: dict[str, Any] = {
        "batch": rec.name,
        "state": state,
        **counts.as_dict(),
        "missing_from_output": missing,
        "job_failed_rows": job_failed,
        "output_lost": lost,
        "reason": reason,
        "rows": standing,
        "seconds": round(time.monotonic() - started, 3),
    }
    # Rows settled, the job not yet marked reconciled: the next poll reads it again.
    crash_point("batch.reconcile.before_finish")
    finished = ledger.finish_batch(rec.name, state=state.lower(), summary=report)
    report["finished_now"] = finished
    log.info(
        "%s: reconciled %s (%s): %d lines, %d succeeded, %d failed, %d missing, %d unknown,"
        " %d duplicate, %d unparseable, %d output lost",
        p.name,
        rec.name,
        state,
        counts.lines,
        counts.succeeded,
        counts.failed,
        missing,
        counts.unknown_keys,
        counts.duplicate_keys,
        counts.unparseable,
        lost,
    )
    return report


def _rows_per_file(p: Pipeline[Any], rows: int, size: int) -> int:
    """How many rows like the last file's fit in one input file, with a margin (at least 1)."""
    per_row = max(size / rows, 1.0)
    return max(1, min(p.batch_size_limit, int(p.batch_bytes_limit / per_row * 0.97)))


class Settle(StrEnum):
    """What settling one submitted batch job came to (:meth:`BatchChannel.settle`)."""

    RECONCILED = "RECONCILED"  # finished, its output applied and its rows settled
    RUNNING = "RUNNING"  # not finished, or finished with its output not yet there
    LOST = "LOST"  # given up (``flows.channels._batch_lost``): its rows sent back
    NOT_FOUND = "NOT_FOUND"  # a 404 not yet repeated over the bound
    POLL_FAILED = "POLL_FAILED"  # the poll failed otherwise: asked again next time
    RECONCILE_FAILED = "RECONCILE_FAILED"  # reading or applying the output failed


@dataclass(frozen=True, slots=True)
class Settled:
    """One batch job's settling: its outcome, the job's state when it was read, the rows a
    lost job sent back, :func:`reconcile_batch`'s report, or the failure that stopped it."""

    outcome: Settle
    state: str | None = None
    lost_rows: int = 0
    report: dict[str, Any] | None = None
    error: Exception | None = None


# --- the channel: the steps a tick runs (flows.tick) ------------------------------------------


@dataclass(kw_only=True)
class BatchRecovered(Recovered):
    """Batch reservations a dead tick never bound: found in ``batches.list`` or re-sent."""

    stale: int = 0
    direct_swept: int = 0  # calls a dead tick made to meet a deadline (sweep_interrupted)
    bound: int = 0
    resent: int = 0
    skipped: int = 0
    errors: int = 0
    submission_refused: int = 0

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "stale batch reservations", self.stale
        yield "found in batches.list and bound", self.bound
        yield "never created, re-sent", self.resent
        yield "deadline calls cut off or never sent: swept", self.direct_swept


_LINE_COUNTS = (
    "lines",
    "succeeded",
    "failed",
    "missing_from_output",
    "job_failed_rows",
    "output_lost",
    "unknown_keys",
    "duplicate_keys",
    "already_settled",
    "unparseable",
)


@dataclass(kw_only=True)
class BatchCollected(Collected):
    """Finished batch jobs reconciled: their output lines applied row by row."""

    polled: int = 0
    reconciled: int = 0
    running: int = 0
    poll_errors: int = 0
    reconcile_errors: int = 0
    lost: int = 0
    lost_rows: int = 0
    lines: int = 0
    succeeded: int = 0
    failed: int = 0
    missing_from_output: int = 0
    job_failed_rows: int = 0
    output_lost: int = 0
    unknown_keys: int = 0
    duplicate_keys: int = 0
    already_settled: int = 0
    unparseable: int = 0
    files_deleted: int = 0
    file_delete_failures: int = 0
    files_not_deleted: int = 0
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, jobs: list[dict[str, Any]], **polled: int) -> BatchCollected:
        """The sum of the jobs reconciled this tick (``reconcile_batch``'s reports)."""
        retryable: Counter[str] = Counter()
        parked: Counter[str] = Counter()
        tokens: Counter[str] = Counter()
        for j in jobs:
            retryable.update(j["rows"]["retryable"])
            parked.update(j["rows"]["parked"])
            tokens.update(j["tokens"])
        sums = {k: sum(j[k] for j in jobs) for k in _LINE_COUNTS}
        return cls(
            completed=sums["succeeded"],
            retryable=dict(sorted(retryable.items())),
            parked=dict(sorted(parked.items())),
            still_running=polled.get("running", 0),
            tokens=Usage(tokens["prompt"], tokens["candidates"], tokens["total"]),
            reconciled=len(jobs),
            jobs=jobs,
            **polled,
            **sums,
        )

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "batch jobs reconciled", self.reconciled
        yield "batch jobs still running", self.running
        yield "batch jobs lost (rows sent again)", self.lost
        yield "output lines", self.lines
        yield "missing from output", self.missing_from_output
        yield "rows of failed/expired/cancelled jobs", self.job_failed_rows
        yield "rows whose output file was lost (sent again)", self.output_lost
        yield "unknown keys", self.unknown_keys
        yield "duplicate keys", self.duplicate_keys
        yield "unparseable lines", self.unparseable
        yield "batch files deleted from the Files API", self.files_deleted
        if self.file_delete_failures or self.files_not_deleted:
            yield "batch file deletes refused (retried next tick)", self.file_delete_failures
            yield "batch files still to delete", self.files_not_deleted


@dataclass(kw_only=True)
class BatchSubmitted(Submitted):
    """Batch jobs created this tick, each with its reserved rows."""

    reserved: int = 0
    batches: list[str] = field(default_factory=list)
    submission_refused: int = 0  # uploads or batches.create the API refused (rows kept)
    deadline: Switched | None = None  # the deadline's switch-over to direct, when it came

    @property
    def batch(self) -> str | None:
        """The first batch job created (most ticks create one)."""
        return self.batches[0] if self.batches else None

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "batch jobs created", len(self.batches)
        yield "batch submissions refused (rows kept, unbilled)", self.submission_refused
        if self.deadline is not None:
            d = self.deadline
            yield f"deadline {d.deadline}: batch jobs cancelled", len(d.cancelled)
            yield "deadline: rows answered by the cancelled jobs", d.answered_by_batch
            yield "deadline: rows sent directly", d.sent_direct
            yield from ((f"deadline: direct outcome {o}", n) for o, n in d.outcomes.items())


class BatchChannel:
    """The batch channel's steps: recover orphans, reconcile finished jobs, deliver, submit."""

    kind: ClassVar[Channel] = Channel.BATCH
    # max_concurrency: the direct calls in flight when a deadline sends rows directly.
    uses: ClassVar[frozenset[str]] = frozenset({"stale_s", "deadline", "max_concurrency"})

    def __init__(self, ctx: RunContext, options: TickOptions | None = None) -> None:
        own_pipeline(ctx, self.kind)
        self.ctx = ctx
        options = options or TickOptions()
        self.stale_s = pick(options.stale_s, ctx.settings.batch_stale_s)
        self.deadline = deadline_of(ctx.pipeline, options.deadline)
        self.max_concurrency = pick(options.max_concurrency, DEFAULT_CONCURRENCY)
        self.cancelled_for = DEADLINE_CANCELLED if self.deadline is not None else None
        self.opened_at = ctx.ledger.clock()
        self.bounds = LostBounds.of(ctx.settings)

    def _halt_if_refused_too_often(self) -> None:
        """The API refused this pipeline's batch submission on GEMINI_LEDGER_BATCH_REFUSED_HALT
        ticks in a row (no job created since): halt the tick. The rows wait, pending."""
        p, ledger = self.ctx.pipeline, self.ctx.ledger
        refusals = ledger.submission_refusals(p.name)
        if refusals.refused < self.ctx.settings.batch_refused_halt:
            return
        since = datetime.fromtimestamp(refusals.since or ledger.clock(), UTC)
        raise SetupFault(
            SetupKind.SUBMISSION_REFUSED,
            f"the Gemini API refused {p.name}'s batch submission {refusals.refused} times in a"
            f" row since {since:%Y-%m-%d %H:%M} UTC (last: {refusals.last_reason})",
        )

    def recover(self) -> BatchRecovered:
        """Batch reservations never bound to a job: bind the job found by display name in
        ``batches.list``; re-send the same reserved rows only if there is none. Rows a dead
        tick was sending directly to meet a deadline are swept as the direct channel sweeps
        its own (``flows.channels.direct.sweep_interrupted``)."""
        p, ledger, log = self.ctx.pipeline, self.ctx.ledger, self.ctx.log
        swept = sweep_interrupted(self.ctx, stale_s=self.ctx.settings.direct_stale_s)
        stale = ledger.stale_batches(pipeline=p.name, older_than=self.stale_s)
        out = BatchRecovered(
            stale=len(stale),
            recovered=swept.recovered,
            took_over=swept.took_over,
            direct_swept=swept.recovered,
        )
        if not stale:
            return out
        client = self.ctx.client
        for rec in stale:
            if stop_requested():  # between orphans: the rest wait for the next tick
                break
            # Only the tick that renews the lease acts on this reservation, and it keeps
            # renewing it while it does.
            if not ledger.lease_batch(rec.reservation, seen_lease=rec.leased_at):
                out.skipped += 1
                continue
            with _Lease(ledger, rec.reservation, self.stale_s) as lease:
                try:
                    job = find_batch_job(client, rec.reservation)
                except Exception as exc:  # the listing failed: try again once the lease is stale
                    fault = setup_fault(exc)
                    if fault is not None:
                        raise fault from exc
                    out.errors += 1
                    log.warning(
                        "%s: cannot list batch jobs for orphan %s: %s",
                        p.name,
                        rec.reservation,
                        redact(f"{type(exc).__name__}: {exc}"),
                    )
                    continue
                if job is not None:
                    rows = ledger.bind_batch(rec.reservation, name=job.name)
                    crash_point("batch.after_bind")
                    out.bound += 1
                    out.recovered += rows
                    log.info(
                        "%s: orphan %s found as %s, bound %d rows",
                        p.name,
                        rec.reservation,
                        job.name,
                        rows,
                    )
                else:
                    sent = _send(ledger, client, p, rec.reservation, lease)
                    out.resent += 1 if sent["batch"] else 0
                    out.recovered += sent["rows"]
                    for label, n in sent["refused"].items():
                        out.refused[label] = out.refused.get(label, 0) + n
                    if sent.get("refused_submission"):
                        out.submission_refused += 1
                        self._halt_if_refused_too_often()
                        break  # the API refuses now: the other orphans wait for the next tick
                    log.info(
                        "%s: orphan %s was never created; re-sent as %s",
                        p.name,
                        rec.reservation,
                        sent["batch"],
                    )
        if out.bound or out.resent:
            self._note_api()
        return out

    def collect(self) -> BatchCollected:
        """Poll every submitted batch job of the pipeline and reconcile the finished ones
        (:meth:`settle`, one job at a time), then delete the files whose use is over."""
        p, ledger, log = self.ctx.pipeline, self.ctx.ledger, self.ctx.log
        submitted = ledger.submitted_batches(pipeline=p.name)
        seen: Counter[Settle] = Counter()
        lost_rows = 0
        jobs: list[dict[str, Any]] = []
        client = self.ctx.client if submitted else None
        for rec in submitted:
            if stop_requested():  # between jobs: the rest are polled by the next tick
                break
            settled = self.settle(client, rec)
            seen[settled.outcome] += 1
            lost_rows += settled.lost_rows
            if settled.report is not None:
                jobs.append(settled.report)
        try:
            cleaned = clean_files(ledger, p, log, client_of=lambda: client or self.ctx.client)
        except Exception as exc:  # the night never waits on a cleanup: next tick tries again
            cleaned = FilesCleaned()
            log.error("%s: cleaning batch files failed: %s", p.name, redact(repr(exc)))
        return BatchCollected.of(
            jobs,
            polled=len(submitted),
            running=seen[Settle.RUNNING],
            poll_errors=seen[Settle.POLL_FAILED] + seen[Settle.NOT_FOUND],
            reconcile_errors=seen[Settle.RECONCILE_FAILED],
            lost=seen[Settle.LOST],
            lost_rows=lost_rows,
            files_deleted=cleaned.deleted,
            file_delete_failures=cleaned.delete_failures,
            files_not_deleted=cleaned.not_deleted,
        )

    def settle(
        self, client: Any, rec: BatchRecord, *, await_cancelled_output: bool = True
    ) -> Settled:
        """Settle one submitted batch job: what the tick's collect does for each job, the
        deadline's switch-over for the jobs it cancelled, and the ``reconcile`` flow
        (``flows.reconcile``) for its one: the same code, so they all end a job the same.

        Poll it (``batches.get``; a failed poll is judged by ``_batch_lost``: read from
        the listing, lost with its rows sent back, or not yet); once it has finished and its
        output is due (:func:`output_pending`), reconcile it (:func:`reconcile_batch`: its
        output applied, the rows it leaves failed) and record its responses file for
        deletion. A fault of the setup while polling raises; any other failure is logged and
        returned with the job still submitted, so the next poll tries again (whatever was
        applied stays applied: every write is compare-and-set).

        A CANCELLED job marked as cancelled for a deadline (``BatchRecord.deadline_cancel_at``,
        written before the switch-over's ``batches.cancel``), or any on a pipeline with a
        deadline (``self.cancelled_for``), is taken as the deadline's: its unanswered rows
        fail as ``retryable:deadline``, not as an unknown ``batch_cancelled``, and its
        responses file is waited for as a SUCCEEDED job's is (``output_pending``) unless
        ``await_cancelled_output`` is False (the switch-over's last poll, its cancel wait
        over: no file by then is read as none)."""
        p, ledger, log = self.ctx.pipeline, self.ctx.ledger, self.ctx.log
        assert rec.name is not None
        try:
            job = self._poll(client, rec)
        except Exception as exc:
            fault = setup_fault(exc)
            if fault is not None:
                raise fault from exc
            log.warning(
                "%s: cannot poll %s: %s", p.name, rec.name, redact(f"{type(exc).__name__}: {exc}")
            )
            return Settled(Settle.POLL_FAILED, error=exc)
        if isinstance(job, int):  # lost: its rows were returned to be sent again
            return Settled(Settle.LOST, lost_rows=job)
        if job is None:  # a 404 not yet repeated over the bound
            return Settled(Settle.NOT_FOUND)
        state = job_state(job)
        grace_s = self.ctx.settings.batch_output_grace_s
        cancelled_for = self._cancelled_for(rec)
        awaits_cancelled = cancelled_for is not None and await_cancelled_output
        if state not in _TERMINAL or output_pending(
            ledger, job, rec, grace_s=grace_s, cancelled=awaits_cancelled
        ):
            return Settled(Settle.RUNNING, state=state)
        try:
            writer = self.ctx.settings.reconcile_writer
            report = reconcile_batch(
                ledger,
                client,
                p,
                rec,
                job,
                writer=writer,
                bounds=self.bounds,
                cancelled_for=cancelled_for,
            )
            note_responses(ledger, p, rec, job)  # reconciled: its file can go
        except Exception as exc:
            log.error(
                "%s: reconciling %s failed: %s",
                p.name,
                rec.name,
                redact(f"{type(exc).__name__}: {exc}"),
            )
            return Settled(Settle.RECONCILE_FAILED, state=state, error=exc)
        return Settled(Settle.RECONCILED, state=state, report=report)

    def _cancelled_for(self, rec: BatchRecord) -> Failure | None:
        """The failure of ``rec``'s unanswered rows should it end CANCELLED by the deadline's
        doing: marked so by the switch-over (whatever gave the deadline: the ``reconcile``
        flow never sees a tick's parameter), or any cancel on a pipeline with a deadline."""
        if rec.deadline_cancel_at is not None:
            return DEADLINE_CANCELLED
        return self.cancelled_for

    def _poll(self, client: Any, rec: BatchRecord) -> Any:
        """``batches.get`` of a submitted job: the job; or, when the poll failed, the job as
        ``batches.list`` has it, the number of rows returned if it is lost, or None while a
        404 has not repeated over the bound (``_batch_lost``). Raises what the listing
        or any other failing poll raised."""
        assert rec.name is not None
        try:
            job = get_batch_job(client, rec.name)
        except Exception as exc:
            if setup_fault(exc) is not None:
                raise
            ctx = self.ctx
            verdict = judge_poll_failure(
                ctx.ledger, client, ctx.pipeline, rec, exc, ctx.log, self.bounds
            )
            if verdict.returned is not None:
                return verdict.returned
            if verdict.job is None and is_not_found(exc):
                return None
            if verdict.job is None:
                raise
            return verdict.job
        if rec.misses:
            self.ctx.ledger.clear_batch_misses(rec.name)
        return job

    def deliver(self) -> Delivery:
        """Rows done but not consumed: call ``on_result`` for each, then mark them consumed.
        A side effect that raises is logged and its row stays done for the next tick."""
        return deliver_done(
            self.ctx.ledger,
            self.ctx.pipeline,
            token=f"gl-deliver-{uuid.uuid4().hex[:8]}",
            older_than=self.stale_s,
            log=self.ctx.log,
            group=_DELIVER_GROUP,
            cap=self.ctx.settings.delivery_cap,
            points=DeliveryPoints(
                before_effect="batch.after_done",
                after_effect="batch.inside_side_effect",
                before_consume="batch.before_consume",
                after_failure="batch.after_delivery_failure",
            ),
        )

    def submit(self) -> BatchSubmitted:
        """Reserve the pending and retryable rows in batches of up to the pipeline's limit;
        for each, write the JSONL, upload it, create the batch job and bind it. With a
        deadline, first send directly the rows whose deadline is near (``switch_if_due``);
        the batch then takes only rows enrolled after theirs."""
        p, ledger = self.ctx.pipeline, self.ctx.ledger
        client = self.ctx.client  # before reserving: a missing API key must not strand rows
        out = BatchSubmitted()
        taken_by: float | None = None
        if self.deadline is not None:
            # Rows too close to their deadline for batch go directly; the others stay on it.
            switched = switch_if_due(self, self.deadline, concurrency=self.max_concurrency)
            if switched is not None:
                out = BatchSubmitted(
                    submitted=switched.sent_direct,
                    settled=switched.outcomes.get(Status.DONE, 0),
                    deadline=switched,
                )
                # The deadline's rows never go into a batch job (one the next tick would
                # cancel with the later rows in it): those its direct calls left wait for
                # the next tick's.
                taken_by = switched.taken_by
        last = ledger.submission_refusals(p.name).last_at
        if last is not None and last >= self.opened_at:
            # Recover's re-send was refused a moment ago: one refusal per tick is enough.
            self.ctx.log.info("%s: the API refused a batch this tick; submitting next tick", p.name)
            return out
        refused: Counter[str] = Counter()
        limit = p.batch_size_limit
        for _ in range(_MAX_BATCHES_PER_TICK):
            if stop_requested():  # between batch jobs: what was created is bound
                break
            reservation = _reservation_token(p)
            # Within the night's budget (flows.run._budget, the one place every channel
            # reserves through).
            reserved = reserve(
                self.ctx,
                limit=limit,
                reservation=reservation,
                batch_model=p.model,
                enrolled_after=taken_by,
            )
            if reserved == 0:
                ledger.release(reservation)  # closes the empty batch reservation
                break
            crash_point("batch.after_reserve")
            with _Lease(ledger, reservation, self.stale_s) as lease:
                sent = _send(ledger, client, p, reservation, lease)
            out.reserved += reserved - sent["left_out"]
            out.submitted += sent["rows"]
            refused.update(sent["refused"])
            if sent["batch"]:
                out.batches.append(sent["batch"])
            if sent.get("refused_submission"):
                out.submission_refused += 1
                out.refused = dict(sorted(refused.items()))
                self._halt_if_refused_too_often()
                break
            # A full reservation, or one split at the file size limit, may leave more due
            # rows; so may one whose rows were all too large to send.
            if reserved < limit and not sent["left_out"]:
                break
            if sent["left_out"]:
                # Reserve next about what a file holds, so few rows are reserved only to be
                # released again (each costs a reserve and a release).
                limit = _rows_per_file(p, sent["rows"] or 1, sent["bytes"])
            if not sent["batch"] and not sent["too_large"]:
                break
        out.refused = dict(sorted(refused.items()))
        if out.batches:
            self._note_api()
        return out

    def _note_api(self) -> None:
        """Record the API this tick bound a batch job at: the webhook receiver and ``doctor``
        compare their own with it (``flows.gemini._api_settings``)."""
        record_api_settings(self.ctx.ledger, self.ctx.pipeline.name, self.ctx.settings)
