"""What a process remembers between runs lives in flows._caches, and reset() forgets it."""

from __future__ import annotations

from datetime import date

from flows.examples.reviews import pipeline as reviews
from flows.gemini.gateway import find_api_key, key_source, shared_client
from flows.settings import Settings
from flows.testing import RunContext, open_ledger
from flows.testing import process_caches as _caches


def test_reset_forgets_the_ledgers_keys_and_clients(sqlite_url: str) -> None:
    """One ledger, key and client per process and setting until reset(); new ones after."""
    settings = Settings.given(database_url=sqlite_url, api_key="k-one")
    ledger, client = open_ledger(sqlite_url), shared_client(settings)
    assert open_ledger(sqlite_url) is ledger and shared_client(settings) is client
    assert key_source() is not None and "GEMINI_API_KEY" in key_source().where
    _caches.reset()
    assert not (_caches.ledgers or _caches.clients or _caches.api_keys or _caches.last_key)
    assert open_ledger(sqlite_url) is not ledger and shared_client(settings) is not client


def test_the_run_context_carries_the_gateways_one_client(sqlite_url: str) -> None:
    """A run's client is the gateway's client for its settings: there is no second cache, and
    another key gets another client."""
    settings = Settings.given(database_url=sqlite_url, api_key="k-two")
    ctx = RunContext(
        spec="reviews",
        pipeline=reviews,
        ledger=open_ledger(sqlite_url),
        settings=settings,
        day=date(2026, 12, 6),
    )
    assert ctx.client is shared_client(settings)
    other = Settings.given(database_url=sqlite_url, api_key="k-three")
    assert shared_client(other) is not ctx.client
    found = find_api_key(other)
    assert found is not None and found.value == "k-three"
