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

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ledger._failure import Failure, Verdict
from ledger._finish import empty_answer

__all__ = ["Vector", "validate_vector", "vector_values"]


class Vector(BaseModel):
    """One embedding: its values (finite numbers, in the model's order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: list[float] = Field(min_length=1)

    def to_json(self) -> str:
        """The stored result, ``{"values": [...]}``: the same text as ``model_dump_json``
        in a fraction of its time (a row's vector is hundreds of numbers)."""
        return orjson.dumps({"values": self.values}).decode()


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
    if _all_finite_floats(values):
        return _sized(list(values), dimension)
    out: list[float] = []
    for i, v in enumerate(values):
        # bool is an int in Python, never a coordinate.
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return Failure(
                Verdict.PERMANENT, "schema", f"embedding value {i} is {str(v)[:40]!r}, not finite"
            )
        out.append(float(v))
    return _sized(out, dimension)


def _all_finite_floats(values: list[Any] | tuple[Any, ...]) -> bool:
    """Every value a float and finite, checked at C speed (the common answer; anything else
    takes the value-by-value loop, which says which value is wrong): a NaN or an infinity
    makes the sum non-finite (a finite sum that overflows only sends a good vector the slow
    way)."""
    return set(map(type, values)) == {float} and math.isfinite(sum(values))


def _sized(values: list[float], dimension: int | None) -> Vector | Failure:
    if dimension is not None and len(values) != dimension:
        return Failure(
            Verdict.PERMANENT,
            "schema",
            f"embedding has {len(values)} values, the pipeline asks for {dimension}",
        )
    return Vector(values=values)
