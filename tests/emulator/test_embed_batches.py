"""Embeddings batch jobs (``batches.create_embeddings``) through the real SDK."""

from __future__ import annotations

import io
import warnings
from typing import Any

import orjson
from google.genai import types

from emulator.testing import RunningEmulator

from .helpers import output_lines

TEXTS = {f"emb:{i}": f"text number {i}" for i in range(5)}
CONFIG = {"taskType": "CLUSTERING", "outputDimensionality": 6}


def _create(client: Any, **src: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK marks the method experimental
        return client.batches.create_embeddings(
            model="gemini-embedding-001",
            src=types.EmbeddingsBatchJobSource(**src),
            config=types.CreateEmbeddingsBatchJobConfig(display_name="emb-night"),
        )


def _upload(client: Any) -> str:
    data = b"".join(
        orjson.dumps({"key": k, "request": {"content": {"parts": [{"text": t}]}, **CONFIG}}) + b"\n"
        for k, t in TEXTS.items()
    )
    file = client.files.upload(
        file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="application/jsonl")
    )
    return str(file.name)


def test_a_file_sourced_embeddings_job_answers_the_direct_vectors(
    emu: RunningEmulator, client: Any
) -> None:
    """asyncBatchEmbedContent over a file of keyed embed requests: a batch job that ends
    SUCCEEDED with one line per key, each the vector embed_content answers for the same text,
    task and dimension, with its tokens billed as batch rows."""
    job = _create(client, file_name=_upload(client))
    assert job.name.startswith("batches/") and job.display_name == "emb-night"
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    lines = {line["key"]: line for line in output_lines(client, job)}
    assert set(lines) == set(TEXTS)
    direct = client.models.embed_content(
        model="gemini-embedding-001",
        contents=list(TEXTS.values()),
        config=types.EmbedContentConfig(task_type="CLUSTERING", output_dimensionality=6),
    )
    for (key, _), embedding in zip(TEXTS.items(), direct.embeddings or [], strict=True):
        assert lines[key]["response"]["embedding"]["values"] == embedding.values
        assert lines[key]["response"]["tokenCount"] > 0
    stats = emu.stats()
    assert stats["requests"]["POST /v1/models/{model}:asyncBatchEmbedContent"] == 1
    assert stats["billed"]["batch_rows"] == len(TEXTS)
    assert {k: n for k, n in stats["submissions"].items() if k in TEXTS} == dict.fromkeys(TEXTS, 1)


def test_row_faults_and_the_other_reading(emu: RunningEmulator, client: Any) -> None:
    """Scripted rows: an error line with a gRPC code, a vector one value short, no line for
    a missing row; `embed_line_style: embeddings` answers a list of one."""
    emu.set_scenario(
        {
            "embed_line_style": "embeddings",
            "scripts": [
                {"match": "emb:1", "steps": ["429"]},
                {"match": "emb:2", "steps": ["bad_vector"]},
                {"match": "emb:3", "steps": ["missing"]},
            ],
        }
    )
    job = client.batches.get(name=_create(client, file_name=_upload(client)).name)
    lines = {line["key"]: line for line in output_lines(client, job)}
    assert set(lines) == set(TEXTS) - {"emb:3"}
    assert lines["emb:1"]["error"]["code"] == 8  # RESOURCE_EXHAUSTED
    assert len(lines["emb:2"]["response"]["embeddings"][0]["values"]) == 5
    assert len(lines["emb:0"]["response"]["embeddings"][0]["values"]) == 6


def test_an_inlined_embeddings_job_is_read_by_the_sdk(client: Any) -> None:
    """Inlined requests (no keys) end in inlined responses the SDK maps to
    inlined_embed_content_responses, one vector of the asked length per text."""
    batch = types.EmbedContentBatch(
        contents=list(TEXTS.values()),
        config=types.EmbedContentConfig(output_dimensionality=4),
    )
    job = client.batches.get(name=_create(client, inlined_requests=batch).name)
    answers = job.dest.inlined_embed_content_responses
    assert answers is not None and len(answers) == len(TEXTS)
    assert all(len(a.response.embedding.values) == 4 for a in answers)
