"""Three process workers, one Prefect server, one PostgreSQL ledger, one night on every
channel: nothing submitted or published twice, attempts equal to what the emulator counted,
every row settled, and the emulator never saw more requests a minute than the shared limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.multiworker.night import MODEL, Night, run_night

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.alone]

# Small enough for CI on 2 cores: the quota-counted requests (~130: direct and background
# calls with their scripted 429 and 503 retries, a few batch creations) are well above RPM,
# so the limit has to hold them back (at 90 rpm, harder than the ~250 requests under 150 rpm
# before). Every 50th item is emoji only: one each on the background and direct channels
# (parked as empty); the batch channel's 49 items have none (its empty answers are proven by
# tests/batch). Before: 600 batch, 120 background and 120 direct items, every 97th emoji; the
# same claims over five times the items.
NIGHT = Night(
    items={"batch": 49, "background": 60, "direct": 60}, rpm=90, concurrency=6, emoji_every=50
)


def test_three_workers_share_one_night_and_one_quota(postgres_url: str, tmp_path: Path) -> None:
    """Three workers on one pool settle a night exactly once, within the shared rate limit.

    Still proven at this size: two runs of every deployment at once on three workers, one
    ledger and one quota; 429s that pause every worker; every row delivered once or parked
    (emoji only: empty), attempts equal to what the API counted, tokens equal to what it
    billed; more requests than the per-minute limit, and never more than it in a minute."""
    result = run_night(NIGHT, root=tmp_path, ledger_url=postgres_url)
    print(  # with -s: the figures behind the assertions
        f"waves {result.waves}, {result.seconds:.0f} s, rates {result.rates},"
        f" runs per worker {result.runs_per_worker}"
    )

    assert f"created: gemini-ledger:{MODEL}:rpm" in result.limits_output
    assert f"created: gemini-ledger:{MODEL}:inflight" in result.limits_output
    for channel, verdict in result.verdicts.items():
        assert verdict.problems == [], (channel, verdict.problems[:10])
        assert verdict.lost == verdict.duplicated == verdict.over_submitted == 0, channel
        assert verdict.consumed + verdict.parked == NIGHT.items[channel], channel
        assert verdict.parked_by_class.keys() <= {"empty"}, (channel, verdict.parked_by_class)
        # Every attempt the ledger counts is one submission the emulator counted, no more.
        assert verdict.attempts == verdict.submissions, (channel, verdict.as_dict())
    any_verdict = next(iter(result.verdicts.values()))
    assert any_verdict.recorded_tokens == any_verdict.billed_tokens
    assert sum(v.parked for v in result.verdicts.values()) > 0, "the emoji items were parked"

    rates = result.rates
    assert rates["requests"] > NIGHT.rpm, rates  # the limit had something to hold back
    assert rates["max_per_minute"] <= NIGHT.rpm, rates
    assert sum(1 for n in result.runs_per_worker.values() if n) >= 2, result.runs_per_worker
    not_completed = [r for r in result.runs if r["state"] != "COMPLETED"]
    assert not not_completed, not_completed
