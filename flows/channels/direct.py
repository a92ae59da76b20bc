"""The direct channel: one ``models.generate_content`` call per job, retried by Prefect as the
classifier decides.

One attempt of the ``generate-content`` task, for one job:

1. wait until the row is due (see "Server retry delays" below);
2. ``reserve`` the row by its key (this counts the attempt: it is what may be billed);
3. bind the handle ``direct:<reservation>`` (the call is about to leave);
4. call ``client.models.generate_content`` through the gateway's client, with the key in a
   per-request header so the emulator (or a proxy) counts submissions per key;
5. validate the answer against the pipeline's output schema and record ``done`` with its
   tokens, or record the classified failure. The ledger applies the pipeline's policy and
   says whether the job is ``retryable`` or ``parked`` (``permanent:<code>``, ``safety``,
   ``schema``, ``exhausted:<code>``, ``unknown:<code>``);
6. on failure raise :class:`AttemptFailed`, which carries the failure and that status.

Prefect's ``retry_condition_fn`` (:func:`retry_if_classifier_says`) reads it: a permanent
failure is never retried, and a job the ledger parked (at the attempt cap for retryable
failures, at ``unknown_cap`` for unknown ones) is not either; everything else is retried
with exponential backoff and jitter (``exponential_backoff`` and ``retry_jitter_factor``).
The task's ``retries`` is the pipeline's ``attempt_cap - 1``, so Prefect's count and the
ledger's agree; the ledger is the one that decides, because it also counts attempts made by
earlier runs.

Server retry delays: Prefect computes a task's retry delays when the task is built, so it
cannot lengthen one retry for a RetryInfo delay the server sent. ``record_failure`` stores
that delay on the row (``due_at = now + retry_delay``) and the next attempt starts by
sleeping only the remaining part of it: the effective wait is the longer of Prefect's
backoff and the server's delay, and the same rule holds for a later run of the flow.
A server delay longer than ``GEMINI_LEDGER_DIRECT_MAX_WAIT_S`` (default 120 s) is not waited
for inside a worker thread: the task stops retrying, the job stays ``retryable`` and the
next run picks it up once it is due.

A stop (SIGTERM, ``flows.run._stop``): the calls in flight finish and are recorded, the ones not
started reserve nothing and wait for the next tick.

Crashes: the handle is bound before the call, so a row left ``reserving`` never reached the
API and is released (its attempt given back); a row left ``submitted`` under a ``direct:``
handle may have been billed and is recorded as an ``unknown:interrupted`` failure (retried
up to ``unknown_cap``). A tick's recover step (:meth:`DirectChannel.recover`) sweeps both,
for rows older than ``GEMINI_LEDGER_DIRECT_STALE_S`` (default 300 s, longer than a call's
timeout), before it submits anything. Crash points: ``direct.after_reserve``,
``direct.before_call``, ``direct.after_call``, ``direct.after_record``,
``direct.before_side_effect``, ``direct.after_side_effect``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from google.genai import types
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from flows import _caches
from flows.channels._channel import (
    Collected,
    Recovered,
    RunContext,
    Submitted,
    TickOptions,
    own_pipeline,
    pick,
)
from flows.contents import sdk_parts
from flows.crash import crash_point
from flows.errors import UsageError
from flows.gemini._errors import classify, setup_fault
from flows.gemini.gateway import keyed
from flows.gemini.quota import note_failure, request_slot
from flows.generation import sdk_config
from flows.pipeline import Pipeline, Prompt
from flows.run._budget import reserve
from flows.run._deliver import Delivery, DeliveryPoints, deliver_done
from flows.run._halt import halts
from flows.run._prefix_cache import PrefixCache
from flows.run._progress import note
from flows.run._stop import stop_requested
from flows.run._stop import wait as wait_unless_stopped
from flows.run._upload_rows import ledger_uploads
from flows.run._uploads import RowUploads, Uploads
from flows.settings import Settings
from ledger import (
    CACHE_EXPIRED,
    DIRECT_HANDLE_PREFIX,
    Channel,
    Failure,
    FailureRow,
    InvalidTransition,
    Ledger,
    Policy,
    ResultRow,
    SetupFault,
    Status,
    TakenOver,
    Usage,
    Verdict,
    answer_ids,
    classify_response,
    extract_text,
    usage_of_metadata,
    validate_answer,
)

__all__ = [
    "BACKOFF_ENV",
    "HANDLE_PREFIX",
    "JITTER_ENV",
    "MAX_WAIT_ENV",
    "STALE_ENV",
    "AttemptFailed",
    "Calls",
    "DirectChannel",
    "DirectRecovered",
    "DirectSubmitted",
    "deliver_direct",
    "direct_task",
    "generate_content",
    "retry_if_classifier_says",
    "run_calls",
    "sweep_interrupted",
]

BACKOFF_ENV = "GEMINI_LEDGER_DIRECT_BACKOFF_S"  # first retry delay (s); doubles every retry
JITTER_ENV = "GEMINI_LEDGER_DIRECT_JITTER"  # Prefect's retry_jitter_factor
MAX_WAIT_ENV = "GEMINI_LEDGER_DIRECT_MAX_WAIT_S"  # longest server delay waited for inline
STALE_ENV = "GEMINI_LEDGER_DIRECT_STALE_S"  # age after which an in-flight row is a leftover

HANDLE_PREFIX = DIRECT_HANDLE_PREFIX  # the ledger names it: the night's spend reads it
_RESERVATION_PREFIX = "direct-"
# Rows a delivery pass claims at a time, as the batch channel's (each is still consumed right
# after its side effect): a claim reads the pipeline's done rows, so fewer claims cost less.
_DELIVER_GROUP = 100

INTERRUPTED = Failure(
    Verdict.UNKNOWN,
    "interrupted",
    "the process died during the call; the attempt may have been billed",
)


class AttemptFailed(Exception):
    """One attempt failed: the classified failure and the status the ledger moved the job to."""

    def __init__(self, key: str, failure: Failure, status: str) -> None:
        # Only the classifier's (redacted, shortened) message goes into the text: this
        # exception ends up in Prefect's task-run state and logs.
        super().__init__(f"{key}: {failure.error_class}: {failure.message} (job {status})")
        self.key = key
        self.failure = failure
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.failure, self.status))


# --- rendering a prompt into a call --------------------------------------------------------


def _json_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The output model's JSON schema, made once per process and model (``flows._caches``)."""
    with _caches.lock:
        schema = _caches.schemas.get(output)
        if schema is None:
            schema = _caches.schemas[output] = output.model_json_schema()
        return schema


