"""Test pipelines on the background channel, referenced as ``tests.background.pipelines:NAME``.

Configured through the environment so a subprocess tick sees the same thing as the test:

- ``BG_TEST_ITEMS``: comma-separated item names (each becomes key ``bgtest:<day>:<item>:v1``);
- ``BG_TEST_OUT``: directory the side effect writes one JSON file per key into;
- ``BG_TEST_COMPLETIONS``: file the side effect appends one line ``<key>`` to when it
  completes, so a test can count side-effect completions per key;
- ``BG_TEST_FAIL_KEYS``: comma-separated keys whose side effect raises (before writing);
- ``BG_TEST_EFFECT_S``: seconds each side effect takes (a slow side effect, as a slow
  publishing target would make it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from flows.crash import crash_point
from flows.examples.articles import safe_filename
from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = ["Note", "tiny"]


class Note(BaseModel):
    """The structured answer of the test pipeline."""

    model_config = ConfigDict(extra="forbid")

    title: str
    tags: list[str]


def _items(day: date) -> Iterator[str]:
    for item in os.environ.get("BG_TEST_ITEMS", "").split(","):
        if item.strip():
            yield item.strip()


def _key(item: str, day: date) -> str:
    return f"bgtest:{day.isoformat()}:{item}:v1"


def _prompt(item: str) -> Prompt:
    return Prompt(text=f"Write a note about {item}", system="Answer with JSON only.")


def _on_result(key: str, result: Any) -> None:
    if key in os.environ.get("BG_TEST_FAIL_KEYS", "").split(","):
        raise RuntimeError(f"side effect refused for {key}")
    note = result if isinstance(result, Note) else Note.model_validate(result)
    time.sleep(float(os.environ.get("BG_TEST_EFFECT_S") or 0))  # the work, not a wait
    out = Path(os.environ["BG_TEST_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    target = out / safe_filename(key)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(note.model_dump_json(), encoding="utf-8")
    os.replace(tmp, target)
    with open(os.environ["BG_TEST_COMPLETIONS"], "a", encoding="utf-8") as fh:
        fh.write(key + "\n")
    # A kill here: the file is written and the completion logged, consumed not recorded.
    crash_point("background.inside_side_effect")


tiny: Pipeline[str] = Pipeline(
    name="bgtest",
    model="gemini-2.5-flash",
    channel=Channel.BACKGROUND,
    output=Note,
    load_items=_items,
    key_of=_key,
    build_prompt=_prompt,
    on_result=_on_result,
    attempt_cap=3,
    unknown_cap=2,
    description="background-channel test pipeline",
)
