"""The ASGI application: routing, auth, JSON in and out, latency, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._answers import stable_key
from ._embeddings import embed_keys
from ._errors import (
    STEP_ERRORS,
    auth_error,
    daily_quota,
    error_body,
    invalid_json,
    key_invalid,
    mime_refused,
    model_not_found,
    no_quota,
    not_found,
    project_fault,
    step_status,
)
from ._models import key_refused, model_resource
from ._rates import RATED_ROUTES
from ._scenario import Scenario, ScenarioError, load_scenario
from ._state import (
    TERMINAL_BATCH,
    TERMINAL_INTERACTION,
    ApiError,
    BatchRec,
    Core,
    FileRec,
    InteractionRec,
    iso,
)
from ._webhooks import WebhookSender

KEY_HEADER = "x-gemini-ledger-key"
# One key per request of a batchEmbedContents call, as a JSON list (emulator._embeddings).
KEYS_HEADER = "x-gemini-ledger-keys"
KEY_LABEL = "gemini_ledger_key"

_VER = r"(?P<ver>v1|v1beta|v1alpha)"
Handler = Callable[["Emulator", Request, dict[str, str]], Awaitable[Response]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def _error(status_obj: dict[str, Any]) -> Response:
    return _json({"error": status_obj}, status=int(status_obj["code"]))


async def _body_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(invalid_json(str(exc))["error"]) from None
    if not isinstance(data, dict):
        raise ApiError(invalid_json("Expected a JSON object.")["error"])
    return data


async def _model_in_body(request: Request) -> str:
    """The ``model`` of a JSON body (interactions.create); starlette keeps the body for the
    handler."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return "unknown"
    model = data.get("model") if isinstance(data, dict) else None
    return str(model) if model else "unknown"


