"""No deployment configured: the receiver runs the real reconcile flow in this process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date

import pytest

from emulator.testing import RunningEmulator
from flows.settings import Settings
from flows.tick import tick
from flows.webhooks.receiver import start_reconcile
from tests.ledgers import run_ledger

from .conftest import SECRET, Receiver, wait_until

DAY = date(2026, 11, 22)


def test_emulator_webhook_reconciles_a_batch_in_process(
    serve_receiver: Callable[..., Receiver],
    prefect_api: str,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's completion webhook reconciles and delivers its rows without another tick."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    for name in ("REVIEWS_RESULTS_URL", "LEDGER_RECONCILE_DEPLOYMENT", "GEMINI_LEDGER_CRASH_AT"):
        monkeypatch.delenv(name, raising=False)
    calls: list[str] = []

    def dispatch(job_name: str) -> None:
        calls.append(job_name)
        # The receiver's default: no deployment in its settings, so in process.
        start_reconcile(job_name, Settings.given())

    receiver = serve_receiver(ledger_url=sqlite_url, on_batch_complete=dispatch)
    with RunningEmulator(
        # The job finishes on its own a moment after it is created: only the webhook can
        # tell us, since no further tick runs in this test.
        scenario={"batch_seconds_to_complete": 1.0, "webhook_duplicate_rate": 1.0},
        seed=11,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
    ) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        # A shipped pipeline: reconcile finds the pipeline by the name the ledger stored.
        report = tick(pipeline="reviews", day=DAY)
        assert report.submitted > 0 and report.submit.batch
        ledger = run_ledger()

        def settled() -> bool:
            by_status = ledger.counts(pipeline="reviews").by_status
            return by_status.get("consumed", 0) + by_status.get("parked", 0) == report.submitted

        wait_until(
            settled,
            timeout=90,
            what="the webhook's reconcile to consume every row",
        )
        for thread in threading.enumerate():
            if thread.name.startswith("reconcile-"):
                thread.join(timeout=60)
        stats = emu.stats()
    assert calls == [report.submit.batch]  # delivered twice, reconciled once
    assert stats["webhooks_sent"] == 2
    (row,) = receiver.deliveries()
    assert (row["subject"], row["processed_at"] is not None) == (report.submit.batch, True)
    jobs = ledger.jobs(pipeline="reviews")
    assert len(jobs) == report.submitted
    assert {j.attempts for j in jobs} == {1}
    assert sum(j.status == "consumed" for j in jobs) > len(jobs) // 2
