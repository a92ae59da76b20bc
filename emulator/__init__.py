"""A local Gemini API emulator that the real google-genai SDK talks to over HTTP.

Point the SDK at it with ``GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8765`` (or
``HttpOptions(base_url=...)``) and any API key. State lives in memory, per process.

Public API
----------
- ``create_app(*, scenario="clean", seed=0, webhook_url=None, webhook_secret=None,
  clock=time.time) -> starlette.applications.Starlette``
- ``serve(*, host="127.0.0.1", port=8765, scenario="clean", seed=0, webhook_url=None,
  webhook_secret=None) -> None`` (uvicorn, blocking, log level warning, no access log)
- ``python -m emulator --host --port --scenario --seed --webhook-url --webhook-secret``
- ``load_scenario(name_or_path) -> Scenario``: built-ins ``clean`` and ``default``, or a JSON
  (``.json``) / YAML file; ``Scenario`` refuses unknown fields (``ScenarioError``).
- ``emulator.testing.RunningEmulator``: the emulator as a real subprocess, for tests.

Routes (under ``/v1``, ``/v1beta`` and ``/v1alpha``)
----------------------------------------------------
``POST /{ver}/models/{model}:generateContent``, ``POST /upload/{ver}/files`` (resumable:
start, then ``upload`` / ``upload, finalize`` chunks at the absolute ``x-goog-upload-url``),
``GET /{ver}/files``, ``GET|DELETE /{ver}/files/{id}``, ``GET /{ver}/files/{id}:download``,
``POST /{ver}/models/{model}:batchGenerateContent`` (file or inline source),
``GET /{ver}/batches`` (pageSize, pageToken), ``GET|DELETE /{ver}/batches/{id}``,
``POST /{ver}/batches/{id}:cancel``, ``POST /{ver}/interactions``,
``GET|DELETE /{ver}/interactions/{id}``, ``POST /{ver}/interactions/{id}/cancel``,
``GET /{ver}/models/{model}`` (any ``gemini-*`` model exists). An API key starting with
``refused-`` gets the real API's 400 INVALID_ARGUMENT / ``API_KEY_INVALID``.
A missing or empty ``x-goog-api-key`` gets 403 PERMISSION_DENIED (the real API's body; upload
chunk requests carry no key and are accepted); unknown routes get 404 NOT_FOUND, malformed
JSON 400 INVALID_ARGUMENT, all as ``{"error": {"code", "message", "status"}}``.

Control routes: ``GET /_emulator/stats``, ``POST /_emulator/reset`` (clears state and counters,
keeps the scenario), ``POST /_emulator/scenario`` (a scenario mapping, or ``{"name":
"default"}``, optionally with ``"seed"``), ``GET /_emulator/scenario``.

How the idempotency key reaches the emulator (checked against google-genai 3.3.0)
-------------------------------------------------------------------------------
- generateContent: the ``x-gemini-ledger-key`` header. The SDK forwards per-call headers:
  ``GenerateContentConfig(http_options=HttpOptions(headers={"x-gemini-ledger-key": K}))``.
- batch, file source: each JSONL row ``{"key": K, "request": {...camelCase request...}}``.
- batch, inline: each request's ``metadata.key`` (the SDK passes ``metadata`` through as-is).
- interactions.create: the ``x-gemini-ledger-key`` header (``extra_headers=`` on ``create``)
  wins; else ``labels["gemini_ledger_key"]`` (the SDK sends ``labels`` through unchanged).
- no key at all: ``"body:" + sha256(request body)[:32]`` (for a batch row, of the row).

Stats (``GET /_emulator/stats``)
--------------------------------
``{"requests": {"<METHOD> <route>": n}, "billed": {"generate_calls", "batch_rows",
"interactions", "prompt_tokens", "candidates_tokens", "total_tokens"}, "submissions": {key: n},
"batches_created", "interactions_created", "webhooks_sent", "webhooks_failed", "scenario",
"seed"}``. Route labels carry the real version, e.g. ``"GET /v1/interactions/{id}"``,
``"POST /v1/models/{model}:generateContent"``, ``"POST /upload/v1/files"`` (start and chunks),
``"GET /v1/files/{id}:download"``; an unmatched route is ``"<METHOD> {unknown}"``.
``submissions[key]`` counts every request carrying the key to a submitting route (every
generateContent call and interactions.create whatever the answer, every batch row at create).
``billed`` counts only what produced an answer (including safety / empty / blocked-prompt
answers, which the real API bills for the prompt), with tokens from the returned usage; batch
rows are billed when the job succeeds, interactions when they complete.

Scenarios and steps
-------------------
Every random decision is ``blake2b(seed, key, submission number, decision)``, so a key's fate
does not depend on request order. A per-key script (first ``scripts`` entry whose fnmatch glob
matches) overrides the rates; each submission takes the next step, the last step repeats.
Steps: ``ok``; errors ``429`` (RESOURCE_EXHAUSTED + ``google.rpc.RetryInfo`` ``retryDelay``),
``500``/``failed`` (INTERNAL), ``503`` (UNAVAILABLE), ``400`` (INVALID_ARGUMENT), ``403``,
``404``, ``unknown`` (409 ABORTED); answers ``safety`` (finishReason SAFETY, no text),
``blocked_prompt`` (promptFeedback.blockReason, no candidates), ``empty`` (finishReason
STOP, a content with no parts: python-genai #1289), ``finish_other`` / ``malformed_response``
(finishReason OTHER / MALFORMED_RESPONSE, no parts; an interaction completes with no text),
``incomplete`` (finishReason MAX_TOKENS, half the text); ``429_daily`` (429 whose
QuotaFailure quotaId is per day, no RetryInfo), ``429_help`` (429 with only a Help link);
``missing`` (batch row left out; elsewhere ``ok``); ``hang`` (interaction never completes;
generate: 504 DEADLINE_EXCEEDED; batch row: left out); ``cancelled`` / ``budget_exceeded``
(interaction statuses; generate and batch rows: 499 CANCELLED / 429 without RetryInfo).
On a batch row an error step is an output line ``{"key": K, "error": {"code": 3, "message"}}``
(a numeric gRPC code; with ``batch_error_style: status``, ``{code, message, status,
details}``); on generateContent and interactions.create it is the HTTP error. Interactions end
``failed`` (INTERNAL, or SAFETY / BLOCKED_PROMPT for the safety steps), ``cancelled``,
``incomplete`` or ``budget_exceeded`` with ``errors: [{"code", "message"}]``; ``completed``
carries ``steps[-1] = {"type": "model_output", "content": [{"type": "text", "text": ...}]}``
(the SDK exposes it as ``interaction.output_text``) and ``usage`` (total_input_tokens,
total_output_tokens, total_tokens).

Faults of the setup and real shapes (scenario fields): ``valid_api_keys`` (others get 400
INVALID_ARGUMENT with ErrorInfo ``API_KEY_INVALID``), ``project_fault`` (403
PERMISSION_DENIED, 400 FAILED_PRECONDITION, or ``key_unrestricted``: 403 with ErrorInfo
``API_KEY_SERVICE_BLOCKED``, on every keyed request),
``refused_upload_mime_types`` (400 "Unsupported MIME type" at upload start),
``retired_models`` (404 NOT_FOUND "models/X is not found for API version ..." on
generateContent, batchGenerateContent, interactions.create and models.get),
``quota_fault`` (``per_day``: 429 with a per-day QuotaFailure quotaId, or ``limit_zero``:
429 "limit: 0", on every generation request),
``batch_error_style`` (``grpc``, the default: output error lines with a numeric gRPC code and
no status, as the real API writes them; ``status``: with the status name and details),
``batch_output_delay_polls`` (SUCCEEDED, or CANCELLED with ``batch_partial_output``, before
``responsesFile`` is shown),
``batch_failed_error`` (the FAILED operation's ``error {code, message}``),
``interaction_step_error_code`` (a ``failed`` step's error on its ``model_output`` step),
``safety_finish_reason`` (the ``safety`` step's finishReason), ``blocked_prompt_reason``
(the ``blocked_prompt`` step's blockReason, e.g. JAILBREAK).

Answers: with ``generationConfig.responseJsonSchema`` / ``responseSchema`` or an interaction's
``response_format`` (``{"type": "text", "mime_type": "application/json", "schema": ...}``)
the text is JSON conforming to the schema (deterministic for seed, key and submission number);
otherwise a short sentence. ``promptTokenCount`` is ~len(prompt)/4.

Webhooks
--------
With ``webhook_url`` set, a batch job or background interaction that reaches a terminal state
(when it is observed by a get/list poll, or when its ``batch_seconds_to_complete`` timer fires)
is POSTed from a background task, signed per Standard Webhooks (``standardwebhooks``:
``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``, secret
``whsec_...``). The event types are those the SDK's ``WebhookSubscribedEvent`` names (the SDK
defines no payload shape, so the body is ours)::

    {"type": "batch.succeeded" | "batch.failed" | "batch.expired",
     "timestamp": "2026-11-22T05:00:00.000000Z",
     "data": {"name": "batches/ID", "display_name": "...",
              "state": "BATCH_STATE_SUCCEEDED", "responses_file": "files/batch-ID"}}
    {"type": "interaction.completed" | "interaction.failed",
     "timestamp": "...",
     "data": {"id": "v1_...", "status": "completed" | "failed" | "incomplete" | ...,
              "labels": {...}}}

A job cancelled by the caller sends nothing (``batch.failed`` is sent for a scripted
CANCELLED outcome). Delivery is retried (4 attempts) until a 2xx: at least once; at most
16 deliveries are in flight at a time, each signed when it is sent;
``webhook_duplicate_rate`` sends a second copy with the same ``webhook-id``,
``webhook_delay_ms`` delays it. Successful deliveries count in ``webhooks_sent``, failed
attempts in ``webhooks_failed``; delivery never blocks a request or crashes the server.
"""

from __future__ import annotations

import time

from ._app import KEY_HEADER, KEY_LABEL, create_app
from ._scenario import BUILTINS, Scenario, ScenarioError, load_scenario

__all__ = [
    "BUILTINS",
    "KEY_HEADER",
    "KEY_LABEL",
    "Scenario",
    "ScenarioError",
    "create_app",
    "load_scenario",
    "serve",
]


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    scenario: Scenario | str = "default",
    seed: int = 0,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> None:
    """Serve the emulator with uvicorn until interrupted (blocking).

    The socket is bound first, so the line saying where it listens (and which scenario it
    plays) is printed only once that is true; ``OSError`` when the address is taken.
    """
    import socket

    import uvicorn

    played = load_scenario(scenario)
    app = create_app(
        scenario=played,
        seed=seed,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        clock=time.time,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{bound}"
    print(
        f"Gemini emulator listening on {url}, playing scenario {played.name!r} (seed {seed});"
        f" point the SDK at it with GOOGLE_GEMINI_BASE_URL={url}",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
