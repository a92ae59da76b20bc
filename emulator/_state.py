"""In-memory state of the emulator and the decisions it makes (no HTTP here)."""

from __future__ import annotations

import fnmatch
import functools
import itertools
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ._answers import answer_text, collect_text, count_tokens, has_letters, uniform
from ._caches import CacheRec, cache_gone, cache_of_request, parse_ttl
from ._caches import min_tokens as cache_min_tokens
from ._caches import tokens_of as cache_tokens_of
from ._embeddings import embedding_for, request_text
from ._errors import STEP_ERRORS, step_status, storage_full
from ._media import media_problem, media_tokens
from ._rates import RateMeter
from ._scenario import Scenario
from ._settings import (
    SettingsRefused,
    interaction_settings,
    rest_settings,
    shape_answer,
    thoughts_for,
)

ERROR_STEPS = (frozenset(STEP_ERRORS) | {"429_daily", "429_help"}) - {
    "cancelled",
    "budget_exceeded",
    "hang",
    "failed",
}
# Answers without text that a retry may fix: finish STOP with no parts (python-genai #1289;
# the body in litellm #24442), and OTHER / MALFORMED_RESPONSE finishes without text
# (google-genai 3.3.0 types.FinishReason).
EMPTY_FINISH = {
    "empty": "STOP",
    "finish_other": "OTHER",
    "malformed_response": "MALFORMED_RESPONSE",
}
# Faults of one input of a multi-input embed call (the others are the call's).
PER_INPUT_FAULTS = frozenset({"400"})
ANSWER_STEPS = frozenset(
    {"ok", "safety", "blocked_prompt", "incomplete", "missing", "bad_vector", *EMPTY_FINISH}
)
TERMINAL_BATCH = frozenset(
    {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}
)
TERMINAL_INTERACTION = frozenset(
    {"completed", "failed", "cancelled", "incomplete", "budget_exceeded"}
)

_GL = "type.googleapis.com/google.ai.generativelanguage.v1main."
_BATCH_TYPE = _GL + "GenerateContentBatch"
_OUTPUT_TYPE = _GL + "GenerateContentBatchOutput"
# The metadata type of an embeddings batch (not seen on the wire: the SDK ignores @type).
_EMBED_BATCH_TYPE = _GL + "EmbedContentBatch"


class ApiError(Exception):
    """Raised by the core to make the HTTP layer answer an error body."""

    def __init__(self, status_obj: dict[str, Any]) -> None:
        super().__init__(status_obj.get("message", ""))
        self.status_obj = status_obj

    @property
    def code(self) -> int:
        return int(self.status_obj["code"])


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The Files API keeps a file 48 hours (https://ai.google.dev/gemini-api/docs/files;
# File.expiration_time).
FILE_TTL_S = 48 * 3600


def _new_id(counter: itertools.count[int]) -> str:
    return f"{next(counter):06d}{secrets.token_hex(5)}"


@dataclass
class FileRec:
    id: str
    display_name: str | None
    mime_type: str
    data: bytearray
    expected_size: int
    create_time: float
    source: str = "UPLOADED"
    done: bool = False

    def as_json(self, base_url: str, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": f"files/{self.id}",
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),
            "createTime": iso(self.create_time),
            "updateTime": iso(self.create_time),
            "expirationTime": iso(self.create_time + FILE_TTL_S),
            "uri": f"{base_url}/{version}/files/{self.id}",
            "state": "ACTIVE",
            "source": self.source,
        }
        if self.display_name:
            out["displayName"] = self.display_name
        if self.source == "GENERATED":
            out["downloadUri"] = f"{base_url}/{version}/files/{self.id}:download?alt=media"
        return out


@dataclass
class Row:
    key: str
    n: int
    step: str
    request: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None  # why the API refuses this line's settings


@dataclass
class BatchRec:
    id: str
    model: str
    display_name: str
    create_time: float
    rows: list[Row]
    inline: bool
    outcome: str  # terminal state it will reach
    truncate: bool
    state: str = "BATCH_STATE_PENDING"
    update_time: float = 0.0
    end_time: float | None = None
    polls: int = 0
    output: dict[str, Any] | None = None
    output_hidden_polls: int = 0
    failed_error: tuple[int, str] = (13, "Batch job failed.")
    embed: bool = False  # an embeddings batch (asyncBatchEmbedContent), emulator._embeddings

    def as_json(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "@type": _EMBED_BATCH_TYPE if self.embed else _BATCH_TYPE,
            "model": self.model,
            "displayName": self.display_name,
            "state": self.state,
            "createTime": iso(self.create_time),
            "updateTime": iso(self.update_time or self.create_time),
            "name": f"batches/{self.id}",
            "batchStats": {"requestCount": str(len(self.rows))},
        }
        if self.end_time is not None:
            meta["endTime"] = iso(self.end_time)
        # A job reported SUCCEEDED before output.responsesFile is filled (seen by a
        # third-party client; unverified): the state alone is no proof every row is missing.
        output = self.output if self.output_hidden_polls <= 0 else None
        if output is not None:
            meta["output"] = output
        out: dict[str, Any] = {
            "name": f"batches/{self.id}",
            "metadata": meta,
            "done": self.state in TERMINAL_BATCH,
        }
        if self.state == "BATCH_STATE_SUCCEEDED":
            out["response"] = {
                "@type": _OUTPUT_TYPE,
                **(output or {}),
            }
        elif self.state in ("BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED"):
            # The operation-level google.rpc.Status, which the SDK maps to BatchJob.error
            # for Vertex only (google-genai batches.py, _BatchJob_from_mldev has no error).
            code, message = (
                self.failed_error
                if self.state == "BATCH_STATE_FAILED"
                else (4, "Batch job expired before it was processed.")
            )
            out["error"] = {"code": code, "message": message}
        return out


