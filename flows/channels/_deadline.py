"""A batch pipeline's deadline, met by falling back to the direct channel.

The batch channel is half price but promises only "within 24 hours"
(https://ai.google.dev/gemini-api/docs/batch-mode). A pipeline that names a deadline
(``Pipeline(deadline=...)``, or the tick's ``deadline`` parameter, ``flows.Deadline``) has its
batch channel's submit step ask first, every tick, which of the rows still out cannot wait:

* **when**, row by row: a row still out (pending, reserving, submitted, retryable) is due at
  the first time the deadline's clock shows after it was enrolled (``Deadline.first_after``),
  so the rows of one enrolment night share one due time, and those enrolled at or before a
  due time ``t`` are the rows due by ``t``. A due time is near when the time left before it
  is no more than what the direct channel needs for every row due by it (they go out
  together, the earlier first): one call's time (the median of the last direct calls of the
  model, ``Ledger.call_seconds``; else ``GEMINI_LEDGER_DEADLINE_CALL_S``) for each round of
  the calls in flight at once (the tick's ``max_concurrency``, at most the model's shared
  in-flight limit), at least the rows over the model's shared rate limit
  (``flows.gemini.quota.limits_for``), plus ``GEMINI_LEDGER_DEADLINE_MARGIN_S`` and, when
  batch jobs hold any of them, the time allowed for those jobs to end after the cancel
  (``GEMINI_LEDGER_DEADLINE_CANCEL_WAIT_S``). A due time already past is near (its rows are
  late). The latest near due time ``t`` decides (``Switched.taken_by``): the rows due by it
  are the deadline's; the later rows stay on batch. No due time near: the submit goes on as
  usual.
* **the switch-over** (:func:`switch_if_due`): only the submitted batch jobs holding a row
  due by ``t`` are cancelled (``Ledger.batches_holding``), each first marked in the ledger
  as cancelled for the deadline (``Ledger.mark_deadline_cancel``: whoever settles it later,
  the ``reconcile`` flow a webhook starts included, reads its CANCELLED end as ours, whatever
  gave the deadline), then ``batches.cancel``; then polled until it ends, within the cancel
  wait (``BatchChannel.settle``: whatever output it left, a responses file or none, is
  applied; its unanswered rows become ``retryable:deadline``, their batch attempt counted). A
  job that ended CANCELLED without a responses file yet is polled again until the wait is
  over (such a file may come a poll later, as a SUCCEEDED job's may: ``output_pending``), so
  rows it answered are never sent again. Then the pending and retryable rows due by ``t``
  are sent through the direct channel's own calls (``flows.channels.direct.run_calls``),
  each under a ``direct:`` handle (the mark that a batch row was answered directly: the
  morning view prices it at the direct rate and reports what that cost above the batch
  price). A job that has not ended within the wait keeps its rows (they may still be
  answered by it); the next tick settles it and sends what it left. A row at its attempt
  cap when its job is cancelled is not parked for it: the cancel is the deadline's doing,
  so the row is sent directly once more (parked only if that call fails too).
* **the rows left on batch**: the same tick's batch submit reserves only rows enrolled after
  ``t`` (``reserve(enrolled_after=...)``), so a row due by ``t`` never goes into a batch job
  again (one its direct call left retryable waits for the next tick's switch-over), and a
  batch job holds the rows of one due time. A job is cancelled whole: a later-due row in a
  cancelled job (one made before, or under another deadline) is ``retryable:deadline`` like
  its job-mates and goes back to batch through that submit, at the batch price, its
  cancelled attempt counted (at its attempt cap it has the one grace attempt; a second
  deadline cancel or failure then parks it). Rows that are not near, pending or in running
  jobs, are left alone: tonight's batch is never cancelled for an earlier night's late row.

Every write is a verb of the ledger's that moves a row only from the state it expects, so no
row is sent twice nor delivered twice: a row answered by the cancelled job's output is
``done`` and no longer due; a row sent directly is under a ``direct:`` handle, and a late
reconcile of its old job (a webhook) applies only to rows still submitted under the job; a
later-due row of a cancelled job is ``retryable`` and reserved once, by the direct channel
or by the batch submit, never both.

Crash points: ``deadline.after_cancel`` (the jobs marked and cancelled, nothing read: the
next tick's collect, or the reconcile flow, reconciles the CANCELLED jobs, their unanswered
rows ``retryable:deadline`` as here by their mark, and its submit switches again),
``deadline.after_partial_apply`` (the cancelled jobs settled, their rows retryable: the next
tick sends the near ones directly, its batch submit the others), ``deadline.after_direct``
(the direct calls recorded, nothing delivered: the next tick's deliver step). A kill during a
direct call leaves its row under a ``direct:`` handle: the next tick's recover step sweeps it
as the direct channel does (``sweep_interrupted``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flows.channels._batch_io import cancel_batch_job
from flows.channels.direct import HANDLE_PREFIX, run_calls
from flows.crash import crash_point
from flows.deadline import Deadline
from flows.gemini._errors import is_not_found, setup_fault
from flows.gemini.quota import limits_for
from flows.pipeline import Pipeline
from flows.run._stop import stop_requested
from flows.run._stop import wait as wait_unless_stopped
from ledger import DEADLINE_CANCELLED_CODE, BatchRecord, Failure, Status, Verdict, redact

if TYPE_CHECKING:
    from flows.channels._channel import RunContext
    from flows.channels.batch import BatchChannel

__all__ = [
    "DEADLINE_CANCELLED",
    "DEFAULT_CONCURRENCY",
    "DirectNeed",
    "Switched",
    "deadline_of",
    "direct_need",
    "set_clock",
    "switch_if_due",
]

#: The failure of a row whose batch job was cancelled to meet the deadline: retryable, its
#: attempt counted (the batch send is recorded; the direct one will be the next attempt),
#: and never what parks the row at its attempt cap (the ledger allows it one attempt more:
#: ``GRACE_ATTEMPT_CODES`` in ``ledger._failure``), so a row on its last attempt still goes
#: out directly.
#: Not unknown (as a CANCELLED job's rows otherwise are): a row the cancel stopped was not
#: processed ("stops processing new requests", the batch docs), and a row cut off again in
#: its direct call must not reach ``unknown_cap`` for it. The batch channel's settle fails
#: a CANCELLED job's rows so on any pipeline with a deadline.
DEADLINE_CANCELLED = Failure(
    Verdict.RETRYABLE,
    DEADLINE_CANCELLED_CODE,
    "its batch job was cancelled to meet the pipeline's deadline; sent directly",
)

DEFAULT_CONCURRENCY = 8  # the direct channel's default calls in flight
_POLL_S = 2.0  # between polls of the cancelled jobs

_clock: Callable[[], float] = time.time


def set_clock(clock: Callable[[], float] | None) -> None:
    """The clock the deadline is read against (epoch seconds); None: the real one. Tests set
    it (``flows.testing.deadline_clock``) so a morning comes without waiting for it."""
    global _clock
    _clock = clock or time.time


def deadline_of(p: Pipeline[Any], given: str | None) -> Deadline | None:
    """The deadline a tick works to: the tick's ``deadline`` parameter, else the pipeline's."""
    if given is not None:
        return Deadline.of(given)
    return Deadline.of(p.deadline) if p.deadline is not None else None


@dataclass(frozen=True, slots=True)
class DirectNeed:
    """What sending ``rows`` directly takes: ``seconds`` in all (margin included), from one
    call's time (``measured`` or the setting) and the calls at once and per minute."""

    rows: int
    seconds: float
    call_s: float
    measured: bool
    concurrency: int
    per_minute: float | None


