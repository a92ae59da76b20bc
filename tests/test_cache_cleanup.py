"""The end of a tick deletes every context cache the night made (``clean_caches``, against
the emulator): the current one, one a newer create superseded (kept in a retired row), and
one a killed pass created but never bound (found by display name)."""

from __future__ import annotations

import logging
from typing import Any

from google.genai import types

from flows.settings import Settings
from flows.testing import cache_display_name, clean_caches
from ledger import CacheAction, CacheState, Ledger

log = logging.getLogger("tests.cache_cleanup")
P = "p"
LIVE, DEAD = "a" * 64, "b" * 64
REFERENCE = "The house style guide. " * 400  # over Flash's 1,024-token minimum


def _create(client: Any, digest: str) -> str:
    cache = client.caches.create(
        model="gemini-2.5-flash",
        config=types.CreateCachedContentConfig(
            display_name=cache_display_name(P, digest),
            contents=[types.Content(role="user", parts=[types.Part(text=REFERENCE)])],
            ttl="3600s",
        ),
    )
    return str(cache.name)


def _reserve(ledger: Ledger, digest: str, token: str, fresh_until: float) -> CacheAction:
    claim = ledger.reserve_cache(
        P, digest, token=token, model="m", fresh_until=fresh_until, stale_before=0.0
    )
    return claim.action


def test_every_cache_of_the_night_is_deleted_at_the_end(emulator, sqlite_url) -> None:
    """A superseded cache and a dead pass's unbound one are deleted with the current one
    (no row left to read them): the emulator stores none, every cache row ends deleted."""
    ledger = Ledger(sqlite_url)
    client = emulator.client()
    now = ledger.clock()
    # The first cache expires too soon for a row: a second create supersedes it.
    assert _reserve(ledger, LIVE, "t1", now) is CacheAction.CREATE
    ledger.bind_cache(
        P, LIVE, token="t1", name=_create(client, LIVE), expires_at=now + 10, tokens=1
    )
    assert _reserve(ledger, LIVE, "t2", now + 100) is CacheAction.CREATE
    ledger.bind_cache(
        P, LIVE, token="t2", name=_create(client, LIVE), expires_at=now + 3600, tokens=1
    )
    # A pass reserved and created, then died before binding.
    assert _reserve(ledger, DEAD, "t3", now) is CacheAction.CREATE
    _create(client, DEAD)
    assert emulator.stats()["caches"]["stored"] == 3

    settings = Settings.given(
        database_url=sqlite_url, api_key="test-key", gemini_base_url=emulator.base_url
    )
    assert clean_caches(ledger, P, log, settings) == 3
    assert emulator.stats()["caches"]["stored"] == 0
    assert {c.state for c in ledger.caches(P)} == {CacheState.DELETED.value}
    assert clean_caches(ledger, P, log, settings) == 0
    ledger.dispose()
