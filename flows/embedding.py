"""Embedding settings: what a pipeline whose result is a vector asks the model for.

A pipeline declares its result kind once: with ``Pipeline(embedding=EmbeddingSettings(...))``
its answers are vectors (``ledger.Vector``), not JSON validated against an output model.
On the direct channel each call is ``models.embed_content`` with several rows' inputs
(``batchEmbedContents`` on the wire, up to :data:`EMBED_GROUP_MAX` contents per call), each
row still its own ledger row. On the batch channel the rows go into one JSONL file of embed
requests and an embeddings batch job (``batches.create_embeddings``).

The settings are fields of the API's ``EmbedContentConfig`` (google-genai
``types.EmbedContentConfig``: ``task_type``, ``output_dimensionality``; REST ``taskType``,
``outputDimensionality`` on each request of ``batchEmbedContents``). The config's ``title``
(a document title, for ``RETRIEVAL_DOCUMENT``) is one per call, not per row, so it is not
offered: a group carries many rows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EMBED_GROUP_MAX", "EmbeddingSettings", "TaskType"]

# batchEmbedContents takes at most 100 requests per call (the API's documented limit).
EMBED_GROUP_MAX = 100

# types.EmbeddingTaskType of google-genai (the values the API documents for taskType).
TaskType = Literal[
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
]


class EmbeddingSettings(BaseModel):
    """What an embedding pipeline asks for: the task the vectors serve and their length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_type: TaskType | None = None
    # The vector's length (the model's full length when None); also what every answer is
    # checked against before it is stored.
    output_dimensionality: int | None = Field(default=None, ge=1, le=65536)
    # Inputs per embed_content call on the direct channel.
    group_size: int = Field(default=32, ge=1, le=EMBED_GROUP_MAX)

    def given(self) -> dict[str, Any]:
        """The settings that change the vectors (for the pipeline's fingerprint)."""
        return self.model_dump(exclude_none=True, exclude={"group_size"})

    def sdk_config(self) -> dict[str, Any]:
        """The ``types.EmbedContentConfig`` fields (direct channel)."""
        return {
            k: v
            for k, v in (
                ("task_type", self.task_type),
                ("output_dimensionality", self.output_dimensionality),
            )
            if v is not None
        }

    def rest_fields(self) -> dict[str, Any]:
        """The same fields in REST names, as each request of ``batchEmbedContents`` and
        each line of an embeddings batch file carries them (``taskType``,
        ``outputDimensionality``: google-genai 3.6.1 ``_EmbedContentConfig_to_mldev``)."""
        names = {"task_type": "taskType", "output_dimensionality": "outputDimensionality"}
        return {names[k]: v for k, v in self.sdk_config().items()}
