"""The batch channel as Prefect flows: ``batch_tick`` (what the nightly schedule runs) and
``reconcile`` (one finished batch job, also what the webhook receiver calls).

A tick, in order, then exit:

1. recover orphans: a batch reservation never bound to a job (the tick that made it died
   between ``batches.create`` and binding) is looked up by its display name, which is the
   reservation token, in ``batches.list``; bound if found, re-sent only if not;
2. reconcile every submitted batch job that has finished (``batches.get``): stream its
   output file into the ledger row by row, in chunks; rows the output never mentions fail as
   ``missing_from_output``; a FAILED, CANCELLED or EXPIRED job fails all its rows with the
   classifier's class, so they come back (their attempt was counted);
3. deliver: rows ``done`` but not ``consumed`` get ``on_result`` and are then consumed;
   a side effect that raises leaves its row done for the next tick;
4. enroll today's items, reserve the pending and retryable rows (never succeeded, parked or
   in-flight ones), write one JSONL, upload it, create the batch job, bind it.

A crash point sits at every boundary (``batch.after_reserve``, ``batch.after_upload``,
``batch.after_create``, ``batch.after_bind``, ``batch.reconcile.after_chunk``,
``batch.reconcile.before_finish``,
``batch.after_done``, ``batch.inside_side_effect``, ``batch.before_consume``), and every
boundary is one the next tick recovers from.

Settings from the environment: ``GEMINI_LEDGER_BATCH_STALE_S`` (default 900): age after
which a batch reservation that was never bound, or a delivery claim, is taken over;
``GEMINI_LEDGER_BATCH_SUBMITTED_S`` (default 72 h): a submitted job still unpollable after
that long, or one the API answers 404 for at once, is lost and its rows go out again
(``flows._batch_lost``).
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows._batch_io import (
    create_batch_job,
    download_output,
    find_batch_job,
    get_batch_job,
    iter_lines,
    job_state,
    operation_error,
    output_ended_at,
    output_file_of,
    upload_requests,
    write_requests,
)
from flows._batch_lost import give_up_if_lost, submitted_bound
from flows._batch_reconcile import LineCounts, reconcile_lines, writer_for
from flows._deliver import DeliveryPoints, deliver_done, enroll_day
from flows._gemini_errors import classify, setup_fault
from flows._halt import checked, halts, preflight
from flows._ledger import open_ledger
from flows._run_names import tick_run_name
from flows.crash import crash_point
from flows.errors import UsageError
from flows.gateway import gemini_client
from flows.identity import claim_pipeline
from flows.pipeline import Pipeline
from flows.quota import request_slot
from flows.registry import get_pipeline
from ledger import (
    BatchRecord,
    Channel,
    Failure,
    Ledger,
    Status,
    Verdict,
    redact,
)

__all__ = [
    "MISSING_FROM_OUTPUT",
    "STALE_ENV",
    "batch_tick",
    "deliver_results",
    "enroll_items",
    "poll_batches",
    "reconcile",
    "reconcile_batch",
    "recover_orphans",
    "submit_batch",
]

STALE_ENV = "GEMINI_LEDGER_BATCH_STALE_S"
# How long a SUCCEEDED job may go without its output file before its rows are failed as
# missing_from_output (the state has been seen before output.responsesFile is filled).
OUTPUT_GRACE_ENV = "GEMINI_LEDGER_BATCH_OUTPUT_GRACE_S"
_DELIVER_PAGE = 500
_CONSUME_GROUP = 100  # a kill between side effects and consume re-runs at most this many
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


def _stale_after() -> float:
    from flows.settings import load_settings

    return load_settings().batch_stale_s


def _output_grace() -> float:
    from flows.settings import load_settings

    return load_settings().batch_output_grace_s


def output_pending(ledger: Ledger, job: Any, rec: BatchRecord) -> bool:
    """A SUCCEEDED job without its output file, still inside the grace bound: wait for it."""
    if job_state(job) != "SUCCEEDED" or output_file_of(job) is not None:
        return False
    if getattr(job, "dest", None) is not None and getattr(job.dest, "inlined_responses", None):
        return False
    ended = output_ended_at(job) or rec.submitted_at or 0.0
    return ledger.clock() - ended < _output_grace()


# Pipeline name (as the ledger stores it) -> the spec it was loaded by in this process, so
# ``reconcile(job)`` finds a ``module:attr`` pipeline from the ledger's batch row alone.
_specs: dict[str, str] = {}


def _pipeline(spec: str) -> Pipeline[Any]:
    p = get_pipeline(_specs.get(spec, spec))
    _specs.setdefault(p.name, spec)
    if p.channel != Channel.BATCH:
        raise UsageError(f"pipeline {p.name!r} runs on the {p.channel} channel, not batch")
    return p


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (task.fn in a test): use a plain logger
        import logging

        return logging.getLogger("gemini_ledger.batch")


def _reservation_token(p: Pipeline[Any]) -> str:
    # The token doubles as the batch job's display name: how an orphan is found again.
    return f"gl-{p.name}-{uuid.uuid4().hex[:8]}"


def _parked_and_retryable(ledger: Ledger, handle: str) -> dict[str, Any]:
    """Where the rows last submitted under ``handle`` stand now."""
    out: dict[str, Any] = {"succeeded": 0, "retryable": {}, "parked": {}, "other": 0}
    for (status, cls), n in ledger.handle_counts(handle).items():
        if status in ("done", "consumed"):
            out["succeeded"] += n
        elif status == "retryable":
            out["retryable"][cls or "unclassified"] = n
        elif status == "parked":
            out["parked"][cls or "unclassified"] = n
        else:
            out["other"] += n
    return out


# --- sending one reservation (used by submit and by orphan re-send) -------------------------


def _fail_reserved(
    ledger: Ledger, p: Pipeline[Any], reservation: str, exc: BaseException
) -> dict[str, int]:
    """The API refused the submission: every reserved row gets the classified failure."""
    failure = classify(exc)
    keys = [r.key for r in ledger.reserved(reservation)]
    outcome: Counter[str] = Counter()
    for key in keys:
        status = ledger.record_failure(key, failure, policy=p.policy, reservation=reservation)
        outcome[
            f"{status} {failure.error_class if status != 'parked' else failure.parked_class()}"
        ] += 1
    ledger.release(reservation)  # nothing left reserved: closes the batch reservation
    _logger().warning(
        "%s: submission of %s refused (%s): %d rows",
        p.name,
        reservation,
        failure.error_class,
        len(keys),
    )
    return dict(outcome)


def _halt_if_setup(ledger: Ledger, reservation: str, exc: BaseException) -> None:
    """A fault of the setup (refused key, no permission or billing, upload type refused, API
    unreachable): give the reservation back with its attempts (the API accepted nothing, so
    nothing was billed) and halt the channel instead of failing the rows."""
    fault = setup_fault(exc)
    if fault is not None:
        crash_point("batch.before_release_on_halt")
        ledger.release(reservation)
        raise fault from exc


def _send(ledger: Ledger, client: Any, p: Pipeline[Any], reservation: str) -> dict[str, Any]:
    """Write the rows reserved under ``reservation`` to a JSONL file, upload it, create the
    batch job (display name = reservation) and bind it."""
    log = _logger()
    schema = p.output.model_json_schema()
    left_out: list[str] = []
    too_large: list[str] = []
    refused: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="gl-batch-") as tmp:
        path = Path(tmp) / f"{reservation}.jsonl"
        with path.open("wb") as fh:
            rows = write_requests(
                ((r.key, r.payload) for r in ledger.stream_reserved(reservation)),
                schema,
                fh,
                max_bytes=p.batch_bytes_limit,
                left_out=left_out,
                too_large=too_large,
            )
        if left_out or too_large:
            # Rows past the file's size limit wait for the next batch job (their attempt
            # given back: they were never sent). A request larger than a whole file is the
            # row's own fault: parked, never sent.
            ledger.release_keys(reservation, left_out + too_large)
            for key in too_large:
                ledger.park(key, _TOO_LARGE, from_status=(Status.PENDING, Status.RETRYABLE))
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
        if rows == 0:
            ledger.release(reservation)
            return {"rows": 0, "batch": None, **split}
        try:
            file_name = upload_requests(client, path, display_name=reservation)
        except Exception as exc:  # nothing was created: the rows get the failure
            _halt_if_setup(ledger, reservation, exc)
            refused.update(_fail_reserved(ledger, p, reservation, exc))
            return {"rows": 0, "batch": None, **split, "refused": refused}
        crash_point("batch.after_upload")
        try:
            with request_slot(p.model):  # the shared quota counts one request per job
                job = create_batch_job(
                    client, model=p.model, file_name=file_name, display_name=reservation
                )
        except Exception as exc:
            _halt_if_setup(ledger, reservation, exc)
            if not _is_api_refusal(exc):
                # A timeout or a dropped connection: the job may exist. Leave the reservation
                # for orphan recovery, which looks it up by display name before re-sending.
                log.warning(
                    "%s: batches.create for %s did not answer (%s); left for orphan recovery",
                    p.name,
                    reservation,
                    redact(f"{type(exc).__name__}: {exc}"),
                )
                return {"rows": 0, "batch": None, **split, "unanswered": rows}
            refused.update(_fail_reserved(ledger, p, reservation, exc))
            return {"rows": 0, "batch": None, **split, "refused": refused}
    crash_point("batch.after_create")
    bound = ledger.bind_batch(reservation, name=job.name)
    crash_point("batch.after_bind")
    log.info("%s: batch job %s (%s) created with %d rows", p.name, job.name, reservation, rows)
    return {"rows": bound or rows, "batch": job.name, **split}


def _is_api_refusal(exc: BaseException) -> bool:
    """True when the API answered with an error (the request was certainly not accepted)."""
    from google.genai import errors

    return isinstance(exc, errors.APIError)


# --- step 1: orphans ------------------------------------------------------------------------


@task(name="recover-orphaned-batches", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BATCH)
def recover_orphans(pipeline: str) -> dict[str, Any]:
    """Batch reservations never bound to a job: bind the job found by display name in
    ``batches.list``; re-send the same reserved rows only if there is none."""
    p = _pipeline(pipeline)
    ledger = open_ledger()
    log = _logger()
    stale = ledger.stale_batches(pipeline=p.name, older_than=_stale_after())
    out: dict[str, Any] = {
        "stale": len(stale),
        "bound": 0,
        "resent": 0,
        "skipped": 0,
        "rows": 0,
        "errors": 0,
    }
    if not stale:
        return out
    client = gemini_client()
    for rec in stale:
        # Only the tick that renews the lease acts on this reservation.
        if not ledger.lease_batch(rec.reservation, seen_lease=rec.leased_at):
            out["skipped"] += 1
            continue
        try:
            job = find_batch_job(client, rec.reservation)
        except Exception as exc:  # the listing failed: try again once the lease is stale
            fault = setup_fault(exc)
            if fault is not None:
                raise fault from exc
            out["errors"] += 1
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
            out["bound"] += 1
            out["rows"] += rows
            log.info(
                "%s: orphan %s found as %s, bound %d rows", p.name, rec.reservation, job.name, rows
            )
        else:
            sent = _send(ledger, client, p, rec.reservation)
            out["resent"] += 1 if sent["batch"] else 0
            out["rows"] += sent["rows"]
            log.info(
                "%s: orphan %s was never created; re-sent as %s",
                p.name,
                rec.reservation,
                sent["batch"],
            )
    return out


# --- step 2: poll and reconcile ---------------------------------------------------------------


def reconcile_batch(
    ledger: Ledger, client: Any, p: Pipeline[Any], rec: BatchRecord, job: Any
) -> dict[str, Any]:
    """Apply one finished batch job's outcome to its rows; returns what it did."""
    assert rec.name is not None
    log = _logger()
    state = job_state(job)
    counts = LineCounts()
    missing = 0
    job_failed = 0
    reason: str | None = None
    started = time.monotonic()
    if state == "SUCCEEDED":
        file_name = output_file_of(job)
        if file_name is not None:
            with tempfile.TemporaryDirectory(prefix="gl-output-") as tmp:
                path = Path(tmp) / "output.jsonl"
                size = download_output(client, file_name, path)
                counts = reconcile_lines(
                    ledger,
                    iter_lines(path),
                    handle=rec.name,
                    reservation=rec.reservation,
                    schema=p.output,
                    policy=p.policy,
                    scratch_dir=tmp,
                    writer=writer_for(ledger, size),
                )
        else:
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
        reason = failure.message
        job_failed = ledger.fail_outstanding(handle=rec.name, failure=failure, policy=p.policy)
        log.warning(
            "%s: %s ended %s; %d rows returned (%s: %s)",
            p.name,
            rec.name,
            state,
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
        " %d duplicate, %d unparseable",
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
    )
    return report


