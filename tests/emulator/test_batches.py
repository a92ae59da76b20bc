"""Files and batch jobs through the real SDK (sync and async)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from google.genai import types

from emulator.testing import RunningEmulator

from .helpers import MODEL, jsonl, output_lines, upload_and_create
from .models import ReviewLabel

ROWS = {f"reviews:2026-11-22:review-{i}:v1": f"Review number {i}: fine" for i in range(6)}


def test_upload_batch_get_download(emu: RunningEmulator, client: Any) -> None:
    """A file-sourced job goes PENDING → SUCCEEDED and its output file has one line per key."""
    job = upload_and_create(client, ROWS, "nightly-1", ReviewLabel.model_json_schema())
    assert job.name.startswith("batches/")
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.display_name == "nightly-1"
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.done
    assert job.dest.file_name.startswith("files/")
    lines = output_lines(client, job)
    assert sorted(line["key"] for line in lines) == sorted(ROWS)
    for line in lines:
        text = line["response"]["candidates"][0]["content"]["parts"][0]["text"]
        ReviewLabel.model_validate_json(text)
        assert line["response"]["usageMetadata"]["totalTokenCount"] > 0
        # Output lines are GenerateContentResponses: thinking, model version and id included.
        assert line["response"]["usageMetadata"]["thoughtsTokenCount"] == 8
        assert line["response"]["modelVersion"] and line["response"]["responseId"]
    stats = emu.stats()
    assert stats["batches_created"] == 1
    assert stats["billed"]["batch_rows"] == 6
    assert stats["billed"]["total_tokens"] == sum(
        line["response"]["usageMetadata"]["totalTokenCount"] for line in lines
    )
    assert stats["submissions"] == dict.fromkeys(ROWS, 1)
    assert stats["requests"] == {
        "POST /upload/v1/files": 2,
        "POST /v1/models/{model}:batchGenerateContent": 1,
        "GET /v1/batches/{id}": 1,
        "GET /v1/files/{id}:download": 1,
    }


def test_uploaded_file_get_and_delete(client: Any) -> None:
    """An uploaded file can be fetched by name and deleted; then it is gone (404)."""
    from google.genai import errors

    file = client.files.upload(
        file=io.BytesIO(jsonl(ROWS)), config=types.UploadFileConfig(mime_type="application/jsonl")
    )
    got = client.files.get(name=file.name)
    assert got.size_bytes == len(jsonl(ROWS))
    assert got.state == types.FileState.ACTIVE
    client.files.delete(name=file.name)
    try:
        client.files.get(name=file.name)
    except errors.ClientError as exc:
        assert exc.code == 404 and exc.status == "NOT_FOUND"
    else:
        raise AssertionError("deleted file still found")


def test_batch_polls_to_complete(emu: RunningEmulator, client: Any) -> None:
    """With batch_polls_to_complete=3 the job reports RUNNING twice, then SUCCEEDED."""
    emu.set_scenario({"batch_polls_to_complete": 3})
    job = upload_and_create(client, ROWS, "slow")
    states = [client.batches.get(name=job.name).state for _ in range(4)]
    assert states == [
        types.JobState.JOB_STATE_RUNNING,
        types.JobState.JOB_STATE_RUNNING,
        types.JobState.JOB_STATE_SUCCEEDED,
        types.JobState.JOB_STATE_SUCCEEDED,
    ]


def test_batch_list_pages_and_keeps_display_names(emu: RunningEmulator, client: Any) -> None:
    """batches.list pages with pageSize/pageToken and every display name round-trips."""
    names = {f"ledger-reservation-{i}" for i in range(5)}
    for name in sorted(names):
        upload_and_create(client, {f"{name}:k": "text"}, name)
    seen = [job.display_name for job in client.batches.list(config={"page_size": 2})]
    assert sorted(seen) == sorted(names)
    assert emu.stats()["requests"]["GET /v1/batches"] == 3
    page = client.batches.list(config={"page_size": 2})
    assert len(page.page) == 2


def test_batch_cancel(emu: RunningEmulator, client: Any) -> None:
    """Cancelling a running job leaves it CANCELLED, with no output and nothing billed."""
    emu.set_scenario({"batch_polls_to_complete": 5})
    job = upload_and_create(client, ROWS, "to-cancel")
    client.batches.cancel(name=job.name)
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED and job.done
    assert job.dest is None
    assert emu.stats()["billed"]["batch_rows"] == 0


def test_batch_delete(emu: RunningEmulator, client: Any) -> None:
    """A deleted job is gone from get (404) and from the listing."""
    from google.genai import errors

    job = upload_and_create(client, ROWS, "to-delete")
    client.batches.delete(name=job.name)
    assert list(client.batches.list()) == []
    try:
        client.batches.get(name=job.name)
    except errors.ClientError as exc:
        assert exc.code == 404
    else:
        raise AssertionError("deleted job still found")


def test_inline_batch(emu: RunningEmulator, client: Any) -> None:
    """An inline job returns inlined responses carrying each request's metadata key."""
    src = [
        {
            "contents": [{"role": "user", "parts": [{"text": f"inline {i}"}]}],
            "metadata": {"key": f"inline:{i}"},
            "config": {
                "response_mime_type": "application/json",
                "response_json_schema": ReviewLabel.model_json_schema(),
            },
        }
        for i in range(3)
    ]
    job = client.batches.create(model=MODEL, src=src, config={"display_name": "inline-job"})
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    responses = job.dest.inlined_responses
    assert [r.metadata["key"] for r in responses] == ["inline:0", "inline:1", "inline:2"]
    for r in responses:
        ReviewLabel.model_validate_json(r.response.text)
    assert emu.stats()["submissions"] == {f"inline:{i}": 1 for i in range(3)}


