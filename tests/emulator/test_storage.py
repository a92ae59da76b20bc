"""The emulator's Files API storage: bytes counted per project, the limit, deletes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from google.genai import errors, types

from emulator.testing import RunningEmulator

from .helpers import MODEL, jsonl, upload_and_create

ROWS = {f"s-{i}": f"Review {i}: the app keeps crashing." for i in range(5)}


def _upload(client: Any, data: bytes) -> Any:
    return client.files.upload(
        file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="application/jsonl")
    )


def _files(emu: RunningEmulator) -> dict[str, Any]:
    files: dict[str, Any] = emu.stats()["files"]
    return files


def test_stored_bytes_count_uploads_and_responses_files_until_deleted(
    emu: RunningEmulator, client: Any
) -> None:
    """Uploaded and generated files count in the stats' stored bytes; a delete frees them."""
    data = jsonl(ROWS)
    job = upload_and_create(client, ROWS, "storage")
    job = client.batches.get(name=job.name)  # one poll completes a clean job
    assert job.dest.file_name
    files = _files(emu)
    output = client.files.get(name=job.dest.file_name)
    assert files["stored"] == 2
    assert files["stored_bytes"] == len(data) + int(output.size_bytes)
    assert files["limit_bytes"] == 20 * 1024**3
    client.files.delete(name=job.dest.file_name)
    assert _files(emu)["stored_bytes"] == len(data)
    assert _files(emu)["deleted"] == 1


def test_an_upload_past_the_storage_limit_gets_the_real_quota_error(
    emu: RunningEmulator, client: Any
) -> None:
    """A full project refuses an upload: 429 RESOURCE_EXHAUSTED, FileStorageBytesPerProject."""
    data = jsonl(ROWS)
    emu.set_scenario({"files_storage_limit_bytes": 2 * len(data)})
    first = _upload(client, data)
    _upload(client, data)
    with pytest.raises(errors.ClientError) as refused:
        _upload(client, data)
    exc = refused.value
    assert exc.code == 429 and exc.status == "RESOURCE_EXHAUSTED"
    assert "file_storage_bytes" in (exc.message or "")
    details = exc.details["error"]["details"]
    violation = details[0]["violations"][0]
    assert violation["quotaId"] == "FileStorageBytesPerProject"
    assert violation["quotaValue"] == str(2 * len(data))
    assert not any("RetryInfo" in d["@type"] for d in details)
    assert _files(emu)["refused_full"] == 1
    client.files.delete(name=first.name)  # room again
    assert _upload(client, data).name


def test_refused_deletes_answer_503_then_the_file_is_deleted(
    emu: RunningEmulator, client: Any
) -> None:
    """``route_faults`` on files.delete: a 503 leaves the file stored until a delete works."""
    emu.set_scenario({"route_faults": {"files.delete": ["503"]}})
    file = _upload(client, jsonl(ROWS))
    with pytest.raises(errors.ServerError) as refused:
        client.files.delete(name=file.name)
    assert refused.value.code == 503
    assert _files(emu)["stored"] == 1
    client.files.delete(name=file.name)
    assert _files(emu)["stored"] == 0
    with pytest.raises(errors.ClientError) as gone:
        client.files.delete(name=file.name)
    assert gone.value.code == 404


def test_a_batch_reads_its_input_file_at_creation(emu: RunningEmulator, client: Any) -> None:
    """Deleting an input file once its job exists changes nothing for the job."""
    file = _upload(client, jsonl(ROWS))
    job = client.batches.create(
        model=MODEL, src=file.name, config=types.CreateBatchJobConfig(display_name="early")
    )
    client.files.delete(name=file.name)
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert len(client.files.download(file=job.dest.file_name).splitlines()) == len(ROWS)
