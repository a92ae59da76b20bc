"""A pipeline's cached prefix as it is declared and rendered: refused where it cannot work,
part of the recorded definition, and on each channel's wire either named by its cache
(direct, batch) or carried inline (background, and whenever no cache could be had)."""

from __future__ import annotations

import io
from datetime import date

import orjson
import pytest
from pydantic import BaseModel

from flows import CachedPrefix, EmbeddingSettings, Part, Pipeline, Prompt, Run
from flows.identity import schema_fingerprint
from flows.testing import batch_request, create_kwargs, write_requests
from ledger import Channel

GUIDE = "The style guide. " * 10


class Label(BaseModel):
    label: str


def _pipeline(channel: Channel = Channel.DIRECT, **extra: object) -> Pipeline[str]:
    return Pipeline(
        name="p",
        model="gemini-2.5-flash",
        channel=channel,
        output=Label,
        load_items=lambda day: ["a"],
        key_of=lambda item, day: item,
        build_prompt=lambda item: Prompt(text=item),
        on_result=lambda key, result: None,
        **extra,  # type: ignore[arg-type]
    )


def test_a_prefix_is_refused_where_it_cannot_work() -> None:
    """Neither system nor parts, a part to upload, a files/ name, a TTL shorter than the
    channel needs, an embedding pipeline: each refused when the pipeline is defined."""
    with pytest.raises(ValueError, match="system instruction or parts"):
        CachedPrefix()
    with pytest.raises(ValueError, match="URI the API reads itself"):
        CachedPrefix(parts=(Part.from_bytes(b"x", "application/pdf", upload=True),))
    with pytest.raises(ValueError, match="URI the API reads itself"):
        CachedPrefix(parts=(Part.from_uri("files/abc", "application/pdf"),))
    with pytest.raises(ValueError, match="too short for the batch channel"):
        _pipeline(Channel.BATCH, cached_prefix=CachedPrefix(system="s", ttl_s=3600))
    with pytest.raises(ValueError, match="no cached_prefix"):
        Pipeline(
            name="e",
            model="gemini-embedding-001",
            channel=Channel.DIRECT,
            embedding=EmbeddingSettings(),
            load_items=lambda day: [],
            key_of=lambda item, day: item,
            build_prompt=lambda item: Prompt(text=item),
            on_result=lambda key, result: None,
            cached_prefix=CachedPrefix(system="s"),
        )
    prefix = CachedPrefix(system="s", parts=(GUIDE,))
    assert prefix.parts == (Part(text=GUIDE),)  # a plain string is a text part
    assert (prefix.ttl_for(Channel.DIRECT), prefix.ttl_for(Channel.BATCH)) == (6 * 3600, 48 * 3600)


def test_an_item_with_its_own_system_instruction_is_refused() -> None:
    """A request naming a cache cannot set a system instruction: such an item's prompt is
    refused (the tick parks it as prompt:ValueError)."""
    p = _pipeline(cached_prefix=CachedPrefix(system="s"))
    p = Pipeline(**{**p.__dict__, "build_prompt": lambda item: Prompt(text=item, system="own")})
    with pytest.raises(ValueError, match="system instruction from the prefix"):
        p.prompt_for("a", Run(day=date(2026, 12, 6)))


def test_the_prefix_is_part_of_the_recorded_definition() -> None:
    """Adding or changing the prefix changes the pipeline's fingerprint (a new revision);
    its digest follows the model too (a cache is made for one model)."""
    bare = schema_fingerprint(_pipeline())
    one = schema_fingerprint(_pipeline(cached_prefix=CachedPrefix(system="s")))
    two = schema_fingerprint(_pipeline(cached_prefix=CachedPrefix(system="t")))
    assert len({bare, one, two}) == 3
    prefix = CachedPrefix(system="s")
    assert prefix.digest("gemini-2.5-flash") != prefix.digest("gemini-2.5-pro")


def test_batch_lines_name_the_cache_or_carry_the_prefix() -> None:
    """A batch line names the cache (``cachedContent``) and carries no system instruction;
    without a cache the prefix goes inline: its instruction, its parts before the prompt's.
    The fast line writer writes the same JSON as the whole rendering."""
    prefix = CachedPrefix(system="Label reviews.", parts=(GUIDE,))
    schema = Label.model_json_schema()
    prompt = Prompt(text="Great app")
    named = batch_request(prompt, schema, prefix=prefix, cached_content="cachedContents/c1")
    assert named["cachedContent"] == "cachedContents/c1"
    assert "systemInstruction" not in named
    assert named["contents"] == [{"role": "user", "parts": [{"text": "Great app"}]}]
    inline = batch_request(prompt, schema, prefix=prefix)
    assert "cachedContent" not in inline
    assert inline["systemInstruction"] == {"parts": [{"text": "Label reviews."}]}
    assert inline["contents"][0]["parts"] == [{"text": GUIDE}, {"text": "Great app"}]
    for cached, expected in (("cachedContents/c1", named), (None, inline)):
        out = io.BytesIO()
        rows = [("k", prompt.model_dump_json(exclude_none=True))]
        assert write_requests(rows, schema, out, prefix=prefix, cached_content=cached) == 1
        assert orjson.loads(out.getvalue())["request"] == expected


def test_the_background_channel_sends_the_prefix_inline() -> None:
    """interactions.create gets the prefix's instruction and its parts before the prompt's
    (the interactions API's cached_content is deprecated in google-genai 3.6.1)."""
    prefix = CachedPrefix(system="Label reviews.", parts=(GUIDE,))
    kwargs = create_kwargs(
        Prompt(text="Great app"), key="k", pipeline="p", model="m", schema=Label, prefix=prefix
    )
    assert kwargs["system_instruction"] == "Label reviews."
    assert kwargs["input"] == [
        {"type": "text", "text": GUIDE},
        {"type": "text", "text": "Great app"},
    ]
    assert "cached_content" not in kwargs