def direct_need(
    ctx: RunContext, rows: int, *, concurrency: int, jobs_out: bool = True
) -> DirectNeed:
    """How long the direct channel needs for ``rows`` of the run's pipeline (module doc)."""
    model = ctx.pipeline.model
    measured = ctx.ledger.call_seconds(model=model, handle_prefix=HANDLE_PREFIX)
    call_s = measured if measured is not None else ctx.settings.deadline_call_s
    limits = limits_for(model)
    at_once = max(1, min(concurrency, limits.inflight or concurrency))
    seconds = math.ceil(rows / at_once) * call_s
    if limits.per_minute:
        seconds = max(seconds, rows / limits.per_minute * 60.0)
    seconds += ctx.settings.deadline_margin_s
    if jobs_out:
        seconds += ctx.settings.deadline_cancel_wait_s
    return DirectNeed(rows, seconds, call_s, measured is not None, at_once, limits.per_minute)


@dataclass(kw_only=True)
class Switched:
    """A switch-over: the deadline, the time left and needed, the rows taken back (those
    enrolled at or before ``taken_by``), the batch jobs cancelled and what they came to, the
    rows sent directly and their outcomes."""

    deadline: str
    left_s: float
    need_s: float
    taken_by: float = 0.0  # rows enrolled at or before it are the deadline's; the batch leaves them
    rows_near: int = 0  # rows still out due by then (the rest stay on batch)
    cancelled: list[str] = field(default_factory=list)
    cancel_errors: int = 0
    settled_jobs: int = 0
    unfinished_jobs: int = 0  # still running when the wait ended: their rows wait for them
    answered_by_batch: int = 0  # rows the cancelled jobs' output answered
    sent_direct: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Near:
    """The rows whose deadline is near: those enrolled at or before ``by`` (due at or before
    it), the submitted batch jobs holding any of them, and what sending them directly takes."""

    by: float
    rows: int
    jobs: list[BatchRecord]
    need: DirectNeed


