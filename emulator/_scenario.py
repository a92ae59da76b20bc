"""Scenario model: which faults the emulator injects, how slow it is, how jobs end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Step = Literal[
    "ok",
    "429",
    "500",
    "503",
    "400",
    "403",
    "404",
    "unknown",
    "safety",
    "blocked_prompt",
    "empty",
    "finish_other",
    "malformed_response",
    "429_daily",
    "429_help",
    "missing",
    "hang",
    "failed",
    "cancelled",
    "incomplete",
    "budget_exceeded",
    "lost",  # interactions: created, then gone (404 on get), as if deleted or expired
    # Embeddings: a vector one value shorter than the request's outputDimensionality (a
    # wrong dimension the ledger must refuse); on any other route an ordinary answer.
    "bad_vector",
]

#: Route names accepted in ``latency_ms``.
LATENCY_ROUTES = (
    "generate",
    "embed",
    "upload",
    "files.get",
    "files.download",
    "files.delete",
    "batches.create",
    "batches.get",
    "batches.list",
    "batches.cancel",
    "batches.delete",
    "interactions.create",
    "interactions.get",
    "interactions.cancel",
    "interactions.delete",
    "caches.create",
    "caches.get",
    "caches.list",
    "caches.delete",
)

JobOutcome = Literal["SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED"]
# One call of a route (``route_faults``): answered normally ("ok"), refused with that HTTP
# error before any work ("429", "500", "503", "404"; the bodies of ``_errors.STEP_ERRORS``),
# or carried out and then answered 504 DEADLINE_EXCEEDED ("accepted_504": the caller cannot
# tell whether it happened). Met for real: batches.create answered 503 UNAVAILABLE through an
# outage, 504 after the job was made, and one transient 404 on batches.get of a job that had
# SUCCEEDED (this repository's issues #21 and #25); the batch docs warn that creating a job is
# not idempotent (https://ai.google.dev/gemini-api/docs/batch-mode). The SDK raises
# errors.ClientError / errors.ServerError with the code and status (google/genai/errors.py).
# On "interactions.create" an "accepted_504" makes the interaction (it runs, it is billed)
# and answers 504: the caller cannot look it up, as the Interactions API has no list
# (google-genai 3.6.1, google/genai/_gaos/interactions.py: create, get, cancel, delete only;
# https://ai.google.dev/api/interactions-api), and the interactions client raises its own
# InternalServerError with the status code (google/genai/_interactions_errors.py).
RouteStep = Literal["ok", "429", "500", "503", "404", "accepted_504"]
ProjectFault = Literal["permission_denied", "failed_precondition", "key_unrestricted"]
QuotaFault = Literal["per_day", "limit_zero"]
# finishReason values that block an answer (google-genai 3.3.0 types.FinishReason). JAILBREAK
# is not one of them: it is a promptFeedback BlockedReason (see BlockReason).
SafetyReason = Literal["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "MODEL_ARMOR"]
# promptFeedback.blockReason values (google-genai 3.3.0 types.BlockedReason).
BlockReason = Literal[
    "SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "MODEL_ARMOR", "JAILBREAK"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Strict):
    """Latency of one route: ``mean`` milliseconds, plus or minus up to ``jitter``."""

    mean: float = Field(0.0, ge=0)
    jitter: float = Field(0.0, ge=0)


class Script(_Strict):
    """Per-key script: each submission of a key matching ``match`` takes the next step."""

    match: str
    steps: list[Step] = Field(min_length=1)


Probability = float


class Scenario(_Strict):
    """What the emulator does to requests. Every random choice is seeded per key."""

    name: str = "custom"
    rate_429: Probability = Field(0.0, ge=0, le=1)
    rate_500: Probability = Field(0.0, ge=0, le=1)
    rate_503: Probability = Field(0.0, ge=0, le=1)
    rate_400: Probability = Field(0.0, ge=0, le=1)
    rate_safety: Probability = Field(0.0, ge=0, le=1)
    rate_blocked_prompt: Probability = Field(0.0, ge=0, le=1)
    rate_empty: Probability = Field(0.0, ge=0, le=1)
    rate_missing: Probability = Field(0.0, ge=0, le=1)
    rate_truncated_file: Probability = Field(0.0, ge=0, le=1)
    empty_when_no_letters: bool = False
    retry_delay_s: float = Field(2.0, ge=0)
    latency_ms: dict[str, Latency] = Field(default_factory=dict)
    batch_polls_to_complete: int = Field(1, ge=0)
    batch_seconds_to_complete: float | None = Field(None, ge=0)
    interaction_polls_to_complete: int = Field(1, ge=0)
    batch_job_fail_rate: Probability = Field(0.0, ge=0, le=1)
    batch_job_expire_rate: Probability = Field(0.0, ge=0, le=1)
    batch_job_outcomes: list[JobOutcome] = Field(default_factory=list)
    scripts: list[Script] = Field(default_factory=list)
    webhook_duplicate_rate: Probability = Field(0.0, ge=0, le=1)
    webhook_delay_ms: Latency = Field(default_factory=lambda: Latency(mean=0.0, jitter=0.0))
    # Faults of the setup, answered to every keyed request before anything else:
    # None accepts any key; a list accepts only those (others: 400 API_KEY_INVALID).
    valid_api_keys: list[str] | None = None
    # 403 PERMISSION_DENIED / 400 FAILED_PRECONDITION / 403 API_KEY_SERVICE_BLOCKED
    project_fault: ProjectFault | None = None
    refused_upload_mime_types: list[str] = Field(default_factory=list)
    # The Files API's storage per project: 20 GB (the Files API docs: "store up to 20 GB of
    # files per project"; the quota's value in a real refusal is 21474836480 bytes). An upload
    # that would pass it is refused as a full project is (emulator/_errors.py storage_full).
    files_storage_limit_bytes: int = Field(20 * 1024**3, ge=0)
    # Models the API no longer serves (retired): 404 NOT_FOUND on generateContent,
    # batchGenerateContent, interactions.create and models.get.
    retired_models: list[str] = Field(default_factory=list)
    # A spent quota, answered to every generation request (generateContent,
    # batchGenerateContent, interactions.create): a per-day QuotaFailure, or "limit: 0".
    quota_fault: QuotaFault | None = None
    # Real shapes the SDK and docs show (each cited where the emulator builds it):
    # output error lines: grpc {"code": 3, "message"} (what the real API writes), or status
    batch_error_style: Literal["status", "grpc"] = "grpc"
    # An embeddings batch job's answer line (undocumented, emulator._embeddings): the
    # response an embedContent call gives ({"embedding": {...}}), or a list ("embeddings").
    embed_line_style: Literal["embedding", "embeddings"] = "embedding"
    # A finished job's responses file shown only this many polls after its terminal state:
    # one third-party client reports SUCCEEDED before output.responsesFile is filled
    # (unverified); whether a CANCELLED or FAILED job leaves a file at all is not documented
    # (https://ai.google.dev/gemini-api/docs/batch-mode says nothing of it), so the same lag
    # applies to theirs (batch_partial_output): a reader must cope with either.
    batch_output_delay_polls: int = Field(0, ge=0)
    batch_failed_error: tuple[int, str] = (13, "Batch job failed.")  # operation-level error
    interaction_step_error_code: int | None = None  # "failed" step: model_output step error
    safety_finish_reason: SafetyReason = "SAFETY"  # the finishReason of the "safety" step
    blocked_prompt_reason: BlockReason = "SAFETY"  # the blockReason of "blocked_prompt"
    # Per route (a name of LATENCY_ROUTES): each call takes the next step, then "ok" for good.
    # Only the first request of an upload (the one that opens the session) takes a step.
    route_faults: dict[str, list[RouteStep]] = Field(default_factory=dict)
    # Share of a FAILED or CANCELLED job's rows answered in a responses file before it ended
    # (0: no output, as for most failed jobs). Real: cancel "stops processing new requests"
    # (https://ai.google.dev/gemini-api/docs/batch-mode), so rows already answered exist and
    # are billed; whether such a job leaves a responses file is not documented, so the reader
    # applies one if present and copes without.
    batch_partial_output: Probability = Field(0.0, ge=0, le=1)
    # Usage as thinking models report it: thoughts per answer (thoughtsTokenCount, inside
    # totalTokenCount; 0: a model that does not think, the field is left out) and the share of
    # each prompt served from the implicit context cache (cachedContentTokenCount, only when
    # above 0, as the API omits it).
    thoughts_tokens: int = Field(8, ge=0)
    # Whether thinking tokens count against a request's max_output_tokens: documented apart
    # (https://ai.google.dev/gemini-api/docs/thinking), observed together on 2.5 and 3
    # models (python-genai #782, #2062). See emulator/_settings.py.
    max_output_tokens_counts_thoughts: bool = False
    cached_prompt_fraction: Probability = Field(0.0, ge=0, le=1)
    # What an alias resolves to in modelVersion (the models page: a "-latest" alias points at
    # the latest release of its family); other models answer under their own name.
    model_versions: dict[str, str] = Field(
        default_factory=lambda: {
            "gemini-flash-latest": "gemini-3.8-flash",
            "gemini-flash-lite-latest": "gemini-3.5-flash-lite",
            "gemini-pro-latest": "gemini-3.1-pro-preview",
        }
    )
    # Interaction errors[].code: "uri" (the SDK's Error.code: "A URI that identifies the
    # error type") or "name" (a bare status name, as older emulator versions sent).
    interaction_error_style: Literal["uri", "name"] = "uri"
    # Seconds after which an interaction is gone (404 on get, as after its retention); None
    # keeps them for the emulator's life.
    interaction_retention_s: float | None = Field(None, ge=0)

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for route, spec in value.items():
            if route not in LATENCY_ROUTES:
                raise ValueError(
                    f"unknown route {route!r} in latency_ms; known: {', '.join(LATENCY_ROUTES)}"
                )
            out[route] = {"mean": spec} if isinstance(spec, int | float) else spec
        return out

    @field_validator("route_faults")
    @classmethod
    def _routes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(LATENCY_ROUTES))
        if unknown:
            raise ValueError(
                f"unknown route {unknown[0]!r} in route_faults; known: {', '.join(LATENCY_ROUTES)}"
            )
        return value

    @field_validator("webhook_delay_ms", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        return {"mean": value} if isinstance(value, int | float) else value


BUILTINS: dict[str, dict[str, Any]] = {
    "clean": {
        "name": "clean",
        "batch_polls_to_complete": 1,
        "interaction_polls_to_complete": 1,
    },
    "default": {
        "name": "default",
        "rate_429": 0.03,
        "rate_503": 0.02,
        "rate_500": 0.005,
        "rate_400": 0.01,
        "rate_safety": 0.01,
        "rate_blocked_prompt": 0.002,
        "rate_empty": 0.0,
        "empty_when_no_letters": True,
        "rate_missing": 0.01,
        "rate_truncated_file": 0.0,
        "retry_delay_s": 1.0,
        "latency_ms": {
            "generate": {"mean": 5, "jitter": 3},
            "embed": {"mean": 5, "jitter": 3},
            "interactions.create": {"mean": 3, "jitter": 2},
            "batches.create": {"mean": 3, "jitter": 2},
        },
        "batch_polls_to_complete": 2,
        "interaction_polls_to_complete": 2,
        "batch_job_fail_rate": 0.05,
        "webhook_duplicate_rate": 0.2,
        "webhook_delay_ms": {"mean": 200, "jitter": 150},
    },
}


class ScenarioError(ValueError):
    """A scenario file or body could not be read or validated."""


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """Validate a scenario mapping, raising :class:`ScenarioError` with a readable message."""
    if not isinstance(data, dict):
        raise ScenarioError(f"a scenario must be a mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ScenarioError(f"invalid scenario: {problems}") from None


def load_scenario(name_or_path: Scenario | str | Path | dict[str, Any]) -> Scenario:
    """A built-in scenario by name ("clean", "default"), or one read from a JSON/YAML file."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    if isinstance(name_or_path, dict):
        if set(name_or_path) == {"name"} and name_or_path["name"] in BUILTINS:
            return Scenario.model_validate(BUILTINS[name_or_path["name"]])
        return scenario_from_dict(name_or_path)
    text = str(name_or_path)
    if text in BUILTINS:
        return Scenario.model_validate(BUILTINS[text])
    path = Path(text)
    if not path.is_file():
        raise ScenarioError(
            f"no built-in scenario or file named {text!r} (built-ins: {', '.join(BUILTINS)})"
        )
    raw = path.read_text(encoding="utf-8")
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot parse scenario file {path}: {exc}") from None
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    return scenario_from_dict(data)
