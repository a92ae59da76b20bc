"""The background channel's side of the Gemini interactions API.

Three jobs, kept apart from the Prefect flow so they can be read and tested alone:

* render a ledger payload (a :class:`~flows.pipeline.Prompt`) into the arguments of
  ``interactions.create(background=True, ...)``, with the pipeline's output schema as the
  response format and the idempotency key in the labels and the key header;
* read what an interaction says about its job: the verdict (:class:`Polled`), its output text
  validated against the schema, and its token usage;
* poll many interactions at once with the SDK's async client under a bounded number of
  requests in flight (an ``asyncio.Semaphore``), never one after another.

Every client comes from :func:`flows.gemini.gateway.gemini_client` (``RunContext.new_client``),
whose retries are off: every request is one attempt the ledger can count.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from flows.contents import interaction_input
from flows.gemini._errors import classify, may_have_been_carried_out, setup_fault
from flows.gemini.gateway import KEY_HEADER
from flows.gemini.quota import arequest_slot, note_failure
from flows.generation import GenerationSettings, interaction_config
from flows.pipeline import Prompt, effective_settings
from flows.prefix import CachedPrefix
from flows.run._stop import stop_requested
from ledger import INTERACTION_LOST, Failure, SetupFault, Usage, Verdict, validate_answer

__all__ = [
    "LABEL_KEY",
    "LABEL_PIPELINE",
    "RUNNING",
    "TERMINAL_FAILED",
    "Polled",
    "create_kwargs",
    "judge",
    "label_value",
    "model_of",
    "output_text",
    "poll_all",
    "response_format",
    "submit_all",
    "usage_of",
]

LABEL_KEY = "gemini_ledger_key"
LABEL_PIPELINE = "gemini_ledger_pipeline"

# Statuses in which the interaction is still working (or waiting) and may yet finish.
# ``idle`` is new in google-genai 3.4 (a status of Interaction in
# google/genai/_gaos/types/interactions/interaction.py) and is not terminal.
RUNNING = frozenset(
    {"in_progress", "queued", "requires_action", "requires_continuation", "created", "idle"}
)
# Terminal statuses that carry no usable answer: the classifier decides what they mean.
TERMINAL_FAILED = frozenset({"failed", "cancelled", "incomplete", "budget_exceeded"})

_NO_USAGE = Usage(0, 0, 0)
_LABEL_MAX = 63
_LABEL_BAD = re.compile(r"[^a-z0-9_-]+")


def label_value(value: str) -> str:
    """A label-safe form of ``value`` (lowercase letters, digits, ``_``, ``-``; 63 chars max).

    The API refuses other label values; an idempotency key like ``articles:2026-11-22:tea:v1``
    is rewritten, with a digest of the original appended whenever the rewrite lost anything,
    so two keys never share a label.
    """
    safe = _LABEL_BAD.sub("-", value.lower()).strip("-") or "k"
    if safe == value and len(safe) <= _LABEL_MAX:
        return safe
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{safe[: _LABEL_MAX - len(digest) - 1]}-{digest}"


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The interactions API's JSON response format for a Pydantic output schema."""
    return {
        "type": "text",
        "mime_type": "application/json",
        "schema": schema.model_json_schema(),
    }


