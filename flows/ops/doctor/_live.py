"""``doctor --live``: a few real calls through the same code paths the channels use.

Every call carries an idempotency key under ``doctor:`` and nothing is written to the
ledger, so no pipeline's rows are touched. Each answer's structure is recorded (see
:mod:`flows.ops.doctor._shapes`); each failure is named in plain words with its fix.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.ops.doctor._local import API_KEY_FIX
from flows.ops.doctor._report import Check
from flows.ops.doctor._shapes import ShapeRecorder
from flows.settings import Settings

__all__ = [
    "BATCH_ROWS",
    "LiveRun",
    "estimate_requests",
    "estimate_tokens",
    "explain",
    "live_client",
    "run_live",
]

BATCH_ROWS = 3
_REQUESTS = 1 + BATCH_ROWS + 1  # generate_content, the batch rows, one interaction
_ANSWER_TOKENS = 1_000  # generous: a short answer plus a thinking model's thoughts
_PROMPT = (
    "This is a setup check by gemini-ledger doctor. Answer with one short example object"
    " that fits the response schema."
)
_POLL_START_S, _POLL_CAP_S = 0.5, 10.0


def estimate_requests() -> int:
    return _REQUESTS


def estimate_tokens(output_schema: dict[str, Any]) -> int:
    """An upper estimate of the tokens ``--live`` spends (about 4 characters a token)."""
    prompt = (len(_PROMPT) + len(json.dumps(output_schema))) // 4
    return _REQUESTS * (prompt + _ANSWER_TOKENS)


def live_client(
    api_key: str, recorder: ShapeRecorder, *, base_url: str | None = None, timeout_s: float = 60.0
) -> Any:
    """A google-genai client like the gateway's (retries off) that records every answer."""
    from google import genai
    from google.genai import types

    options: dict[str, Any] = {
        "retry_options": types.HttpRetryOptions(attempts=1),
        "timeout": int(timeout_s * 1000),
        "client_args": {"event_hooks": {"response": [recorder.hook]}},
    }
    if base_url:
        options["base_url"] = base_url
    return genai.Client(api_key=api_key, http_options=types.HttpOptions(**options))


# --- plain words for a failure --------------------------------------------------------------

_KEY_FIX = "create a key at https://aistudio.google.com/apikey, then " + API_KEY_FIX


# Faults of the setup whose fix the generic words below would get wrong (an unrestricted key
# is a 403 whose fix is not "enable the API"; a spent day is not a minute's wait). A retired
# model is the model check's own "not found".
_NAMED_BY_THE_LEDGER = frozenset({"key_unrestricted", "daily_quota", "no_quota"})


def explain(exc: BaseException, body: dict[str, Any] | None) -> tuple[str, str, bool]:
    """(what went wrong, the fix, whether every further call would fail the same way)."""
    from flows.gemini._errors import classify, setup_fault

    fault = setup_fault(exc)
    if fault is not None and fault.kind in _NAMED_BY_THE_LEDGER:
        # The faults a tick halts on with their own fix line: the same words here.
        return (fault.cause, fault.fix, True)
    error = (body or {}).get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        failure = classify(exc)
        if failure.code in ("connection", "timeout"):
            return (
                f"unreachable: the Gemini API did not answer ({failure.code}: {failure.message})",
                "check the network, proxy and GOOGLE_GEMINI_BASE_URL (unset it for Google's API)",
                True,
            )
        return (f"failed: {failure.message}", "see the message", False)
    code, status = error.get("code"), str(error.get("status") or "")
    message = str(error.get("message") or "")
    reasons = {
        str(d.get("reason"))
        for d in error.get("details") or []
        if isinstance(d, dict) and d.get("reason")
    }
    if "API_KEY_INVALID" in reasons or status == "UNAUTHENTICATED" or code == 401:
        return ("refused key: the API does not accept this API key", _KEY_FIX, True)
    if status == "PERMISSION_DENIED" or code == 403:
        return (
            f"permission: the key may not use this ({message})",
            "enable the Generative Language API on the key's Google Cloud project, or use a key"
            " from a project that has it",
            True,
        )
    if status == "FAILED_PRECONDITION":
        return (
            f"region/billing: {message}",
            "enable billing on the key's project (https://aistudio.google.com) or run from a"
            " supported region",
            True,
        )
    if status == "RESOURCE_EXHAUSTED" or code == 429:
        return (
            f"quota: {message}",
            "wait for the quota to reset, or raise it (https://ai.google.dev/gemini-api/docs/rate-limits)",
            False,
        )
    if code == 404:
        return (f"not found: {message}", "check the model name against models.list", False)
    if isinstance(code, int) and code >= 500:
        return (f"the API failed ({code} {status}): {message}", "try again later", False)
    return (f"refused ({code} {status}): {message}", "see the message", False)


# --- the run --------------------------------------------------------------------------------


