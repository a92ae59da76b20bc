"""Pipelines whose items carry one poison each (loaded by spec, e.g.
``tests.poison.pipelines:prompt_raises``): six items, one or two of them bad."""

from __future__ import annotations

from datetime import date
from typing import Any

from flows.examples.reviews import ReviewLabel, write_label
from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = ["IDS", "duplicate_keys", "key_raises", "prompt_raises"]

IDS = ["k-1", "k-2", "k-3", "k-4", "k-5", "k-6"]


def _items(day: date) -> list[dict[str, Any]]:
    return [{"id": i, "text": f"Review {i}: the app crashes when I upload a photo."} for i in IDS]


def _prompt(item: dict[str, Any]) -> Prompt:
    return Prompt(text=item["text"], system="Label the review.", temperature=0)


def _prompt_failing_on_k3(item: dict[str, Any]) -> Prompt:
    if item["id"] == "k-3":
        raise ValueError(f"cannot build a prompt for {item['id']}: text too odd")
    return _prompt(item)


def _key(name: str) -> Any:
    return lambda item, day: f"{name}:{day.isoformat()}:{item['id']}:v1"


def _key_failing_on_k2(item: dict[str, Any], day: date) -> str:
    if item["id"] == "k-2":
        raise KeyError("review_id")
    return f"keyfail:{day.isoformat()}:{item['id']}:v1"


def _key_shared_by_pairs(item: dict[str, Any], day: date) -> str:
    # k-1 and k-2 give one key, k-3 and k-4 another: a key_of that drops part of the id.
    shared = {"k-2": "k-1", "k-4": "k-3"}.get(item["id"], item["id"])
    return f"dups:{day.isoformat()}:{shared}:v1"


def _reviews(name: str, **parts: Any) -> Pipeline[dict[str, Any]]:
    return Pipeline(
        name=name,
        model="gemini-2.5-flash",
        channel=Channel.BATCH,
        output=ReviewLabel,
        load_items=_items,
        key_of=parts.get("key_of", _key(name)),
        build_prompt=parts.get("build_prompt", _prompt),
        on_result=write_label,
    )


# build_prompt raises for k-3 (as a prompt template missing a field would).
prompt_raises = _reviews("promptfail", build_prompt=_prompt_failing_on_k3)
# key_of raises for k-2.
key_raises = _reviews("keyfail", key_of=_key_failing_on_k2)
# Two pairs of items share a key.
duplicate_keys = _reviews("dups", key_of=_key_shared_by_pairs)