def test_batch_job_outcomes_script(emu: RunningEmulator, client: Any) -> None:
    """batch_job_outcomes decides job ends in creation order; only SUCCEEDED rows are billed."""
    emu.set_scenario({"batch_job_outcomes": ["FAILED", "EXPIRED", "SUCCEEDED"]})
    jobs = [
        upload_and_create(client, {f"j{i}:{k}": "t" for k in range(2)}, f"j{i}") for i in range(3)
    ]
    states = [client.batches.get(name=j.name).state for j in jobs]
    assert states == [
        types.JobState.JOB_STATE_FAILED,
        types.JobState.JOB_STATE_EXPIRED,
        types.JobState.JOB_STATE_SUCCEEDED,
    ]
    assert emu.stats()["billed"]["batch_rows"] == 2


def test_batch_async_client(emu: RunningEmulator, client: Any) -> None:
    """The async client uploads, creates, polls, lists and downloads."""

    async def run() -> list[str]:
        aio = client.aio
        file = await aio.files.upload(
            file=io.BytesIO(jsonl(ROWS)),
            config=types.UploadFileConfig(mime_type="application/jsonl"),
        )
        job = await aio.batches.create(
            model=MODEL, src=file.name, config=types.CreateBatchJobConfig(display_name="aio")
        )
        job = await aio.batches.get(name=job.name)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        listed = [j.display_name async for j in await aio.batches.list()]
        assert listed == ["aio"]
        data = await aio.files.download(file=job.dest.file_name)
        return [line for line in data.decode().splitlines() if line]

    lines = asyncio.run(run())
    assert len(lines) == len(ROWS)


def test_route_faults_refuse_or_accept_then_time_out(emu: RunningEmulator, client: Any) -> None:
    """route_faults: a 503 refuses batches.create before any work; "accepted_504" makes the
    job and then answers 504 DEADLINE_EXCEEDED; the next call is answered normally."""
    from google.genai import errors

    emu.set_scenario({"route_faults": {"batches.create": ["503", "accepted_504"]}})
    file = client.files.upload(
        file=io.BytesIO(jsonl(ROWS)),
        config=types.UploadFileConfig(mime_type="application/jsonl", display_name="flaky"),
    )
    config = types.CreateBatchJobConfig(display_name="flaky")
    for code, status, created in ((503, "UNAVAILABLE", 0), (504, "DEADLINE_EXCEEDED", 1)):
        try:
            client.batches.create(model=MODEL, src=file.name, config=config)
        except errors.ServerError as exc:
            assert (exc.code, exc.status) == (code, status)
        else:
            raise AssertionError(f"batches.create was not refused with {code}")
        assert emu.stats()["batches_created"] == created
    assert [j.display_name for j in client.batches.list()] == ["flaky"]
    client.batches.create(model=MODEL, src=file.name, config=config)
    assert emu.stats()["batches_created"] == 2


def test_a_cancelled_job_keeps_the_rows_it_answered(emu: RunningEmulator, client: Any) -> None:
    """batch_partial_output: a job cancelled half-way has a responses file with the rows it
    answered before, and only those are billed; an EXPIRED job still has none."""
    emu.set_scenario({"batch_polls_to_complete": 5, "batch_partial_output": 0.5})
    job = upload_and_create(client, ROWS, "half-done")
    client.batches.cancel(name=job.name)
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED
    assert len(output_lines(client, job)) == len(ROWS) // 2
    assert emu.stats()["billed"]["batch_rows"] == len(ROWS) // 2
    emu.set_scenario(
        {"batch_polls_to_complete": 0, "batch_job_outcomes": ["EXPIRED"], "batch_partial_output": 1}
    )
    expired = client.batches.get(name=upload_and_create(client, ROWS, "expired").name)
    assert expired.state == types.JobState.JOB_STATE_EXPIRED and expired.dest is None
