"""Explicit context caches (``cachedContents``) as the Gemini API keeps them.

Routes, as google-genai's ``caches.py`` calls them (3.6.1): ``POST /{ver}/cachedContents``
(body: ``model`` "models/X", ``contents``, ``systemInstruction``, ``ttl`` "<seconds>s" or
``expireTime``, ``displayName``: ``_CreateCachedContentConfig_to_mldev`` puts the config's
fields at the top of the body), ``GET /{ver}/cachedContents/{id}``, ``GET
/{ver}/cachedContents?pageSize=&pageToken=`` (``{"cachedContents": [...], "nextPageToken"}``:
``_ListCachedContentsResponse_from_mldev``) and ``DELETE /{ver}/cachedContents/{id}``
(``{}``). A cache answers as ``types.CachedContent``: ``name``, ``displayName``, ``model``,
``createTime``, ``updateTime``, ``expireTime``, ``usageMetadata.totalTokenCount``.

A request names a cache by ``cachedContent`` (google-genai ``models.py`` / ``batches.py``
``_GenerateContentConfig_to_mldev``); its answer's ``usageMetadata.cachedContentTokenCount``
is the cache's tokens, included in ``promptTokenCount`` (FACTS, "Usage metadata of real
answers"). What the API refuses:

- a cache that does not exist or has expired: ``403 PERMISSION_DENIED`` "CachedContent not
  found (or permission denied)" (the message the Gemini API gives; a 404 is also reported for
  caches past their TTL, https://forg.pro/tools/errors/google/404: the ledger reads both);
- a request that names a cache and also sets a system instruction: ``400 INVALID_ARGUMENT``
  "CachedContent can not be used with GenerateContent request setting system_instruction,
  tools or tool_config.";
- a request whose model is not the cache's: ``400 INVALID_ARGUMENT``;
- a cache below the model's minimum size: ``400 INVALID_ARGUMENT`` "Cached content is too
  small. total_token_count=N, min_total_token_count=M" (the minimum is 1,024 tokens for
  2.5 Flash and 4,096 for 2.5 Pro, https://ai.google.dev/gemini-api/docs/caching).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emulator._answers import collect_text, count_tokens

__all__ = [
    "DEFAULT_TTL_S",
    "CacheRec",
    "cache_gone",
    "cache_of_request",
    "min_tokens",
    "parse_ttl",
    "tokens_of",
]

# The API's default TTL when a create gives none (https://ai.google.dev/gemini-api/docs/caching).
DEFAULT_TTL_S = 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def min_tokens(model: str) -> int:
    """The smallest cache the model takes (caching docs: 1,024 for Flash, 4,096 for Pro)."""
    return 4096 if "pro" in model else 1024


def parse_ttl(body: dict[str, Any], now: float) -> float:
    """When a cache made by ``body`` expires: its ``ttl`` ("3600s", a protobuf Duration) or
    ``expireTime`` (RFC 3339), else the default hour."""
    ttl = body.get("ttl")
    if isinstance(ttl, str):
        found = _DURATION.match(ttl)
        if found is None:
            raise ValueError(f"ttl {ttl!r} is not a duration like '3600s'")
        return now + float(found.group(1))
    expire = body.get("expireTime")
    if isinstance(expire, str):
        return datetime.fromisoformat(expire.replace("Z", "+00:00")).timestamp()
    return now + DEFAULT_TTL_S


@dataclass
class CacheRec:
    id: str
    model: str
    display_name: str
    create_time: float
    expire_time: float
    tokens: int
    uses: int = 0

    @property
    def name(self) -> str:
        return f"cachedContents/{self.id}"

    def as_json(self, iso: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "model": f"models/{self.model}",
            "createTime": iso(self.create_time),
            "updateTime": iso(self.create_time),
            "expireTime": iso(self.expire_time),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }
        if self.display_name:
            out["displayName"] = self.display_name
        return out


def tokens_of(body: dict[str, Any], media_tokens: int) -> int:
    """The tokens a cache holds: its system instruction's and contents' text, and media."""
    system = body.get("systemInstruction") or {}
    text = " ".join(collect_text([system] if isinstance(system, dict) else system))
    text = " ".join(filter(None, (text, " ".join(collect_text(body.get("contents"))))))
    return (count_tokens(text) if text else 0) + media_tokens


def cache_of_request(request: dict[str, Any]) -> str | None:
    """The cache id a request names (``cachedContent``: "cachedContents/ID"), if any."""
    name = request.get("cachedContent") or request.get("cached_content")
    if not isinstance(name, str) or not name:
        return None
    return name.removeprefix("cachedContents/")


def cache_gone() -> dict[str, Any]:
    """The status a request naming a missing or expired cache gets."""
    return {
        "code": 403,
        "status": "PERMISSION_DENIED",
        "message": "CachedContent not found (or permission denied)",
    }
