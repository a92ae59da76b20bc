"""The background channel: one tick submits work as background interactions and exits; a later
tick collects the results.

:class:`BackgroundChannel`'s steps of a tick (``flows.tick`` runs them), in this order:

1. **Recover stale reservations** (a row left ``reserving`` and unrenewed for longer than
   the tick's stale age (``stale_s``, else ``GEMINI_LEDGER_BACKGROUND_STALE_S``): a tick
   died between reserve and bind; a live tick renews its reservation while it creates).
   The interactions API has no listing call, so the orphan cannot be looked up: the row
   is taken over (a compare-and-set on its reservation token; of several ticks only one wins),
   flagged as a possible duplicate (counted in the ledger, so the cost is visible) and
   resubmitted with its key in the labels and the key header, then bound.
2. **Collect** (reclaim): every ``submitted`` job's interaction is fetched with
   ``interactions.get``, many at once on the SDK's async client under a bounded number of
   requests in flight. A completed one is validated against the output schema and becomes
   ``done`` (or a ``schema`` failure); a failed, cancelled, incomplete or budget-exceeded one
   goes through the classifier (retryable: resubmitted by a later tick under the cap; permanent:
   parked at once; ``incomplete``, the output budget reached, is ``truncated`` whatever its
   errors say); one still running (``idle`` included) stays; one running longer than
   ``running_limit_s`` is cancelled and recorded as retryable. A get answered 404 means the
   interaction is gone (deleted, or past its retention): the job comes back as
   ``retryable:interaction_lost`` with its attempt kept and is counted as a possible duplicate
   (it may have run and been billed). Another permanent answer (400) is a verdict about the
   job; a transient one (503, a timeout) is not and leaves the job submitted for the next
   tick. Outcomes are applied in bulk, one
   transaction for all results and one for all failures.
3. **Deliver**: ``done`` rows are claimed under the pass's token and renewed while it works
   (``flows.run._deliver``: two live ticks never run the same side effect), ``on_result`` is
   called, then the row is marked ``consumed``. An exception inside ``on_result`` is logged
   and the row stays ``done`` for the next tick; a kill inside it is resumed by a later tick
   once the claim has gone unrenewed for that stale age.
4. **Submit** (after the tick enrolled today's items): due jobs are reserved (the attempt is
   counted here, the reservation written before anything is sent), then ``interactions.create(
   background=True)`` for each, concurrently, each handle bound as soon as its create returns.
   A create that fails with an API error is classified and recorded against the reservation.
   A stop (SIGTERM, ``flows.run._stop``) sends no further create: the ones in flight are bound,
   the rows not sent are released.

Crash points (``flows.crash``): ``background.after_reserve``, ``background.after_take_over``
(a stale reservation taken over, not yet resubmitted), ``background.after_create``
(before bind), ``background.after_bind``, ``background.after_reclaim``,
``background.after_done`` (before the side effect), ``background.inside_side_effect`` (in the
example pipelines' ``on_result``, after the file is written), ``background.before_consume``.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
from flows.channels._interactions import Handle, Submission, create_kwargs, poll_all, submit_all
from flows.crash import crash_point
from flows.pipeline import Pipeline
from flows.run._budget import reserve
from flows.run._deliver import Delivery, DeliveryPoints, deliver_done
from flows.run._halt import preflight
from flows.run._renewal import Renewal
from flows.run._upload_rows import ledger_uploads
from flows.run._uploads import RowUploads
from ledger import (
    Channel,
    FailureRow,
    InvalidTransition,
    Ledger,
    Reserved,
    ResultRow,
    Status,
    TakenOver,
    Usage,
)

__all__ = [
    "SUBMIT_LIMIT",
    "BackgroundChannel",
    "BackgroundCollected",
    "BackgroundRecovered",
    "BackgroundSubmitted",
    "submit_reserved",
]

# Jobs one tick submits at most; the rest wait for the next tick (they stay pending).
SUBMIT_LIMIT = 10_000


def _token(kind: str) -> str:
    return f"bg-{kind}-{uuid.uuid4().hex[:16]}"


# --- submission (steps 1 and 4 share it) ----------------------------------------------------


def submit_reserved(
    p: Pipeline[Any],
    ledger: Ledger,
    rows: Sequence[Reserved],
    *,
    reservation: str,
    max_concurrency: int,
    client_factory: Callable[[], Any],
    run_client: Callable[[], Any],
    fresh: bool = True,
) -> dict[str, Any]:
    """Create an interaction for each reserved row and bind it; classify failed creates.
    ``client_factory``: a new client of the run's (``RunContext.new_client``), closed after;
    ``run_client``: the run's shared client (``RunContext.client``), for media uploads.

    ``fresh``: the rows were reserved by this tick (not taken over from a dead one), so if
    the requests cannot even be built, the reservation is released with its attempts.
    """
    log = run_logger("gemini_ledger.background")
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

    media: RowUploads | None = None
    try:
        prompts: list[tuple[Reserved, Any]] = []
        for r in rows:
            prompt = p.prompt_of(r.payload)
            if prompt.parts:
                # Uploads first (once per content, never the row's attempt): a row whose
                # upload failed is settled below and not sent.
                media = media or RowUploads(ledger_uploads(run_client(), ledger, p.name))
                resolved = media(prompt, r.key)
                if resolved is None:
                    continue
                prompt = resolved
            prompts.append((r, prompt))
        requests = [
            (
                r.key,
                create_kwargs(
                    prompt,
                    key=r.key,
                    pipeline=p.name,
                    model=r.model,
                    schema=p.output,
                    base=p.generation,
                    prefix=p.cached_prefix,
                ),
            )
            for r, prompt in prompts
        ]
    except Exception:
        # Nothing was sent: give the attempts back rather than leave orphan candidates that
        # a later tick would resubmit and flag as possible duplicates.
        if fresh:
            ledger.release(reservation)
        raise
    if media is not None and (media.failed or media.later or media.fault):
        if media.fault is not None:  # a fault of the setup: nothing sent, all given back
            ledger.release(reservation, refund=fresh)
            raise media.fault
        media.settle(
            ledger,
            p,
            reservation,
            give_back=lambda keys: ledger.release(reservation, keys=keys, refund=fresh),
        )
    outcomes = submit_all(
        requests, bind, max_concurrency=max_concurrency, client_factory=client_factory
    )
    stopped = [s.key for s in outcomes if s.stopped]
    if stopped:
        # A stop (SIGTERM) before these were sent: they go back to their queue, fresh ones
        # with their attempt; the creates that were sent are bound above.
        ledger.release(reservation, keys=stopped, refund=fresh)
        log.warning("stopping: %d reserved rows not sent, given back", len(stopped))
    halted = [s for s in outcomes if s.fault is not None]
    if halted:
        # A fault of the setup: none of these creates was accepted. Fresh rows get their
        # attempt back; a taken-over row keeps it (its first sending may have been billed).
        crash_point("background.before_release_on_halt")
        ledger.release(reservation, keys=[s.key for s in halted], refund=fresh)
    failed: Counter[str] = Counter()
    ambiguous = 0
    for sub in outcomes:
        if sub.failure is None:
            continue
        if sub.ambiguous and _send_again(ledger, p, sub, reservation):
            ambiguous += 1
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
        "ambiguous": ambiguous,
        "not_sent": len(stopped),
    }


def _send_again(ledger: Ledger, p: Pipeline[Any], sub: Submission, reservation: str) -> bool:
    """A create answered 5xx or not at all may have made the interaction (billed), and
    interactions cannot be listed to find out (google-genai's Interactions has create, get,
    cancel and delete, no list). So the row goes back to be sent again, flagged a possible
    duplicate as an orphan re-send is, its attempt counted (the request reached the API) but
    never parked for it. False once it has been flagged ``attempt_cap`` times: then it is the
    row's own failure (parked at its cap)."""
    assert sub.failure is not None
    again = ledger.release_ambiguous(
        sub.key, reservation=reservation, failure=sub.failure, bound=p.policy.attempt_cap
    )
    if again:
        run_logger("gemini_ledger.background").warning(
            "%s: create of %s answered %s (%s): it may exist; sent again, flagged as a"
            " possible duplicate",
            p.name,
            sub.key,
            sub.failure.code,
            sub.failure.message,
        )
    return again


