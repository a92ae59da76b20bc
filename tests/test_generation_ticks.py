"""Generation settings reach the API through each channel's real tick: the emulator records
what it received, thinks as the level says, cuts at the item's own token limit (parked
`truncated`), and on_result gets what each item kept."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel, Field

from flows import GenerationSettings, Pipeline, Prompt, Run
from ledger import Channel, Status

DAY = date(2026, 12, 6)
DELIVERED: list[tuple[str, Any]] = []


class Label(BaseModel):
    label: str = Field(min_length=1)


def _build(item: str, run: Run) -> Prompt:
    # The item "long" carries its own limit, over the pipeline's settings; the verb is a
    # run parameter (a KeyError here would park the item prompt:KeyError).
    own = GenerationSettings(max_output_tokens=1) if item == "long" else None
    return Prompt(text=f"{run.params['verb']} {item}", settings=own, keep={"item": item})


def _pipeline(channel: Channel) -> Pipeline[str]:
    return Pipeline(
        name=f"gt-{channel.value}",
        model="gemini-3-flash-preview",
        channel=channel,
        output=Label,
        load_items=lambda day: ["ok", "long"],
        key_of=lambda item, day: f"gt-{channel.value}:{item}",
        build_prompt=_build,
        on_result=lambda key, result, kept: DELIVERED.append((key, kept)),
        generation=GenerationSettings(thinking_level="low", seed=5),
    )


batch = _pipeline(Channel.BATCH)
background = _pipeline(Channel.BACKGROUND)
direct = _pipeline(Channel.DIRECT)


@pytest.mark.parametrize("channel", [Channel.BATCH, Channel.BACKGROUND, Channel.DIRECT])
def test_settings_reach_the_api_on_every_channel(
    channel: Channel, emulator, prefect_api, sqlite_url, monkeypatch
) -> None:
    """Each channel's tick sends the pipeline's settings and an item's own override (its
    prompt built with the tick's run parameters); the answer thinks as the level says, the
    item cut at its own limit is parked `truncated` (no retry), and on_result gets the
    delivered item's kept data."""
    from flows.testing import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    DELIVERED.clear()
    name = f"gt-{channel.value}"
    ledger = open_ledger(sqlite_url)
    for _ in range(4):  # batch and background answer on the tick after they are sent
        tick(
            pipeline=f"tests.test_generation_ticks:{channel.value}",
            day=DAY,
            params={"verb": "classify"},
        )
        if not ledger.counts(pipeline=name).by_status.get(Status.SUBMITTED.value):
            break

    ok, long = ledger.get(f"{name}:ok"), ledger.get(f"{name}:long")
    assert (ok.status, ok.thoughts_tokens) == (Status.CONSUMED.value, 128)
    assert (long.status, long.error_class, long.attempts) == (Status.PARKED.value, "truncated", 1)
    assert [(f"{name}:ok", {"item": "ok"})] == DELIVERED
    received = emulator.received()
    assert received[f"{name}:ok"] == {"thinking_level": "low", "seed": 5}
    assert received[f"{name}:long"] == {"thinking_level": "low", "seed": 5, "max_output_tokens": 1}
