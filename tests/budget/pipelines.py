"""Pipelines for the budget tests: the items of each day come from ``ITEMS`` (day -> names),
every prompt the same length, so every row costs about the same."""

from __future__ import annotations

import dataclasses
from datetime import date

from pydantic import BaseModel, Field

from flows import CachedPrefix, GenerationSettings
from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = [
    "DELIVERED",
    "ITEMS",
    "PREFIX_CHARS",
    "batch",
    "direct",
    "items",
    "key",
    "names",
    "prefixed",
    "spec",
]

ITEMS: dict[str, list[str]] = {}
DELIVERED: list[str] = []


class Label(BaseModel):
    label: str = Field(min_length=1)


def items(day: date) -> list[str]:
    return list(ITEMS.get(day.isoformat(), []))


def _prompt(item: str) -> Prompt:
    return Prompt(text=f"Label the review {item}: " + "a fine product, works well. " * 8)


def _pipeline(channel: Channel) -> Pipeline[str]:
    return Pipeline(
        name=f"budget-{channel.value}",
        model="gemini-2.5-flash",
        channel=channel,
        output=Label,
        load_items=items,
        key_of=lambda item, day: f"budget-{channel.value}:{item}",
        build_prompt=_prompt,
        on_result=lambda key, result: DELIVERED.append(key),
        generation=GenerationSettings(max_output_tokens=256),
    )


direct = _pipeline(Channel.DIRECT)
batch = _pipeline(Channel.BATCH)
# The direct pipeline with a cached shared prefix of PREFIX_CHARS characters (a system
# instruction and a reference text part) every request starts with.
PREFIX_CHARS = 6000
prefixed = dataclasses.replace(
    direct,
    name="budget-prefixed",
    cached_prefix=CachedPrefix(
        system="You label product reviews. " * 100, parts=("Reference: " + "w" * 3289,)
    ),
)


def spec(channel: Channel) -> str:
    return f"tests.budget.pipelines:{channel.value}"


def key(channel: Channel, item: str) -> str:
    return f"budget-{channel.value}:{item}"


def names(prefix: str, n: int) -> list[str]:
    """``n`` item names of one length (so their prompts count the same)."""
    return [f"{prefix}{i:03d}" for i in range(n)]
