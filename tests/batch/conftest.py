"""Fixtures and helpers for the batch channel tests: a fresh ledger per test, ticks in a loop."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from ledger import Ledger
from tests.ledgers import run_ledger

DAY = date(2026, 11, 22)
SETTLED = frozenset({"consumed", "parked"})


@pytest.fixture
def batch_env(emulator, prefect_api, sqlite_url, monkeypatch) -> dict[str, Any]:
    """The emulator, a Prefect API and a fresh SQLite ledger (also the results database)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("REVIEWS_RESULTS_URL", raising=False)
    monkeypatch.delenv("GEMINI_LEDGER_CRASH_AT", raising=False)
    return {"emulator": emulator, "prefect_api": prefect_api, "url": sqlite_url}


def outstanding(ledger: Ledger, pipeline: str) -> dict[str, int]:
    """Jobs of a pipeline not settled yet, by status."""
    by_status = ledger.counts(pipeline=pipeline).by_status
    return {s: n for s, n in by_status.items() if s not in SETTLED and n}


def tick_until_settled(
    spec: str, pipeline: str, *, max_ticks: int = 30, day: date = DAY
) -> list[dict[str, Any]]:
    """Run batch ticks until every job of the pipeline is consumed or parked (bounded)."""
    from flows.tick import tick

    ledger = run_ledger()
    reports = []
    for _ in range(max_ticks):
        reports.append(tick(pipeline=spec, day=day))
        if not outstanding(ledger, pipeline) and ledger.counts(pipeline=pipeline).total:
            # One more tick would find nothing to do; the caller may check that too.
            return reports
    raise AssertionError(
        f"{pipeline} not settled after {max_ticks} ticks: {outstanding(ledger, pipeline)}"
    )


def attempts_by_key(ledger: Ledger, pipeline: str) -> dict[str, int]:
    return {j.key: j.attempts for j in ledger.jobs(pipeline=pipeline)}


def submissions(emulator: Any, prefix: str) -> dict[str, int]:
    """The emulator's submissions per key, for keys of one pipeline."""
    return {k: n for k, n in emulator.stats()["submissions"].items() if k.startswith(prefix)}