@task(name="poll-and-reconcile-batches", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BATCH)
def poll_batches(pipeline: str) -> dict[str, Any]:
    """Poll every submitted batch job of the pipeline (``batches.get``) and reconcile the
    finished ones."""
    p = _pipeline(pipeline)
    submitted_bound()  # a bad setting stops the tick here, not at the first failed poll
    ledger = open_ledger()
    submitted = ledger.submitted_batches(pipeline=p.name)
    out: dict[str, Any] = {
        "polled": len(submitted),
        "running": 0,
        "poll_errors": 0,
        "reconcile_errors": 0,
        "lost": 0,
        "lost_rows": 0,
        "jobs": [],
    }
    if not submitted:
        return out
    client = gemini_client()
    for rec in submitted:
        assert rec.name is not None
        try:
            job = get_batch_job(client, rec.name)
        except Exception as exc:
            fault = setup_fault(exc)
            if fault is not None:
                raise fault from exc
            # Deleted, expired or unpollable past its bound: its rows are sent again.
            returned = give_up_if_lost(ledger, p, rec, exc, _logger())
            if returned is not None:
                out["lost"] += 1
                out["lost_rows"] += returned
                continue
            out["poll_errors"] += 1
            _logger().warning(
                "%s: cannot poll %s: %s", p.name, rec.name, redact(f"{type(exc).__name__}: {exc}")
            )
            continue
        if job_state(job) not in _TERMINAL or output_pending(ledger, job, rec):
            out["running"] += 1
            continue
        try:
            out["jobs"].append(reconcile_batch(ledger, client, p, rec, job))
        except Exception as exc:
            # Whatever was applied stays applied (compare-and-set); the job is still
            # submitted in the ledger, so the next tick reconciles the rest.
            out["reconcile_errors"] += 1
            _logger().error(
                "%s: reconciling %s failed: %s",
                p.name,
                rec.name,
                redact(f"{type(exc).__name__}: {exc}"),
            )
    return out


