"""A tick killed (SIGKILL, a real subprocess) at each context-cache crash point: the next
tick takes the cache over (after a kill right after caches.create, finding it by its display
name), never creating a second cache for the night, never counting the cache as a row's
attempt, and deleting it once every row is final."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from ledger import CacheState, Status
from tests.killed_tick import tick_killed_at
from tests.test_cache_ticks import DAY, ITEMS, direct

SPEC = "tests.test_cache_ticks:direct"
NAME = "prefixed-direct"


@pytest.mark.parametrize(
    ("point", "created", "state"),
    [
        # Reserved, nothing created: taken over once stale, created once.
        ("cache.after_reserve", 0, CacheState.RESERVING),
        # Created, not bound: taken over once stale, found by display name, bound.
        ("cache.after_create", 1, CacheState.RESERVING),
        # Bound, no row sent: the next tick uses the bound cache.
        ("cache.after_bind", 1, CacheState.ACTIVE),
        # Deleted at the API, not marked: the next tick's delete is told it is gone.
        ("cache.after_delete", 1, CacheState.ACTIVE),
    ],
)
def test_a_tick_killed_around_the_cache_never_makes_two(
    emulator,
    prefect_api,
    sqlite_url,
    monkeypatch,
    tmp_path: Path,
    point: str,
    created: int,
    state: CacheState,
) -> None:
    """After a kill at each cache crash point the next tick (once the dead pass's
    reservation is stale) sends every row on its first attempt naming the one cache; the
    night made exactly one cache, and it is deleted at the end (the emulator stores none)."""
    from flows.testing import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    tick_killed_at(point, spec=SPEC, day=DAY, prefect_api=prefect_api, trace=tmp_path / "trace.txt")
    assert emulator.stats()["caches"]["created"] == created

    ledger = open_ledger(sqlite_url)
    assert direct.cached_prefix is not None
    digest = direct.cached_prefix.digest(direct.model)
    cache = ledger.get_cache(NAME, digest)
    assert cache is not None and cache.state == state.value
    # The cache's stale age (5 min) passes: nothing to wait on in a test, so its clock is
    # moved instead.
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE caches SET reserved_at = reserved_at - 7200"))
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_STALE_S", "0")
    tick(pipeline=SPEC, day=DAY)

    stats = emulator.stats()
    assert stats["caches"]["created"] == 1  # after_create: found by display name, not made again
    assert stats["caches"]["stored"] == 0
    for i in range(len(ITEMS)):
        row = ledger.get(f"{NAME}:{i}")
        assert (row.status, row.attempts) == (Status.CONSUMED.value, 1)
    named = {k: c for k, c in emulator.cached().items() if k.startswith(f"{NAME}:")}
    assert len(named) == len(ITEMS) and len(set(named.values())) == 1
    cache = ledger.get_cache(NAME, digest)
    assert cache is not None
    assert (cache.state, cache.creates) == (CacheState.DELETED.value, 1)


def test_a_cache_created_by_a_killed_pass_is_deleted_by_the_next_tick(
    emulator, prefect_api, sqlite_url, monkeypatch, tmp_path: Path
) -> None:
    """A tick killed right after caches.create, and the next tick comes before the dead
    pass's reservation is stale: its rows go inline and finish, and its end still finds the
    dead pass's cache by display name and deletes it (the emulator stores none)."""
    from flows.testing import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    tick_killed_at("cache.after_create", spec=SPEC, day=DAY, prefect_api=prefect_api)
    assert emulator.stats()["caches"]["stored"] == 1
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_STALE_S", "0")
    tick(pipeline=SPEC, day=DAY)

    ledger = open_ledger(sqlite_url)
    assert {j.status for j in ledger.jobs(pipeline=NAME)} == {Status.CONSUMED.value}
    stats = emulator.stats()
    assert (stats["caches"]["created"], stats["caches"]["stored"]) == (1, 0)
    assert direct.cached_prefix is not None
    cache = ledger.get_cache(NAME, direct.cached_prefix.digest(direct.model))
    assert cache is not None and cache.state == CacheState.DELETED.value
