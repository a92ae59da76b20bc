"""The background channel: one tick submits work as background interactions and exits; a later
tick collects the results.

What the frequent schedule runs (:func:`background_tick`), in this order:

1. **Stale reservations** (a row left ``reserving`` longer than ``max_age_s``: a tick died
   between reserve and bind). The interactions API has no listing call, so the orphan cannot
   be looked up: the row is taken over (a compare-and-set on its reservation token; of several
   ticks only one wins), flagged as a possible duplicate (counted in the ledger, so the cost
   is visible) and resubmitted with its key in the labels and the key header, then bound.
2. **Reclaim**: every ``submitted`` job's interaction is fetched with ``interactions.get``,
   many at once on the SDK's async client under a bounded number of requests in flight. A
   completed one is validated against the output schema and becomes ``done`` (or a
   ``schema`` failure); a failed, cancelled, incomplete or budget-exceeded one goes through
   the classifier (retryable: resubmitted by a later tick under the cap; permanent: parked at
   once); one still running stays; one running longer than ``running_limit_s`` is cancelled
   and recorded as retryable. A get that errors is classified too: a permanent answer (404:
   the interaction is gone) is a verdict about the job, a transient one (503, a timeout) is
   not and leaves the job submitted for the next tick. Outcomes are applied in bulk, one
   transaction for all results and one for all failures.
3. **Deliver**: ``done`` rows are claimed (a compare-and-set, so two ticks never run the same
   side effect), ``on_result`` is called, then the row is marked ``consumed``. An exception
   inside ``on_result`` is logged and the row stays ``done`` for the next tick; a kill inside
   it is resumed by a later tick once the claim is older than ``max_age_s``.
4. **Submit**: today's items are enrolled, due jobs reserved (the attempt is counted here,
   the reservation written before anything is sent), then ``interactions.create(
   background=True)`` for each, concurrently, each handle bound as soon as its create returns.
   A create that fails with an API error is classified and recorded against the reservation.

Crash points (``flows.crash``): ``background.after_reserve``, ``background.after_take_over``
(a stale reservation taken over, not yet resubmitted), ``background.after_create``
(before bind), ``background.after_bind``, ``background.after_reclaim``,
``background.after_done`` (before the side effect), ``background.inside_side_effect`` (in the
example pipelines' ``on_result``, after the file is written), ``background.before_consume``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.task_runners import ThreadPoolTaskRunner

from flows._deliver import DeliveryPoints, deliver_done, enroll_day
from flows._halt import checked, halts, preflight
from flows._interactions import Handle, create_kwargs, poll_all, submit_all
from flows._ledger import open_ledger
from flows._run_names import tick_run_name
from flows.crash import crash_point
from flows.errors import UsageError
from flows.identity import claim_pipeline
from flows.pipeline import Pipeline
from flows.registry import get_pipeline
from ledger import (
    Channel,
    FailureRow,
    InvalidTransition,
    Ledger,
    Reserved,
    ResultRow,
    Status,
)

__all__ = [
    "SUBMIT_LIMIT",
    "background_tick",
    "deliver_results",
    "enroll_items",
    "reclaim_interactions",
    "resubmit_stale",
    "submit_due",
]

# Jobs one tick submits at most; the rest wait for the next tick (they stay pending).
SUBMIT_LIMIT = 10_000
# Rows one tick delivers at most.
DELIVER_LIMIT = 100_000


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # a task's .fn called outside a run (benchmarks)
        return logging.getLogger("gemini_ledger.background")


def _token(kind: str) -> str:
    return f"bg-{kind}-{uuid.uuid4().hex[:16]}"


def _background(name: str) -> Pipeline[Any]:
    p = get_pipeline(name)
    if p.channel != Channel.BACKGROUND:
        raise UsageError(f"pipeline {p.name} uses the {p.channel} channel, not background")
    return p


# --- submission (steps 1 and 4 share it) ----------------------------------------------------


def _submit(
    p: Pipeline[Any],
    ledger: Ledger,
    rows: Sequence[Reserved],
    *,
    reservation: str,
    max_concurrency: int,
    fresh: bool = True,
) -> dict[str, Any]:
    """Create an interaction for each reserved row and bind it; classify failed creates.

    ``fresh``: the rows were reserved by this tick (not taken over from a dead one), so if
    the requests cannot even be built, the reservation is released with its attempts.
    """
    log = _logger()
    lost: list[str] = []

    def bind(key: str, handle: str) -> None:
        crash_point("background.after_create")
        try:
            ledger.bind_handle(key, reservation=reservation, handle=handle)
        except InvalidTransition as exc:
            # Another tick took the reservation over (it was stale): that tick resubmitted
            # it, and this interaction is the duplicate its flag already counts.
            lost.append(key)
            log.warning("could not bind %s to %s: %s", handle, key, exc)
            return
        crash_point("background.after_bind")

    try:
        requests = [
            (
                r.key,
                create_kwargs(
                    p.prompt_of(r.payload),
                    key=r.key,
                    pipeline=p.name,
                    model=r.model,
                    schema=p.output,
                ),
            )
            for r in rows
        ]
    except Exception:
        # Nothing was sent: give the attempts back rather than leave orphan candidates that
        # a later tick would resubmit and flag as possible duplicates.
        if fresh:
            ledger.release(reservation)
        raise
    outcomes = submit_all(requests, bind, max_concurrency=max_concurrency)
    halted = [s for s in outcomes if s.fault is not None]
    if halted:
        # A fault of the setup: none of these creates was accepted. Fresh rows get their
        # attempt back; a taken-over row keeps it (its first sending may have been billed).
        crash_point("background.before_release_on_halt")
        ledger.release(reservation, keys=[s.key for s in halted], refund=fresh)
    failed: Counter[str] = Counter()
    for sub in outcomes:
        if sub.failure is None:
            continue
        try:
            status = ledger.record_failure(
                sub.key, sub.failure, policy=p.policy, reservation=reservation
            )
        except InvalidTransition as exc:
            log.warning("could not record the failed create of %s: %s", sub.key, exc)
            continue
        view = ledger.get(sub.key) if status == Status.PARKED else None
        label = (
            f"parked {view.error_class}"
            if view is not None
            else f"{status} {sub.failure.error_class}"
        )
        failed[label] += 1
        log.warning("create failed for %s: %s", sub.key, sub.failure.message)
    fault = halted[0].fault if halted else None
    if fault is not None:
        raise fault
    return {
        "submitted": sum(1 for s in outcomes if s.handle is not None) - len(lost),
        "create_failed": dict(sorted(failed.items())),
        "lost_to_takeover": len(lost),
    }


@task(name="resubmit-stale-reservations", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BACKGROUND)
def resubmit_stale(pipeline: str, max_age_s: float, max_concurrency: int = 32) -> dict[str, Any]:
    """Take over reservations older than ``max_age_s`` (flagged as possible duplicates) and
    resubmit them with their key in the labels."""
    p = _background(pipeline)
    ledger = open_ledger()
    stale = ledger.stale_reservations(pipeline=p.name, older_than=max_age_s)
    if not stale:
        return {"found": 0, "taken_over": 0, "submitted": 0, "create_failed": {}}
    token = _token("stale")
    won = [
        r
        for r in stale
        if ledger.take_over(r.key, old_reservation=r.reservation, new_reservation=token)
    ]
    if won:
        crash_point("background.after_take_over")
    _logger().warning(
        "%s: %d stale reservations, %d taken over and resubmitted (possible duplicates)",
        p.name,
        len(stale),
        len(won),
    )
    out = _submit(p, ledger, won, reservation=token, max_concurrency=max_concurrency, fresh=False)
    return {"found": len(stale), "taken_over": len(won), **out}


# --- step 2: reclaim ------------------------------------------------------------------------


@task(name="reclaim-interactions", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BACKGROUND)
def reclaim_interactions(
    pipeline: str, running_limit_s: float = 3600.0, max_concurrency: int = 32
) -> dict[str, Any]:
    """Poll every submitted interaction (bounded concurrency) and apply what they say."""
    p = _background(pipeline)
    ledger = open_ledger()
    log = _logger()
    outstanding = ledger.outstanding(pipeline=p.name)
    started = time.monotonic()
    polled = poll_all(
        [Handle(k, h, t or 0.0) for k, h, t in outstanding],
        p.output,
        max_concurrency=max_concurrency,
        running_limit_s=running_limit_s,
        now=ledger.clock(),
    )
    poll_s = time.monotonic() - started
    handles = {x.key: x.handle for x in polled}
    results = [
        ResultRow(x.key, x.result, *x.usage)
        for x in polled
        if x.outcome == "done" and x.result is not None
    ]
    failures = [
        FailureRow(x.key, x.failure, *x.usage)
        for x in polled
        if x.outcome == "failed" and x.failure is not None
    ]
    completed = ledger.apply_results(results, handle=handles)
    applied_failures = ledger.apply_failures(failures, handle=handles, policy=p.policy)
    crash_point("background.after_reclaim")
    fault = next((x.fault for x in polled if x.fault is not None), None)
    if fault is not None:  # what was learnt is applied; the rest stays submitted
        raise fault

    retryable: Counter[str] = Counter()
    parked: Counter[str] = Counter()
    for row in failures:
        view = ledger.get(row.key)
        if view.status == Status.PARKED and view.handle == handles[row.key]:
            parked[view.error_class or "unclassified"] += 1
        elif view.status == Status.RETRYABLE:
            retryable[view.error_class or "unclassified"] += 1
    transient = [x for x in polled if x.outcome in ("get_error", "cancel_error")]
    for x in transient:
        log.warning(
            "%s: %s on %s left it submitted: %s",
            x.key,
            x.outcome.replace("_", " "),
            x.handle,
            x.failure.message if x.failure else "?",
        )
    tokens = [sum(x.usage[i] for x in polled) for i in range(3)]
    report = {
        "polled": len(polled),
        "poll_seconds": round(poll_s, 3),
        "completed": completed,
        "failures_applied": applied_failures,
        "retryable": dict(sorted(retryable.items())),
        "parked": dict(sorted(parked.items())),
        "still_running": sum(1 for x in polled if x.outcome == "running"),
        "cancelled": sum(1 for x in polled if x.cancelled),
        "poll_errors": len(transient),
        "tokens": {"prompt": tokens[0], "candidates": tokens[1], "total": tokens[2]},
    }
    log.info(
        "%s: polled %d interactions in %.2fs: %d completed, %d failed, %d still running",
        p.name,
        len(polled),
        poll_s,
        completed,
        applied_failures,
        report["still_running"],
    )
    return report


# --- step 3: deliver ------------------------------------------------------------------------


_DEFAULT_MAX_AGE_S = 300.0


@task(name="deliver-results", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BACKGROUND)
def deliver_results(pipeline: str, max_age_s: float = _DEFAULT_MAX_AGE_S) -> dict[str, int]:
    """Claim done rows, call ``on_result`` for each, then mark it consumed; a failing side
    effect is logged and left done for the next tick."""
    p = _background(pipeline)
    out = deliver_done(
        open_ledger(),
        p,
        token=_token("deliver"),
        older_than=max_age_s,
        log=_logger(),
        page=DELIVER_LIMIT,
        # One row at a time on purpose: a kill between a side effect and this write makes
        # only the row in hand run its (idempotent) side effect again.
        points=DeliveryPoints(
            before_effect="background.after_done",
            before_consume="background.before_consume",
            after_failure="background.after_delivery_failure",
        ),
    )
    return {"claimed": out.claimed, "consumed": out.consumed, "side_effect_failed": len(out.failed)}


# --- step 4: enroll and submit --------------------------------------------------------------


@task(name="enroll-todays-items", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BACKGROUND)
def enroll_items(pipeline: str, day: date) -> dict[str, Any]:
    """Enroll the day's items (an existing key is never changed); returns how many were new."""
    return enroll_day(open_ledger(), _background(pipeline), day, log=_logger()).as_dict()