def _due_times(deadline: Deadline, oldest: float, until: float) -> list[float]:
    """The deadline's times from the first after ``oldest`` up to ``until``: the times the
    rows still out are due at (a row is due at the first one after its enrolment)."""
    times = []
    due = deadline.first_after(oldest)
    while due <= until:
        times.append(due)
        due = deadline.first_after(due + 1.0)
    return times


def _rows_near(
    ctx: RunContext, deadline: Deadline, oldest: float, *, rows: int, now: float, concurrency: int
) -> _Near | None:
    """The rows to take back from batch now (module doc, "when"), or None.

    Rows due at a time ``t`` are sent directly with those due before it, so ``t`` is near
    when the time left before it is no more than what the direct channel needs for every row
    due by then; the latest near time decides. Every time already past is near (its rows are
    late); a time later than what all the rows out would need can never be."""
    ledger, p = ctx.ledger, ctx.pipeline
    most = direct_need(ctx, rows, concurrency=concurrency).seconds
    times = _due_times(deadline, oldest, now + most)
    late = [t for t in times if t <= now]
    near: _Near | None = None
    for t in late[-1:] + [t for t in times if t > now]:
        held, _ = ledger.rows_out(pipeline=p.name, enrolled_by=t)
        if held == 0:
            continue
        jobs = ledger.batches_holding(pipeline=p.name, enrolled_by=t)
        need = direct_need(ctx, held, concurrency=concurrency, jobs_out=bool(jobs))
        if t - now <= need.seconds:
            near = _Near(t, held, jobs, need)
    return near


def _cancel(channel: BatchChannel, client: Any, jobs: list[BatchRecord], out: Switched) -> None:
    """Ask the API to cancel ``jobs``, each marked in the ledger as the deadline's first."""
    ctx = channel.ctx
    for rec in jobs:
        assert rec.name is not None
        # Before the cancel: whoever settles the job (this tick, the reconcile flow the
        # webhook batch.cancelled starts, the next tick after a crash) reads it as ours.
        if not ctx.ledger.mark_deadline_cancel(rec.name):
            continue  # settled meanwhile (a webhook's reconcile): nothing left to cancel
        try:
            cancel_batch_job(client, rec.name)
            out.cancelled.append(rec.name)
        except Exception as exc:
            fault = setup_fault(exc)
            if fault is not None:
                raise fault from exc
            # Already ended (the API refuses to cancel a finished job), gone, or a transient
            # error: the poll below reads whatever state it is in.
            out.cancel_errors += 0 if is_not_found(exc) else 1
            ctx.log.warning(
                "%s: cancelling %s failed: %s",
                ctx.name,
                rec.name,
                redact(f"{type(exc).__name__}: {exc}"),
            )