# --- step 3: deliver ------------------------------------------------------------------------


@task(name="deliver-results", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BATCH)
def deliver_results(pipeline: str) -> dict[str, Any]:
    """Rows done but not consumed: call ``on_result`` for each, then mark them consumed. A
    side effect that raises is logged and its row stays done for the next tick."""
    p = _pipeline(pipeline)
    out = deliver_done(
        open_ledger(),
        p,
        token=f"gl-deliver-{uuid.uuid4().hex[:8]}",
        older_than=_stale_after(),
        log=_logger(),
        page=_DELIVER_PAGE,
        consume_group=_CONSUME_GROUP,
        points=DeliveryPoints(
            before_effect="batch.after_done",
            after_effect="batch.inside_side_effect",
            before_consume="batch.before_consume",
            after_failure="batch.after_delivery_failure",
        ),
    )
    return {
        "consumed": out.consumed,
        "side_effect_failed": len(out.failed),
        "parked": len(out.parked),
        "errors": dict(out.errors),
    }


# --- step 4: enroll and submit ----------------------------------------------------------------


@task(name="enroll-todays-items", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BATCH)
def enroll_items(pipeline: str, day: date) -> dict[str, Any]:
    """Enroll the day's items (an existing key is never changed); what enrollment did."""
    return enroll_day(open_ledger(), _pipeline(pipeline), day, log=_logger()).as_dict()