class Emulator:
    """Holds the core, the webhook sender and the route table."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        webhook_url: str | None,
        webhook_secret: str | None,
        clock: Callable[[], float],
    ) -> None:
        self.core = Core(scenario, seed, clock)
        self.webhooks = WebhookSender(self.core, webhook_url, webhook_secret)
        self.timers: set[asyncio.TimerHandle] = set()
        self.routes: list[tuple[str, re.Pattern[str], str, str, Handler, bool]] = []
        add = self._add
        add("POST", rf"/{_VER}/models/(?P<model>[^/:]+):generateContent", "generate", gen)
        add("GET", rf"/{_VER}/models/(?P<model>[^/:]+)", "models.get", models_get)
        add("POST", rf"/{_VER}/models/(?P<model>[^/:]+):countTokens", "count_tokens", count)
        add("POST", rf"/{_VER}/models/(?P<model>[^/:]+):batchEmbedContents", "embed", embed_many)
        add("POST", rf"/{_VER}/models/(?P<model>[^/:]+):embedContent", "embed", embed_one)
        add(
            "POST",
            rf"/{_VER}/models/(?P<model>[^/:]+):batchGenerateContent",
            "batches.create",
            batch_create,
        )
        # batches.create_embeddings (emulator._embeddings cites the shape).
        add(
            "POST",
            rf"/{_VER}/models/(?P<model>[^/:]+):asyncBatchEmbedContent",
            "batches.create",
            batch_create_embeddings,
        )
        add("POST", rf"/upload/{_VER}/files", "upload", upload, auth=False)
        add("GET", rf"/{_VER}/files", "files.list", files_list)
        add("GET", rf"/{_VER}/files/(?P<id>[^/:]+):download", "files.download", files_download)
        add("GET", rf"/{_VER}/files/(?P<id>[^/:]+)", "files.get", files_get)
        add("DELETE", rf"/{_VER}/files/(?P<id>[^/:]+)", "files.delete", files_delete)
        # Context caches, as google-genai caches.py calls them (emulator._caches).
        add("POST", rf"/{_VER}/cachedContents", "caches.create", cache_create)
        add("GET", rf"/{_VER}/cachedContents", "caches.list", cache_list)
        add("GET", rf"/{_VER}/cachedContents/(?P<id>[^/:]+)", "caches.get", cache_get)
        add("DELETE", rf"/{_VER}/cachedContents/(?P<id>[^/:]+)", "caches.delete", cache_delete)
        add("GET", rf"/{_VER}/batches", "batches.list", batch_list)
        add("GET", rf"/{_VER}/batches/(?P<id>[^/:]+)", "batches.get", batch_get)
        add("POST", rf"/{_VER}/batches/(?P<id>[^/:]+):cancel", "batches.cancel", batch_cancel)
        add("DELETE", rf"/{_VER}/batches/(?P<id>[^/:]+)", "batches.delete", batch_delete)
        add("POST", rf"/{_VER}/interactions", "interactions.create", inter_create)
        add("GET", rf"/{_VER}/interactions/(?P<id>[^/]+)", "interactions.get", inter_get)
        add(
            "POST",
            rf"/{_VER}/interactions/(?P<id>[^/]+)/cancel",
            "interactions.cancel",
            inter_cancel,
        )
        add("DELETE", rf"/{_VER}/interactions/(?P<id>[^/]+)", "interactions.delete", inter_delete)

    def _add(
        self, method: str, pattern: str, name: str, handler: Handler, *, auth: bool = True
    ) -> None:
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{" + m.group(1) + "}", pattern)
        self.routes.append((method, re.compile(pattern + "$"), template, name, handler, auth))

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        method = request.method
        if path.startswith("/_emulator/"):
            return await self.control(request, path[len("/_emulator/") :])
        counts = self.core.requests
        for r_method, regex, template, name, handler, auth in self.routes:
            if r_method != method:
                continue
            match = regex.match(path)
            if match is None:
                continue
            params = match.groupdict()
            label = f"{method} {template.replace('{ver}', params['ver'])}"
            counts[label] = counts.get(label, 0) + 1
            if auth:
                refused = self.refusal(request.headers.get("x-goog-api-key"))
                if refused is not None:
                    return refused
            if name in RATED_ROUTES:
                # At arrival, before the simulated latency: what a quota at the API would see.
                model = params.get("model") or await _model_in_body(request)
                self.core.rates.observe(model)
                spent = self.generation_refusal(name, model, params["ver"])
                if spent is not None:
                    return spent
            latency = self.core.scenario.latency_ms.get(name)
            if latency is not None and (latency.mean or latency.jitter):
                delay = latency.mean + random.uniform(-latency.jitter, latency.jitter)
                if delay > 0:
                    await asyncio.sleep(delay / 1000.0)
            step = self._route_step(name, request)
            if step in STEP_ERRORS:  # refused before any work: nothing created, nothing billed
                return _json(
                    {"error": step_status(step, self.core.scenario.retry_delay_s)},
                    status=STEP_ERRORS[step][0],
                )
            try:
                answer = await handler(self, request, params)
                if step == "accepted_504":
                    # Carried out, then the answer lost on the way: what a gateway timeout
                    # looks like to the caller (504 DEADLINE_EXCEEDED, the "hang" body).
                    return _json({"error": step_status("hang", 0)}, status=504)
                return answer
            except ApiError as exc:
                return _error(exc.status_obj)
            except (AttributeError, TypeError, ValueError, KeyError) as exc:
                return _json(
                    error_body(400, "INVALID_ARGUMENT", f"Invalid request: {exc!r}"), status=400
                )
            except Exception as exc:  # a bug in the emulator: still a JSON error body
                return _json(error_body(500, "INTERNAL", f"Emulator error: {exc!r}"), status=500)
        label = f"{method} {{unknown}}"
        counts[label] = counts.get(label, 0) + 1
        return _json(not_found(path), status=404)

    def _route_step(self, name: str, request: Request) -> str:
        """The scenario's fault for this call of route ``name`` (``route_faults``)."""
        if name == "upload" and "upload_id" in request.url.query:
            return "ok"  # a chunk of a session already opened: the opening took the step
        return self.core.route_step(name)

    def refusal(self, key: str | None) -> Response | None:
        """What the API answers a request whose key or project is not fit, before any work."""
        scenario = self.core.scenario
        if not key:
            return _json(auth_error(), status=403)
        if (refused := key_refused(key)) is not None:  # the doctor's tests: "refused-..." keys
            return _json(refused, status=400)
        if scenario.valid_api_keys is not None and key not in scenario.valid_api_keys:
            return _json(key_invalid(), status=400)
        if scenario.project_fault is not None:
            body = project_fault(scenario.project_fault)
            return _json(body, status=int(body["error"]["code"]))
        return None

    def generation_refusal(self, route: str, model: str, version: str) -> Response | None:
        """What the API answers a generation request (generateContent, batchGenerateContent,
        interactions.create) for a retired model or under a spent quota, before any work: a
        fault of the project, not of the request's rows (nothing is counted or billed)."""
        scenario = self.core.scenario
        bare = model.removeprefix("models/")
        if bare in scenario.retired_models:
            method = "batchGenerateContent" if route == "batches.create" else "generateContent"
            return _error(model_not_found(bare, version, method))
        if scenario.quota_fault == "per_day":
            return _error(daily_quota(bare))
        if scenario.quota_fault == "limit_zero":
            return _error(no_quota(bare))
        return None

    async def control(self, request: Request, what: str) -> Response:
        core = self.core
        if what == "stats" and request.method == "GET":
            return _json(core.stats())
        if what == "received" and request.method == "GET":
            # The generation settings each key's last request carried (emulator._settings).
            return _json(core.received)
        if what == "cached" and request.method == "GET":
            # The cache each key's last request named (cachedContent), by key.
            return _json(core.cached_keys)
        if what == "reset" and request.method == "POST":
            core.reset()
            return _json({"ok": True})
        if what == "scenario" and request.method == "POST":
            try:
                body = await _body_json(request)
            except ApiError as exc:
                return _error(exc.status_obj)
            seed = body.pop("seed", None)
            if "scenario" in body and len(body) == 1:
                body = body["scenario"]
            try:
                scenario = load_scenario(str(body["name"]) if set(body) == {"name"} else body)
            except ScenarioError as exc:
                return _json(error_body(400, "INVALID_ARGUMENT", str(exc)), status=400)
            core.set_scenario(scenario, int(seed) if seed is not None else None)
            return _json({"ok": True, "scenario": scenario.model_dump(), "seed": core.seed})
        if what == "scenario" and request.method == "GET":
            return _json({"scenario": core.scenario.model_dump(), "seed": core.seed})
        return _json(not_found(request.url.path), status=404)

    # -------------------------------------------------------------- webhook events
    def batch_finished(self, rec: BatchRec) -> None:
        if not self.webhooks.enabled or rec.state not in TERMINAL_BATCH:
            return
        kind = {
            "BATCH_STATE_SUCCEEDED": "batch.succeeded",
            "BATCH_STATE_EXPIRED": "batch.expired",
        }.get(rec.state, "batch.failed")
        data: dict[str, Any] = {
            "name": f"batches/{rec.id}",
            "display_name": rec.display_name,
            "state": rec.state,
        }
        if rec.output and "responsesFile" in rec.output:
            data["responses_file"] = rec.output["responsesFile"]
        self.webhooks.emit(kind, data, f"batches/{rec.id}")

    def interaction_finished(self, rec: InteractionRec) -> None:
        if not rec.background or not (self.webhooks.enabled or rec.webhook_uris):
            return
        kind = "interaction.completed" if rec.status == "completed" else "interaction.failed"
        data: dict[str, Any] = {"id": rec.id, "status": rec.status}
        if rec.labels:
            data["labels"] = rec.labels
        if rec.webhook_metadata is not None:
            data["user_metadata"] = rec.webhook_metadata
        self.webhooks.emit(kind, data, rec.id, urls=rec.webhook_uris)

    def schedule_batch(self, rec: BatchRec) -> None:
        secs = self.core.scenario.batch_seconds_to_complete
        if secs is None or rec.state in TERMINAL_BATCH:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.timers.discard(handle)
            if rec.state not in TERMINAL_BATCH and self.core.batches.get(rec.id) is rec:
                self.core.finish_batch(rec)
                self.batch_finished(rec)

        handle = loop.call_later(secs + 0.001, fire)
        self.timers.add(handle)

    def close_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()


