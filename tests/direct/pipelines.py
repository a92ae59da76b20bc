"""Direct-channel pipelines for the tests: items come from env ``DIRECT_TEST_ITEMS``.

Keys look like ``direct-test:<item>:<day>:v1`` so an emulator script can target one item
with ``*:<item>:*``. Delivered results are appended to ``DELIVERED`` (in-process runs) and,
when ``DIRECT_TEST_DELIVERED`` names a file, written there (subprocess runs).
"""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = ["DELIVERED", "ITEMS_ENV", "Verdict", "items", "other", "pipeline"]

ITEMS_ENV = "DIRECT_TEST_ITEMS"
DELIVERED: list[tuple[str, Any]] = []


class Verdict(BaseModel):
    """The answer schema: a label and a confidence."""

    label: str = Field(min_length=1)
    confidence: float


def items(day: date) -> list[str]:
    _barrier()
    raw = os.environ.get(ITEMS_ENV, "")
    return [part for part in raw.split(",") if part]


def _barrier() -> None:
    """With ``DIRECT_TEST_BARRIER=dir:n``, wait until n processes have reached this point,
    so runs started side by side really overlap (a barrier, polled with a deadline)."""
    spec = os.environ.get("DIRECT_TEST_BARRIER")
    if not spec:
        return
    folder, _, count = spec.rpartition(":")
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < int(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {spec}: the other runs never came")
        time.sleep(0.02)


def _deliver(key: str, result: Any) -> None:
    DELIVERED.append((key, result))
    path = os.environ.get("DIRECT_TEST_DELIVERED")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(key + "\n")


def _prompt(item: str) -> Prompt:
    # A payload that does not depend on the item for "poison*" items, so they share a
    # fingerprint (the same input under many keys).
    text = "the same poison input" if item.startswith("poison") else f"classify item {item}"
    return Prompt(text=text, system="Answer in JSON.", temperature=0.0)


pipeline: Pipeline[str] = Pipeline(
    name="direct-test",
    model="gemini-2.5-flash",
    channel=Channel.DIRECT,
    output=Verdict,
    load_items=items,
    key_of=lambda item, day: f"direct-test:{item}:{day.isoformat()}:v1",
    build_prompt=_prompt,
    on_result=_deliver,
    attempt_cap=4,
    unknown_cap=2,
    description="direct channel test pipeline",
)

other: Pipeline[str] = Pipeline(
    name="direct-other",
    model="gemini-2.5-flash-lite",
    channel=Channel.DIRECT,
    output=Verdict,
    load_items=items,
    key_of=lambda item, day: f"direct-other:{item}:{day.isoformat()}:v1",
    build_prompt=_prompt,
    on_result=_deliver,
    description="a second direct pipeline (pipeline filters)",
)