@task(name="reserve-upload-create-batch", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BATCH)
def submit_batch(pipeline: str) -> dict[str, Any]:
    """Reserve the pending and retryable rows in batches of up to the pipeline's limit; for
    each, write the JSONL, upload it, create the batch job and bind it."""
    p = _pipeline(pipeline)
    ledger = open_ledger()
    client = gemini_client()  # before reserving: a missing API key must not strand rows
    out: dict[str, Any] = {"reserved": 0, "rows": 0, "batch": None, "batches": [], "refused": {}}
    refused: Counter[str] = Counter()
    limit = p.batch_size_limit
    for _ in range(_MAX_BATCHES_PER_TICK):
        reservation = _reservation_token(p)
        reserved = ledger.reserve(
            pipeline=p.name,
            limit=limit,
            reservation=reservation,
            batch_model=p.model,
        )
        if reserved == 0:
            ledger.release(reservation)  # closes the empty batch reservation
            break
        crash_point("batch.after_reserve")
        sent = _send(ledger, client, p, reservation)
        out["reserved"] += reserved - sent["left_out"]
        out["rows"] += sent["rows"]
        refused.update(sent["refused"])
        if sent["batch"]:
            out["batches"].append(sent["batch"])
        # A full reservation, or one split at the file size limit, may leave more due rows;
        # so may one whose rows were all too large to send.
        if reserved < limit and not sent["left_out"]:
            break
        if sent["left_out"]:
            # Reserve next about what a file holds, so few rows are reserved only to be
            # released again (each costs a reserve and a release).
            limit = _rows_per_file(p, sent["rows"] or 1, sent["bytes"])
        if not sent["batch"] and not sent["too_large"]:
            break
    out["batch"] = out["batches"][0] if out["batches"] else None
    out["refused"] = dict(refused)
    return out