def _settle_cancelled(
    channel: BatchChannel, client: Any, jobs: list[BatchRecord], out: Switched
) -> None:
    """Poll the cancelled jobs until each has ended and is settled, within the cancel wait."""
    from flows.channels.batch import Settle

    ctx = channel.ctx
    until = time.monotonic() + ctx.settings.deadline_cancel_wait_s
    # Read again: each now carries its mark (a CANCELLED end is the deadline's).
    left = [r for r in (ctx.ledger.batch_named(j.name or "") for j in jobs) if r is not None]
    while left:
        # A CANCELLED job without its responses file yet is waited for (its answered rows
        # must not be sent again) until the wait is over; then no file is read as none.
        last = time.monotonic() >= until
        still = []
        for rec in left:
            settled = channel.settle(client, rec, await_cancelled_output=not last)
            if settled.outcome in (Settle.RECONCILED, Settle.LOST):
                out.settled_jobs += 1
                report = settled.report or {}
                out.answered_by_batch += int(report.get("succeeded", 0))
            else:
                still.append(rec)
        left = still
        if not left or last or stop_requested():
            break
        if wait_unless_stopped(min(_POLL_S, max(until - time.monotonic(), 0.0))):
            break
    out.unfinished_jobs = len(left)
    if left:
        ctx.log.warning(
            "%s: %d cancelled batch jobs had not ended after %.0f s: their rows wait for them",
            ctx.name,
            len(left),
            ctx.settings.deadline_cancel_wait_s,
        )


def _keys_due_by(ctx: RunContext, by: float) -> list[str]:
    """The pending and retryable rows enrolled at or before ``by``: the ones to send now."""
    ledger, p = ctx.ledger, ctx.pipeline
    views = ledger.jobs(pipeline=p.name, status=Status.PENDING)
    views += ledger.jobs(pipeline=p.name, status=Status.RETRYABLE)
    return [j.key for j in views if j.created_at <= by]


def switch_if_due(
    channel: BatchChannel, deadline: Deadline, *, concurrency: int
) -> Switched | None:
    """Switch the rows whose deadline is near to the direct channel (module doc); None when
    every row out can wait for batch (or there is none). The rows not near are left to the
    batch submit that follows (``Switched.taken_by``: it reserves only rows enrolled later)."""
    ctx = channel.ctx
    ledger, p = ctx.ledger, ctx.pipeline
    rows, oldest = ledger.rows_out(pipeline=p.name)
    if rows == 0 or oldest is None:
        return None
    now = _clock()
    left = deadline.first_after(oldest) - now  # the oldest row's: the first due
    near = _rows_near(ctx, deadline, oldest, rows=rows, now=now, concurrency=concurrency)
    if near is None:
        ctx.log.info(
            "%s: %d rows out, the first due in %.0f s (deadline %s); none so near that the"
            " direct channel is needed: batch",
            ctx.name,
            rows,
            left,
            deadline,
        )
        return None
    need = near.need
    ctx.log.warning(
        "%s: %d of %d rows out due by %s (the first in %.0f s), which the direct channel needs"
        " %.0f s for (a call %.1f s%s, %d at once): cancelling the %d batch jobs holding them"
        " and sending them directly",
        ctx.name,
        near.rows,
        rows,
        deadline,
        left,
        need.seconds,
        need.call_s,
        " measured" if need.measured else "",
        need.concurrency,
        len(near.jobs),
    )
    out = Switched(
        deadline=str(deadline),
        left_s=round(left, 1),
        need_s=round(need.seconds, 1),
        taken_by=near.by,
        rows_near=near.rows,
    )
    client = ctx.client
    _cancel(channel, client, near.jobs, out)
    # Cancelled, nothing read: the next tick's collect reconciles the CANCELLED jobs.
    crash_point("deadline.after_cancel")
    _settle_cancelled(channel, client, near.jobs, out)
    # The answered rows done, the others retryable:deadline: the next tick sends the near
    # ones directly, its batch submit the others.
    crash_point("deadline.after_partial_apply")
    outcomes = run_calls(ctx, _keys_due_by(ctx, near.by), max_concurrency=concurrency)
    # Sent and recorded, nothing delivered: the next tick's deliver step.
    crash_point("deadline.after_direct")
    tally: dict[str, int] = {}
    for outcome in outcomes.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    out.sent_direct = sum(n for o, n in tally.items() if not o.startswith("skipped:"))
    out.outcomes = dict(sorted(tally.items()))
    return out
