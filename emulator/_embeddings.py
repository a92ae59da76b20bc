"""Embedding answers: ``models.embed_content`` of the SDK, deterministic vectors.

Shapes (google-genai 3.6.1 ``models.py``, ``_EmbedContentParametersPrivate_to_mldev`` and
``_EmbedContentResponse_from_mldev``; REST reference https://ai.google.dev/api/embeddings):

- ``POST /v1beta/models/{model}:batchEmbedContents`` (what ``embed_content`` calls on the
  Gemini API, whatever the number of contents) takes
  ``{"requests": [{"model", "content": {"parts": [{"text"}]}, "taskType",
  "outputDimensionality", "title"}]}`` and answers ``{"embeddings": [{"values": [...]}]}``,
  one per request, in order;
- ``POST /v1beta/models/{model}:embedContent`` takes one request's fields at the top level
  and answers ``{"embedding": {"values": [...]}}``.

An embeddings batch job (``batches.create_embeddings``, google-genai 3.6.1 ``batches.py``
``_create_embeddings`` / ``_EmbeddingsBatchJobSource_to_mldev`` / ``_EmbedContentBatch_to_mldev``,
seen on the wire):

- ``POST /{v}/models/{model}:asyncBatchEmbedContent`` with ``{"batch": {"inputConfig":
  {"file_name": "files/x"}, "displayName": ...}}`` (the SDK writes ``file_name`` in snake
  case; ``fileName`` is read too) or ``{"batch": {"inputConfig": {"requests": {"requests":
  [{"request": {"content", "taskType", "outputDimensionality"}}]}}}}`` (inlined: no key);
- an input file line is ``{"key", "request": EmbedContentRequest}`` (the same key/request
  form as generate batch files; third-party clients write it so), ``taskType`` and
  ``outputDimensionality`` in camelCase or snake_case (proto JSON accepts both), or inside an
  ``embed_content_config`` object (Vertex's documented form for gemini-embedding-001);
- the job is an operation like a generate batch job (``_BatchJob_from_mldev`` maps both);
  its output ``responsesFile`` holds one line per row. That line's shape is not documented:
  ``{"key", "response": {"embedding": {"values"}, "tokenCount"}}`` (the SDK's
  ``types.SingleEmbedContentResponse``, the type of an inlined embedding response; its
  ``t_recv_batch_job_destination`` recognises them by ``response.embedding``) is what this
  emulator writes, or ``{"key", "response": {"embeddings": [{"values"}], "usageMetadata"}}``
  (a batchEmbedContents answer of one) with ``embed_line_style: embeddings``;
  failed rows carry ``{"key", "error": google.rpc.Status}`` as generate lines do.

Each request is one row: its key comes from ``x-gemini-ledger-keys`` (a JSON list, one per
request, sent by gemini-ledger's direct channel), else the single ``x-gemini-ledger-key``
when there is one request, else a digest of the request. Every request is counted as a
submission of its key and takes the scenario's step: the first step that is an error fails
the whole call (the API answers a call, not a row), ``empty`` answers an empty vector.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from ._answers import collect_text, rng_for, stable_key

__all__ = [
    "DEFAULT_DIMENSION",
    "embed_keys",
    "embedding_for",
    "request_dimension",
    "request_task",
    "request_text",
    "vector",
]

# gemini-embedding-001 answers 3072 values unless outputDimensionality says otherwise.
DEFAULT_DIMENSION = 3072


def vector(seed: int, model: str, text: str, task: str | None, dimension: int) -> list[float]:
    """A unit vector that depends only on its arguments (same text, same vector)."""
    rng = rng_for(seed, "embed", model, task or "", text)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 7) for v in raw]


def embed_keys(
    requests: list[dict[str, Any]], keys_header: str | None, key_header: str | None
) -> list[str]:
    """The ledger key of each request (see the module docstring)."""
    if keys_header:
        try:
            keys = orjson.loads(keys_header)
        except orjson.JSONDecodeError:
            keys = None
        if isinstance(keys, list) and len(keys) == len(requests):
            return [str(k) for k in keys]
    if key_header and len(requests) == 1:
        return [key_header]
    return [stable_key(orjson.dumps(r, option=orjson.OPT_SORT_KEYS)) for r in requests]


def request_text(request: dict[str, Any]) -> str:
    """The text of one embedding request's content."""
    return "\n".join(collect_text(request.get("content") or {}))


def _config(request: dict[str, Any]) -> dict[str, Any]:
    nested = request.get("embed_content_config", request.get("embedContentConfig"))
    return nested if isinstance(nested, dict) else {}


def request_dimension(request: dict[str, Any]) -> int:
    """``outputDimensionality`` (camelCase from the SDK, snake_case or nested read too)."""
    config = _config(request)
    dim = request.get(
        "outputDimensionality",
        request.get(
            "output_dimensionality",
            config.get("output_dimensionality", config.get("outputDimensionality")),
        ),
    )
    return int(dim) if dim else DEFAULT_DIMENSION


def request_task(request: dict[str, Any]) -> str | None:
    """``taskType`` (camelCase, snake_case or nested)."""
    config = _config(request)
    task = request.get("taskType") or request.get("task_type") or config.get("task_type")
    return str(task) if task else None


def embedding_for(seed: int, model: str, request: dict[str, Any], step: str) -> dict[str, Any]:
    """The ``ContentEmbedding`` one answering step gives a request: empty for the
    answer-without-content steps, one value short for ``bad_vector``, else the vector."""
    if step in ("empty", "finish_other", "malformed_response"):
        return {"values": []}
    dim = request_dimension(request)
    values = vector(seed, model, request_text(request), request_task(request), dim)
    return {"values": values[:-1] if step == "bad_vector" else values}
