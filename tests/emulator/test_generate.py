"""generateContent through the real SDK (sync and async)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.genai import types
from pydantic import BaseModel

from emulator.testing import RunningEmulator

from .models import Article, Reading, ReviewLabel

MODEL = "gemini-2.5-flash"


def keyed(key: str, **config: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-gemini-ledger-key": key}), **config
    )


def test_generate_plain_text(emu: RunningEmulator, client: Any) -> None:
    """A request without a schema gets a short text answer and filled usage metadata, with
    thinking tokens inside the total, the prompt by modality, the model version and id."""
    resp = client.models.generate_content(model=MODEL, contents="Say hello", config=keyed("g:1"))
    assert resp.text and resp.text.startswith("Emulated answer")
    usage = resp.usage_metadata
    assert usage.prompt_token_count == 3  # len("Say hello") / 4, rounded up
    assert usage.thoughts_token_count == 8
    assert usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    assert [(d.modality.value, d.token_count) for d in usage.prompt_tokens_details] == [("TEXT", 3)]
    assert usage.cached_content_token_count is None
    assert resp.model_version == MODEL.removeprefix("models/") and resp.response_id
    stats = emu.stats()
    assert stats["requests"] == {"POST /v1/models/{model}:generateContent": 1}
    assert stats["submissions"] == {"g:1": 1}
    assert stats["billed"] == {
        "generate_calls": 1,
        "batch_rows": 0,
        "interactions": 0,
        "embed_calls": 0,
        "prompt_tokens": usage.prompt_token_count,
        "candidates_tokens": usage.candidates_token_count,
        "total_tokens": usage.total_token_count,
        "thoughts_tokens": 8,
        "cached_tokens": 0,
    }


def test_cached_prompt_tokens_and_alias_model_version(emu: RunningEmulator, client: Any) -> None:
    """An implicit cache hit reports cachedContentTokenCount inside the prompt count; a
    "-latest" alias answers under the model version it points at."""
    emu.set_scenario({"name": "cache", "cached_prompt_fraction": 0.5, "thoughts_tokens": 0})
    resp = client.models.generate_content(
        model="gemini-flash-latest", contents="Say hello to everyone here", config=keyed("g:2")
    )
    usage = resp.usage_metadata
    assert usage.cached_content_token_count == usage.prompt_token_count // 2 > 0
    assert usage.thoughts_token_count is None
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert resp.model_version == "gemini-3.8-flash"


@pytest.mark.parametrize(
    ("field", "model"),
    [
        ("response_json_schema", ReviewLabel),
        ("response_json_schema", Reading),
        ("response_schema", ReviewLabel),
    ],
)
def test_generate_schema_answer_validates(client: Any, field: str, model: type[BaseModel]) -> None:
    """With a response schema (JSON schema or pydantic model) the answer validates against it."""
    schema: Any = model.model_json_schema() if field == "response_json_schema" else model
    for i in range(25):
        resp = client.models.generate_content(
            model=MODEL,
            contents=f"Classify review {i}: great phone",
            config=keyed(f"s:{i}", response_mime_type="application/json", **{field: schema}),
        )
        model.model_validate_json(resp.text)


def test_generate_answer_is_deterministic_per_seed_and_key(
    emu: RunningEmulator, client: Any
) -> None:
    """The same key under the same seed gets the same answer; another seed, another answer."""
    cfg = keyed(
        "det:1",
        response_mime_type="application/json",
        response_json_schema=Article.model_json_schema(),
    )
    first = client.models.generate_content(model=MODEL, contents="write", config=cfg).text
    emu.reset()
    assert client.models.generate_content(model=MODEL, contents="write", config=cfg).text == first
    emu.set_scenario("clean", seed=99)
    emu.reset()
    assert client.models.generate_content(model=MODEL, contents="write", config=cfg).text != first
    Article.model_validate_json(first)


def test_generate_without_key_uses_body_hash(emu: RunningEmulator, client: Any) -> None:
    """Without the key header, identical bodies count as one key and different ones apart."""
    client.models.generate_content(model=MODEL, contents="same")
    client.models.generate_content(model=MODEL, contents="same")
    client.models.generate_content(model=MODEL, contents="other")
    subs = emu.stats()["submissions"]
    assert sorted(subs.values()) == [1, 2]
    assert all(k.startswith("body:") for k in subs)


def test_generate_async_client(emu: RunningEmulator, client: Any) -> None:
    """The async client gets schema answers too, concurrently."""

    async def run() -> list[str]:
        calls = [
            client.aio.models.generate_content(
                model=MODEL,
                contents=f"article {i}",
                config=keyed(
                    f"a:{i}",
                    response_mime_type="application/json",
                    response_json_schema=Article.model_json_schema(),
                ),
            )
            for i in range(8)
        ]
        return [r.text for r in await asyncio.gather(*calls)]

    texts = asyncio.run(run())
    for text in texts:
        Article.model_validate_json(text)
    assert emu.stats()["billed"]["generate_calls"] == 8


def test_generate_v1beta(emu: RunningEmulator) -> None:
    """The v1beta API version is served too."""
    client = emu.client(api_version="v1beta")
    assert client.models.generate_content(model=MODEL, contents="hi").text
    assert emu.stats()["requests"] == {"POST /v1beta/models/{model}:generateContent": 1}