@dataclass
class LiveRun:
    """The checks made, the tokens the answers say were spent, and the shapes seen."""

    checks: list[Check] = field(default_factory=list)
    tokens: int = 0
    recorder: ShapeRecorder = field(default_factory=ShapeRecorder)


class _Halt(Exception):
    """Every further call would fail the same way (a refused key, the API unreachable)."""


def _poll(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float
) -> tuple[Any, bool]:
    """Fetch until ``done`` or the time limit, backing off from 0.5 s to 10 s between polls."""
    deadline = time.monotonic() + timeout_s
    wait = _POLL_START_S
    while True:
        value = fetch()
        if done(value):
            return value, True
        if time.monotonic() + wait > deadline:
            return value, False
        time.sleep(wait)
        wait = min(wait * 2, _POLL_CAP_S)


def run_live(
    pipeline_spec: str,
    settings: Settings,
    *,
    client: Any | None = None,
    batch_timeout_s: float = 600.0,
    interaction_timeout_s: float = 300.0,
    run: LiveRun | None = None,
) -> LiveRun:
    """The live checks for one pipeline's model and output schema."""
    from flows.gemini.gateway import GatewayConfigError, find_api_key
    from flows.registry import get_pipeline

    run = run or LiveRun()
    pipeline = get_pipeline(pipeline_spec, settings)
    if client is None:
        try:
            found = find_api_key(settings)
        except GatewayConfigError as exc:
            run.checks.append(Check.fail("api key accepted", exc.cause, exc.fix))
            return run
        if found is None:
            run.checks.append(Check.fail("api key accepted", "no API key found", API_KEY_FIX))
            return run
        client = live_client(found.value, run.recorder, base_url=settings.gemini_base_url)
    tag = f"doctor:{uuid.uuid4().hex[:12]}"
    steps = (_model, _generate, _batch, _interaction)
    for step in steps:
        try:
            step(run, client, pipeline, tag, batch_timeout_s, interaction_timeout_s)
        except _Halt:
            break
    return run


def _fail(run: LiveRun, name: str, exc: BaseException) -> bool:
    """Record a failed call; True when nothing after it can work."""
    detail, fix, halt = explain(exc, run.recorder.last_error)
    run.checks.append(Check.fail(name, detail, fix))
    return halt


def _model(run: LiveRun, client: Any, pipeline: Any, *_: Any) -> None:
    run.recorder.last_error = None
    try:
        model = client.models.get(model=pipeline.model)
    except Exception as exc:
        detail, fix, halt = explain(exc, run.recorder.last_error)
        if halt:
            run.checks.append(Check.fail("api key accepted", detail, fix))
        else:
            run.checks.append(Check.ok("api key accepted"))
            run.checks.append(
                Check.fail(
                    f"model {pipeline.model}",
                    detail,
                    "set the pipeline's model to one models.list shows",
                )
            )
        raise _Halt from None
    run.checks.append(Check.ok("api key accepted"))
    run.checks.append(
        Check.ok(f"model {pipeline.model}", f"exists ({model.display_name or model.name})")
    )


def _generate(run: LiveRun, client: Any, pipeline: Any, tag: str, *_: Any) -> None:
    from google.genai import types

    from flows.gemini.gateway import keyed
    from flows.generation import sdk_config
    from ledger import Failure, classify_response, extract_text, validate_answer

    name = "generate_content with the output schema"
    run.recorder.last_error = None
    try:
        response = client.models.generate_content(
            model=pipeline.model,
            contents=_PROMPT,
            config=types.GenerateContentConfig(
                response_mime_type="application/json",
                response_json_schema=pipeline.output.model_json_schema(),
                http_options=keyed(f"{tag}:generate"),
                **sdk_config(pipeline.generation),
            ),
        )
    except Exception as exc:
        if _fail(run, name, exc):
            raise _Halt from None
        return
    meta = response.usage_metadata
    run.tokens += (meta.total_token_count or 0) if meta is not None else 0
    data = response.model_dump(mode="json", exclude_none=True)
    answer = classify_response(data) or validate_answer(extract_text(data), pipeline.output)
    if isinstance(answer, Failure):
        run.checks.append(
            Check.fail(
                name,
                f"the answer does not validate: {answer.message}",
                "check the pipeline's output model",
            )
        )
    else:
        run.checks.append(Check.ok(name, f"validates as {pipeline.output.__name__}"))