def _config(
    pipeline: Pipeline[Any], prompt: Prompt, key: str, cached_content: str | None = None
) -> types.GenerateContentConfig:
    """The call's config: system instruction, output schema and the settings the pipeline
    and the item give (``flows.generation.sdk_config``, the same as the other channels).

    With ``cached_content`` (the pipeline's cached prefix, ``flows.run._prefix_cache``) the
    request names the cache (the SDK sends ``cachedContent``) and carries no system
    instruction: the cache holds it, and the API refuses both together. A prefix that could
    not be cached is sent inline: its instruction here, its parts before the prompt's."""
    prefix = pipeline.cached_prefix
    system = prompt.system
    if prefix is not None:
        system = None if cached_content is not None else prefix.system
    return types.GenerateContentConfig(
        system_instruction=system,
        cached_content=cached_content,
        response_mime_type="application/json",
        response_json_schema=_json_schema(pipeline.output),
        http_options=keyed(key),
        **sdk_config(pipeline.settings_for(prompt)),
    )


def _usage(response: Any) -> Usage:
    """The answer's tokens: thoughts, cached and audio prompt tokens included (SDK
    ``GenerateContentResponseUsageMetadata``: thoughts_token_count,
    cached_content_token_count, prompt_tokens_details)."""
    return usage_of_metadata(getattr(response, "usage_metadata", None))


def _answer_ids(response: Any) -> tuple[str | None, str | None]:
    """The answer's ``model_version`` and ``response_id`` (what actually ran, and its id)."""
    return answer_ids(
        {
            "modelVersion": getattr(response, "model_version", None),
            "responseId": getattr(response, "response_id", None),
        }
    )


def _judge(response: Any, output: type[BaseModel]) -> BaseModel | Failure:
    """The validated answer, or why it is not one (safety block, empty, non-conforming)."""
    data = response.model_dump(mode="json", exclude_none=True)
    blocked = classify_response(data)
    if blocked is not None:
        return blocked
    return validate_answer(extract_text(data), output)