def base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _batch_json(rec: BatchRec) -> dict[str, Any]:
    return rec.as_json()


# ------------------------------------------------------------------ handlers
async def models_get(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    retired = p["model"].removeprefix("models/") in emu.core.scenario.retired_models
    found = None if retired else model_resource(p["model"])
    if found is None:
        # The real API's answer to models.get for a model it does not serve.
        body = error_body(
            404, "NOT_FOUND", f"models/{p['model']} is not found for API version {p['ver']}."
        )
        return _json(body, status=404)
    return _json(found)


async def gen(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    raw = await request.body()
    body = await _body_json(request)
    key = request.headers.get(KEY_HEADER) or stable_key(raw)
    return _json(emu.core.generate(p["model"], body, key))


async def count(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    """``countTokens``: the prompt tokens a generateContent of the same contents would be
    billed (never billed itself, no quota's request). Shape from google-genai's
    ``Models.count_tokens`` (models.py: ``POST {model}:countTokens`` with ``contents``;
    ``_CountTokensResponse_from_mldev`` reads ``totalTokens`` and
    ``cachedContentTokenCount``) and the REST reference ("models.countTokens": a
    ``generateContentRequest`` body is accepted in place of ``contents``, read too)."""
    body = await _body_json(request)
    return _json(emu.core.count_tokens(p["model"], body))


async def embed_many(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    """``batchEmbedContents`` (emulator._embeddings cites the shape)."""
    body = await _body_json(request)
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise ApiError(error_body(400, "INVALID_ARGUMENT", "requests is required")["error"])
    keys = embed_keys(requests, request.headers.get(KEYS_HEADER), request.headers.get(KEY_HEADER))
    embeddings = emu.core.embed(p["model"], requests, keys)
    # usageMetadata: read by the SDK when present (_EmbedContentResponse_from_mldev).
    return _json({"embeddings": embeddings, "usageMetadata": emu.core.embed_usage(requests)})


async def embed_one(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    """``embedContent``: one request, one ``embedding``."""
    body = await _body_json(request)
    keys = embed_keys([body], None, request.headers.get(KEY_HEADER))
    embedding = emu.core.embed(p["model"], [body], keys)[0]
    return _json({"embedding": embedding, "usageMetadata": emu.core.embed_usage([body])})


async def upload(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    core = emu.core
    query = parse_qs(request.url.query)
    upload_id = (query.get("upload_id") or [""])[0]
    command = request.headers.get("x-goog-upload-command", "").lower()
    if not upload_id:
        refused = emu.refusal(request.headers.get("x-goog-api-key"))
        if refused is not None:
            return refused
        body = await _body_json(request)
        spec = body.get("file") or {}
        mime = (
            spec.get("mimeType")
            or spec.get("mime_type")
            or request.headers.get("x-goog-upload-header-content-type")
        )
        if mime in core.scenario.refused_upload_mime_types:
            return _json(mime_refused(str(mime)), status=400)
        if (full := core.storage_refusal(int(_declared_size(spec, request)))) is not None:
            return _json(full, status=429)
        fid = core.new_id()
        name = spec.get("name")
        if isinstance(name, str) and name:
            fid = name.removeprefix("files/")
        size = _declared_size(spec, request)
        rec = FileRec(
            id=fid,
            display_name=spec.get("displayName") or spec.get("display_name"),
            mime_type=spec.get("mimeType")
            or spec.get("mime_type")
            or request.headers.get("x-goog-upload-header-content-type")
            or "application/octet-stream",
            data=bytearray(),
            expected_size=int(size or 0),
            create_time=core.clock(),
        )
        core.uploads[fid] = rec
        url = (
            f"{base_url(request)}/upload/{p['ver']}/files?upload_id={fid}&upload_protocol=resumable"
        )
        return Response(
            b"",
            headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"},
        )
    rec_or_none = core.uploads.get(upload_id)
    if rec_or_none is None:
        return _json(error_body(404, "NOT_FOUND", f"No upload session {upload_id}."), 404)
    rec = rec_or_none
    chunk = await request.body()
    offset = int(request.headers.get("x-goog-upload-offset", len(rec.data)) or 0)
    if offset != len(rec.data):
        return _json(
            error_body(400, "INVALID_ARGUMENT", f"Bad offset {offset}, expected {len(rec.data)}."),
            400,
        )
    if "upload" in command:
        rec.data.extend(chunk)
    if "finalize" in command:
        # A size not declared at the start is known only now: checked again.
        if rec.expected_size <= 0 and (full := core.storage_refusal(len(rec.data))) is not None:
            del core.uploads[upload_id]
            return _json(full, status=429)
        rec.done = True
        del core.uploads[upload_id]
        core.files[rec.id] = rec
        label = rec.display_name or ""
        core.uploaded[label] = core.uploaded.get(label, 0) + 1
        return _json(
            {"file": rec.as_json(base_url(request), p["ver"])},
            headers={"x-goog-upload-status": "final"},
        )
    return Response(b"", headers={"x-goog-upload-status": "active"})


def _declared_size(spec: dict[str, Any], request: Request) -> int:
    """The size an upload announces at its start (its metadata, or the upload header)."""
    size = (
        spec.get("sizeBytes")
        or spec.get("size_bytes")
        or request.headers.get("x-goog-upload-header-content-length", 0)
    )
    try:
        return int(size or 0)
    except (TypeError, ValueError):
        return 0


def _file(emu: Emulator, fid: str) -> FileRec:
    # An expired file (48 h after upload) is gone: files.get answers 404 as for any other.
    rec = emu.core.files.get(fid) if emu.core.file_alive(fid) else None
    if rec is None:
        raise ApiError(
            {"code": 404, "status": "NOT_FOUND", "message": f"File files/{fid} not found."}
        )
    return rec


async def files_list(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    files = [f.as_json(base_url(request), p["ver"]) for f in emu.core.files.values()]
    return _json({"files": files} if files else {})


async def files_get(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    return _json(_file(emu, p["id"]).as_json(base_url(request), p["ver"]))


async def files_delete(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    emu.core.delete_file(p["id"])
    return _json({})


async def files_download(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    rec = _file(emu, p["id"])
    return Response(bytes(rec.data), media_type=rec.mime_type)


async def batch_create(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    return await _create_batch(emu, request, p, embed=False)


async def batch_create_embeddings(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    """``asyncBatchEmbedContent``: an embeddings batch job, run like a generate one."""
    return await _create_batch(emu, request, p, embed=True)


async def _create_batch(
    emu: Emulator, request: Request, p: dict[str, str], *, embed: bool
) -> Response:
    core = emu.core
    body = await _body_json(request)
    batch = body.get("batch") or {}
    input_config = batch.get("inputConfig") or {}
    rows: list[tuple[str, dict[str, Any]]] = []
    inline = False
    # batches.create sends fileName; create_embeddings sends file_name (google-genai 3.6.1
    # _EmbeddingsBatchJobSource_to_mldev writes the snake_case name as it is).
    file_name = input_config.get("fileName") or input_config.get("file_name")
    if file_name:
        fid = str(file_name).removeprefix("files/")
        frec = _file(emu, fid)
        for raw in bytes(frec.data).splitlines():
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ApiError(
                    invalid_json(f"Bad JSONL line in files/{fid}: {raw[:80]!r}")["error"]
                ) from None
            req = line.get("request") if isinstance(line, dict) else None
            if not isinstance(req, dict):
                raise ApiError(
                    {
                        "code": 400,
                        "status": "INVALID_ARGUMENT",
                        "message": f"Each line of files/{fid} needs a 'request' object.",
                    }
                )
            key = line.get("key")
            rows.append((str(key) if key is not None else stable_key(raw), req))
    elif "requests" in input_config:
        inline = True
        reqs = input_config.get("requests") or {}
        items = reqs.get("requests") if isinstance(reqs, dict) else reqs
        for item in items or []:
            req = item.get("request") or {}
            meta = item.get("metadata") or {}
            key = meta.get("key") if isinstance(meta, dict) else None
            rows.append((str(key) if key is not None else stable_key(orjson.dumps(req)), req))
    else:
        raise ApiError(
            {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": "batch.inputConfig needs fileName or requests.",
            }
        )
    model = f"models/{p['model']}"
    display = str(batch.get("displayName") or batch.get("display_name") or "")
    rec = core.create_batch(model, display, rows, inline, embed=embed)
    if rec.state in TERMINAL_BATCH:
        emu.batch_finished(rec)
    else:
        emu.schedule_batch(rec)
    return _json(_batch_json(rec))


def _batch(emu: Emulator, bid: str) -> BatchRec:
    rec = emu.core.batches.get(bid)
    if rec is None:
        raise ApiError(
            {"code": 404, "status": "NOT_FOUND", "message": f"Batch batches/{bid} not found."}
        )
    return rec


def _observe(emu: Emulator, rec: BatchRec) -> None:
    if emu.core.observe_batch(rec):
        emu.batch_finished(rec)


async def batch_get(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    rec = _batch(emu, p["id"])
    _observe(emu, rec)
    return _json(_batch_json(rec))


async def batch_list(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    query = parse_qs(request.url.query)
    try:
        size = int((query.get("pageSize") or ["50"])[0])
    except ValueError:
        size = 50
    size = max(1, min(size, 1000))
    token = (query.get("pageToken") or [""])[0] or None
    page, nxt = emu.core.list_batches(size, token)
    for rec in page:
        _observe(emu, rec)
    out: dict[str, Any] = {"operations": [_batch_json(r) for r in page]}
    if nxt:
        out["nextPageToken"] = nxt
    return _json(out)


async def batch_cancel(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    # POST /v1beta/batches/{id}:cancel (google-genai 3.6.1 google/genai/batches.py,
    # Batches.cancel: request('post', 'batches/{name}:cancel'), returns None and reads
    # nothing of the answer): an empty body.
    # A job already ended is left as it is. The job ends CANCELLED with the rows answered so
    # far (the scenario's batch_partial_output) in a responses file: see State.cancel_batch.
    emu.core.cancel_batch(_batch(emu, p["id"]))
    return _json({})


async def batch_delete(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    _batch(emu, p["id"])
    del emu.core.batches[p["id"]]
    return _json({})


async def cache_create(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    return _json(emu.core.create_cache(await _body_json(request)).as_json(iso))


async def cache_get(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    return _json(emu.core.get_cache(p["id"]).as_json(iso))


async def cache_list(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    # Expired caches are gone from the listing, as at the API; one page holds them all
    # (the emulator never has many), so no nextPageToken.
    live = [c for c in emu.core.caches.values() if emu.core.cache_alive(c.id)]
    return _json({"cachedContents": [c.as_json(iso) for c in live]} if live else {})


async def cache_delete(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    emu.core.delete_cache(p["id"])
    return _json({})


def _interaction(emu: Emulator, iid: str) -> InteractionRec:
    rec = emu.core.interactions.get(iid)
    if rec is not None and emu.core.interaction_gone(rec):
        # Deleted behind the caller's back, or past its retention: from now on it is not
        # found, as after interactions.delete.
        del emu.core.interactions[iid]
        rec = None
    if rec is None:
        raise ApiError(
            {"code": 404, "status": "NOT_FOUND", "message": f"Interaction {iid} not found."}
        )
    return rec


def _inter_response(rec: InteractionRec) -> Response:
    if rec.cached is None:
        data = orjson.dumps(rec.as_json())
        if rec.status in TERMINAL_INTERACTION:
            rec.cached = data
        return Response(data, media_type="application/json")
    return Response(rec.cached, media_type="application/json")


async def inter_create(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    raw = await request.body()
    body = await _body_json(request)
    labels = body.get("labels")
    key = request.headers.get(KEY_HEADER)
    if not key and isinstance(labels, dict) and labels.get(KEY_LABEL):
        key = str(labels[KEY_LABEL])
    rec = emu.core.create_interaction(body, key or stable_key(raw))
    if rec.status in TERMINAL_INTERACTION:
        emu.interaction_finished(rec)
    return _inter_response(rec)


async def inter_get(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    rec = _interaction(emu, p["id"])
    if rec.status not in TERMINAL_INTERACTION and emu.core.observe_interaction(rec):
        emu.interaction_finished(rec)
    return _inter_response(rec)


async def inter_cancel(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    rec = _interaction(emu, p["id"])
    emu.core.cancel_interaction(rec)
    return _inter_response(rec)


async def inter_delete(emu: Emulator, request: Request, p: dict[str, str]) -> Response:
    _interaction(emu, p["id"])
    del emu.core.interactions[p["id"]]
    return _json({})


def create_app(
    *,
    scenario: Scenario | str = "clean",
    seed: int = 0,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The emulator as a Starlette ASGI app (state in memory, per app)."""
    emu = Emulator(load_scenario(scenario), seed, webhook_url, webhook_secret, clock)

    async def endpoint(request: Request) -> Response:
        return await emu.dispatch(request)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            emu.close_timers()
            await emu.webhooks.aclose()

    app = Starlette(
        routes=[
            Route(
                "/{path:path}",
                endpoint,
                methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
            )
        ],
        lifespan=lifespan,
    )
    app.state.emulator = emu
    return app
