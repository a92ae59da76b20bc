"""The direct channel's calls for an embedding pipeline: ``models.embed_content``.

Like a ``generate-content`` attempt (``flows.channels.direct``), with one difference: a call
carries several rows (up to the pipeline's ``embedding.group_size``, at most 100, what one
``batchEmbedContents`` call takes), and each row is still its own ledger row:

1. wait until the group's rows are due; ``reserve`` them by key under one reservation
   (each row's attempt counted), bind each to the handle ``direct:<reservation>``;
2. one ``embed_content`` call with their texts, in the reservation's (key) order, and the
   keys in the ``x-gemini-ledger-keys`` header so the emulator (or a proxy) counts each
   row's submission;
3. each returned embedding is checked by the core (``ledger.validate_vector``: a vector,
   finite numbers, the pipeline's ``output_dimensionality``) and recorded ``done`` as
   ``{"values": [...]}``, or recorded as that row's failure; a failed call is every row's
   failure (the API answers the call, not a row), classified as any other.

A retry (Prefect's, as the classifier says) reserves again only the group's rows that are
due; the recover step sweeps these rows exactly as single calls (same handle prefix).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from google.genai import types
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from flows.channels._channel import RunContext
from flows.channels.direct import (
    _RESERVATION_PREFIX,
    HANDLE_PREFIX,
    AttemptFailed,
    Calls,
    retry_if_classifier_says,
)
from flows.crash import crash_point
from flows.embedding import EmbeddingSettings
from flows.gemini._errors import classify, setup_fault
from flows.gemini.gateway import KEY_HEADER, keyed
from flows.gemini.quota import note_failure, request_slot
from flows.run._budget import reserve
from flows.run._halt import halts
from flows.run._stop import stop_requested
from flows.run._stop import wait as wait_unless_stopped
from flows.settings import Settings
from ledger import (
    Channel,
    Failure,
    FailureRow,
    Ledger,
    Policy,
    ResultRow,
    SetupFault,
    Status,
    Verdict,
    usage_of_metadata,
    validate_vector,
    vector_values,
)

__all__ = ["KEYS_HEADER", "embed_content", "run_embeds"]

# One key per content of the call, as a JSON list (emulator/_embeddings.py reads it).
KEYS_HEADER = "x-gemini-ledger-keys"

_MISSING = Failure(Verdict.UNKNOWN, "empty", "the call answered fewer embeddings than contents")


def _config(settings: EmbeddingSettings, keys: Sequence[str]) -> types.EmbedContentConfig:
    options = keyed(keys[0])
    options.headers = {**(options.headers or {}), KEYS_HEADER: orjson.dumps(list(keys)).decode()}
    if len(keys) > 1:
        options.headers.pop(KEY_HEADER, None)  # one call, many rows: the list says which
    return types.EmbedContentConfig(http_options=options, **settings.sdk_config())


def _wait_until_due(ledger: Ledger, keys: Sequence[str], max_wait_s: float) -> None:
    """Sleep what is left of a server delay recorded on the group's rows (the longest: the
    group is sent together)."""
    due_at = ledger.latest_due_at(keys)
    remaining = 0.0 if due_at is None else due_at - ledger.clock()
    if 0 < remaining <= max_wait_s:
        wait_unless_stopped(remaining)


def _attempt(keys: Sequence[str], calls: Calls) -> dict[str, str]:
    ctx = calls.ctx
    pipeline, ledger = ctx.pipeline, ctx.ledger
    assert pipeline.embedding is not None  # the channel calls this for embedding pipelines
    policy = pipeline.policy
    _wait_until_due(ledger, keys, ctx.settings.direct_max_wait_s)
    if calls.fault is not None:
        raise calls.fault
    if stop_requested():
        return {k: f"skipped:{ledger.get(k).status}" for k in keys}
    client = ctx.client  # a missing key halts before anything is reserved

    reservation = f"{_RESERVATION_PREFIX}{uuid.uuid4().hex}"
    # Within the night's budget (flows.run._budget): a group may be cut short by it.
    got = reserve(
        ctx, limit=len(keys), reservation=reservation, keys=list(keys), channel=Channel.DIRECT
    )
    if got == 0:
        return {k: f"skipped:{ledger.get(k).status}" for k in keys}
    crash_point("direct.after_reserve")
    rows = list(ledger.reserved(reservation))
    sent = [r.key for r in rows]
    handle = f"{HANDLE_PREFIX}{reservation}"
    failure: Failure | None = None
    error: BaseException | None = None
    with request_slot(rows[0].model):
        ledger.bind_reservation(reservation, handle=handle)
        crash_point("direct.before_call")
        try:
            texts = [pipeline.prompt_of(r.payload).text for r in rows]
            response = client.models.embed_content(
                model=rows[0].model, contents=texts, config=_config(pipeline.embedding, sent)
            )
        except Exception as exc:
            error, failure = exc, classify(exc)
    crash_point("direct.after_call")
    outcomes = {k: f"skipped:{ledger.get(k).status}" for k in keys if k not in sent}
    if failure is not None:
        fault = setup_fault(error) if error is not None else None
        if fault is not None:
            crash_point("direct.before_release_on_halt")
            for key in sent:
                ledger.unsubmit(key, handle=handle)
            calls.fault = fault
            raise fault from error
        split = failure.verdict is Verdict.PERMANENT and len(sent) > 1
        own = _refused_in_group(failure) if split else failure
        ledger.apply_failures([FailureRow(k, own) for k in sent], handle=handle, policy=policy)
        note_failure(rows[0].model, failure)
        crash_point("direct.after_record")
        if split:
            # One input refused and the whole call with it: each row is sent alone, so the
            # bad one is parked for its own answer and the others go through.
            for key in sent:
                try:
                    outcomes.update(_attempt([key], calls))
                except AttemptFailed:
                    outcomes[key] = ledger.get(key).status
            _raise_if_retryable(sent, failure, outcomes)
            return outcomes
        outcomes.update({k: ledger.get(k).status for k in sent})
        _raise_if_retryable(sent, failure, outcomes)
        return outcomes

    embeddings = list(getattr(response, "embeddings", None) or [])
    # The call's tokens (when the answer reports them), shared out by text length.
    tokens = _shares(
        usage_of_metadata(getattr(response, "usage_metadata", None)).prompt_tokens,
        [len(t) for t in texts],
    )
    dimension = pipeline.embedding.output_dimensionality
    done: list[ResultRow] = []
    failed: list[FailureRow] = []
    for i, key in enumerate(sent):
        checked = (
            validate_vector(vector_values(embeddings[i]), dimension)
            if i < len(embeddings)
            else _MISSING
        )
        if isinstance(checked, Failure):
            failed.append(FailureRow(key, checked, tokens[i], 0, tokens[i]))
        else:
            done.append(ResultRow(key, checked.to_json(), tokens[i], 0, tokens[i]))
    if done:
        ledger.apply_results(done, handle=handle)
    if failed:
        ledger.apply_failures(failed, handle=handle, policy=policy)
    crash_point("direct.after_record")
    outcomes.update({r.key: Status.DONE.value for r in done})
    outcomes.update({r.key: ledger.get(r.key).status for r in failed})
    if failed:
        _raise_if_retryable([r.key for r in failed], failed[0].failure, outcomes)
    return outcomes


def _shares(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, whole numbers that add up to it (the
    largest remainders get the leftover)."""
    if not weights:
        return []
    if not sum(weights):
        weights = [1] * len(weights)
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _refused_in_group(failure: Failure) -> Failure:
    """What a row of a refused multi-input call records: not its own refusal (the API
    names no input), a retryable failure, its next call made alone."""
    return Failure(
        Verdict.RETRYABLE,
        f"in_group:{failure.code}",
        f"a call with other inputs was refused ({failure.message}); sent alone next",
    )