def _contents(pipeline: Pipeline[Any], prompt: Prompt, *, inline_prefix: bool) -> Any:
    """The request's contents: the prompt's text (text only: the plain string, as before),
    or its parts in order (``flows.contents.sdk_parts``, uploads made); a cached prefix that
    goes inline puts its parts first, as the cache would."""
    prefix = pipeline.cached_prefix
    head = prefix.contents() if prefix is not None and inline_prefix else ()
    if not prompt.parts and not head:
        return prompt.text
    return types.Content(role="user", parts=sdk_parts((*head, *prompt.contents())))


# --- one attempt ---------------------------------------------------------------------------


def _wait_until_due(ledger: Ledger, key: str, max_wait_s: float) -> None:
    """Sleep what is left of a server-sent retry delay recorded on the row (see module doc)."""
    remaining = ledger.get(key).due_at - ledger.clock()
    if 0 < remaining <= max_wait_s:
        wait_unless_stopped(remaining)  # a stop (SIGTERM) cuts the wait short


class Calls:
    """What one run's calls share, handed to each (it lives with the run, never in the
    process): the run's context (its settings, ledger, pipeline and client) and, once a call
    met a fault of the setup, that fault, so the calls not yet started reserve nothing."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.fault: SetupFault | None = None
        self._uploads: Uploads | None = None
        self._prefix: PrefixCache | None = None
        self._lock = threading.Lock()

    def prefix_cache(self) -> PrefixCache | None:
        """The run's cached prefix (one cache for all its calls), if the pipeline has one."""
        if self.ctx.pipeline.cached_prefix is None:
            return None
        with self._lock:
            if self._prefix is None:
                self._prefix = PrefixCache(self.ctx.client, self.ctx.ledger, self.ctx.pipeline)
            return self._prefix

    def uploads(self, ledger: Ledger) -> Uploads:
        """The run's uploads (ledger rows): the same bytes go up once for all its calls."""
        if self._uploads is None:
            self._uploads = ledger_uploads(self.ctx.client, ledger, self.ctx.pipeline.name)
        return self._uploads


def _attempt(key: str, calls: Calls) -> dict[str, Any]:
    ctx = calls.ctx
    pipeline, ledger = ctx.pipeline, ctx.ledger
    policy = pipeline.policy
    _wait_until_due(ledger, key, ctx.settings.direct_max_wait_s)
    if calls.fault is not None:
        raise calls.fault
    if stop_requested():
        # The tick is stopping (SIGTERM): nothing reserved, nothing sent; the calls in
        # flight finish and are recorded.
        view = ledger.get(key)
        return {"key": key, "status": view.status, "attempts": view.attempts, "skipped": True}
    client = ctx.client  # a missing key halts before anything is reserved

    reservation = f"{_RESERVATION_PREFIX}{uuid.uuid4().hex}"
    # A direct call, priced as one (a batch pipeline's row sent for its deadline too).
    if reserve(ctx, limit=1, reservation=reservation, keys=[key], channel=Channel.DIRECT) != 1:
        # Done, parked, in flight elsewhere, not due yet or held by the night's budget
        # (flows.run._budget): nothing to send, nothing counted.
        view = ledger.get(key)
        return {"key": key, "status": view.status, "attempts": view.attempts, "skipped": True}
    crash_point("direct.after_reserve")
    row = next(iter(ledger.reserved(reservation)))
    prompt = pipeline.prompt_of(row.payload)
    if prompt.parts:
        # Uploads before the call, never its attempt: a failed one settles the row
        # (given back, or recorded when its file cannot be used) and nothing is sent.
        media = RowUploads(calls.uploads(ledger))
        resolved = media(prompt, key)
        if resolved is None:
            media.settle(ledger, pipeline, reservation)
            view = ledger.get(key)
            return {"key": key, "status": view.status, "attempts": view.attempts, "skipped": True}
        prompt = resolved
    cache = calls.prefix_cache()
    cached_content: str | None = None
    if cache is not None:
        # Made once for the run's calls (a ledger row), never the row's attempt: a fault
        # of the setup gives the row back and halts, like a call's.
        try:
            cached_content = cache.name()
        except SetupFault as halt:
            ledger.release(reservation)
            calls.fault = halt
            raise
    handle = f"{HANDLE_PREFIX}{reservation}"
    # The shared quota's slot is taken while the row is still only reserved: a kill while
    # waiting for it gives the attempt back (nothing was sent).
    failure: Failure | None = None
    error: BaseException | None = None
    with request_slot(row.model):
        ledger.bind_handle(key, reservation=reservation, handle=handle)
        crash_point("direct.before_call")
        try:
            response = client.models.generate_content(
                model=row.model,
                contents=_contents(pipeline, prompt, inline_prefix=cached_content is None),
                config=_config(pipeline, prompt, key, cached_content),
            )
        except Exception as exc:
            error, failure = exc, classify(exc)
            if cache is not None and cached_content is not None and failure.code == CACHE_EXPIRED:
                # The cache expired or was deleted under the request (refused): made again for
                # the row's next attempt (the classifier keeps the row retryable).
                cache.expired(cached_content)
    if failure is not None:
        crash_point("direct.after_call")
        fault = setup_fault(error) if error is not None else None
        if fault is not None:
            # Refused or never reached: nothing was billed, the row goes back as it was.
            crash_point("direct.before_release_on_halt")
            ledger.unsubmit(key, handle=handle)
            calls.fault = fault
            raise fault from error
        status = ledger.record_failure(key, failure, policy=policy, handle=handle)
        note_failure(row.model, failure)
        crash_point("direct.after_record")
        note(parked=int(status == Status.PARKED))  # the tick's progress (flows.run._progress)
        raise AttemptFailed(key, failure, status) from None
    crash_point("direct.after_call")

    usage = _usage(response)
    ids = _answer_ids(response)
    answer = _judge(response, pipeline.output)
    if isinstance(answer, Failure):
        # The answer arrived (and was billed): keep its tokens with the failure.
        ledger.apply_failures([FailureRow(key, answer, *usage, *ids)], handle=handle, policy=policy)
        status = ledger.get(key).status
        crash_point("direct.after_record")
        note(parked=int(status == Status.PARKED))
        raise AttemptFailed(key, answer, status)
    ledger.record_result(ResultRow(key, answer.model_dump_json(), *usage, *ids), handle=handle)
    crash_point("direct.after_record")
    note(answered=1)
    return {"key": key, "status": Status.DONE, "attempts": row.attempts, "skipped": False}


