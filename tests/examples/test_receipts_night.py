"""A night of the receipts example against the default scenario, on both backends: every
document's fields in the day's file or its row parked, attempts equal to what the emulator
received, the shared policy PDF uploaded once for every row, and nothing left in the Files
API at the end."""

from __future__ import annotations

import time
from datetime import date

from flows.examples import receipts
from flows.testing import open_ledger
from ledger import Status, UploadState

DAY = date(2026, 12, 6)
NAME = "receipts"
# What a row may be parked as under the default scenario (see tests/batch/test_night.py).
PARKED_CLASSES = {
    "permanent:400",
    "safety",
    "exhausted:429",
    "exhausted:500",
    "exhausted:503",
    "exhausted:missing_from_output",
    "exhausted:batch_failed",
}
FINAL = {Status.CONSUMED.value, Status.PARKED.value}


def test_a_receipts_night_settles_and_leaves_no_file_behind(
    emulator, prefect_api, ledger_url, monkeypatch, tmp_path
) -> None:
    """Ticks until every document is consumed or parked and the emulator stores no file:
    attempts equal the emulator's submissions per key; each consumed document has its
    fields in the day's file; fewer uploads were made than rows that read them."""
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", ledger_url)
    monkeypatch.setenv(receipts.RECEIPTS_DIR_ENV, str(tmp_path))
    emulator.set_scenario("default", seed=20261206)
    ledger = open_ledger(ledger_url)
    deadline = time.monotonic() + 240
    ticks = 0
    while True:
        tick(pipeline=NAME, day=DAY)
        ticks += 1
        settled = set(ledger.counts(pipeline=NAME).by_status) <= FINAL
        if settled and emulator.stats()["files"]["stored"] == 0:
            break
        assert time.monotonic() < deadline and ticks < 40, (
            ledger.counts(pipeline=NAME).by_status,
            emulator.stats()["files"],
        )

    jobs = ledger.jobs(pipeline=NAME)
    documents = list(receipts.load_documents(DAY))
    assert len(jobs) == len(documents) == 13
    assert {j.status for j in jobs} <= FINAL
    parked = [j for j in jobs if j.status == Status.PARKED.value]
    assert {j.error_class for j in parked} <= PARKED_CLASSES

    stats = emulator.stats()
    received = {k: n for k, n in stats["submissions"].items() if k.startswith(f"{NAME}:")}
    assert {j.key: j.attempts for j in jobs} == received
    assert sum(received.values()) > len(jobs)  # this seed's night resends rows: not vacuous
    assert stats["files"]["stored"] == 0  # inputs, responses and uploads all deleted

    # The uploads: the policy PDF (every row) and the invoice PDF (one row), each made once
    # unless it expired, each deleted now that the rows reading it are final.
    uploads = ledger.uploads(NAME)
    users = ledger.upload_users(NAME)
    made = sum(u.uploads for u in uploads)
    rows_using = len({key for keys in users.values() for key in keys})
    uses = sum(len(keys) for keys in users.values())
    attempts = sum(j.attempts for j in jobs)
    print(
        f"\nreceipts night: {ticks} ticks, {attempts} attempts for {len(jobs)} rows"
        f" ({len(parked)} parked); {made} uploads made for {uses} uses by {rows_using} rows"
    )
    assert len(uploads) == 2
    assert all(u.state == UploadState.DELETED.value for u in uploads)
    assert sorted(len(keys) for keys in users.values()) == [1, len(jobs)]
    assert made < rows_using

    fields = receipts.read_fields(DAY.isoformat())
    consumed = {j.key for j in jobs if j.status == Status.CONSUMED.value}
    assert consumed, "a default night gets most documents through"
    assert {line["key"] for line in fields.values()} == consumed
    for line in fields.values():
        receipts.ReceiptFields.model_validate(line["fields"])