def _raise_if_retryable(keys: Sequence[str], failure: Failure, outcomes: dict[str, str]) -> None:
    """Ask Prefect for a retry when some row of the group is retryable (the retry reserves
    only the rows that are due)."""
    retryable = [k for k in keys if outcomes.get(k) == Status.RETRYABLE]
    if retryable:
        raise AttemptFailed(retryable[0], failure, Status.RETRYABLE.value)


@task(
    name="embed-content",
    task_run_name="embed {keys[0]} (+{extra})",
    retries=0,  # _embed_task sets the pipeline's cap, the run's backoff and the condition
    cache_policy=NO_CACHE,
    persist_result=False,
)
@halts(Channel.DIRECT)
def embed_content(pipeline: str, keys: list[str], extra: int, calls: Calls) -> dict[str, str]:
    """One embed_content call for a group of jobs of the run's ``pipeline``, each recorded
    in the ledger."""
    return _attempt(keys, calls)


def _embed_task(policy: Policy, settings: Settings) -> Task[Any, dict[str, str]]:
    max_wait_s = settings.direct_max_wait_s

    def retry_condition(task: Task[Any, Any], task_run: Any, state: Any) -> bool:
        return retry_if_classifier_says(task, task_run, state, max_wait_s=max_wait_s)

    return embed_content.with_options(
        retries=policy.attempt_cap - 1,
        retry_delay_seconds=exponential_backoff(settings.direct_backoff_s),
        retry_jitter_factor=settings.direct_jitter,
        retry_condition_fn=retry_condition,
    )


def run_embeds(
    ctx: RunContext,
    keys: Sequence[str],
    *,
    max_concurrency: int,
    rate_per_second: float | None = None,
) -> dict[str, str]:
    """The embed task for every group of ``keys`` of the run's pipeline on a capped thread
    pool; key -> outcome (as ``flows.channels.direct.run_calls``). With ``rate_per_second``
    (rows, as replay paces them) a group starts no earlier than its first row's turn."""
    if not keys:
        return {}
    calls = Calls(ctx)  # this run's: another run's halt never stops it
    assert ctx.pipeline.embedding is not None
    size = ctx.pipeline.embedding.group_size
    groups = [list(keys[i : i + size]) for i in range(0, len(keys), size)]
    the_task = _embed_task(ctx.pipeline.policy, ctx.settings)
    futures: list[tuple[list[str], PrefectFuture[Any]]] = []
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=max_concurrency)
    start = time.monotonic()
    with runner:
        for i, group in enumerate(groups):
            if stop_requested():
                break
            if rate_per_second:
                # Pacing, not synchronisation: the group's first row starts at its turn.
                delay = start + i * size / rate_per_second - time.monotonic()
                if delay > 0 and wait_unless_stopped(delay):
                    break
            params = {"pipeline": ctx.spec, "keys": group, "extra": len(group) - 1, "calls": calls}
            futures.append((group, runner.submit(the_task, params)))
        wait([f for _, f in futures])
    ledger = ctx.ledger
    outcomes: dict[str, str] = {}
    fault: SetupFault | None = None
    for group, future in futures:
        result = future.state.result(raise_on_failure=False)
        if isinstance(result, SetupFault):
            fault = fault or result
            outcomes.update(dict.fromkeys(group, "halted"))
        elif isinstance(result, dict):
            outcomes.update(result)
        else:  # the group's last attempt failed: each row says where it is
            outcomes.update({k: str(ledger.get(k).status) for k in group})
    if fault is not None:
        raise fault
    return outcomes
