"""The emulator's context caches: created, read, listed and deleted as google-genai's
``caches`` calls them; requests naming one are answered with its tokens as cached prompt
tokens, and refused as the API refuses them (a gone cache, a system instruction beside it)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from google.genai import errors, types

from emulator.testing import RunningEmulator

from .helpers import MODEL, output_lines, request_for

REFERENCE = "The house style guide. " * 400  # about 2,300 tokens: over Flash's 1,024 minimum


def _create(client: Any, ttl: str = "3600s", name: str = "gl-cache-test") -> Any:
    return client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            display_name=name,
            system_instruction="Label each review.",
            contents=[types.Content(role="user", parts=[types.Part(text=REFERENCE)])],
            ttl=ttl,
        ),
    )


def test_a_cache_is_created_read_listed_and_deleted(emu: RunningEmulator, client: Any) -> None:
    """caches.create answers a CachedContent with its name, expiry and token count; get and
    list find it by name and display name; delete removes it (stored count back to zero) and
    a second delete is the API's 403 for a cache that is gone."""
    cache = _create(client)
    assert cache.name.startswith("cachedContents/")
    assert cache.display_name == "gl-cache-test"
    assert cache.usage_metadata.total_token_count > 1024
    assert cache.expire_time is not None and cache.model == f"models/{MODEL}"
    assert client.caches.get(name=cache.name).usage_metadata.total_token_count == (
        cache.usage_metadata.total_token_count
    )
    listed = list(client.caches.list(config=types.ListCachedContentsConfig(page_size=10)))
    assert [c.display_name for c in listed] == ["gl-cache-test"]
    assert emu.caches_stored() == 1
    client.caches.delete(name=cache.name)
    assert emu.caches_stored() == 0
    assert emu.stats()["caches"]["deleted"] == 1
    with pytest.raises(errors.ClientError) as gone:
        client.caches.delete(name=cache.name)
    assert gone.value.code == 403 and "CachedContent not found" in str(gone.value)


def test_a_cache_below_the_minimum_is_refused(emu: RunningEmulator, client: Any) -> None:
    """A cache smaller than the model's minimum (1,024 tokens for Flash) is a 400."""
    with pytest.raises(errors.ClientError) as small:
        client.caches.create(
            model=MODEL, config=types.CreateCachedContentConfig(system_instruction="short")
        )
    assert small.value.code == 400 and "too small" in str(small.value)
    assert emu.caches_stored() == 0


def test_a_request_naming_the_cache_reports_its_tokens_as_cached(
    emu: RunningEmulator, client: Any
) -> None:
    """generate_content with cached_content: cachedContentTokenCount is the cache's tokens
    and promptTokenCount includes them; the emulator records the cache the key named."""
    cache = _create(client)
    tokens = cache.usage_metadata.total_token_count
    plain = client.models.generate_content(model=MODEL, contents="Great app")
    answer = client.models.generate_content(
        model=MODEL,
        contents="Great app",
        config=types.GenerateContentConfig(
            cached_content=cache.name,
            http_options=types.HttpOptions(headers={"x-gemini-ledger-key": "k1"}),
        ),
    )
    usage = answer.usage_metadata
    assert usage.cached_content_token_count == tokens
    assert usage.prompt_token_count == plain.usage_metadata.prompt_token_count + tokens
    assert emu.cached() == {"k1": cache.name}
    assert emu.stats()["caches"]["requests"] == 1


def test_requests_the_api_refuses_for_their_cache(emu: RunningEmulator, client: Any) -> None:
    """A cache that was deleted (or expired) is a 403 "CachedContent not found"; a system
    instruction beside a cache is a 400; neither is counted as a submission."""
    cache = _create(client)
    with pytest.raises(errors.ClientError) as both:
        client.models.generate_content(
            model=MODEL,
            contents="x",
            config=types.GenerateContentConfig(cached_content=cache.name, system_instruction="y"),
        )
    assert both.value.code == 400 and "system_instruction" in str(both.value)
    client.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as gone:
        client.models.generate_content(
            model=MODEL, contents="x", config=types.GenerateContentConfig(cached_content=cache.name)
        )
    assert gone.value.code == 403 and "CachedContent not found" in str(gone.value)
    assert emu.stats()["submissions"] == {}


def test_batch_lines_naming_a_cache(emu: RunningEmulator, client: Any) -> None:
    """A batch line's cachedContent is honoured like a direct request's (its answer's cached
    tokens); a line naming a gone cache gets its own error line, the job goes on."""
    cache = _create(client)
    good = {**request_for("Great app"), "cachedContent": cache.name}
    bad = {**request_for("Bad app"), "cachedContent": "cachedContents/nope"}
    data = b"".join(
        json.dumps({"key": k, "request": r}).encode() + b"\n" for k, r in (("a", good), ("b", bad))
    )
    file = client.files.upload(
        file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="application/jsonl")
    )
    job = client.batches.create(model=MODEL, src=file.name)
    job = client.batches.get(name=job.name)
    lines = {line["key"]: line for line in output_lines(client, job)}
    usage = lines["a"]["response"]["usageMetadata"]
    assert usage["cachedContentTokenCount"] == cache.usage_metadata.total_token_count
    assert "CachedContent not found" in lines["b"]["error"]["message"]