def _rows_per_file(p: Pipeline[Any], rows: int, size: int) -> int:
    """How many rows like the last file's fit in one input file, with a margin (at least 1)."""
    per_row = max(size / rows, 1.0)
    return max(1, min(p.batch_size_limit, int(p.batch_bytes_limit / per_row * 0.97)))


# --- the flows ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _reconcile_run_name() -> str:
    from prefect.runtime import flow_run

    job = str(flow_run.parameters.get("job_name"))
    return f"reconcile-{job.removeprefix('batches/')}"


def _sum_jobs(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "lines",
        "succeeded",
        "failed",
        "missing_from_output",
        "job_failed_rows",
        "unknown_keys",
        "duplicate_keys",
        "already_settled",
        "unparseable",
    )
    total: dict[str, Any] = {k: sum(j[k] for j in jobs) for k in keys}
    retryable: Counter[str] = Counter()
    parked: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    for j in jobs:
        retryable.update(j["rows"]["retryable"])
        parked.update(j["rows"]["parked"])
        tokens.update(j["tokens"])
    total["retryable"] = sum(retryable.values())
    total["retryable_by_class"] = dict(sorted(retryable.items()))
    total["parked"] = dict(sorted(parked.items()))
    total["tokens"] = {k: tokens[k] for k in ("prompt", "candidates", "total")}
    return total


def _artifact_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    o, d, s = report["orphans"], report["delivered"], report["submit"]
    rows: list[tuple[str, str, Any]] = [
        ("1 orphans", "stale reservations", o["stale"]),
        ("1 orphans", "found in batches.list and bound", o["bound"]),
        ("1 orphans", "never created, re-sent", o["resent"]),
        ("2 reconcile", "batch jobs reconciled", report["reconciled"]),
        ("2 reconcile", "batch jobs still running", report["running"]),
        ("2 reconcile", "batch jobs lost (rows sent again)", report["lost"]),
        ("2 reconcile", "output lines", report["lines"]),
        ("2 reconcile", "succeeded", report["succeeded"]),
        *(("2 reconcile", f"retryable {c}", n) for c, n in report["retryable_by_class"].items()),
        *(("2 reconcile", f"parked {c}", n) for c, n in report["parked"].items()),
        ("2 reconcile", "missing from output", report["missing_from_output"]),
        ("2 reconcile", "rows of failed/expired/cancelled jobs", report["job_failed_rows"]),
        ("2 reconcile", "unknown keys", report["unknown_keys"]),
        ("2 reconcile", "duplicate keys", report["duplicate_keys"]),
        ("2 reconcile", "unparseable lines", report["unparseable"]),
        ("2 reconcile", "tokens", report["tokens"]["total"]),
        ("3 deliver", "consumed", d["consumed"]),
        ("3 deliver", "side effect failed", d["side_effect_failed"]),
        ("4 submit", "enrolled (new)", report["enrolled"]),
        ("4 submit", "submitted", s["rows"]),
        *(("4 submit", f"refused: {c}", n) for c, n in s["refused"].items()),
    ]
    return [{"step": step, "what": what, "rows": n} for step, what, n in rows]


