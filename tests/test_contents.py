"""A prompt's parts: one list, three renderings that say the same thing, and the inline limit."""

from __future__ import annotations

import base64

import pytest
from pydantic import BaseModel, ValidationError

from flows import Part, Prompt
from flows.contents import (
    INLINE_REQUEST_LIMIT,
    interaction_input,
    rest_parts,
    sdk_parts,
)
from flows.testing import batch_request, create_kwargs

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
URI = "https://generativelanguage.googleapis.com/v1beta/files/abc123"


class Out(BaseModel):
    label: str


def _b64(data: str) -> bytes:
    # The SDK writes bytes URL-safe and unpadded; the API takes either alphabet.
    return base64.urlsafe_b64decode(
        data.replace("+", "-").replace("/", "_") + "=" * (-len(data) % 4)
    )


def _canon_rest(parts: list[dict]) -> list[tuple]:
    out = []
    for p in parts:
        if "text" in p:
            out.append(("text", p["text"]))
        elif "inlineData" in p:
            d = p["inlineData"]
            out.append(("bytes", d["mimeType"], _b64(d["data"])))
        else:
            d = p["fileData"]
            out.append(("uri", d.get("mimeType"), d["fileUri"]))
    return out


def _canon_sdk(parts: list) -> list[tuple]:
    # The SDK Part's own JSON form (camelCase aliases, bytes as base64: what it sends).
    from google.genai import types

    assert all(isinstance(p, types.Part) for p in parts)
    return _canon_rest([p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in parts])


def _canon_interaction(blocks: list[dict]) -> list[tuple]:
    out = []
    for b in blocks:
        if b["type"] == "text":
            out.append(("text", b["text"]))
        elif "data" in b:
            out.append(("bytes", b["mime_type"], _b64(b["data"])))
        else:
            out.append(("uri", b.get("mime_type"), b["uri"]))
    return out


def test_the_three_renderings_of_a_prompt_agree() -> None:
    """Text, inline bytes, a file URI and more text, in that order, come out the same
    (same order, bytes, mime types, URIs) in the batch line, the SDK parts and the
    interaction input; and each channel's request carries exactly that rendering."""
    prompt = Prompt(
        text="Describe the picture and the page.",
        parts=(
            Part.from_bytes(PNG, "image/png"),
            Part.from_uri(URI, "application/pdf"),
            Part.of_text("Answer in French."),
        ),
    )
    rest = _canon_rest(rest_parts(prompt.contents()))
    assert rest == _canon_sdk(sdk_parts(prompt.contents()))
    assert rest == _canon_interaction(interaction_input(prompt.contents()))
    assert [k[0] for k in rest] == ["text", "bytes", "uri", "text"]
    assert rest[1] == ("bytes", "image/png", PNG)
    # What the channels send is that rendering.
    line = batch_request(prompt, Out.model_json_schema())
    assert _canon_rest(line["contents"][0]["parts"]) == rest
    kwargs = create_kwargs(prompt, key="k", pipeline="p", model="m", schema=Out)
    assert _canon_interaction(kwargs["input"]) == rest


def test_a_text_only_prompt_is_sent_as_before() -> None:
    """Without parts the interaction input stays the plain string and the batch line the
    one text part (the fast JSONL writer's shape)."""
    prompt = Prompt(text="hello")
    assert batch_request(prompt, {})["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert create_kwargs(prompt, key="k", pipeline="p", model="m", schema=Out)["input"] == "hello"


def test_inline_data_over_the_request_limit_is_uploaded_instead() -> None:
    """A prompt whose inline bytes would pass the API's 20 MB request limit has its largest
    parts marked for upload until the rest fits; a small one stays inline."""
    big = b"\0" * (INLINE_REQUEST_LIMIT // 2)
    prompt = Prompt(
        text="x",
        parts=(
            Part.from_bytes(b"small", "image/png"),
            Part.from_bytes(big, "video/mp4"),
            Part.from_bytes(big, "audio/wav"),
        ),
    )
    # Each big part is 13 MB in base64: two do not fit, one does.
    assert [p.upload for p in prompt.parts] == [False, True, False]
    alone = Prompt(text="x", parts=(Part.from_bytes(big + big, "video/mp4"),))
    assert alone.parts[0].upload is True
    assert Prompt(text="x", parts=(Part.from_bytes(PNG, "image/png"),)).parts[0].upload is False
    with pytest.raises(AssertionError):
        rest_parts(prompt.contents())  # never rendered unresolved: never sent oversize


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "not base64!", "mime_type": "image/png"},
        {"data": "aGk="},
        {"uri": "ftp://x/y"},
        {"text": "a", "uri": URI},
    ],
)
def test_a_malformed_part_is_refused(kwargs: dict) -> None:
    """A part that is not exactly one well-formed kind is refused when the prompt is built."""
    with pytest.raises(ValidationError):
        Part(**kwargs)


def test_an_embedding_pipeline_refuses_media_parts() -> None:
    """An embedding pipeline's item whose prompt carries parts is refused (its row parked
    `prompt:ValueError`), never embedded as its text alone."""
    from datetime import date

    from flows import EmbeddingSettings, Pipeline, Run

    pipeline = Pipeline(
        name="emb",
        model="gemini-embedding-001",
        channel="direct",
        embedding=EmbeddingSettings(),
        load_items=lambda day: [],
        key_of=lambda item, day: item,
        build_prompt=lambda item: Prompt(text=item, parts=(Part.from_bytes(PNG, "image/png"),)),
        on_result=lambda key, result: None,
    )
    with pytest.raises(ValueError, match="take no parts"):
        pipeline.prompt_for("x", Run(day=date(2026, 12, 6)))