@task(name="submit-interactions", cache_policy=NO_CACHE, persist_result=False)
@halts(Channel.BACKGROUND)
def submit_due(pipeline: str, max_concurrency: int = 32) -> dict[str, Any]:
    """Reserve the due jobs (pending or retryable), then create a background interaction for
    each and bind its id."""
    p = _background(pipeline)
    ledger = open_ledger()
    preflight()  # a missing key must not strand reserved rows
    token = _token("submit")
    reserved = ledger.reserve(pipeline=p.name, limit=SUBMIT_LIMIT, reservation=token)
    crash_point("background.after_reserve")
    if not reserved:
        return {"reserved": 0, "submitted": 0, "create_failed": {}}
    rows = list(ledger.reserved(token))
    out = _submit(p, ledger, rows, reservation=token, max_concurrency=max_concurrency)
    _logger().info("%s: reserved %d, submitted %d", p.name, reserved, out["submitted"])
    return {"reserved": reserved, **out}


# --- the flow -------------------------------------------------------------------------------


def _today() -> date:
    return datetime.now(UTC).date()


def _artifact_key(name: str) -> str:
    return "background-tick-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x")


def _artifact_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    stale, rec, dl, sub = (report[k] for k in ("stale", "reclaimed", "delivered", "submit"))
    rows: list[tuple[str, str, Any]] = [
        ("1 stale", "found", stale["found"]),
        ("1 stale", "taken over and resubmitted", stale.get("submitted", 0)),
        ("2 reclaim", "polled", rec["polled"]),
        ("2 reclaim", "completed (done)", rec["completed"]),
        *(("2 reclaim", f"retryable {c}", n) for c, n in rec["retryable"].items()),
        *(("2 reclaim", f"parked {c}", n) for c, n in rec["parked"].items()),
        ("2 reclaim", "still running", rec["still_running"]),
        ("2 reclaim", "cancelled (ran too long)", rec["cancelled"]),
        ("2 reclaim", "poll errors (left submitted)", rec["poll_errors"]),
        ("2 reclaim", "tokens", rec["tokens"]["total"]),
        ("3 deliver", "consumed", dl["consumed"]),
        ("3 deliver", "side effect failed", dl["side_effect_failed"]),
        ("4 submit", "enrolled (new)", report["enrolled"]),
        ("4 submit", "reserved", sub["reserved"]),
        ("4 submit", "submitted", sub["submitted"]),
        *(("4 submit", f"create failed: {c}", n) for c, n in sub["create_failed"].items()),
    ]
    return [{"step": s, "what": w, "jobs": n} for s, w, n in rows]


