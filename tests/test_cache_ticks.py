"""A night of a pipeline with a cached shared prefix, on the direct and the batch channel,
against the default scenario: one context cache made for the night, named by every request,
its tokens recorded on the rows as cached and priced at the cache rate, and deleted once
every row is final."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import BaseModel, Field

from flows import CachedPrefix, Pipeline, Prompt
from flows.testing import UsageLine, estimate_cost, load_prices, open_ledger
from ledger import CacheState, Channel, Status

DAY = date(2026, 12, 6)
ITEMS = [f"review {i}: the app {'crashes' if i % 3 else 'works'} on start" for i in range(40)]
# A long shared start: the style guide every request reads (about 2,300 tokens by the
# emulator's count, over the 1,024-token minimum of a Flash cache).
GUIDE = "House style: label a review as bug, feature, praise or other. " * 150
SETTLED = {Status.CONSUMED.value, Status.PARKED.value}


class Label(BaseModel):
    label: str = Field(min_length=1)


def _pipeline(channel: Channel) -> Pipeline[str]:
    return Pipeline(
        name=f"prefixed-{channel.value}",
        model="gemini-2.5-flash",
        channel=channel,
        output=Label,
        load_items=lambda day: ITEMS,
        key_of=lambda item, day: f"prefixed-{channel.value}:{ITEMS.index(item)}",
        build_prompt=lambda item: Prompt(text=item),
        on_result=lambda key, result: None,
        cached_prefix=CachedPrefix(system="You label app reviews.", parts=(GUIDE,)),
    )


direct = _pipeline(Channel.DIRECT)
batch = _pipeline(Channel.BATCH)


@pytest.mark.parametrize("channel", [Channel.DIRECT, Channel.BATCH])
def test_a_night_with_a_cached_prefix(
    channel: Channel, emulator, prefect_api, sqlite_url, monkeypatch
) -> None:
    """Ticks until settled: one cache is created for the night (a ledger row, created
    once), every request that reached the API named it, each answer's cached tokens are
    the cache's and are recorded on its row, the cost prices them at the cache rate
    (non-batch rate on the batch channel), attempts equal what the emulator received, and
    the cache is deleted at the end (the emulator stores none)."""
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "0.01")
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_JITTER", "0")
    emulator.set_scenario("default", seed=20261206)
    name = f"prefixed-{channel.value}"
    ledger = open_ledger(sqlite_url)
    for _ in range(12):
        tick(pipeline=f"tests.test_cache_ticks:{channel.value}", day=DAY)
        if set(ledger.counts(pipeline=name).by_status) <= SETTLED:
            break
    jobs = ledger.jobs(pipeline=name)
    assert len(jobs) == len(ITEMS) and {j.status for j in jobs} <= SETTLED

    stats = emulator.stats()
    assert stats["caches"]["created"] == 1
    assert stats["caches"]["stored"] == 0 and stats["caches"]["deleted"] == 1
    (cache,) = ledger.caches(name)
    assert (cache.state, cache.creates) == (CacheState.DELETED.value, 1)
    assert cache.tokens > 1024
    # Every request of the night named the one cache.
    received = {k: n for k, n in stats["submissions"].items() if k.startswith(f"{name}:")}
    assert {j.key: j.attempts for j in jobs} == received
    named = {k: c for k, c in emulator.cached().items() if k.startswith(f"{name}:")}
    assert named == dict.fromkeys(received, cache.name)
    # The cached tokens of every answer are the cache's, recorded on the row.
    consumed = [j for j in jobs if j.status == Status.CONSUMED.value]
    assert len(consumed) > len(ITEMS) // 2
    for job in consumed:
        view = ledger.get(job.key)
        assert view.cached_tokens >= cache.tokens and view.cached_tokens % cache.tokens == 0
        assert view.prompt_tokens > view.cached_tokens
    usage = [UsageLine.of(u) for u in ledger.usage_by_model(pipeline=name)]
    assert sum(u.cached_tokens for u in usage) == stats["billed"]["cached_tokens"]
    assert stats["billed"]["cached_tokens"] >= cache.tokens * len(consumed)
    # Priced at the cache rate: the same usage without cached tokens costs more, by
    # exactly the cached tokens times (the prompt rate, batch-discounted on the batch
    # channel) minus the cache rate (never discounted).
    prices = load_prices(None)
    price = prices.price_of("gemini-2.5-flash")
    assert price is not None and price.cached is not None and price.cached < price.prompt
    cached = sum(u.cached_tokens for u in usage)
    plain = [
        UsageLine(
            u.model,
            u.channel,
            u.prompt_tokens,
            u.candidates_tokens,
            u.total_tokens,
            u.thoughts_tokens,
            0,
            u.audio_tokens,
            u.model_version,
            u.rows,
        )
        for u in usage
    ]
    rate = price.prompt * (prices.batch_multiplier if channel is Channel.BATCH else 1.0)
    saved = estimate_cost(plain, prices).usd - estimate_cost(usage, prices).usd
    assert saved == pytest.approx(cached * (rate - price.cached) / 1_000_000)


def test_a_refused_create_sends_the_prefix_inline(
    emulator, prefect_api, sqlite_url, monkeypatch
) -> None:
    """caches.create answered 503: the tick makes no second try, leaves no cache row and
    sends every row with the prefix inline (billed in full, nothing cached); all delivered
    on their first attempt."""
    from emulator.testing import count_tokens
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    emulator.set_scenario({"name": "clean", "route_faults": {"caches.create": ["503"]}})
    tick(pipeline="tests.test_cache_ticks:direct", day=DAY)
    ledger = open_ledger(sqlite_url)
    stats = emulator.stats()
    assert (
        sum(
            n
            for r, n in stats["requests"].items()
            if r.startswith("POST ") and r.endswith("/cachedContents")
        )
        == 1
    )
    assert stats["caches"]["created"] == 0 and emulator.cached() == {}
    assert ledger.caches("prefixed-direct") == []
    for i in range(len(ITEMS)):
        row = ledger.get(f"prefixed-direct:{i}")
        assert (row.status, row.attempts, row.cached_tokens) == (Status.CONSUMED.value, 1, 0)
        assert row.prompt_tokens >= count_tokens(GUIDE)


def test_a_create_answered_504_after_it_made_the_cache_uses_that_cache(
    emulator, prefect_api, sqlite_url, monkeypatch
) -> None:
    """caches.create made the cache and its answer was lost (504): the tick looks the cache
    up by its display name and names it in every request; one cache for the night, deleted
    at the end."""
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    emulator.set_scenario({"name": "clean", "route_faults": {"caches.create": ["accepted_504"]}})
    tick(pipeline="tests.test_cache_ticks:direct", day=DAY)
    ledger = open_ledger(sqlite_url)
    stats = emulator.stats()
    assert (stats["caches"]["created"], stats["caches"]["stored"]) == (1, 0)
    (cache,) = ledger.caches("prefixed-direct")
    assert (cache.state, cache.creates) == (CacheState.DELETED.value, 1)
    named = {k: c for k, c in emulator.cached().items() if k.startswith("prefixed-direct:")}
    assert named == {f"prefixed-direct:{i}": cache.name for i in range(len(ITEMS))}


def test_a_batch_cache_gone_before_its_job_ran_is_made_again(
    emulator, prefect_api, sqlite_url, monkeypatch
) -> None:
    """The cache is deleted at the API behind the ledger's back before the batch job reads
    its lines: the lines fail "CachedContent not found", the rows come back retryable
    (cache_expired, never parked, never a fault of the setup, at no attempt), the next
    submission finds the cache gone and makes a new one, and the rows are delivered naming
    it; both caches end deleted."""
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    spec, name = "tests.test_cache_ticks:batch", "prefixed-batch"
    ledger = open_ledger(sqlite_url)
    tick(pipeline=spec, day=DAY)  # enrolled, sent under the night's cache
    (first,) = ledger.caches(name)
    client = emulator.client()
    client.caches.delete(name=first.name)
    for _ in range(4):
        tick(pipeline=spec, day=DAY)
        if set(ledger.counts(pipeline=name).by_status) <= SETTLED:
            break
    jobs = ledger.jobs(pipeline=name)
    assert {j.status for j in jobs} == {Status.CONSUMED.value}
    # The refused lines cost no attempt (the cache was not theirs to lose).
    assert {j.attempts for j in jobs} == {1}
    cache = ledger.get_cache(name, first.prefix_hash)
    assert cache is not None and cache.name != first.name and cache.creates == 2
    # The first cache's name is kept (retired) and deleted with the new one at the end.
    assert {(c.name, c.state) for c in ledger.caches(name)} == {
        (first.name, CacheState.DELETED.value),
        (cache.name, CacheState.DELETED.value),
    }
    stats = emulator.stats()
    assert (stats["caches"]["created"], stats["caches"]["stored"]) == (2, 0)
    named = {k: c for k, c in emulator.cached().items() if k.startswith(f"{name}:")}
    assert set(named.values()) == {cache.name}
