"""Worked example of an embedding pipeline on the direct channel: the day's reviews as
vectors in a local file.

The same reviews as the ``reviews`` example (``data/reviews.jsonl``) each become one job
keyed ``review-embeddings:<day>:<review id>:v1``; the result is a vector of 768 values
(``gemini-embedding-001``, task ``CLUSTERING``), checked by the ledger (768 finite numbers)
before it is stored. ``on_result`` writes it into the day's vector file,
``<REVIEW_VECTORS_DIR>/<day>.jsonl`` (default ``var/review-vectors``), one line per review
(``{"review_id", "key", "values"}``), overwritten by review id: a repeated delivery changes
nothing and a new key version replaces the review's vector.

The file is rewritten whole under an exclusive lock (``flows.examples.keyed_jsonl``), so
concurrent deliveries never lose a line and a crash never leaves half a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from flows.embedding import EmbeddingSettings
from flows.examples.keyed_jsonl import read_rows, upsert_row
from flows.examples.reviews import load_reviews
from flows.pipeline import Pipeline, Prompt, Run
from ledger import Channel, Vector

__all__ = [
    "DIMENSION",
    "VECTORS_DIR_ENV",
    "build_prompt",
    "pipeline",
    "read_vectors",
    "vectors_file",
    "write_vector",
]

VECTORS_DIR_ENV = "REVIEW_VECTORS_DIR"
DEFAULT_DIR = Path("var") / "review-vectors"
MODEL = "gemini-embedding-001"
DIMENSION = 768


def review_key(item: dict[str, Any], day: date) -> str:
    return f"review-embeddings:{day.isoformat()}:{item['id']}:v1"


def build_prompt(item: dict[str, Any], run: Run) -> Prompt:
    # The text alone is embedded; the review id and the day name the line it is written to.
    return Prompt(
        text=item["text"], keep={"review_id": str(item["id"]), "day": run.day.isoformat()}
    )


def vectors_file(day: str) -> Path:
    """The day's vector file."""
    return Path(os.environ.get(VECTORS_DIR_ENV) or DEFAULT_DIR) / f"{day}.jsonl"


def read_vectors(day: str) -> dict[str, dict[str, Any]]:
    """The day's vectors by review id (empty when none were written)."""
    return read_rows(vectors_file(day), "review_id")


def write_vector(key: str, result: Vector, kept: dict[str, Any] | None = None) -> None:
    """Upsert one review's vector into its day's file by review id (see the module doc)."""
    parts = key.split(":")
    review_id = str(kept["review_id"]) if kept else parts[2]
    day = str(kept["day"]) if kept else parts[1]
    row = {"review_id": review_id, "key": key, "values": result.values}
    upsert_row(vectors_file(day), "review_id", row)


def load_items(day: date) -> Iterator[dict[str, Any]]:
    """The day's reviews: the ``reviews`` example's sample file."""
    return load_reviews(day)


pipeline: Pipeline[dict[str, Any]] = Pipeline(
    name="review-embeddings",
    model=MODEL,
    channel=Channel.DIRECT,
    embedding=EmbeddingSettings(task_type="CLUSTERING", output_dimensionality=DIMENSION),
    load_items=load_items,
    key_of=review_key,
    build_prompt=build_prompt,
    on_result=write_vector,
    attempt_cap=4,
    unknown_cap=2,
    description="The day's reviews as 768-value vectors in a local file (embed_content).",
)