def create_kwargs(
    prompt: Prompt,
    *,
    key: str,
    pipeline: str,
    model: str,
    schema: type[BaseModel],
    base: GenerationSettings | None = None,
    timeout_s: float = 60.0,
    prefix: CachedPrefix | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``interactions.create`` that submit one job in the background,
    with the pipeline's settings ``base`` and the prompt's own over them
    (``flows.generation.interaction_config``).

    A pipeline's cached ``prefix`` goes inline here (its system instruction, its parts
    before the prompt's): the interactions API's ``cached_content`` is marked deprecated in
    google-genai 3.6.1 (``_gaos/types/interactions/createmodelinteraction.py``), so this
    channel makes no cache (``flows.prefix``)."""
    head = prefix.contents() if prefix is not None else ()
    kwargs: dict[str, Any] = {
        "model": model,
        # Text only: the plain string, as before; with media, the content blocks
        # (flows.contents.interaction_input, its parts resolved).
        "input": (
            interaction_input((*head, *prompt.contents())) if prompt.parts or head else prompt.text
        ),
        "background": True,
        "labels": {LABEL_KEY: label_value(key), LABEL_PIPELINE: label_value(pipeline)},
        "response_format": response_format(schema),
        # The exact key rides in a header too (labels are rewritten to be label-safe), so a
        # proxy or the emulator can count submissions per key.
        "extra_headers": {KEY_HEADER: key},
        "timeout": timeout_s,
    }
    system = prefix.system if prefix is not None else prompt.system
    if system:
        kwargs["system_instruction"] = system
    kwargs.update(interaction_config(effective_settings(prompt, base)))
    return kwargs


# --- reading an interaction --------------------------------------------------------------


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def output_text(interaction: Any) -> str | None:
    """The answer's text, as the SDK's ``Interaction.output_text`` computes it.

    The SDK adds ``output_text`` only to the objects it parses; for a raw JSON body this reads
    the same thing: the last run of text items of the trailing model-output steps, skipping
    thought steps and stopping at the user's input.
    """
    text = _field(interaction, "output_text")
    if isinstance(text, str):
        return text
    parts: list[str] = []
    collecting = False
    for step in reversed(_field(interaction, "steps") or []):
        kind = _field(step, "type")
        if kind == "user_input":
            break
        if kind == "thought":
            continue
        if kind != "model_output":
            if collecting:
                break
            continue
        stop = False
        for item in reversed(_field(step, "content") or []):
            if _field(item, "type") != "text":
                if collecting:
                    stop = True
                    break
                continue
            collecting = True
            piece = _field(item, "text")
            parts.append(piece if isinstance(piece, str) else "")
        if stop:
            break
    return "".join(reversed(parts)) if parts else None


def usage_of(interaction: Any) -> Usage:
    """Tokens billed for an interaction (zeros when it reports none).

    google-genai 3.3.0 ``interactions.Usage``: ``total_input_tokens`` (which includes
    ``total_cached_tokens``), ``total_output_tokens``, ``total_thought_tokens`` and
    ``total_tokens`` (prompt + responses + other internal tokens, thoughts among them), and
    ``input_tokens_by_modality`` ``[{modality, tokens}]``.
    """
    usage = _field(interaction, "usage")
    if usage is None:
        return _NO_USAGE

    def count(name: str) -> int:
        value = _field(usage, name)
        return int(value) if isinstance(value, int) and value > 0 else 0

    prompt_t, answer_t = count("total_input_tokens"), count("total_output_tokens")
    thoughts = count("total_thought_tokens")
    audio = 0
    for entry in _field(usage, "input_tokens_by_modality") or []:
        kind = _field(entry, "modality")
        kind = getattr(kind, "value", kind)
        if isinstance(kind, str) and kind.lower() == "audio":
            audio += max(int(_field(entry, "tokens") or 0), 0)
    return Usage(
        prompt_t,
        answer_t,
        count("total_tokens") or prompt_t + answer_t + thoughts,
        thoughts,
        min(count("total_cached_tokens"), prompt_t),
        min(audio, prompt_t),
    )


def model_of(interaction: Any) -> str | None:
    """The model the interaction says served it (its ``model``): the ledger's model version."""
    model = _field(interaction, "model")
    model = getattr(model, "value", model)
    if not isinstance(model, str) or not model.strip():
        return None
    return model.strip().removeprefix("models/")[:128]


def _dumped(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else obj


def step_errors(interaction: Any) -> list[Any]:
    """The google.rpc.Status ``error`` of each ``model_output`` step (SDK 3.3.0's
    ``ModelOutputStep.error``: e.g. code 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE)."""
    return [
        _dumped(_field(step, "error"))
        for step in _field(interaction, "steps") or []
        if _field(step, "type") == "model_output" and _field(step, "error") is not None
    ]


def _failure_of(interaction: Any, status: str) -> Failure:
    """The classifier's verdict on a terminal, answerless interaction."""
    # A step's own error first: it says why the answer is missing, by its code, where the
    # interaction's status alone ("failed") says nothing.
    errors = step_errors(interaction)
    errors += [_dumped(error) for error in _field(interaction, "errors") or []]
    # Only the status and errors: the whole interaction (steps, input) is no business of the
    # classifier and must not end up in a stored message.
    return classify({"status": status, "errors": errors})


Outcome = Literal[
    "done", "failed", "lost", "running", "get_error", "cancel_error", "halt", "stopped"
]


@dataclass(frozen=True, slots=True)
class Polled:
    """What one poll learned about one submitted job.

    ``done``: ``result`` is the validated answer's JSON. ``failed``: ``failure`` is the
    classifier's verdict (a terminal status, a schema failure, a permanent error on get, or
    our own cancel of an interaction that ran too long, then ``cancelled`` is true).
    ``lost``: the API no longer knows the interaction (404: deleted, or gone with its
    retention); ``failure`` is ``retryable:interaction_lost``, the job is sent again and
    counted as a possible duplicate (it may have run and been billed).
    ``running``: still working. ``get_error``/``cancel_error``: a transient error; nothing is
    known about the job, it stays submitted for the next tick. ``halt``: a fault of the
    setup (``fault``: refused key, API unreachable): nothing is known about the job either.
    ``stopped``: not polled, the tick is stopping (SIGTERM); it stays submitted.
    """

    key: str
    handle: str
    outcome: Outcome
    status: str | None = None
    result: str | None = None
    failure: Failure | None = None
    usage: Usage = _NO_USAGE
    cancelled: bool = False
    fault: SetupFault | None = None
    model_version: str | None = None
    response_id: str | None = None


def judge(key: str, handle: str, interaction: Any, schema: type[BaseModel]) -> Polled:
    """Turn an interaction the API returned into the outcome for its job."""
    status = str(_field(interaction, "status") or "")
    usage = usage_of(interaction)
    # The interaction's id is its response id: the one Google's logs know it by.
    version, response_id = model_of(interaction), handle[:128] or None
    no_text = not (output_text(interaction) or "").strip()

    def verdict(state: Outcome, **found: Any) -> Polled:
        return Polled(
            key,
            handle,
            state,
            status,
            usage=usage,
            model_version=version,
            response_id=response_id,
            **found,
        )

    if status == "completed" and no_text and step_errors(interaction):
        # No answer because a step failed: the step's code decides, not the empty text.
        return verdict("failed", failure=_failure_of(interaction, status))
    if status == "completed":
        answer = validate_answer(output_text(interaction), schema)
        if isinstance(answer, Failure):
            return verdict("failed", failure=answer)
        return verdict("done", result=answer.model_dump_json())
    if status in TERMINAL_FAILED:
        return verdict("failed", failure=_failure_of(interaction, status))
    # Running (idle included), or a status this code does not know yet: not a verdict.
    return Polled(key, handle, "running", status or None)


def _error_outcome(key: str, handle: str, exc: BaseException, outcome: Outcome) -> Polled:
    fault = setup_fault(exc)
    if fault is not None:  # about the project, not the job: never a verdict on it
        return Polled(key, handle, "halt", None, fault=fault)
    failure = classify(exc)
    if failure.code == "404":
        # The interaction is gone (deleted, or past its retention): its outcome is lost, not
        # the job's fault. Sent again, its attempt kept; it may have run and been billed, so
        # the ledger counts the resend as a possible duplicate.
        lost = Failure(
            Verdict.RETRYABLE,
            INTERACTION_LOST,
            f"interaction {handle} no longer exists at the API ({failure.message}); sent again",
        )
        return Polled(key, handle, "lost", None, failure=lost)
    if failure.verdict is Verdict.PERMANENT:
        # A definite answer (404: the interaction is gone, 400...): a verdict about the job.
        return Polled(key, handle, "failed", None, failure=failure)
    return Polled(key, handle, outcome, None, failure=failure)


async def fetch_json(method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Call an SDK method through ``with_raw_response`` and decode its JSON body with orjson.

    The SDK builds a pydantic model class per response to parse it (about 6 ms of CPU per
    call here), which would make a thousand concurrent polls CPU-bound; the raw response
    skips that parse and nothing else: request building, auth, the error hierarchy (4xx/5xx
    still raise ``APIStatusError`` subclasses) and the retry settings are the SDK's.
    """
    response = await method(*args, **kwargs)
    return orjson.loads(await response.read())


# --- the bounded concurrent poller -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handle:
    """One submitted job to poll: its key, interaction id and when it was submitted."""

    key: str
    handle: str
    submitted_at: float


async def _poll_one(
    aio: Any,
    gate: asyncio.Semaphore,
    job: Handle,
    schema: type[BaseModel],
    now: float,
    running_limit_s: float,
    timeout_s: float,
) -> Polled:
    async with gate:
        if stop_requested():
            return Polled(job.key, job.handle, "stopped")
        try:
            interaction = await fetch_json(
                aio.interactions.with_raw_response.get, job.handle, timeout=timeout_s
            )
        except Exception as exc:  # classified: a transient error leaves the job submitted
            return _error_outcome(job.key, job.handle, exc, "get_error")
        polled = judge(job.key, job.handle, interaction, schema)
        if polled.outcome != "running" or now - job.submitted_at <= running_limit_s:
            return polled
        # Running far too long: cancel it and let the job be resubmitted. If it finished in
        # the meantime the cancel's answer says so and its result is used instead.
        try:
            after = await fetch_json(
                aio.interactions.with_raw_response.cancel, job.handle, timeout=timeout_s
            )
        except Exception as exc:
            return _error_outcome(job.key, job.handle, exc, "cancel_error")
        final = judge(job.key, job.handle, after, schema)
        if final.outcome == "done":
            return final
        waited = int(now - job.submitted_at)
        failure = Failure(
            Verdict.RETRYABLE,
            "timeout",
            f"interaction still {polled.status} after {waited}s; cancelled",
        )
        return Polled(job.key, job.handle, "failed", final.status, failure=failure, cancelled=True)


def poll_all(
    jobs: Sequence[Handle],
    schema: type[BaseModel],
    *,
    max_concurrency: int = 32,
    running_limit_s: float = 3600.0,
    now: float | None = None,
    timeout_s: float = 30.0,
    client_factory: Callable[[], Any],
) -> list[Polled]:
    """``interactions.get`` every handle, at most ``max_concurrency`` requests in flight.

    Runs its own event loop (the caller is a synchronous Prefect task) with a client made for
    that loop and closed after it: an async HTTP client must not outlive its loop.
    """
    if not jobs:
        return []
    at = time.time() if now is None else now

    async def run(aio: Any) -> list[Polled]:
        gate = asyncio.Semaphore(max(1, max_concurrency))
        return list(
            await asyncio.gather(
                *(_poll_one(aio, gate, j, schema, at, running_limit_s, timeout_s) for j in jobs)
            )
        )

    return _with_aio(client_factory, run)


# --- concurrent submission ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submission:
    """The outcome of one ``interactions.create``: an id, the classified failure, or the
    fault of the setup that stopped it (then nothing was accepted: not billed); ``stopped``:
    never sent, the tick is stopping (SIGTERM)."""

    key: str
    handle: str | None
    failure: Failure | None = None
    fault: SetupFault | None = None
    # A 5xx, a timeout or a dropped connection: the interaction may exist all the same.
    ambiguous: bool = False
    stopped: bool = False


def submit_all(
    requests: Sequence[tuple[str, dict[str, Any]]],
    on_created: Callable[[str, str], None],
    *,
    max_concurrency: int = 32,
    client_factory: Callable[[], Any],
) -> list[Submission]:
    """``interactions.create`` each (key, kwargs), at most ``max_concurrency`` in flight.

    ``on_created(key, interaction_id)`` runs as soon as each create returns (it binds the
    handle in the ledger), so a crash loses at most the interactions in flight. After a fault
    of the setup no further create is sent: the rest come back with that fault. After a stop
    (``flows.run._stop``) none is sent either: the rest come back ``stopped``, while the creates
    in flight finish and are bound.
    """
    if not requests:
        return []
    halted: list[SetupFault] = []

    async def one(aio: Any, gate: asyncio.Semaphore, key: str, kw: dict[str, Any]) -> Submission:
        async with gate, arequest_slot(kw["model"]):
            if halted:
                return Submission(key, None, fault=halted[0])
            if stop_requested():
                return Submission(key, None, stopped=True)
            try:
                created = await fetch_json(aio.interactions.with_raw_response.create, **kw)
            except Exception as exc:
                fault = setup_fault(exc)
                if fault is not None:
                    halted.append(fault)
                    return Submission(key, None, fault=fault)
                failure = classify(exc)
                await asyncio.to_thread(note_failure, kw["model"], failure)
                return Submission(key, None, failure, ambiguous=may_have_been_carried_out(exc))
        handle = str(_field(created, "id") or "")
        if not handle:
            failure = Failure(Verdict.UNKNOWN, "unknown", "the API returned no interaction id")
            return Submission(key, None, failure)
        on_created(key, handle)
        return Submission(key, handle)

    async def run(aio: Any) -> list[Submission]:
        gate = asyncio.Semaphore(max(1, max_concurrency))
        return list(await asyncio.gather(*(one(aio, gate, k, kw) for k, kw in requests)))

    return _with_aio(client_factory, run)


def _with_aio(client_factory: Callable[[], Any], body: Callable[[Any], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        # Hold the Client itself: its __del__ closes the HTTP clients it shares with .aio.
        client = client_factory()
        try:
            return await body(client.aio)
        finally:
            await client.aio.aclose()

    return asyncio.run(main())
