"""A pipeline's cached prefix as a ledger row: the night's one context cache.

``PrefixCache.name()`` gives the name (``cachedContents/...``) a row's request names, or None
when the row is to carry the prefix inline. The first row of a pass that needs it reserves
the cache by the prefix's digest (``Ledger.reserve_cache``) before ``caches.create`` and binds
it after (``bind_cache``): a second pass, or a second thread, uses the bound one. A
reservation whose pass died is taken over after ``CACHE_STALE_S`` and its cache looked for by
display name first (``caches.list``, ``gl-cache-<pipeline>-<digest>``): a crash after the
create never makes a second cache. A cache closer to its expiry than the channel needs
(``flows.prefix.fresh_margin_s``), or found gone by a request (``Ledger.cache_expired``), is
created again, the superseded one kept (a ``retired`` row: batch jobs submitted naming it
still read it). ``clean_caches`` (the end of every tick) deletes them once every row of the
pipeline is final, and with them the cache a dead pass's create may have made before it
was bound (found by display name).

A cache is never a row's attempt. A create answered 5xx, timed out or dropped may have made
the cache: it is looked up by display name and used if found. A create the API refuses for a
reason of the request (a prefix below the model's minimum size for caching, say), or that
fails for a passing reason and made nothing, leaves the row to carry the prefix inline for
the rest of the pass; a fault of the setup halts the pass like any call's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from google.genai import types

from flows.contents import sdk_parts
from flows.crash import crash_point
from flows.gemini._errors import certainly_refused, classify, is_not_found, setup_fault
from flows.gemini.gateway import shared_client
from flows.pipeline import Pipeline
from flows.prefix import fresh_margin_s
from flows.run._api_time import epoch_of
from flows.run._cleanup import delete_due
from flows.settings import Settings
from ledger import CACHE_EXPIRED, CacheAction, CacheRecord, CacheState, Ledger, redact

__all__ = ["CACHE_STALE_S", "PrefixCache", "cache_display_name", "clean_caches"]

# A cache's reservation unrenewed this long belongs to a dead pass (a create is one request).
CACHE_STALE_S = 300.0
_PREFIX = "gl-cache-"
_LIST_PAGE_SIZE = 100


def cache_display_name(pipeline: str, digest: str) -> str:
    """The display name the pipeline's cache of this prefix carries (found again by it).
    The API limits a display name to 128 characters: the digest is cut to fit."""
    name = f"{_PREFIX}{pipeline}-"
    return name + digest[: max(16, 128 - len(name))]


def _tokens(cache: Any) -> int:
    # types.CachedContent.usage_metadata (CachedContentUsageMetadata.total_token_count).
    usage = getattr(cache, "usage_metadata", None)
    return int(getattr(usage, "total_token_count", None) or 0)


class PrefixCache:
    """One pass's view of its pipeline's cached prefix (shared by the pass's threads)."""

    def __init__(self, client: Any, ledger: Ledger, pipeline: Pipeline[Any]) -> None:
        prefix = pipeline.cached_prefix
        assert prefix is not None
        self.client = client
        self.ledger = ledger
        self.pipeline = pipeline
        self.prefix = prefix
        self.digest = prefix.digest(pipeline.model)
        self.display_name = cache_display_name(pipeline.name, self.digest)
        self.ttl_s = prefix.ttl_for(pipeline.channel)
        self.margin_s = fresh_margin_s(pipeline.channel)
        self._lock = threading.RLock()
        self._name: str | None = None
        self._expires_at = 0.0
        self.inline = False  # the create failed: the rest of the pass sends the prefix inline
        self.created = 0

    def name(self, *, verify: bool = False) -> str | None:
        """The cache to name in a request, or None: send the prefix inline.

        With ``verify`` a cache made earlier is asked for first (``caches.get``): a batch
        job reads its lines long after they were written, so a cache deleted or expired at
        the API before its recorded expiry is made again rather than named."""
        with self._lock:
            if self.inline:
                return None
            if self._name is None or self._expires_at - self.ledger.clock() <= self.margin_s:
                made = self.created
                name = self._acquire()
                if name is None or not verify or self.created > made:
                    return name  # inline, or just made: nothing to ask
            if verify and self._name is not None and not self._alive(self._name):
                self.expired(self._name)
                return self._acquire()
            return self._name

    def _alive(self, name: str) -> bool:
        try:
            self.client.caches.get(name=name)
        except Exception as exc:
            if is_not_found(exc) or classify(exc).code == CACHE_EXPIRED:
                return False
            fault = setup_fault(exc)
            if fault is not None:
                raise fault from exc
        return True  # found, or unknown for now: the lines' own answers will tell

    def expired(self, name: str) -> None:
        """A request naming ``name`` was refused for it: the next row creates a new one."""
        with self._lock:
            self.ledger.cache_expired(self.pipeline.name, self.digest, name=name)
            if self._name == name:
                self._name = None

    def _acquire(self) -> str | None:
        ledger, p = self.ledger, self.pipeline
        token = uuid.uuid4().hex
        now = ledger.clock()
        claim = ledger.reserve_cache(
            p.name,
            self.digest,
            token=token,
            model=p.model,
            fresh_until=now + self.margin_s,
            stale_before=now - CACHE_STALE_S,
        )
        if claim.action is CacheAction.USE:
            return self._keep(claim.record.name, claim.record.expires_at)
        if claim.action is CacheAction.WAIT:
            return None  # another live pass is creating it: this row goes inline
        crash_point("cache.after_reserve")
        try:
            found = self.find() if claim.taken_over else None
            if found is None:
                found = self.create()
        except Exception as exc:
            found = self._after_failed_create(exc, token)
            if found is None:
                return None
        name = str(found.name)
        expires_at = epoch_of(getattr(found, "expire_time", None), now + self.ttl_s)
        ledger.bind_cache(
            p.name,
            self.digest,
            token=token,
            name=name,
            expires_at=expires_at,
            tokens=_tokens(found),
        )
        crash_point("cache.after_bind")
        record = ledger.get_cache(p.name, self.digest)
        if record is None or record.state != CacheState.ACTIVE or record.name is None:
            return None  # taken over meanwhile and not bound yet: this row goes inline
        return self._keep(record.name, record.expires_at)

    def _after_failed_create(self, exc: BaseException, token: str) -> Any | None:
        """``caches.create`` (or the listing before it) failed. A fault of the setup halts.
        An answer that does not say the create was refused (a 5xx, a timeout, a dropped
        connection) may hide a cache that exists: it is looked for by display name and used
        if found. Otherwise the reservation is given back (kept when the listing failed too,
        so a later pass takes it over and looks again: never a cache left unaccounted) and
        the rest of this pass sends the prefix inline."""
        ledger, p = self.ledger, self.pipeline
        fault = setup_fault(exc)
        if fault is not None:
            ledger.release_cache(p.name, self.digest, token=token)
            raise fault from exc
        keep = False
        if not certainly_refused(exc):
            try:
                found = self.find()
            except Exception:
                found, keep = None, True
            if found is not None:
                return found
        if not keep:
            ledger.release_cache(p.name, self.digest, token=token)
        self.inline = True
        logging.getLogger("gemini_ledger.cache").warning(
            "%s: caches.create failed (%s): the prefix is sent inline this pass",
            p.name,
            redact(f"{type(exc).__name__}: {exc}")[:300],
        )
        return None

    def _keep(self, name: str | None, expires_at: float | None) -> str | None:
        self._name, self._expires_at = name, float(expires_at or 0)
        return name

    def create(self) -> Any:
        """One ``caches.create`` of the prefix under its display name and TTL (google-genai
        ``caches.py`` ``create``: ``CreateCachedContentConfig(ttl="<seconds>s", ...)``)."""
        contents = (
            [types.Content(role="user", parts=sdk_parts(self.prefix.contents()))]
            if self.prefix.parts
            else None
        )
        cache = self.client.caches.create(
            model=self.pipeline.model,
            config=types.CreateCachedContentConfig(
                display_name=self.display_name,
                system_instruction=self.prefix.system,
                contents=contents,
                ttl=f"{self.ttl_s}s",
            ),
        )
        crash_point("cache.after_create")
        self.created += 1
        return cache

    def find(self) -> Any | None:
        """A live cache of this prefix created earlier (its answer lost in a crash)."""
        now = time.time()
        config = types.ListCachedContentsConfig(page_size=_LIST_PAGE_SIZE)
        for cache in self.client.caches.list(config=config):
            if getattr(cache, "display_name", None) != self.display_name:
                continue
            if epoch_of(getattr(cache, "expire_time", None), now) - now > self.margin_s:
                return cache
        return None


def clean_caches(
    ledger: Ledger, pipeline: str, log: logging.Logger | Any, settings: Settings
) -> int:
    """Delete the caches of ``pipeline`` once every row of it is final; returns how many.
    The run's shared client is made only when one is due. Bound, expired and retired caches
    are deleted by name; a dead pass's reservation (its create may have made a cache whose
    name it never recorded) by the caches its display name finds (``caches.list``)."""
    # A reservation left when every row is final is a dead pass's whatever its age: a pass
    # reserves the cache only for rows it holds reserved (not final) and binds it before
    # sending them. (A tick crossing this with the next night's first create at worst
    # deletes that cache: its rows' requests are refused cache_expired, at no attempt, and
    # a new one is made.)
    due: list[CacheRecord] = ledger.caches_to_delete(pipeline=pipeline, stale_before=ledger.clock())
    if not due:
        return 0
    client = shared_client(settings)

    def delete(rec: CacheRecord) -> None:
        if rec.state != CacheState.RESERVING:
            client.caches.delete(name=str(rec.name))
            return
        display_name = cache_display_name(pipeline, rec.prefix_hash)
        config = types.ListCachedContentsConfig(page_size=_LIST_PAGE_SIZE)
        found = [
            str(c.name)
            for c in client.caches.list(config=config)
            if getattr(c, "display_name", None) == display_name
        ]
        for name in found:
            try:
                client.caches.delete(name=name)
            except Exception as exc:
                if not _gone(exc):
                    raise

    def deleted(rec: CacheRecord) -> bool:
        if rec.state == CacheState.RESERVING:
            return ledger.abandoned_cache_deleted(pipeline, rec.prefix_hash, token=rec.token)
        return ledger.cache_deleted(pipeline, rec.prefix_hash, name=rec.name)

    count = delete_due(
        due,
        delete=delete,
        gone=_gone,
        failed=lambda rec, error: ledger.cache_delete_failed(
            pipeline, rec.prefix_hash, error=error
        ),
        deleted=deleted,
        point="cache.after_delete",
        what=lambda rec: f"cache {rec.name or cache_display_name(pipeline, rec.prefix_hash)}",
        log=log,
        pipeline=pipeline,
    )
    if count:
        log.info("%s: deleted %d context caches", pipeline, count)
    return count


def _gone(exc: BaseException) -> bool:
    # Expired already (404, or the API's "CachedContent not found"): as good as deleted.
    return is_not_found(exc) or classify(exc).code == CACHE_EXPIRED