# --- the channel: the steps a tick runs (flows.tick) ------------------------------------------


_DEFAULT_RUNNING_LIMIT_S = 3600.0
_DEFAULT_CONCURRENCY = 32


@dataclass(kw_only=True)
class BackgroundRecovered(Recovered):
    """Reservations a dead tick left unbound: taken over and resubmitted (possible
    duplicates, flagged in the ledger)."""

    found: int = 0
    taken_over: int = 0
    create_failed: dict[str, int] = field(default_factory=dict)
    lost_to_takeover: int = 0
    ambiguous: int = 0  # resubmits answered 5xx or not at all: sent again, flagged

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "stale reservations found", self.found
        yield "taken over and resubmitted", self.recovered
        if self.ambiguous:
            yield "ambiguous resubmits (sent again, flagged)", self.ambiguous
        yield from ((f"resubmit failed: {c}", n) for c, n in self.create_failed.items())


@dataclass(kw_only=True)
class BackgroundCollected(Collected):
    """Submitted interactions polled and applied."""

    polled: int = 0
    poll_seconds: float = 0.0
    failures_applied: int = 0
    cancelled: int = 0
    poll_errors: int = 0
    lost: int = 0

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "interactions polled", self.polled
        yield "cancelled (ran too long)", self.cancelled
        yield "poll errors (left submitted)", self.poll_errors
        yield "lost at the API (404: sent again, possible duplicates)", self.lost


