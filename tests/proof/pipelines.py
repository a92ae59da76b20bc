"""Proof pipelines, one per channel, whose side effect logs every completion per key.

Referenced as ``tests.proof.pipelines:batch`` / ``:background`` / ``:direct`` (the registry
takes ``module:attr``). Everything comes from the environment, so a subprocess tick sees the
same world as the test that started it:

- ``PROOF_ITEMS``: how many items a day has (``item-00000`` ...); generated, so a night of
  10,000 items needs no data file; ``PROOF_ITEMS_BATCH`` / ``_BACKGROUND`` / ``_DIRECT``
  override it for one channel (a night runs 10,000 batch and 2,000 background items);
- ``PROOF_EMOJI_EVERY``: every N-th item's text is emoji only (no letters: the emulator's
  ``empty_when_no_letters`` answers it with nothing: retried under the unknown cap, then
  parked as ``empty``); 0: none;
- ``PROOF_OUT``: directory the side effect writes one JSON file per key into (an
  idempotent overwrite by key);
- ``PROOF_COMPLETIONS``: file the side effect appends ``<key>`` to once it has completed,
  so a test counts completions per key across processes (one short ``O_APPEND`` write per
  line, which concurrent writers never interleave);
- ``PROOF_FAIL_DELIVERY``: item names (comma-separated) whose side effect always raises
  :class:`ProofDeliveryFailed` before doing anything, so their rows end parked as
  ``delivery:ProofDeliveryFailed`` once ``GEMINI_LEDGER_DELIVERY_CAP`` is reached;
- ``PROOF_SLOW_DELIVERY_S``: seconds each side effect takes (a slow destination), so a
  signal lands while a delivery pass is under way;
- ``PROOF_MEDIA``: a local file every even item's prompt carries as a part to upload (one
  document several rows read: uploaded once through the Files API, deleted once they are all
  final), so a tick goes through the ``upload.*`` crash points; unset: text only.

Keys are ``<pipeline>:<day>:<item>:v1``, so an emulator script targets one item with
``*:item-00001:*``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from flows.contents import Part
from flows.crash import crash_point
from flows.examples.articles import safe_filename
from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = [
    "COMPLETIONS_ENV",
    "EMOJI_ENV",
    "FAIL_DELIVERY_ENV",
    "ITEMS_ENV",
    "MEDIA_ENV",
    "MEDIA_MIME_TYPE",
    "OUT_ENV",
    "SLOW_DELIVERY_ENV",
    "Note",
    "ProofDeliveryFailed",
    "background",
    "batch",
    "direct",
    "item_name",
    "item_text",
    "reads_media",
]

ITEMS_ENV = "PROOF_ITEMS"
EMOJI_ENV = "PROOF_EMOJI_EVERY"
OUT_ENV = "PROOF_OUT"
COMPLETIONS_ENV = "PROOF_COMPLETIONS"
FAIL_DELIVERY_ENV = "PROOF_FAIL_DELIVERY"
SLOW_DELIVERY_ENV = "PROOF_SLOW_DELIVERY_S"
MEDIA_ENV = "PROOF_MEDIA"
MEDIA_MIME_TYPE = "application/pdf"


class ProofDeliveryFailed(Exception):
    """The side effect of an item named in PROOF_FAIL_DELIVERY: the destination refuses it."""


class Note(BaseModel):
    """The structured answer of every proof pipeline."""

    model_config = ConfigDict(extra="forbid")

    title: str
    tags: list[str]


def item_name(i: int) -> str:
    return f"item-{i:05d}"


def item_text(i: int) -> str:
    """The user text for item ``i`` (emoji only for every ``PROOF_EMOJI_EVERY``-th item)."""
    every = int(os.environ.get(EMOJI_ENV, "0") or 0)
    if every and i % every == every - 1:
        return "🙂🚀🔥"
    return f"Write a short note about topic number {i}."


def _items_of(channel: Channel) -> Any:
    def items(day: date) -> Iterator[int]:
        raw = os.environ.get(f"{ITEMS_ENV}_{channel.value.upper()}") or os.environ.get(ITEMS_ENV)
        yield from range(int(raw or 0))

    return items


def reads_media(i: int) -> bool:
    """Whether item ``i``'s prompt carries the shared file (when ``PROOF_MEDIA`` names one):
    the even items, so among them one the scripts leave alone and the permanent 400."""
    return i % 2 == 0


def _prompt(i: int) -> Prompt:
    media = os.environ.get(MEDIA_ENV)
    parts = (Part.from_file(media, MEDIA_MIME_TYPE),) if media and reads_media(i) else ()
    return Prompt(text=item_text(i), parts=parts, system="Answer with JSON only.", temperature=0.0)


def _deliver(channel: Channel) -> Any:
    def on_result(key: str, result: Any) -> None:
        failing = os.environ.get(FAIL_DELIVERY_ENV, "")
        if any(f":{name}:" in key for name in failing.split(",") if name):
            raise ProofDeliveryFailed(f"the destination refused {key}")
        slow = float(os.environ.get(SLOW_DELIVERY_ENV, "0") or 0)
        if slow:
            time.sleep(slow)  # the destination's own pace, not synchronisation
        note = result if isinstance(result, Note) else Note.model_validate(result)
        out = os.environ.get(OUT_ENV)
        if out:
            folder = Path(out)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / safe_filename(key)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_text(note.model_dump_json(), encoding="utf-8")
            os.replace(tmp, target)
        log = os.environ.get(COMPLETIONS_ENV)
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (key + "\n").encode())
            finally:
                os.close(fd)
        if channel == Channel.BACKGROUND:
            # The background channel keeps this point in the pipeline's side effect (as the
            # articles example does): completed and logged, consumed not yet recorded.
            crash_point("background.inside_side_effect")

    return on_result


def _pipeline(name: str, channel: Channel) -> Pipeline[int]:
    return Pipeline(
        name=name,
        model="gemini-2.5-flash",
        channel=channel,
        output=Note,
        load_items=_items_of(channel),
        key_of=lambda i, day: f"{name}:{day.isoformat()}:{item_name(i)}:v1",
        build_prompt=_prompt,
        on_result=_deliver(channel),
        attempt_cap=4,
        unknown_cap=2,
        description=f"proof pipeline on the {channel} channel",
    )


batch = _pipeline("proof-batch", Channel.BATCH)
background = _pipeline("proof-bg", Channel.BACKGROUND)
direct = _pipeline("proof-direct", Channel.DIRECT)