@flow(
    name="batch-tick",
    flow_run_name=tick_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
)
@halts(Channel.BATCH, flow=True)
def batch_tick(pipeline: str = "reviews", day: date | None = None) -> dict[str, Any]:
    """One tick of a batch pipeline: recover orphans, reconcile finished batch jobs, deliver
    done results, then enroll today's items and submit one batch job; then exit."""
    p = _pipeline(pipeline)
    claim_pipeline(pipeline)  # before anything is touched: the name must be this pipeline's
    the_day = day or datetime.now(UTC).date()
    started = time.monotonic()
    preflight()
    orphans = checked(recover_orphans(pipeline))
    polled = checked(poll_batches(pipeline))
    delivered = checked(deliver_results(pipeline))
    enrolled = checked(enroll_items(pipeline, the_day))
    submitted = checked(submit_batch(pipeline))
    report: dict[str, Any] = {
        "pipeline": p.name,
        "day": the_day.isoformat(),
        "orphans": orphans,
        "reconciled": len(polled["jobs"]),
        "running": polled["running"],
        "poll_errors": polled["poll_errors"],
        "reconcile_errors": polled["reconcile_errors"],
        "lost": polled["lost"],
        "lost_rows": polled["lost_rows"],
        **_sum_jobs(polled["jobs"]),
        "jobs": polled["jobs"],
        "delivered": delivered,
        "consumed": delivered["consumed"],
        "enrolled": enrolled["enrolled"],
        "enrollment": enrolled,
        "submit": submitted,
        "submitted": submitted["rows"],
        "batch": submitted["batch"],
        "batches": submitted["batches"],
        "seconds": round(time.monotonic() - started, 3),
    }
    create_table_artifact(
        key=f"batch-tick-{_slug(p.name)}",
        table=_artifact_rows(report),
        description=(
            f"batch tick of {p.name} for {the_day}: {report['reconciled']} jobs reconciled,"
            f" {report['succeeded']} succeeded, {report['consumed']} delivered,"
            f" {report['submitted']} submitted"
        ),
    )
    get_run_logger().info(
        "%s tick: %d orphans bound, %d re-sent; %d jobs reconciled (%d succeeded, %d retryable,"
        " %d parked); %d delivered; %d enrolled; %d submitted in %s",
        p.name,
        orphans["bound"],
        orphans["resent"],
        report["reconciled"],
        report["succeeded"],
        report["retryable"],
        sum(report["parked"].values()),
        report["consumed"],
        enrolled["enrolled"],
        report["submitted"],
        report["batch"],
    )
    return report


@flow(
    name="reconcile",
    flow_run_name=_reconcile_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
)
@halts(Channel.BATCH, flow=True)
def reconcile(job_name: str, pipeline: str | None = None) -> dict[str, Any]:
    """Reconcile one batch job by name (``batches/...``) if it has finished, then deliver
    its results. Safe to call again: a job already reconciled is not read twice, and rows
    already settled are never changed."""
    ledger = open_ledger()
    rec = ledger.batch_named(job_name)
    if rec is None:
        raise UsageError(f"no batch job named {job_name!r} in the ledger")
    spec = pipeline or rec.pipeline
    p = _pipeline(spec)
    report: dict[str, Any] = {"batch": job_name, "pipeline": p.name, "ledger_state": rec.state}
    if rec.state != "submitted":
        report.update(reconciled=0, already_reconciled=True)
    else:
        report.update(checked(_reconcile_task(spec, job_name)))
    report["delivered"] = checked(deliver_results(spec))
    create_table_artifact(
        key=f"batch-reconcile-{_slug(p.name)}",
        table=[{"what": k, "value": str(v)} for k, v in report.items() if k != "rows"],
        description=f"reconcile {job_name} ({p.name})",
    )
    return report


@task(
    name="reconcile-batch-job",
    task_run_name="reconcile {job_name}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
@halts(Channel.BATCH)
def _reconcile_task(pipeline: str, job_name: str) -> dict[str, Any]:
    """Poll one batch job and, if it has finished, reconcile it."""
    p = _pipeline(pipeline)
    ledger = open_ledger()
    rec = ledger.batch_named(job_name)
    assert rec is not None
    client = gemini_client()
    try:
        job = get_batch_job(client, job_name)
    except Exception as exc:
        returned = give_up_if_lost(ledger, p, rec, exc, _logger())
        if returned is None:
            raise
        return {"state": "LOST", "reconciled": 0, "lost_rows": returned}
    state = job_state(job)
    if state not in _TERMINAL or output_pending(ledger, job, rec):
        return {"state": state, "reconciled": 0}
    return {"reconciled": 1, **reconcile_batch(ledger, client, p, rec, job)}
