"""Output parsing for embedding answers: one vector per row, checked before it is stored.

An embedding answer is a list of numbers, not text to validate against a schema. The rule
is the same on every channel (a direct ``embed_content`` answer, a batch output line):

- no vector, or an empty one, is ``empty`` (unknown: a retry may fix it, up to the unknown
  cap), as for an answer without text;
- a value that is not a finite number (``NaN``, ``Infinity``, a string, ``null``) or a
  length other than the pipeline's ``output_dimensionality`` is a permanent ``schema``
  failure: the same request would get the same answer, so the row is parked, not retried.

A vector that passes becomes a :class:`Vector`, stored as the row's result like any other
answer (``{"values": [...]}``) and validated again at delivery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ledger._failure import Failure, Verdict
from ledger._finish import empty_answer

__all__ = ["Vector", "validate_vector", "vector_values"]


class Vector(BaseModel):
    """One embedding: its values (finite numbers, in the model's order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: list[float] = Field(min_length=1)


def vector_values(embedding: Any) -> Any:
    """The values of one embedding as the API returns it: ``{"values": [...]}`` (REST
    ``ContentEmbedding``, SDK ``types.ContentEmbedding``), or already the bare list."""
    if isinstance(embedding, Mapping):
        return embedding.get("values")
    return getattr(embedding, "values", embedding)


def validate_vector(values: Any, dimension: int | None = None) -> Vector | Failure:
    """``values`` as a :class:`Vector`, or why it is not one (see the module docstring)."""
    if values is None or (isinstance(values, (list, tuple)) and not values):
        return empty_answer()
    if not isinstance(values, (list, tuple)):
        return Failure(
            Verdict.PERMANENT, "schema", f"embedding is a {type(values).__name__}, not a list"
        )
    out: list[float] = []
    for i, v in enumerate(values):
        # bool is an int in Python, never a coordinate.
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return Failure(
                Verdict.PERMANENT, "schema", f"embedding value {i} is {str(v)[:40]!r}, not finite"
            )
        out.append(float(v))
    if dimension is not None and len(out) != dimension:
        return Failure(
            Verdict.PERMANENT,
            "schema",
            f"embedding has {len(out)} values, the pipeline asks for {dimension}",
        )
    return Vector(values=out)