def _batch(
    run: LiveRun, client: Any, pipeline: Any, tag: str, batch_timeout_s: float, _: float
) -> None:
    from flows.channels._batch_io import (
        JSONL_MIME,
        create_batch_job,
        get_batch_job,
        job_state,
        output_file_of,
        upload_requests,
        write_requests,
    )
    from flows.pipeline import Prompt
    from ledger import LineSuccess, Verdict, parse_output_line

    keys = [f"{tag}:batch:{i}" for i in range(1, BATCH_ROWS + 1)]
    payload = Prompt(text=_PROMPT).model_dump_json()
    with tempfile.TemporaryDirectory(prefix="gl-doctor-") as tmp:
        requests = Path(tmp) / "requests.jsonl"
        with requests.open("wb") as out:
            write_requests(
                [(k, payload) for k in keys],
                pipeline.output.model_json_schema(),
                out,
                base=pipeline.generation,
            )
        run.recorder.last_error = None
        try:
            file_name = upload_requests(client, requests, display_name=tag.replace(":", "-"))
        except Exception as exc:
            if _fail(run, f"upload a {BATCH_ROWS}-line JSONL ({JSONL_MIME})", exc):
                raise _Halt from None
            return
        run.checks.append(Check.ok(f"upload a {BATCH_ROWS}-line JSONL", f"{JSONL_MIME} accepted"))
        name = f"{BATCH_ROWS}-row batch"
        try:
            job = create_batch_job(
                client, model=pipeline.model, file_name=file_name, display_name=tag
            )
            job, finished = _poll(
                lambda: get_batch_job(client, job.name), lambda j: bool(j.done), batch_timeout_s
            )
        except Exception as exc:
            _fail(run, name, exc)
            return
        if not finished:
            with contextlib.suppress(Exception):  # best effort: the check has failed already
                client.batches.cancel(name=job.name)
            run.checks.append(
                Check.fail(
                    name,
                    f"still {job_state(job)} after {batch_timeout_s:g} s (cancelled); the API may"
                    " queue batches for hours when busy",
                    "gemini-ledger doctor --live --batch-timeout 3600",
                )
            )
            return
        state, output = job_state(job), output_file_of(job)
        if state != "SUCCEEDED" or output is None:
            run.checks.append(
                Check.fail(
                    name,
                    f"ended {state} without an output file",
                    "run again; if it repeats, report it",
                )
            )
            return
        try:
            target = Path(tmp) / "output.jsonl"
            client.files.download(file=output, destination=str(target))
            lines = [ln for ln in target.read_bytes().splitlines() if ln.strip()]
        except Exception as exc:
            _fail(run, f"{name} output download", exc)
            return
        outcomes = [parse_output_line(ln, pipeline.output) for ln in lines]
        run.tokens += sum(o.usage.total_tokens for o in outcomes)
        good = {o.key for o in outcomes if isinstance(o, LineSuccess)}
        if good != set(keys):
            failed = [o for o in outcomes if not isinstance(o, LineSuccess)]
            bad = [f"{o.key}: {o.failure.message}" for o in failed]
            detail = f"{len(good)} of {BATCH_ROWS} rows came back valid"
            detail += f" ({'; '.join(bad) or 'rows missing'})"
            if failed and all(o.failure.verdict is Verdict.RETRYABLE for o in failed):
                # A 503 or 429 for one row is the API being busy, not a fault of the setup or
                # of the output model: the batch path worked; a night would retry those rows.
                run.checks.append(
                    Check.warn(name, detail, "the API was busy for these rows; run again")
                )
            else:
                run.checks.append(Check.fail(name, detail, "check the pipeline's output model"))
        else:
            run.checks.append(
                Check.ok(name, f"{state}, output downloaded, {BATCH_ROWS} rows parsed and valid")
            )
        for cleanup in (
            lambda: client.batches.delete(name=job.name),
            lambda: client.files.delete(name=file_name),
        ):
            try:
                cleanup()
            except Exception:  # leftovers expire on their own (48 h for files)
                continue


def _interaction(
    run: LiveRun, client: Any, pipeline: Any, tag: str, _: float, timeout_s: float
) -> None:
    from flows.channels._interactions import TERMINAL_FAILED, create_kwargs, output_text, usage_of
    from flows.pipeline import Prompt
    from ledger import Failure, validate_answer

    name = "background interaction"
    run.recorder.last_error = None
    key = f"{tag}:interaction"
    try:
        created = client.interactions.create(
            **create_kwargs(
                Prompt(text=_PROMPT),
                key=key,
                pipeline="doctor",
                model=pipeline.model,
                schema=pipeline.output,
                base=pipeline.generation,
            )
        )
        fetched, finished = _poll(
            lambda: client.interactions.get(created.id),
            lambda i: str(i.status) in ({"completed"} | TERMINAL_FAILED),
            timeout_s,
        )
        client.interactions.delete(created.id)
    except Exception as exc:
        _fail(run, name, exc)
        return
    status = str(fetched.status)
    if not finished or status != "completed":
        run.checks.append(
            Check.fail(
                name, f"{status} after {timeout_s:g} s", "run again; if it repeats, report it"
            )
        )
        return
    run.tokens += usage_of(fetched).total_tokens
    answer = validate_answer(output_text(fetched), pipeline.output)
    if isinstance(answer, Failure):
        run.checks.append(
            Check.fail(
                name,
                f"the answer does not validate: {answer.message}",
                "check the pipeline's output model",
            )
        )
        return
    run.checks.append(Check.ok(name, "created, fetched (completed, valid) and deleted"))
