"""Interactions through the real SDK (sync and async)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from emulator.testing import RunningEmulator

from .helpers import MODEL
from .models import Article


def fmt(model: type[Article]) -> dict[str, Any]:
    return {"type": "text", "mime_type": "application/json", "schema": model.model_json_schema()}


def test_interaction_create_get(emu: RunningEmulator, client: Any) -> None:
    """A background interaction is in_progress, then completed with JSON output and usage."""
    created = client.interactions.create(
        model=MODEL,
        input="Write an article about tea",
        background=True,
        labels={"gemini_ledger_key": "articles:tea:v1"},
        response_format=fmt(Article),
    )
    assert created.status == "in_progress" and created.id
    done = client.interactions.get(created.id)
    assert done.status == "completed"
    Article.model_validate_json(done.output_text)
    usage = done.usage
    assert usage.total_thought_tokens == 8
    assert usage.total_tokens == (
        usage.total_input_tokens + usage.total_output_tokens + usage.total_thought_tokens
    )
    assert [(m.modality, m.tokens) for m in usage.input_tokens_by_modality] == [
        ("text", usage.total_input_tokens)
    ]
    assert done.labels == {"gemini_ledger_key": "articles:tea:v1"}
    stats = emu.stats()
    assert stats["submissions"] == {"articles:tea:v1": 1}
    assert stats["interactions_created"] == 1
    assert stats["billed"]["interactions"] == 1
    assert stats["billed"]["total_tokens"] == done.usage.total_tokens
    assert stats["requests"] == {"POST /v1/interactions": 1, "GET /v1/interactions/{id}": 1}


def test_interaction_key_header_wins_over_label(emu: RunningEmulator, client: Any) -> None:
    """The x-gemini-ledger-key header names the key; without it the label does."""
    client.interactions.create(
        model=MODEL,
        input="a",
        background=True,
        labels={"gemini_ledger_key": "label-key"},
        extra_headers={"x-gemini-ledger-key": "Header:Key:1"},
    )
    client.interactions.create(
        model=MODEL, input="a", background=True, labels={"gemini_ledger_key": "label-key"}
    )
    assert emu.stats()["submissions"] == {"Header:Key:1": 1, "label-key": 1}


def test_interaction_foreground_completes_at_once(client: Any) -> None:
    """Without background the interaction comes back completed with text."""
    done = client.interactions.create(model=MODEL, input="hello")
    assert done.status == "completed" and done.output_text


def test_interaction_polls_to_complete(emu: RunningEmulator, client: Any) -> None:
    """With interaction_polls_to_complete=3 it completes on the third get."""
    emu.set_scenario({"interaction_polls_to_complete": 3})
    created = client.interactions.create(model=MODEL, input="x", background=True)
    statuses = [client.interactions.get(created.id).status for _ in range(4)]
    assert statuses == ["in_progress", "in_progress", "completed", "completed"]


def test_interaction_cancel(emu: RunningEmulator, client: Any) -> None:
    """Cancelling an in-progress interaction makes it cancelled for good, nothing billed."""
    emu.set_scenario({"interaction_polls_to_complete": 5})
    created = client.interactions.create(model=MODEL, input="x", background=True)
    cancelled = client.interactions.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert client.interactions.get(created.id).status == "cancelled"
    assert emu.stats()["billed"]["interactions"] == 0


def test_interaction_delete(client: Any) -> None:
    """A deleted interaction answers 404 (NotFoundError) afterwards."""
    from google.genai._interactions import NotFoundError

    created = client.interactions.create(model=MODEL, input="x", background=True)
    client.interactions.delete(created.id)
    try:
        client.interactions.get(created.id)
    except NotFoundError as exc:
        assert exc.status_code == 404
    else:
        raise AssertionError("deleted interaction still found")


def test_interaction_async_client(emu: RunningEmulator, client: Any) -> None:
    """The async client creates, polls and cancels interactions."""

    async def run() -> list[str]:
        aio = client.aio
        created = await asyncio.gather(
            *[
                aio.interactions.create(
                    model=MODEL,
                    input=f"article {i}",
                    background=True,
                    labels={"gemini_ledger_key": f"aio-{i}"},
                    response_format=fmt(Article),
                )
                for i in range(5)
            ]
        )
        done = await asyncio.gather(*[aio.interactions.get(c.id) for c in created])
        return [d.output_text for d in done]

    for text in asyncio.run(run()):
        Article.model_validate_json(text)
    assert emu.stats()["billed"]["interactions"] == 5


def test_route_faults_on_interactions_create_accept_then_time_out(
    emu: RunningEmulator, client: Any
) -> None:
    """route_faults "accepted_504" on interactions.create: the interaction is made (counted,
    billed) and the caller gets 504 DEADLINE_EXCEEDED; a "500" makes nothing; then ok."""
    from flows.testing import describe

    emu.set_scenario({"route_faults": {"interactions.create": ["accepted_504", "500"]}})
    kwargs = {
        "model": MODEL,
        "input": "Write an article about tea",
        "background": True,
        "labels": {"gemini_ledger_key": "articles:tea:v1"},
    }
    for code, created in ((504, 1), (500, 1)):
        try:
            client.interactions.create(**kwargs)
        except Exception as exc:
            failure = describe(exc)
            assert failure is not None and failure.http_code == code and failure.ambiguous
        else:
            raise AssertionError(f"interactions.create was not answered {code}")
        assert emu.stats()["interactions_created"] == created
    assert emu.stats()["submissions"] == {"articles:tea:v1": 1}
    assert client.interactions.create(**kwargs).id
    assert emu.stats()["interactions_created"] == 2


def test_a_lost_or_expired_interaction_answers_404(emu: RunningEmulator, client: Any) -> None:
    """The "lost" step creates an interaction that a later get no longer finds (404, as after
    interactions.delete); so does any interaction past ``interaction_retention_s``."""
    from google.genai._interactions import NotFoundError

    emu.set_scenario({"name": "lost", "scripts": [{"match": "lost:*", "steps": ["lost"]}]})
    created = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "lost:1"}
    )
    assert created.status == "in_progress" and created.id
    with pytest.raises(NotFoundError):
        client.interactions.get(created.id)
    assert emu.stats()["submissions"] == {"lost:1": 1}

    emu.set_scenario({"name": "expiry", "interaction_retention_s": 0})
    kept = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "expired:1"}
    )
    with pytest.raises(NotFoundError):
        client.interactions.get(kept.id)


def test_interaction_usage_reports_cached_tokens(emu: RunningEmulator, client: Any) -> None:
    """An implicit cache hit shows as total_cached_tokens, inside total_input_tokens."""
    emu.set_scenario({"name": "cache", "cached_prompt_fraction": 0.5})
    created = client.interactions.create(
        model=MODEL,
        input="Write an article about green tea and its history",
        background=True,
        labels={"gemini_ledger_key": "cache:1"},
    )
    usage = client.interactions.get(created.id).usage
    assert usage.total_cached_tokens == usage.total_input_tokens // 2 > 0