@dataclass
class InteractionRec:
    id: str
    model: str
    key: str
    n: int
    step: str
    prompt: str
    schema: Any
    background: bool
    labels: dict[str, str] | None
    create_time: float
    status: str = "in_progress"
    update_time: float = 0.0
    polls: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    cached: bytes | None = None
    webhook_uris: list[str] | None = None
    webhook_metadata: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    media: dict[str, int] = field(default_factory=dict)  # prompt tokens by modality

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "interaction",
            "model": self.model,
            "status": self.status,
            "created": iso(self.create_time),
            "updated": iso(self.update_time or self.create_time),
        }
        if self.labels:
            out["labels"] = self.labels
        out.update(self.outputs)
        return out


def _zero_billed() -> dict[str, int]:
    return {
        "generate_calls": 0,
        "embed_calls": 0,
        "batch_rows": 0,
        "interactions": 0,
        "prompt_tokens": 0,
        "candidates_tokens": 0,
        "total_tokens": 0,
        "thoughts_tokens": 0,
        "cached_tokens": 0,
    }


# Interaction errors[].code is "a URI that identifies the error type" (google-genai 3.3.0,
# google/genai/_gaos/types/interactions/error.py). The URIs themselves are not documented:
# this form (a path ending in the type's name) is one reading; the ledger's classifier reads
# the last word of any URI, and ``interaction_error_style: name`` sends bare names instead.
INTERACTION_ERROR_URI = "https://generativelanguage.googleapis.com/errors/"


def interaction_error_code(name: str, style: str) -> str:
    """An interaction error's ``code`` for a type name (``INTERNAL``, ``MAX_TOKENS``...)."""
    if style == "name":
        return name
    return INTERACTION_ERROR_URI + name.lower().replace("_", "-")