def retry_if_classifier_says(
    task: Task[Any, Any], task_run: Any, state: Any, *, max_wait_s: float
) -> bool:
    """Prefect's retry condition: retry what the classifier and the ledger say is retryable.

    Permanent failures stop at once; a job the ledger parked (attempt cap, unknown cap) is
    not retried; an error that is not a classified attempt failure (the ledger unreachable,
    a bug) is not retried blindly either: its row is left for the next tick's recover step. A server
    delay longer than ``max_wait_s`` (the run's setting) is left to a later run.
    """
    exc = state.result(raise_on_failure=False)
    if not isinstance(exc, AttemptFailed):
        return False
    failure = classify(exc)  # the carried Failure: the classifier's verdict
    if failure.verdict is Verdict.PERMANENT or exc.status != Status.RETRYABLE:
        return False
    delay = failure.retry_delay
    return delay is None or delay <= max_wait_s


@task(
    name="generate-content",
    task_run_name="generate {key}",
    retries=0,  # direct_task sets the pipeline's cap, the run's backoff and the condition
    cache_policy=NO_CACHE,
    persist_result=False,
)
@halts(Channel.DIRECT)
def generate_content(pipeline: str, key: str, calls: Calls) -> dict[str, Any]:
    """One generate_content call for one job of the run's ``pipeline``, recorded in the
    ledger."""
    return _attempt(key, calls)


def direct_task(policy: Policy, settings: Settings) -> Task[Any, dict[str, Any]]:
    """``generate_content`` with the pipeline's cap and the run's backoff settings.

    ``GEMINI_LEDGER_DIRECT_BACKOFF_S`` (default 2) is the first retry's delay, doubled for
    each further retry; ``GEMINI_LEDGER_DIRECT_JITTER`` (default 0.2) is Prefect's jitter
    factor. Tests set both tiny.
    """
    max_wait_s = settings.direct_max_wait_s

    # A plain function, not a functools.partial: Prefect calls retry_condition_fn only when
    # inspect.isfunction says it is one (a partial would silently mean "never retry").
    def retry_condition(task: Task[Any, Any], task_run: Any, state: Any) -> bool:
        return retry_if_classifier_says(task, task_run, state, max_wait_s=max_wait_s)

    return generate_content.with_options(
        retries=policy.attempt_cap - 1,
        retry_delay_seconds=exponential_backoff(settings.direct_backoff_s),
        retry_jitter_factor=settings.direct_jitter,
        retry_condition_fn=retry_condition,
    )


