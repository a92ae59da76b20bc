"""The emulator takes media parts as the API does: inline bytes and file URIs on every
route, refusing an oversize request and a file that does not exist or has expired, and
counting prompt tokens by modality."""

from __future__ import annotations

import io
from typing import Any

import pytest
from google.genai import errors, types

from emulator.testing import FILE_TTL_S, REQUEST_LIMIT, ApiError, Core, FileRec, load_scenario

from .helpers import MODEL

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def _details(usage: Any) -> dict[str, int]:
    return {str(d.modality.value): d.token_count for d in usage.prompt_tokens_details}


def test_inline_image_and_uploaded_file_are_counted_by_modality(client: Any) -> None:
    """An inline PNG is 258 IMAGE tokens and an uploaded PDF's pages DOCUMENT tokens, in
    the prompt's count and its details."""
    pdf = client.files.upload(
        file=io.BytesIO(b"%PDF" + b"x" * 100_000),
        config=types.UploadFileConfig(mime_type="application/pdf"),
    )
    resp = client.models.generate_content(
        model=MODEL,
        contents=[
            "what is this",
            types.Part.from_bytes(data=PNG, mime_type="image/png"),
            types.Part.from_uri(file_uri=pdf.uri, mime_type="application/pdf"),
        ],
    )
    details = _details(resp.usage_metadata)
    assert details["IMAGE"] == 258
    assert details["DOCUMENT"] == 258 * 2
    assert resp.usage_metadata.prompt_token_count == sum(details.values())


def test_a_file_uri_that_does_not_exist_is_refused(client: Any, emu: Any) -> None:
    """A Files API URI of no file is refused 403, before anything is counted."""
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(
            model=MODEL,
            contents=[
                "x",
                types.Part.from_uri(
                    file_uri=f"{emu.base_url}/v1beta/files/nope", mime_type="image/png"
                ),
            ],
        )
    assert info.value.code == 403
    assert "may not exist" in str(info.value)


def test_a_request_over_the_inline_limit_is_refused(client: Any) -> None:
    """A request whose inline bytes pass 20 MB is a 400 naming the limit."""
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(
            model=MODEL,
            contents=[
                "x",
                types.Part.from_bytes(data=b"\0" * (16 * 1024 * 1024), mime_type="video/mp4"),
            ],
        )
    assert info.value.code == 400
    assert f"exceeds the limit: {REQUEST_LIMIT} bytes" in str(info.value)


def test_an_expired_file_is_refused_on_every_route() -> None:
    """48 h after its upload a file is gone: a request naming it is refused on
    generateContent, as an interaction's input and as a batch line (its own error)."""
    now = [1_000_000.0]
    core = Core(load_scenario("clean"), 7, lambda: now[0])
    core.files["f1"] = FileRec("f1", None, "image/png", bytearray(PNG), len(PNG), now[0], done=True)
    uri = "http://x/v1beta/files/f1"
    rest = {"contents": [{"parts": [{"fileData": {"fileUri": uri, "mimeType": "image/png"}}]}]}
    inter = {"model": MODEL, "input": [{"type": "image", "uri": uri, "mime_type": "image/png"}]}
    core.generate(MODEL, rest, "k1")  # alive: answered
    now[0] += FILE_TTL_S + 1
    with pytest.raises(ApiError) as info:
        core.generate(MODEL, rest, "k2")
    assert info.value.code == 403
    with pytest.raises(ApiError):
        core.create_interaction(inter, "k3")
    rec = core.create_batch(MODEL, "d", [("k4", rest)], inline=False)
    assert rec.rows[0].refused is not None and "may not exist" in rec.rows[0].refused


def test_count_tokens_answers_what_generate_would_bill_and_bills_nothing(
    client: Any, emu: Any
) -> None:
    """models.count_tokens through the SDK answers the prompt tokens generate_content bills
    for the same text and media, and is neither billed nor submitted."""
    contents = [
        "label this review: a fine product, works well",
        types.Part.from_bytes(data=PNG, mime_type="image/png"),
    ]
    counted = client.models.count_tokens(model=MODEL, contents=contents)
    billed_before = emu.stats()["billed"]
    assert billed_before["generate_calls"] == 0 and emu.stats()["submissions"] == {}
    resp = client.models.generate_content(model=MODEL, contents=contents)
    assert counted.total_tokens == resp.usage_metadata.prompt_token_count
    assert counted.total_tokens > 258  # the text and the image
