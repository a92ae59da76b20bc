"""Small helpers shared by the emulator tests."""

from __future__ import annotations

import io
import json
from typing import Any

from google.genai import types

MODEL = "gemini-2.5-flash"


def request_for(text: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A GenerateContentRequest in the camelCase wire form used in batch input files."""
    req: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if schema is not None:
        req["generationConfig"] = {
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
        }
    return req


def jsonl(rows: dict[str, str], schema: dict[str, Any] | None = None) -> bytes:
    """A batch input file: one ``{"key", "request"}`` line per row."""
    return b"".join(
        json.dumps({"key": key, "request": request_for(text, schema)}).encode() + b"\n"
        for key, text in rows.items()
    )


def upload_and_create(
    client: Any, rows: dict[str, str], display_name: str, schema: dict[str, Any] | None = None
) -> Any:
    """Upload the rows as a JSONL file and create a batch job from it."""
    file = client.files.upload(
        file=io.BytesIO(jsonl(rows, schema)),
        config=types.UploadFileConfig(mime_type="application/jsonl", display_name=display_name),
    )
    return client.batches.create(
        model=MODEL, src=file.name, config=types.CreateBatchJobConfig(display_name=display_name)
    )


def output_lines(client: Any, job: Any) -> list[dict[str, Any]]:
    """The parsed lines of a finished job's output file."""
    data = client.files.download(file=job.dest.file_name)
    return [json.loads(line) for line in data.splitlines() if line.strip()]