def run_calls(
    ctx: RunContext,
    keys: Sequence[str],
    *,
    max_concurrency: int,
    rate_per_second: float | None = None,
) -> dict[str, str]:
    """Run the direct task for each key of the run's pipeline on a capped thread pool;
    key -> outcome.

    The outcome is the job's status after its last attempt (``done``, ``parked``,
    ``retryable``), ``skipped:<status>`` when there was nothing to send, or ``error``. With
    ``rate_per_second`` the calls are started no faster than that. A fault of the setup met
    by any call stops the calls not yet started and is raised once all have ended.
    """
    if max_concurrency < 1:
        raise UsageError("max_concurrency must be at least 1")
    if not keys:
        return {}
    if ctx.pipeline.is_embedding:
        # A pipeline of vectors: embed_content calls, several rows per call.
        from flows.channels._embed import run_embeds

        return run_embeds(
            ctx, keys, max_concurrency=max_concurrency, rate_per_second=rate_per_second
        )
    the_task = direct_task(ctx.pipeline.policy, ctx.settings)
    # This run's: another run's halt never stops it.
    calls = Calls(ctx)
    futures: list[tuple[str, PrefectFuture[Any]]] = []
    start = time.monotonic()
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=max_concurrency)
    with runner:
        for i, key in enumerate(keys):
            if stop_requested():  # the calls not yet started are left for the next tick
                break
            if rate_per_second:
                # Pacing, not synchronisation: the i-th call starts no earlier than i / rate.
                delay = start + i / rate_per_second - time.monotonic()
                if delay > 0 and wait_unless_stopped(delay):
                    break
            params = {"pipeline": ctx.spec, "key": key, "calls": calls}
            futures.append((key, runner.submit(the_task, params)))
        wait([f for _, f in futures])
    outcomes: dict[str, str] = {}
    fault: SetupFault | None = None
    for key, future in futures:
        result = future.state.result(raise_on_failure=False)
        if isinstance(result, SetupFault):
            fault = fault or result
            outcomes[key] = "halted"
        elif isinstance(result, AttemptFailed):
            outcomes[key] = result.status
        elif isinstance(result, dict):
            status = str(result.get("status"))
            outcomes[key] = f"skipped:{status}" if result.get("skipped") else status
        else:
            outcomes[key] = "error"
    if fault is not None:
        raise fault
    return outcomes


# --- the channel: the steps a tick runs (flows.tick) ------------------------------------------


_DEFAULT_CONCURRENCY = 8


@dataclass(kw_only=True)
class DirectRecovered(Recovered):
    """Calls a killed run left in flight: unsent ones released, sent ones recorded as
    ``unknown:interrupted`` (see the module docstring)."""

    released: int = 0
    interrupted: int = 0

    def details(self) -> Iterator[tuple[str, Any]]:
        yield "reserved but never sent: released", self.released
        yield "cut off during the call: unknown:interrupted", self.interrupted


@dataclass(kw_only=True)
class DirectSubmitted(Submitted):
    """One call per due job; the call is the answer, so its row is settled at once."""

    called: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # the job's status after its call
    calls_seconds: float = 0.0

    def details(self) -> Iterator[tuple[str, Any]]:
        yield from ((f"call outcome: {o}", n) for o, n in self.outcomes.items())


