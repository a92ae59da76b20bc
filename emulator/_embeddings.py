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

__all__ = ["DEFAULT_DIMENSION", "embed_keys", "vector"]

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


def request_dimension(request: dict[str, Any]) -> int:
    """``outputDimensionality`` (camelCase from the SDK, snake_case read too)."""
    dim = request.get("outputDimensionality", request.get("output_dimensionality"))
    return int(dim) if dim else DEFAULT_DIMENSION