@dataclass(kw_only=True)
class BackgroundSubmitted(Submitted):
    """Due rows reserved and created as background interactions."""

    reserved: int = 0
    lost_to_takeover: int = 0
    ambiguous: int = 0  # creates answered 5xx or not at all: sent again, flagged

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "reserved", self.reserved
        if self.ambiguous:
            yield "ambiguous creates (sent again, flagged)", self.ambiguous


class BackgroundChannel:
    """The background channel's steps: resubmit stale reservations, reclaim interactions,
    deliver, submit."""

    kind: ClassVar[Channel] = Channel.BACKGROUND
    uses: ClassVar[frozenset[str]] = frozenset({"stale_s", "max_concurrency", "running_limit_s"})

    def __init__(self, ctx: RunContext, options: TickOptions | None = None) -> None:
        own_pipeline(ctx, self.kind)
        self.ctx = ctx
        options = options or TickOptions()
        self.max_age_s = pick(options.stale_s, ctx.settings.background_stale_s)
        self.running_limit_s = pick(options.running_limit_s, _DEFAULT_RUNNING_LIMIT_S)
        self.max_concurrency = pick(options.max_concurrency, _DEFAULT_CONCURRENCY)

    def _holding(self, reservation: str) -> Renewal:
        """Renew the reservation's rows while they are sent and bound, so a later tick takes
        over only rows whose tick died (unrenewed for ``max_age_s``)."""
        ledger = self.ctx.ledger
        return Renewal(
            lambda: ledger.renew_reservation(reservation) >= 0,  # taken-over rows fail to bind
            age_s=self.max_age_s,
            what=f"reservation {reservation}",
            log=self.ctx.log,
        )

    def recover(self) -> BackgroundRecovered:
        """Take over reservations older than ``max_age_s`` (flagged as possible duplicates)
        and resubmit them with their key in the labels."""
        p, ledger, log = self.ctx.pipeline, self.ctx.ledger, self.ctx.log
        stale = ledger.stale_reservations(pipeline=p.name, older_than=self.max_age_s)
        if not stale:
            return BackgroundRecovered()
        token = _token("stale")
        won = [
            r
            for r in stale
            if ledger.take_over(r.key, old_reservation=r.reservation, new_reservation=token)
        ]
        if won:
            crash_point("background.after_take_over")
            log.warning(
                "%s: %s",
                p.name,
                TakenOver.of([r.reserved_at for r in won]).describe("reservations"),
            )
        log.warning(
            "%s: %d stale reservations, %d taken over and resubmitted (possible duplicates)",
            p.name,
            len(stale),
            len(won),
        )
        with self._holding(token):
            out = submit_reserved(
                p,
                ledger,
                won,
                reservation=token,
                max_concurrency=self.max_concurrency,
                client_factory=self.ctx.new_client,
                run_client=lambda: self.ctx.client,
                fresh=False,
            )
        return BackgroundRecovered(
            took_over=TakenOver.of([r.reserved_at for r in won]),
            recovered=out["submitted"],
            refused=out["create_failed"],
            found=len(stale),
            taken_over=len(won),
            create_failed=out["create_failed"],
            lost_to_takeover=out["lost_to_takeover"],
            ambiguous=out["ambiguous"],
        )

    def collect(self) -> BackgroundCollected:
        """Poll every submitted interaction (bounded concurrency) and apply what they say."""
        p, ledger, log = self.ctx.pipeline, self.ctx.ledger, self.ctx.log
        outstanding = ledger.outstanding(pipeline=p.name)
        started = time.monotonic()
        polled = poll_all(
            [Handle(k, h, t or 0.0) for k, h, t in outstanding],
            p.output,
            max_concurrency=self.max_concurrency,
            running_limit_s=self.running_limit_s,
            now=ledger.clock(),
            client_factory=self.ctx.new_client,
        )
        poll_s = time.monotonic() - started
        handles = {x.key: x.handle for x in polled}
        results = [
            ResultRow(x.key, x.result, *x.usage, x.model_version, x.response_id)
            for x in polled
            if x.outcome == "done" and x.result is not None
        ]
        # A lost interaction (404) is a failure like the others: retryable:interaction_lost,
        # its attempt kept, flagged as a possible duplicate by the ledger.
        failures = [
            FailureRow(x.key, x.failure, *x.usage, x.model_version, x.response_id)
            for x in polled
            if x.outcome in ("failed", "lost") and x.failure is not None
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
        tokens = [sum(x.usage[i] for x in polled) for i in range(len(Usage._fields))]
        report = BackgroundCollected(
            completed=completed,
            retryable=dict(sorted(retryable.items())),
            parked=dict(sorted(parked.items())),
            still_running=sum(1 for x in polled if x.outcome == "running"),
            tokens=Usage(*tokens),
            polled=len(polled),
            poll_seconds=round(poll_s, 3),
            failures_applied=applied_failures,
            cancelled=sum(1 for x in polled if x.cancelled),
            poll_errors=len(transient),
            lost=sum(1 for x in polled if x.outcome == "lost"),
        )
        log.info(
            "%s: polled %d interactions in %.2fs: %d completed, %d failed, %d still running",
            p.name,
            len(polled),
            poll_s,
            completed,
            applied_failures,
            report.still_running,
        )
        return report

    def deliver(self) -> Delivery:
        """Claim done rows, call ``on_result`` for each, then mark it consumed; a failing side
        effect is logged and left done for the next tick."""
        return deliver_done(
            self.ctx.ledger,
            self.ctx.pipeline,
            token=_token("deliver"),
            older_than=self.max_age_s,
            log=self.ctx.log,
            cap=self.ctx.settings.delivery_cap,
            points=DeliveryPoints(
                before_effect="background.after_done",
                before_consume="background.before_consume",
                after_failure="background.after_delivery_failure",
            ),
        )

    def submit(self) -> BackgroundSubmitted:
        """Reserve the due jobs (pending or retryable), then create a background interaction
        for each and bind its id."""
        p, ledger = self.ctx.pipeline, self.ctx.ledger
        preflight(self.ctx)  # a missing key must not strand reserved rows
        token = _token("submit")
        # Within the night's budget (flows.run._budget).
        reserved = reserve(self.ctx, limit=SUBMIT_LIMIT, reservation=token)
        crash_point("background.after_reserve")
        if not reserved:
            return BackgroundSubmitted()
        with self._holding(token):
            rows = list(ledger.reserved(token))
            out = submit_reserved(
                p,
                ledger,
                rows,
                reservation=token,
                max_concurrency=self.max_concurrency,
                client_factory=self.ctx.new_client,
                run_client=lambda: self.ctx.client,
            )
        self.ctx.log.info("%s: reserved %d, submitted %d", p.name, reserved, out["submitted"])
        return BackgroundSubmitted(
            submitted=out["submitted"],
            refused=out["create_failed"],
            reserved=reserved,
            lost_to_takeover=out["lost_to_takeover"],
            ambiguous=out["ambiguous"],
        )
