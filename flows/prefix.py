"""A pipeline's cached shared prefix: a long system instruction and/or reference parts every
request of the pipeline starts with, sent once a night as an explicit context cache.

``Pipeline(cached_prefix=CachedPrefix(system=..., parts=(...), ttl_s=...))``. The tick makes
one cache of it (``caches.create``, google-genai ``caches.py``: ``model``,
``CreateCachedContentConfig(system_instruction, contents, ttl, display_name)``) the first
time a row is sent, kept as a ledger row (``flows.run._prefix_cache``), and names it in
every request that can:

- direct: ``GenerateContentConfig(cached_content=<name>)`` (the SDK sends it as the
  request's ``cachedContent``: google-genai ``models.py`` ``_GenerateContentConfig_to_mldev``);
- batch: the JSONL request line's ``cachedContent`` (the same field of a
  GenerateContentRequest: google-genai ``batches.py`` ``_GenerateContentConfig_to_mldev``
  sets ``cachedContent`` on the inlined request);
- background: sent inline (the system instruction, the parts before the prompt's). The
  interactions API's ``cached_content`` (google-genai 3.6.1
  ``_gaos/types/interactions/createmodelinteraction.py``) is marked "DEPRECATED - This will be
  removed in a future release", so the channel does not build on it.

A request naming a cache cannot also set a system instruction (the API refuses it: "CachedContent
can not be used with GenerateContent request setting system_instruction, tools or
tool_config"), so a prompt of such a pipeline has no ``system`` of its own: its item is
parked ``prompt:ValueError``. When no cache can be had (its create refused, or another pass
creating it) a row is sent with the prefix inline: the same request, at the full rate.

The prefix is part of the pipeline's recorded definition (``flows.identity``): a change is a
new revision. Its parts are text, inline bytes or a URI the API reads itself (``https://``,
``gs://``): nothing to upload, so the cache never depends on a Files API file's life.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.contents import Part
from ledger import Channel

__all__ = ["BATCH_TTL_S", "DIRECT_TTL_S", "CachedPrefix", "fresh_margin_s"]

# How long a cache lives (its TTL) unless the pipeline says: a batch job may read its
# requests up to a day after it was created (the batch target), so a batch pipeline's cache
# must outlive that; a direct night is shorter. The cache is deleted as soon as every row of
# the pipeline is final, so the TTL bounds only what a lost process would leave.
DIRECT_TTL_S = 6 * 3600
BATCH_TTL_S = 48 * 3600
# A cache closer to its expiry than this is created again before a row names it (the same
# 26 h a batch upload must outlive, flows.run._uploads.EXPIRY_MARGIN_S).
_DIRECT_MARGIN_S = 600
_BATCH_MARGIN_S = 26 * 3600


def fresh_margin_s(channel: Channel | str) -> int:
    """How long a cache must still live for a row of ``channel`` to name it."""
    return _BATCH_MARGIN_S if Channel(channel) is Channel.BATCH else _DIRECT_MARGIN_S


class CachedPrefix(BaseModel):
    """The shared start of every request of a pipeline: ``system`` (its system instruction)
    and/or ``parts`` (reference text as plain strings or ``Part``s, inline bytes, URIs),
    cached for ``ttl_s`` seconds (default: 6 h on the direct channel, 48 h on batch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str | None = Field(default=None, min_length=1)
    parts: tuple[Part, ...] = ()
    ttl_s: int | None = Field(default=None, gt=0)

    @field_validator("parts", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        # A plain string is a text part (the usual reference text).
        if isinstance(value, (list, tuple)):
            return tuple(Part(text=v) if isinstance(v, str) else v for v in value)
        return value

    @model_validator(mode="after")
    def _something(self) -> CachedPrefix:
        if self.system is None and not self.parts:
            raise ValueError("a cached prefix needs a system instruction or parts")
        for part in self.parts:
            if part.needs_upload or (part.uri or "").startswith("files/"):
                raise ValueError(
                    "a cached prefix takes text, inline bytes or a URI the API reads itself"
                    " (https://, gs://): upload a file first and give its https URI"
                )
        return self

    def ttl_for(self, channel: Channel | str) -> int:
        """The cache's TTL on ``channel``: the given one, or the channel's default."""
        if self.ttl_s is not None:
            return self.ttl_s
        return BATCH_TTL_S if Channel(channel) is Channel.BATCH else DIRECT_TTL_S

    def check(self, channel: Channel | str) -> None:
        """Refuse a TTL shorter than a row of ``channel`` needs (the cache would be made
        again for every row)."""
        margin = fresh_margin_s(channel)
        if Channel(channel) is not Channel.BACKGROUND and self.ttl_for(channel) <= margin:
            raise ValueError(
                f"cached_prefix ttl_s {self.ttl_for(channel)} is too short for the"
                f" {Channel(channel).value} channel: a row needs the cache to live {margin} s"
                " more when it is sent"
            )

    def given(self) -> dict[str, Any]:
        """What defines the prefix (recorded in the pipeline's fingerprint)."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)

    def digest(self, model: str) -> str:
        """The prefix's identity with its model (a cache is made for one model)."""
        body = {
            "model": model,
            "system": self.system,
            "parts": [p.model_dump() for p in self.parts],
        }
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def contents(self) -> tuple[Part, ...]:
        """The parts a cache holds, or a request carries inline before its own."""
        return self.parts
