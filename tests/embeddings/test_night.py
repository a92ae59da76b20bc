"""A night of the review-embeddings example against the default scenario: every review's
vector in the day's file or its row parked, attempts equal to what the emulator received."""

from __future__ import annotations

import math
from datetime import date

from flows.examples import review_embeddings
from flows.examples.reviews import load_reviews
from flows.testing import open_ledger
from ledger import Status

DAY = date(2026, 12, 6)
SPEC = "review-embeddings"
# What a row may be parked as under the default scenario: a 400 (permanent), a transient
# fault past the attempt cap, an emoji-only review answered an empty vector (unknown cap).
PARKED_CLASSES = {
    "permanent:400",
    "exhausted:in_group:400",
    "exhausted:429",
    "exhausted:500",
    "exhausted:503",
    "empty",
}


def test_a_night_settles_and_attempts_equal_what_the_emulator_received(
    emulator, prefect_api, sqlite_url, monkeypatch, tmp_path
) -> None:
    """Ticks until settled: every review consumed or parked with a class the scenario
    explains; each row's attempts equal the emulator's submissions of its key; a call
    carried many rows; every consumed review has one line of 768 finite values in the
    day's vector file, the ledger's stored result."""
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv(review_embeddings.VECTORS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "0.01")
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_JITTER", "0")
    emulator.set_scenario("default", seed=20261206)
    ledger = open_ledger(sqlite_url)
    for _ in range(8):
        tick(pipeline=SPEC, day=DAY)
        by_status = ledger.counts(pipeline=SPEC).by_status
        if set(by_status) <= {Status.CONSUMED.value, Status.PARKED.value}:
            break
    jobs = ledger.jobs(pipeline=SPEC)
    assert len(jobs) == len(list(load_reviews(DAY)))
    assert {j.status for j in jobs} <= {Status.CONSUMED.value, Status.PARKED.value}
    parked = [j for j in jobs if j.status == Status.PARKED.value]
    assert {j.error_class for j in parked} <= PARKED_CLASSES
    assert any(j.error_class == "empty" for j in parked)  # the emoji-only reviews

    stats = emulator.stats()
    received = {k: n for k, n in stats["submissions"].items() if k.startswith(f"{SPEC}:")}
    assert {j.key: j.attempts for j in jobs} == received
    calls = sum(n for route, n in stats["requests"].items() if "batchEmbedContents" in route)
    # Several rows per call (a call refused for one input sends its rows again one by one).
    assert 0 < calls < len(jobs) / 2

    assert ledger.counts(pipeline=SPEC).total_tokens == stats["billed"]["total_tokens"]

    vectors = review_embeddings.read_vectors(DAY.isoformat())
    consumed = {j.key: j for j in jobs if j.status == Status.CONSUMED.value}
    assert {v["key"] for v in vectors.values()} == set(consumed)
    for line in vectors.values():
        values = line["values"]
        assert len(values) == review_embeddings.DIMENSION
        assert all(math.isfinite(v) for v in values)
        assert ledger.get(line["key"]).result == f'{{"values":{_compact(values)}}}'


def _compact(values: list[float]) -> str:
    import orjson

    return orjson.dumps(values).decode()
