"""The batch channel end to end: real SDK against the emulator, real Prefect flow runs."""

from __future__ import annotations

from typing import Any

from flows._ledger import open_ledger
from flows.batch import batch_tick

from .conftest import DAY, attempts_by_key, outstanding, submissions, tick_until_settled

SCRIPTED = "tests.batch.pipelines:scripted"


def _key(name: str) -> str:
    return f"scripted:{DAY.isoformat()}:{name}:v1"


def test_scripted_rows_end_in_their_exact_state(batch_env: dict[str, Any]) -> None:
    """Transient rows succeed within the cap, permanent ones park after one attempt, a row
    missing from the output is caught and resent, a row that keeps failing is exhausted."""
    emu = batch_env["emulator"]
    emu.set_scenario(
        {
            "batch_polls_to_complete": 1,
            "scripts": [
                {"match": _key("k-flaky"), "steps": ["503", "503", "ok"]},
                {"match": _key("k-bad"), "steps": ["400"]},
                {"match": _key("k-unsafe"), "steps": ["safety"]},
                {"match": _key("k-lost"), "steps": ["missing", "ok"]},
                {"match": _key("k-always503"), "steps": ["503"]},
            ],
        }
    )
    first = batch_tick(pipeline=SCRIPTED, day=DAY)
    assert first["enrolled"] == 6 and first["submitted"] == 6 and first["batch"]
    second = batch_tick(pipeline=SCRIPTED, day=DAY)
    assert second["reconciled"] == 1
    assert second["missing_from_output"] == 1
    assert second["succeeded"] == 1
    assert second["parked"] == {"permanent:400": 1, "safety": 1}
    assert second["retryable_by_class"] == {"missing_from_output": 1, "retryable:503": 2}
    ledger = open_ledger()
    lost = ledger.get(_key("k-lost"))
    assert (lost.status, lost.error_class) in {
        ("retryable", "missing_from_output"),
        ("submitted", "missing_from_output"),
    }

    tick_until_settled(SCRIPTED, "scripted", max_ticks=8)
    jobs = {j.key.split(":")[2]: j for j in ledger.jobs(pipeline="scripted")}
    state = {k: (j.status, j.error_class, j.attempts) for k, j in jobs.items()}
    assert state == {
        "k-ok": ("consumed", None, 1),
        "k-flaky": ("consumed", None, 3),
        "k-bad": ("parked", "permanent:400", 1),
        "k-unsafe": ("parked", "safety", 1),
        "k-lost": ("consumed", None, 2),
        "k-always503": ("parked", "exhausted:503", 4),
    }
    assert attempts_by_key(ledger, "scripted") == submissions(emu, "scripted:")
    # One more tick finds nothing left to send.
    last = batch_tick(pipeline=SCRIPTED, day=DAY)
    assert last["submitted"] == 0 and last["enrolled"] == 0
    assert not outstanding(ledger, "scripted")