class Core:
    """Everything the emulator knows; every HTTP handler calls one method of this."""

    def __init__(self, scenario: Scenario, seed: int, clock: Callable[[], float]) -> None:
        self.scenario = scenario
        self.seed = seed
        self.clock = clock
        self.reset()

    # ------------------------------------------------------------------ bookkeeping
    def reset(self) -> None:
        self.requests: dict[str, int] = {}
        self.rates = RateMeter()
        self.billed: dict[str, int] = _zero_billed()
        self.submissions: dict[str, int] = {}
        # The generation settings last received per key (only requests that carried some),
        # in one form whatever the channel: GET /_emulator/received.
        self.received: dict[str, dict[str, Any]] = {}
        self.batches_created = 0
        self.interactions_created = 0
        self.webhooks_sent = 0
        self.webhooks_failed = 0
        self.files: dict[str, FileRec] = {}
        self.files_deleted = 0
        self.files_refused_full = 0
        # Finalized uploads per display name (a test's count of how often the same bytes
        # went up; deleted files leave files.list, so it cannot tell).
        self.uploaded: dict[str, int] = {}
        # Explicit context caches (emulator._caches), and the requests that named one.
        self.caches: dict[str, CacheRec] = {}
        self.caches_created = 0
        self.caches_deleted = 0
        self.cached_keys: dict[str, str] = {}  # key -> the cache its last request named
        self.uploads: dict[str, FileRec] = {}
        self.batches: dict[str, BatchRec] = {}
        self.interactions: dict[str, InteractionRec] = {}
        self.script_pos: dict[tuple[int, str], int] = {}
        self.route_pos: dict[str, int] = {}
        self.display_names: dict[str, int] = {}
        self.job_outcome_pos = 0
        self._ids = itertools.count(1)

    def set_scenario(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        if seed is not None:
            self.seed = seed
        self.script_pos.clear()
        self.route_pos.clear()
        self.job_outcome_pos = 0

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "billed": dict(self.billed),
            "submissions": dict(self.submissions),
            # Per model: requests a quota counts, and the most seen in any 1 s / 60 s window.
            "rates": self.rates.as_json(),
            "batches_created": self.batches_created,
            "interactions_created": self.interactions_created,
            "webhooks_sent": self.webhooks_sent,
            "webhooks_failed": self.webhooks_failed,
            # The Files API's storage of the project: every stored file, uploaded or generated.
            "files": {
                "stored": len(self.files),
                "stored_bytes": self.stored_bytes(),
                "limit_bytes": self.scenario.files_storage_limit_bytes,
                "deleted": self.files_deleted,
                "refused_full": self.files_refused_full,
                "uploaded": dict(self.uploaded),
            },
            # Context caches: live ones (expired ones are gone, as at the API), made, deleted,
            # and how many requests (generate calls, batch rows) named one.
            "caches": {
                "stored": sum(1 for c in self.caches.values() if self.cache_alive(c.id)),
                "created": self.caches_created,
                "deleted": self.caches_deleted,
                "requests": sum(c.uses for c in self.caches.values()),
            },
            "scenario": self.scenario.name,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ context caches
    def cache_alive(self, cid: str) -> bool:
        rec = self.caches.get(cid)
        return rec is not None and self.clock() < rec.expire_time

    def create_cache(self, body: dict[str, Any]) -> CacheRec:
        """``caches.create``: refused as the API refuses it (emulator._caches)."""
        model = str(body.get("model") or "").removeprefix("models/")
        if not model:
            raise ApiError(
                {"code": 400, "status": "INVALID_ARGUMENT", "message": "model is required."}
            )
        self.check_media(body)
        media = sum(media_tokens(body, self.file_size).values())
        tokens = cache_tokens_of(body, media)
        least = cache_min_tokens(model)
        if tokens < least:
            raise ApiError(
                {
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                    "message": (
                        f"Cached content is too small. total_token_count={tokens},"
                        f" min_total_token_count={least}"
                    ),
                }
            )
        now = self.clock()
        rec = CacheRec(
            id=self.new_id(),
            model=model,
            display_name=str(body.get("displayName") or ""),
            create_time=now,
            expire_time=parse_ttl(body, now),
            tokens=tokens,
        )
        self.caches[rec.id] = rec
        self.caches_created += 1
        return rec

    def get_cache(self, cid: str) -> CacheRec:
        if not self.cache_alive(cid):
            raise ApiError(cache_gone())
        return self.caches[cid]

    def delete_cache(self, cid: str) -> None:
        if not self.cache_alive(cid):
            raise ApiError(cache_gone())
        del self.caches[cid]
        self.caches_deleted += 1

    def request_cache(self, request: dict[str, Any], model: str, key: str) -> CacheRec | None:
        """The live cache a request names (None if it names none); raises the API's refusal
        for a gone cache, a system instruction beside it, or another model's cache."""
        cid = cache_of_request(request)
        if cid is None:
            return None
        if not self.cache_alive(cid):
            raise ApiError(cache_gone())
        rec = self.caches[cid]
        if request.get("systemInstruction") or request.get("system_instruction"):
            raise ApiError(
                {
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                    "message": (
                        "CachedContent can not be used with GenerateContent request setting"
                        " system_instruction, tools or tool_config.\n\nProposed fix: move"
                        " those values to CachedContent from GenerateContent request."
                    ),
                }
            )
        if model.removeprefix("models/") != rec.model:
            raise ApiError(
                {
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                    "message": (
                        f"Model used by GenerateContent request (models/{model}) and"
                        f" CachedContent (models/{rec.model}) has to be the same."
                    ),
                }
            )
        self.cached_keys[key] = rec.name
        return rec

    def stored_bytes(self) -> int:
        """Bytes the project holds in the Files API (input files and responses files alike:
        both are files of the project until deleted or expired)."""
        return sum(len(f.data) for f in self.files.values())

    def storage_refusal(self, incoming: int) -> dict[str, Any] | None:
        """The error an upload of ``incoming`` more bytes gets when it would pass the
        project's storage limit; None when it fits."""
        limit = self.scenario.files_storage_limit_bytes
        if self.stored_bytes() + incoming <= limit:
            return None
        self.files_refused_full += 1
        return storage_full(limit)

    def delete_file(self, fid: str) -> None:
        """``files.delete``: the file leaves the project's storage."""
        if fid not in self.files:
            raise ApiError(
                {"code": 404, "status": "NOT_FOUND", "message": f"File files/{fid} not found."}
            )
        del self.files[fid]
        self.files_deleted += 1

    def new_id(self) -> str:
        return _new_id(self._ids)

    # ------------------------------------------------------------------ decisions
    def route_step(self, route: str) -> str:
        """The scenario's next ``route_faults`` step for one call of ``route`` ("ok" after)."""
        steps = self.scenario.route_faults.get(route)
        if not steps:
            return "ok"
        pos = self.route_pos.get(route, 0)
        self.route_pos[route] = pos + 1
        return steps[pos] if pos < len(steps) else "ok"

    def submit(self, key: str, prompt: str, *, batch: bool) -> tuple[int, str]:
        """Count one submission of ``key`` and decide what happens to it."""
        n = self.submissions.get(key, 0) + 1
        self.submissions[key] = n
        return n, self.decide(key, n, prompt, batch=batch)

    def decide(self, key: str, n: int, prompt: str, *, batch: bool) -> str:
        sc = self.scenario
        for index, script in enumerate(sc.scripts):
            if fnmatch.fnmatchcase(key, script.match):
                pos = self.script_pos.get((index, key), 0)
                self.script_pos[(index, key)] = pos + 1
                step = script.steps[min(pos, len(script.steps) - 1)]
                if step == "ok" and sc.empty_when_no_letters and not has_letters(prompt):
                    return "empty"
                return step
        u = uniform(self.seed, key, n, "fault")
        for step, rate in (
            ("429", sc.rate_429),
            ("503", sc.rate_503),
            ("500", sc.rate_500),
            ("400", sc.rate_400),
            ("safety", sc.rate_safety),
            ("blocked_prompt", sc.rate_blocked_prompt),
            ("empty", sc.rate_empty),
            ("missing", sc.rate_missing if batch else 0.0),
        ):
            if u < rate:
                return step
            u -= rate
        if sc.empty_when_no_letters and not has_letters(prompt):
            return "empty"
        return "ok"

    # ------------------------------------------------------------------ answers
    def bill(self, kind: str, usage: dict[str, Any]) -> None:
        b = self.billed
        b[kind] += 1
        b["prompt_tokens"] += usage.get("promptTokenCount", 0)
        b["candidates_tokens"] += usage.get("candidatesTokenCount", 0)
        b["total_tokens"] += usage.get("totalTokenCount", 0)
        b["thoughts_tokens"] += usage.get("thoughtsTokenCount", 0)
        b["cached_tokens"] += usage.get("cachedContentTokenCount", 0)

    def model_version(self, model: str) -> str:
        """What ``modelVersion`` names for a requested model (an alias resolved)."""
        name = model.removeprefix("models/")
        return self.scenario.model_versions.get(name, name)

    def embed_usage(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """The call's usage, billed: the prompt tokens of its texts (embeddings have no
        output tokens)."""
        tokens = sum(count_tokens(request_text(r)) for r in requests)
        usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        self.bill("embed_calls", usage)
        return usage

    def embed(self, model: str, requests: list[dict[str, Any]], keys: list[str]) -> list[Any]:
        """One embed call's vectors, one per request (``emulator._embeddings``), every
        request counted as received. The call fails as a whole: with the first request's
        fault (a quota, an overload: the call's, drawn once per call), or with any
        request's ``400`` (one bad input and the API refuses the call)."""
        pairs = zip(keys, requests, strict=True)
        steps = [self.submit(key, request_text(r), batch=False)[1] for key, r in pairs]
        failing = steps[0] if steps[0] not in ANSWER_STEPS else None
        failing = failing or next((s for s in steps if s in PER_INPUT_FAULTS), None)
        if failing is not None:
            raise ApiError(step_status(failing, self.scenario.retry_delay_s, model))
        bare = model.removeprefix("models/")
        return [embedding_for(self.seed, bare, r, s) for s, r in zip(steps, requests, strict=True)]

    def settings_of(
        self, read: Callable[[dict[str, Any], str], dict[str, Any]], body: Any, model: str, key: str
    ) -> dict[str, Any]:
        """A request's generation settings (``emulator._settings``), recorded under its key;
        refused ones raise the API's 400."""
        try:
            settings = read(body, model)
        except SettingsRefused as exc:
            raise ApiError(
                {"code": 400, "status": "INVALID_ARGUMENT", "message": str(exc)}
            ) from None
        if settings:
            self.received[key] = settings
        return settings

    def answer_under(self, text: str, settings: dict[str, Any]) -> tuple[str, bool, int]:
        """An answer's text under the request's settings, whether max_output_tokens cut it,
        and the thinking tokens it reports."""
        thoughts = thoughts_for(settings, self.scenario.thoughts_tokens)
        text, cut = shape_answer(
            text,
            settings,
            thoughts,
            counts_thoughts=self.scenario.max_output_tokens_counts_thoughts,
        )
        return text, cut, thoughts

    def usage(
        self,
        ptok: int,
        ctok: int,
        *,
        thinks: bool = True,
        thoughts: int | None = None,
        media: dict[str, int] | None = None,
        cached_tokens: int | None = None,
    ) -> dict[str, Any]:
        """usageMetadata as real answers carry it (google-genai 3.3.0
        GenerateContentResponseUsageMetadata; FACTS, "Usage metadata of real answers"):
        totalTokenCount includes thoughtsTokenCount, promptTokenCount includes
        cachedContentTokenCount, promptTokensDetails breaks the prompt down by modality.
        Zero counts are left out, as the API's JSON leaves them out.

        ``cached_tokens``: the request named an explicit cache of that many tokens; they are
        the answer's cachedContentTokenCount and part of its promptTokenCount."""
        sc = self.scenario
        thoughts = (sc.thoughts_tokens if thoughts is None else thoughts) if thinks else 0
        cached = int(ptok * sc.cached_prompt_fraction)
        if cached_tokens:
            ptok += cached_tokens
            cached = cached_tokens
        usage: dict[str, Any] = {"promptTokenCount": ptok}
        if ctok:
            usage["candidatesTokenCount"] = ctok
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if cached:
            usage["cachedContentTokenCount"] = cached
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        # Media parts count in the prompt, each modality in its own detail (emulator._media).
        details = [{"modality": "TEXT", "tokenCount": ptok}]
        for modality, tokens in sorted((media or {}).items()):
            details.append({"modality": modality, "tokenCount": tokens})
            usage["promptTokenCount"] += tokens
        usage["totalTokenCount"] = usage["promptTokenCount"] + ctok + thoughts
        usage["promptTokensDetails"] = details
        return usage

    def generate_response(
        self,
        request: dict[str, Any],
        key: str,
        n: int,
        step: str,
        model: str,
        settings: dict[str, Any] | None = None,
        cached_tokens: int | None = None,
    ) -> dict[str, Any]:
        """A GenerateContentResponse (camelCase) for an answering step, under the request's
        generation ``settings`` (``emulator._settings``); ``cached_tokens``: the explicit
        cache the request named (emulator._caches)."""
        prompt = prompt_of(request)
        ptok = count_tokens(prompt)
        media = media_tokens(request, self.file_size)
        usage = functools.partial(self.usage, cached_tokens=cached_tokens)
        # modelVersion names what answered (an alias resolved) and responseId the answer, on
        # generate_content answers and batch output lines alike (GenerateContentResponse).
        out: dict[str, Any] = {
            "modelVersion": self.model_version(model),
            "responseId": f"emu-{key_hash(key, n)}",
        }
        if step == "blocked_prompt":
            # blockReason is a types.BlockedReason: SAFETY, OTHER, BLOCKLIST,
            # PROHIBITED_CONTENT, IMAGE_SAFETY, MODEL_ARMOR, JAILBREAK (google-genai 3.3.0).
            out["promptFeedback"] = {
                "blockReason": self.scenario.blocked_prompt_reason,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
                ],
            }
            # A blocked prompt never reached the model: no answer, no thinking.
            out["usageMetadata"] = usage(ptok, 0, thinks=False, media=media)
            return out
        if step == "safety":
            # finishReason values of the API (google-genai types.FinishReason): SAFETY,
            # PROHIBITED_CONTENT, BLOCKLIST, SPII among them (JAILBREAK is a blockReason).
            candidate: dict[str, Any] = {
                "content": {"role": "model"},
                "finishReason": self.scenario.safety_finish_reason,
                "index": 0,
                "safetyRatings": [
                    {
                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH",
                        "blocked": True,
                    }
                ],
            }
            ctok = 0
        elif step in EMPTY_FINISH:
            # No parts at all, and no candidatesTokenCount in the usage (litellm #24442:
            # ``"content": {"role": "model"}, "finishReason": "STOP"``).
            out["candidates"] = [
                {"content": {"role": "model"}, "finishReason": EMPTY_FINISH[step], "index": 0}
            ]
            out["usageMetadata"] = usage(ptok, 0, thinks=False, media=media)
            return out
        else:
            text = answer_text(schema_of(request), self.seed, key, n)
            if step == "incomplete":
                text = text[: max(1, len(text) // 2)]
            text, cut, thoughts = self.answer_under(text, settings or {})
            candidate = {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if step == "incomplete" or cut else "STOP",
                "index": 0,
            }
            ctok = count_tokens(text) if text else 0
            out["candidates"] = [candidate]
            out["usageMetadata"] = usage(ptok, ctok, thoughts=thoughts, media=media)
            return out
        out["candidates"] = [candidate]
        out["usageMetadata"] = usage(ptok, ctok, media=media)
        return out

    # ------------------------------------------------------------------ generate
    def file_alive(self, fid: str) -> bool:
        """Whether the Files API holds the file and it has not expired (48 h)."""
        rec = self.files.get(fid)
        return rec is not None and self.clock() - rec.create_time < FILE_TTL_S

    def file_size(self, fid: str) -> int:
        rec = self.files.get(fid)
        return len(rec.data) if rec is not None else 0

    def check_media(self, body: dict[str, Any]) -> None:
        """Raise the API's error for the request's media (emulator._media), if any."""
        problem = media_problem(body, size=len(orjson.dumps(body)), file_alive=self.file_alive)
        if problem is not None:
            raise ApiError(problem)

    def generate(self, model: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        self.check_media(body)  # refused: nothing counted
        cache = self.request_cache(body, model, key)  # refused: nothing counted
        prompt = prompt_of(body)
        settings = self.settings_of(rest_settings, body, model, key)  # refused: nothing counted
        n, step = self.submit(key, prompt, batch=False)
        if step in ("missing", "lost"):
            step = "ok"
        if step not in ANSWER_STEPS:
            raise ApiError(step_status(step, self.scenario.retry_delay_s, model))
        if cache is not None:
            cache.uses += 1
        resp = self.generate_response(
            body, key, n, step, model, settings, cache.tokens if cache is not None else None
        )
        self.bill("generate_calls", resp["usageMetadata"])
        return resp

    def count_tokens(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """``countTokens``: the prompt tokens ``generate`` would bill for the same contents
        (text and media alike), nothing billed or submitted."""
        request = body.get("generateContentRequest") or body
        if not isinstance(request, dict) or not request.get("contents"):
            raise ApiError(
                {"code": 400, "status": "INVALID_ARGUMENT", "message": "contents is required"}
            )
        self.check_media(request)
        media = media_tokens(request, self.file_size)
        text = count_tokens(prompt_of(request))
        total = text + sum(media.values())
        details = [{"modality": "TEXT", "tokenCount": text}]
        details += [{"modality": m, "tokenCount": n} for m, n in sorted(media.items())]
        return {"totalTokens": total, "promptTokensDetails": details}

    # ------------------------------------------------------------------ batches
    def create_batch(
        self,
        model: str,
        display_name: str,
        rows: list[tuple[str, dict[str, Any]]],
        inline: bool,
        *,
        embed: bool = False,
    ) -> BatchRec:
        sc = self.scenario
        recs = []
        for key, request in rows:
            text = request_text(request) if embed else prompt_of(request)
            n, step = self.submit(key, text, batch=True)
            row = Row(key, n, "ok" if step == "lost" else step, request)
            try:
                if embed:
                    if not text.strip():
                        raise ApiError(
                            {"code": 400, "status": "INVALID_ARGUMENT", "message": "No content."}
                        )
                else:
                    self.check_media(request)
                    self.request_cache(request, model, key)  # a gone cache: the line refused
                    row.settings = self.settings_of(rest_settings, request, model, key)
            except ApiError as exc:
                # A line the API refuses gets its own error line; the job goes on.
                row.refused = str(exc.status_obj["message"])
            recs.append(row)
        occurrence = self.display_names.get(display_name, 0) + 1
        self.display_names[display_name] = occurrence
        if self.job_outcome_pos < len(sc.batch_job_outcomes):
            outcome = sc.batch_job_outcomes[self.job_outcome_pos]
            self.job_outcome_pos += 1
        else:
            u = uniform(self.seed, display_name, occurrence, "job")
            if u < sc.batch_job_fail_rate:
                outcome = "FAILED"
            elif u < sc.batch_job_fail_rate + sc.batch_job_expire_rate:
                outcome = "EXPIRED"
            else:
                outcome = "SUCCEEDED"
        truncate = uniform(self.seed, display_name, occurrence, "truncate") < sc.rate_truncated_file
        now = self.clock()
        rec = BatchRec(
            id=self.new_id(),
            model=model,
            display_name=display_name,
            create_time=now,
            rows=recs,
            inline=inline,
            outcome="BATCH_STATE_" + outcome,
            truncate=truncate,
            failed_error=sc.batch_failed_error,
            embed=embed,
        )
        self.batches[rec.id] = rec
        self.batches_created += 1
        if sc.batch_seconds_to_complete is None and sc.batch_polls_to_complete == 0:
            self.finish_batch(rec)
        return rec

    def batch_due(self, rec: BatchRec) -> bool:
        sc = self.scenario
        if sc.batch_seconds_to_complete is not None:
            return self.clock() - rec.create_time >= sc.batch_seconds_to_complete
        return rec.polls >= sc.batch_polls_to_complete

    def observe_batch(self, rec: BatchRec) -> bool:
        """One poll of a batch job (get or list); returns True when it just finished."""
        if rec.state in TERMINAL_BATCH:
            rec.output_hidden_polls -= 1
            return False
        rec.polls += 1
        if self.batch_due(rec):
            self.finish_batch(rec)
            return True
        if rec.state == "BATCH_STATE_PENDING":
            rec.state = "BATCH_STATE_RUNNING"
            rec.update_time = self.clock()
        return False

    def finish_batch(self, rec: BatchRec, state: str | None = None) -> None:
        now = self.clock()
        rec.state = state or rec.outcome
        rec.update_time = rec.end_time = now
        rows = rec.rows
        if rec.state != "BATCH_STATE_SUCCEEDED":
            # The rows a failed or cancelled job answered before it ended (see the scenario's
            # batch_partial_output); most such jobs have none.
            share = self.scenario.batch_partial_output
            # An EXPIRED job has no results (https://ai.google.dev/gemini-api/docs/batch-mode).
            answered = 0 if rec.state == "BATCH_STATE_EXPIRED" else math.ceil(len(rows) * share)
            if not answered:
                return
            rows = rows[:answered]
        lines: list[dict[str, Any]] = []
        retry = self.scenario.retry_delay_s
        for row in rows:
            if row.step in ("missing", "hang"):
                continue
            if row.refused is not None:
                error: dict[str, Any] = {"code": 400, "message": row.refused}
                if self.scenario.batch_error_style == "grpc":
                    error["code"] = _GRPC_CODES["INVALID_ARGUMENT"]
                else:
                    error["status"] = "INVALID_ARGUMENT"
                lines.append({"key": row.key, "error": error})
                continue
            cid = cache_of_request(row.request)
            if cid is not None and row.step in ANSWER_STEPS and not self.cache_alive(cid):
                # The job reads its lines when it runs: a cache gone by then refuses the line.
                gone = cache_gone()
                if self.scenario.batch_error_style == "grpc":
                    gone = {"code": _GRPC_CODES[gone["status"]], "message": gone["message"]}
                lines.append({"key": row.key, "error": gone})
                continue
            if row.step in ANSWER_STEPS and rec.embed:
                lines.append({"key": row.key, "response": self.embed_response(rec.model, row)})
            elif row.step in ANSWER_STEPS:
                cache = self.caches.get(cid) if cid is not None else None
                if cache is not None:
                    cache.uses += 1
                resp = self.generate_response(
                    row.request,
                    row.key,
                    row.n,
                    row.step,
                    rec.model,
                    row.settings,
                    cache.tokens if cache is not None else None,
                )
                self.bill("batch_rows", resp["usageMetadata"])
                lines.append({"key": row.key, "response": resp})
            else:
                error = step_status(row.step, retry, rec.model)
                if self.scenario.batch_error_style == "grpc":
                    # What real output lines carry: a google.rpc.Status with a numeric gRPC
                    # code and no status string (python-genai #2693, #1341).
                    error = {"code": _GRPC_CODES[error["status"]], "message": error["message"]}
                lines.append({"key": row.key, "error": error})
        if rec.inline:
            inlined = []
            for line in lines:
                item = {k: v for k, v in line.items() if k != "key"}
                item["metadata"] = {"key": line["key"]}
                inlined.append(item)
            rec.output = {"inlinedResponses": {"inlinedResponses": inlined}}
            return
        data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        if rec.truncate and lines:
            last = orjson.dumps(lines[-1])
            data = data[: len(data) - len(last) - 1] + last[: len(last) // 2]
        fid = f"batch-{rec.id}"
        self.files[fid] = FileRec(
            id=fid,
            display_name=f"{rec.display_name}-output",
            mime_type="application/jsonl",
            data=bytearray(data),
            expected_size=len(data),
            create_time=now,
            source="GENERATED",
            done=True,
        )
        rec.output = {"responsesFile": f"files/{fid}"}
        rec.output_hidden_polls = self.scenario.batch_output_delay_polls

    def embed_response(self, model: str, row: Row) -> dict[str, Any]:
        """One embeddings batch row's answer (``emulator._embeddings``: the line shape is
        not documented; ``embed_line_style`` picks one reading), billed its prompt tokens:
        the same vector ``embedContent`` answers for the same input."""
        embedding = embedding_for(self.seed, model.removeprefix("models/"), row.request, row.step)
        tokens = count_tokens(request_text(row.request))
        usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        self.bill("batch_rows", usage)
        if self.scenario.embed_line_style == "embeddings":
            # What a batchEmbedContents call of one answers (emulator._embeddings).
            return {"embeddings": [embedding], "usageMetadata": usage}
        # google-genai 3.6.1 types.SingleEmbedContentResponse: {embedding, tokenCount}.
        return {"embedding": embedding, "tokenCount": tokens}

    def cancel_batch(self, rec: BatchRec) -> None:
        """A slow job (``batch_polls_to_complete``, RUNNING until then) cancelled: it ends
        CANCELLED now. The docs: cancel "stops processing new requests"
        (https://ai.google.dev/gemini-api/docs/batch-mode), so the rows already answered are
        billed and written out (``batch_partial_output``; 0: no responses file, the other
        reading, as whether one is left is not documented: the batch docs say nothing of a
        cancelled job's output)."""
        if rec.state not in TERMINAL_BATCH:
            self.finish_batch(rec, "BATCH_STATE_CANCELLED")

    def list_batches(self, page_size: int, page_token: str | None) -> tuple[list[BatchRec], str]:
        ordered = sorted(self.batches.values(), key=lambda r: r.id, reverse=True)
        start = 0
        if page_token:
            try:
                start = int(page_token)
            except ValueError:
                raise ApiError(
                    {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid page token."}
                ) from None
        page = ordered[start : start + page_size]
        nxt = str(start + page_size) if start + page_size < len(ordered) else ""
        return page, nxt

    # ------------------------------------------------------------------ interactions
    def create_interaction(self, body: dict[str, Any], key: str) -> InteractionRec:
        self.check_media(body)
        prompt = " ".join(collect_text(body.get("input")))
        model_name = str(body.get("model") or "")
        settings = self.settings_of(interaction_settings, body, model_name, key)
        n, step = self.submit(key, prompt, batch=False)
        if step in ("missing",):
            step = "ok"
        if step in ERROR_STEPS:
            model = str(body.get("model") or "unknown")
            raise ApiError(step_status(step, self.scenario.retry_delay_s, model))
        now = self.clock()
        labels = body.get("labels")
        rec = InteractionRec(
            id=f"v1_{self.new_id()}",
            model=str(body.get("model") or body.get("agent") or "unknown"),
            key=key,
            n=n,
            step=step,
            prompt=prompt,
            schema=interaction_schema(body),
            background=bool(body.get("background")),
            labels=labels if isinstance(labels, dict) else None,
            create_time=now,
            settings=settings,
            media=media_tokens(body.get("input"), self.file_size),
        )
        hook = body.get("webhook_config")
        if isinstance(hook, dict):
            uris = hook.get("uris")
            if isinstance(uris, list) and uris:
                rec.webhook_uris = [str(u) for u in uris]
            rec.webhook_metadata = hook.get("user_metadata")
        self.interactions[rec.id] = rec
        self.interactions_created += 1
        if not rec.background or (
            self.scenario.interaction_polls_to_complete == 0 and step != "hang"
        ):
            self.finish_interaction(rec)
        return rec

    def observe_interaction(self, rec: InteractionRec) -> bool:
        if rec.status in TERMINAL_INTERACTION:
            return False
        rec.polls += 1
        if rec.step != "hang" and rec.polls >= self.scenario.interaction_polls_to_complete:
            self.finish_interaction(rec)
            return True
        return False

    def finish_interaction(self, rec: InteractionRec) -> None:
        rec.update_time = self.clock()
        step = rec.step
        if step == "hang":  # a non-background "hang": report it as failed
            step = "failed"
        errors = {
            "safety": (
                self.scenario.safety_finish_reason,
                "The response was blocked for safety reasons.",
            ),
            "blocked_prompt": ("BLOCKED_PROMPT", "The prompt was blocked for safety reasons."),
            "failed": ("INTERNAL", "The interaction failed because of an internal error."),
            "cancelled": ("CANCELLED", "The interaction was cancelled."),
            "budget_exceeded": ("BUDGET_EXCEEDED", "The interaction exceeded its budget."),
        }
        style = self.scenario.interaction_error_style
        ptok = count_tokens(rec.prompt)
        step_code = self.scenario.interaction_step_error_code
        if step == "failed" and step_code is not None:
            # SDK 3.3.0 ModelOutputStep.error: a google.rpc.Status on the step itself, with
            # nothing in the interaction's errors[] (google/genai/_gaos/types/interactions/
            # modeloutputstep.py).
            rec.status = "failed"
            rec.outputs = {
                "steps": [
                    {
                        "type": "model_output",
                        "content": [],
                        "error": {"code": step_code, "message": f"Step failed (code {step_code})."},
                    }
                ]
            }
            return
        if step in errors:
            code, message = errors[step]
            rec.status = "failed" if step in ("safety", "blocked_prompt") else step
            rec.outputs = {
                "errors": [{"code": interaction_error_code(code, style), "message": message}]
            }
            return
        # Interactions have no finishReason: an answer without text completes with none.
        text = "" if step in EMPTY_FINISH else answer_text(rec.schema, self.seed, rec.key, rec.n)
        if step == "incomplete":
            text = text[: max(1, len(text) // 2)]
        text, cut, thoughts = self.answer_under(text, rec.settings)
        if cut:
            step = "incomplete"
        ctok = count_tokens(text) if text else 0
        # "incomplete": the output budget was reached (deterministic). The answer is cut.
        rec.status = "incomplete" if step == "incomplete" else "completed"
        usage = self.usage(ptok, ctok, thoughts=thoughts, media=rec.media)
        rec.outputs = {
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": text}]}],
            "usage": interaction_usage(usage),
        }
        if step == "incomplete":
            rec.outputs["errors"] = [
                {
                    "code": interaction_error_code("MAX_TOKENS", style),
                    "message": "The output was cut at max_output_tokens.",
                }
            ]
        self.bill("interactions", usage)

    def interaction_gone(self, rec: InteractionRec) -> bool:
        """Whether a get finds the interaction gone: the ``lost`` step (deleted behind the
        ledger's back) or past ``interaction_retention_s`` (expired). Either answers 404."""
        retention = self.scenario.interaction_retention_s
        expired = retention is not None and self.clock() - rec.create_time > retention
        return rec.step == "lost" or expired

    def cancel_interaction(self, rec: InteractionRec) -> None:
        if rec.status not in TERMINAL_INTERACTION:
            rec.status = "cancelled"
            rec.update_time = self.clock()
            code = interaction_error_code("CANCELLED", self.scenario.interaction_error_style)
            rec.outputs = {"errors": [{"code": code, "message": "Cancelled by the caller."}]}
            rec.cached = None


_GRPC_CODES = {
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "ABORTED": 10,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}


def interaction_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """An interaction's ``usage`` for the same counts (google-genai 3.3.0
    _gaos/types/interactions/usage.py: total_input_tokens includes total_cached_tokens,
    total_tokens includes total_thought_tokens; input_tokens_by_modality)."""
    ptok = int(usage.get("promptTokenCount", 0))
    out: dict[str, Any] = {
        "total_input_tokens": ptok,
        "total_output_tokens": int(usage.get("candidatesTokenCount", 0)),
        "total_tokens": int(usage.get("totalTokenCount", 0)),
        "input_tokens_by_modality": [
            {"modality": str(d["modality"]).lower(), "tokens": int(d["tokenCount"])}
            for d in usage.get("promptTokensDetails") or [{"modality": "TEXT", "tokenCount": ptok}]
        ],
    }
    if usage.get("thoughtsTokenCount"):
        out["total_thought_tokens"] = int(usage["thoughtsTokenCount"])
    if usage.get("cachedContentTokenCount"):
        out["total_cached_tokens"] = int(usage["cachedContentTokenCount"])
    return out


def key_hash(key: str, n: int) -> str:
    return f"{int(uniform(key, n) * 2**40):010x}"


def prompt_of(request: dict[str, Any]) -> str:
    return " ".join(collect_text(request.get("contents")))


def schema_of(request: dict[str, Any]) -> Any:
    config = request.get("generationConfig") or request.get("generation_config") or {}
    if not isinstance(config, dict):
        return None
    for name in ("responseJsonSchema", "responseSchema", "response_json_schema", "response_schema"):
        if config.get(name) is not None:
            return config[name]
    return None


def interaction_schema(body: dict[str, Any]) -> Any:
    fmt = body.get("response_format")
    if isinstance(fmt, list):
        fmt = next(
            (f for f in fmt if isinstance(f, dict) and f.get("type") in (None, "text")), None
        )
    if isinstance(fmt, dict):
        if "schema" in fmt:
            return fmt["schema"]
        if fmt.get("type") != "text" and ("properties" in fmt or "type" in fmt or "$ref" in fmt):
            return fmt
    return None