def sweep_interrupted(ctx: RunContext, *, stale_s: float) -> DirectRecovered:
    """Resolve the direct calls a killed run of ``ctx``'s pipeline left in flight, older
    than ``stale_s``: a ``direct-`` reservation never sent is released (its attempt given
    back), a row submitted under a ``direct:`` handle is recorded ``unknown:interrupted``.
    The direct channel's recover step, and the batch channel's for the rows it sent
    directly to meet a deadline (``flows.channels._deadline``)."""
    p, ledger = ctx.pipeline, ctx.ledger
    out = DirectRecovered()
    held: list[float | None] = []
    for row in ledger.stale_reservations(pipeline=p.name, older_than=stale_s):
        if row.reservation.startswith(_RESERVATION_PREFIX):
            released = ledger.release(row.reservation)
            out.released += released
            held += [row.reserved_at] * released
    cutoff = ledger.clock() - stale_s
    for key, handle, submitted_at in ledger.outstanding(
        pipeline=p.name, handle_prefix=HANDLE_PREFIX
    ):
        if (submitted_at or 0) < cutoff:
            try:
                ledger.record_failure(key, INTERRUPTED, policy=p.policy, handle=handle)
                out.interrupted += 1
                held.append(submitted_at)
            except InvalidTransition:
                pass  # another run settled it meanwhile
    out.recovered = out.released + out.interrupted
    out.took_over = TakenOver.of(held)
    if out.recovered:
        ctx.log.warning(
            "swept %d unsent and %d interrupted calls of %s: %s",
            out.released,
            out.interrupted,
            p.name,
            out.took_over.describe("reservations"),
        )
    return out


class DirectChannel:
    """The direct channel's steps: sweep interrupted calls, deliver, call every due job."""

    kind: ClassVar[Channel] = Channel.DIRECT
    uses: ClassVar[frozenset[str]] = frozenset({"stale_s", "max_concurrency"})

    def __init__(self, ctx: RunContext, options: TickOptions | None = None) -> None:
        own_pipeline(ctx, self.kind)
        self.ctx = ctx
        options = options or TickOptions()
        self.stale_s = pick(options.stale_s, ctx.settings.direct_stale_s)
        self.max_concurrency = pick(options.max_concurrency, _DEFAULT_CONCURRENCY)

    def recover(self) -> DirectRecovered:
        """Resolve rows a killed run left in flight (see the module docstring)."""
        return sweep_interrupted(self.ctx, stale_s=self.stale_s)

    def collect(self) -> Collected:
        """Nothing to collect: a direct call brings its answer back (see :meth:`submit`)."""
        return Collected()

    def deliver(self) -> Delivery:
        """Call on_result for every done row and mark it consumed (see flows.run._deliver)."""
        return deliver_direct(self.ctx, older_than=self.stale_s)

    def submit(self) -> DirectSubmitted:
        """Call Gemini for every pending or retryable job, at most ``max_concurrency`` at a
        time; each call's answer is recorded as it arrives."""
        p, ledger = self.ctx.pipeline, self.ctx.ledger
        keys = [j.key for j in ledger.jobs(pipeline=p.name, status=Status.PENDING)]
        keys += [j.key for j in ledger.jobs(pipeline=p.name, status=Status.RETRYABLE)]
        # Only the keys the night's budget has room for are called (each call's reserve
        # checks again): the others stay pending, held by the budget.
        keys = keys[: self.ctx.budget.admit(self.ctx, len(keys))]
        self.ctx.log.info("%s %s: %d jobs to call", p.name, self.ctx.day, len(keys))
        started = time.monotonic()
        outcomes = run_calls(self.ctx, keys, max_concurrency=self.max_concurrency)
        tally = Counter(outcomes.values())
        refused: Counter[str] = Counter()
        for key, outcome in outcomes.items():
            if outcome in (Status.PARKED, Status.RETRYABLE):
                view = ledger.get(key)
                refused[f"{outcome} {view.error_class or 'unclassified'}"] += 1
        return DirectSubmitted(
            submitted=sum(n for o, n in tally.items() if not o.startswith("skipped:")),
            refused=dict(sorted(refused.items())),
            settled=tally[Status.DONE],
            called=len(keys),
            outcomes=dict(sorted(tally.items())),
            calls_seconds=round(time.monotonic() - started, 3),
        )


def deliver_direct(ctx: RunContext, *, older_than: float | None = None) -> Delivery:
    """Deliver the done rows of a direct pipeline (a tick's step, and replay's last step);
    a claim older than ``older_than`` (default: the direct stale setting) is a dead one's."""
    return deliver_done(
        ctx.ledger,
        ctx.pipeline,
        token=f"direct-deliver-{uuid.uuid4().hex[:12]}",
        older_than=pick(older_than, ctx.settings.direct_stale_s),
        log=ctx.log,
        group=_DELIVER_GROUP,
        cap=ctx.settings.delivery_cap,
        points=DeliveryPoints(
            before_effect="direct.before_side_effect",
            after_effect="direct.after_side_effect",
            after_failure="direct.after_delivery_failure",
        ),
    )
