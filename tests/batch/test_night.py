"""A night of the default scenario over a few hundred sample reviews, on both backends."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from flows.examples.reviews import ReviewLabelRow, load_reviews, results_engine
from tests.ledgers import run_ledger

from .conftest import DAY, attempts_by_key, submissions, tick_until_settled

# What a row of the default scenario may be parked as (see emulator/_scenario.py "default").
PARKED_CLASSES = {
    "permanent:400",
    "safety",
    "empty",
    "exhausted:429",
    "exhausted:500",
    "exhausted:503",
    "exhausted:missing_from_output",
    "exhausted:batch_failed",
}


def test_a_night_settles_every_row_and_bills_each_attempt_once(
    emulator, prefect_api, ledger_url, monkeypatch
) -> None:
    """After enough ticks every review is consumed or parked with a class the scenario
    explains; attempts equal what the emulator was sent, per key; emoji-only reviews park
    as empty; every consumed review has exactly one label in the results table."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", ledger_url)
    monkeypatch.delenv("REVIEWS_RESULTS_URL", raising=False)
    emulator.set_scenario("default", seed=20261122)
    reports = tick_until_settled("tests.batch.pipelines:night_reviews", "night", max_ticks=30)

    ledger = run_ledger()
    jobs = ledger.jobs(pipeline="night")
    assert len(jobs) == 300
    assert {j.status for j in jobs} <= {"consumed", "parked"}
    consumed = [j for j in jobs if j.status == "consumed"]
    parked = [j for j in jobs if j.status == "parked"]
    assert len(consumed) > 200, "most reviews should get through a default night"
    assert {j.error_class for j in parked} <= PARKED_CLASSES
    # Permanent failures are never resent: their attempt count is what the emulator saw,
    # and transient ones never exceed the cap.
    assert all(j.attempts <= 4 for j in jobs)
    assert attempts_by_key(ledger, "night") == submissions(emulator, "night:")
    assert ledger.counts(pipeline="night").attempts == sum(submissions(emulator, "night:").values())
    # Emoji-only reviews get an empty answer from the default scenario: retried once, then
    # parked as empty (unless another fault parked them first).
    emoji_keys = {
        f"night:{DAY.isoformat()}:{r['id']}:v1"
        for r in list(load_reviews(DAY))[:300]
        if r["lang"] == "und"
    }
    assert emoji_keys
    by_key = {j.key: j for j in jobs}
    assert all(by_key[k].status == "parked" for k in emoji_keys)
    assert any(by_key[k].error_class == "empty" for k in emoji_keys)
    # Results: one label per consumed key, each the ledger's validated result.
    with results_engine().connect() as conn:
        rows = conn.execute(
            select(ReviewLabelRow.key, ReviewLabelRow.category).where(  # type: ignore[call-overload]
                ReviewLabelRow.key.like("night:%")  # type: ignore[attr-defined]
            )
        ).all()
        assert conn.execute(select(func.count()).select_from(ReviewLabelRow)).scalar() == len(rows)
    assert {k for k, _ in rows} == {j.key for j in consumed}
    assert all(dict(rows)[j.key] == orjson.loads(j.result or "{}")["category"] for j in consumed)
    # Tokens the ledger recorded are what the emulator billed.
    billed = emulator.stats()["billed"]
    assert ledger.counts(pipeline="night").total_tokens == billed["total_tokens"]
    # The ticks reported what they did.
    assert sum(r.collect.reconciled for r in reports) >= 2
    assert sum(r.collect.succeeded for r in reports) == len(consumed)
