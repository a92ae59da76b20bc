"""Prompts with media through each channel's real tick: inline bytes and a shared local file
(uploaded once through the Files API) reach the emulator, which counts their tokens by
modality; every channel's rows are billed the same prompt tokens (the three renderings say
the same thing to the API)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from emulator.testing import count_tokens
from flows import Part, Pipeline, Prompt
from flows.contents import content_hash
from ledger import Channel, Status, UploadState
from tests.child_env import parent_value

DAY = date(2026, 12, 6)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
# The shared document, by path (a tick in a subprocess reads it too: tests/test_upload_crash.py).
PDF_ENV = "GL_TEST_MEDIA_PDF"


class Label(BaseModel):
    label: str = Field(min_length=1)


def _build(item: str) -> Prompt:
    return Prompt(
        text=f"label {item}",
        parts=(
            Part.from_bytes(PNG, "image/png"),
            Part.from_file(parent_value(PDF_ENV), "application/pdf"),
        ),
    )


def _pipeline(channel: Channel) -> Pipeline[str]:
    return Pipeline(
        name=f"media-{channel.value}",
        model="gemini-2.5-flash",
        channel=channel,
        output=Label,
        load_items=lambda day: ["a", "b"],
        key_of=lambda item, day: f"media-{channel.value}:{item}",
        build_prompt=_build,
        on_result=lambda key, result: None,
    )


batch = _pipeline(Channel.BATCH)
background = _pipeline(Channel.BACKGROUND)
direct = _pipeline(Channel.DIRECT)


def write_pdf(folder: Path) -> Path:
    path = folder / "doc.pdf"
    path.write_bytes(b"%PDF-1.4\n" + b"x" * 120_000)
    return path


@pytest.mark.parametrize("channel", [Channel.BATCH, Channel.BACKGROUND, Channel.DIRECT])
def test_media_reach_the_api_on_every_channel(
    channel: Channel, emulator, prefect_api, sqlite_url, monkeypatch, tmp_path: Path
) -> None:
    """Both rows are delivered; each is billed its text, one image (258 tokens) and the
    PDF's pages, the same on every channel; the PDF both rows read is uploaded once, and
    deleted from the Files API when both rows are final."""
    from flows.testing import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    pdf = write_pdf(tmp_path)
    monkeypatch.setenv(PDF_ENV, str(pdf))
    name = f"media-{channel.value}"
    ledger = open_ledger(sqlite_url)
    for _ in range(4):  # batch and background answer on the tick after they are sent
        tick(pipeline=f"tests.test_media_ticks:{channel.value}", day=DAY)
        if not ledger.counts(pipeline=name).by_status.get(Status.SUBMITTED.value):
            break

    pdf_tokens = 258 * (pdf.stat().st_size // 50_000)
    for item in ("a", "b"):
        row = ledger.get(f"{name}:{item}")
        assert (row.status, row.attempts) == (Status.CONSUMED.value, 1)
        assert row.prompt_tokens == count_tokens(f"label {item}") + 258 + pdf_tokens
    # One upload for both rows, a ledger row deleted from the Files API once both were final.
    digest = content_hash(pdf.read_bytes())
    upload = ledger.get_upload(name, digest)
    assert upload is not None
    assert (upload.state, upload.uploads) == (UploadState.DELETED.value, 1)
    client = emulator.client()  # held: the pager needs its client open
    assert not [f for f in client.files.list() if (f.display_name or "").startswith("gl-upload-")]