@flow(
    name="background-tick",
    flow_run_name=tick_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
)
@halts(Channel.BACKGROUND, flow=True)
def background_tick(
    pipeline: str = "articles",
    day: date | None = None,
    max_age_s: float | None = None,
    running_limit_s: float = 3600.0,
    max_concurrency: int = 32,
) -> dict[str, Any]:
    """One tick of a background-channel pipeline: resubmit stale reservations, reclaim
    submitted interactions, deliver done results, then submit today's items, and exit.

    ``max_age_s`` unset: GEMINI_LEDGER_BACKGROUND_STALE_S, else 300 s, so a deployed run and
    ``gemini-ledger tick`` honour the same setting."""
    if max_age_s is None:
        from flows.settings import load_settings

        max_age_s = load_settings().background_stale_s
        max_age_s = _DEFAULT_MAX_AGE_S if max_age_s is None else max_age_s
    p = _background(pipeline)
    claim_pipeline(pipeline)  # before anything is touched: the name must be this pipeline's
    the_day = day or _today()
    started = time.monotonic()
    preflight()
    stale = checked(resubmit_stale(pipeline, max_age_s, max_concurrency))
    reclaimed = checked(reclaim_interactions(pipeline, running_limit_s, max_concurrency))
    delivered = checked(deliver_results(pipeline, max_age_s))
    enrolled = checked(enroll_items(pipeline, the_day))
    submitted = checked(submit_due(pipeline, max_concurrency))
    report: dict[str, Any] = {
        "pipeline": p.name,
        "day": the_day.isoformat(),
        "stale": stale,
        "reclaimed": reclaimed,
        "delivered": delivered,
        "consumed": delivered["consumed"],
        "enrolled": enrolled["enrolled"],
        "enrollment": enrolled,
        "submit": submitted,
        "submitted": submitted["submitted"] + stale.get("submitted", 0),
        "tokens": reclaimed["tokens"],
        "seconds": round(time.monotonic() - started, 3),
    }
    create_table_artifact(
        key=_artifact_key(p.name),
        table=_artifact_rows(report),
        description=(
            f"background tick of {p.name} for {the_day}: {reclaimed['completed']} completed,"
            f" {delivered['consumed']} delivered, {report['submitted']} submitted"
        ),
    )
    get_run_logger().info(
        "%s tick: %d stale resubmitted, %d completed, %d consumed, %d submitted",
        p.name,
        stale.get("submitted", 0),
        reclaimed["completed"],
        delivered["consumed"],
        report["submitted"],
    )
    return report
