"""The real API's faults of the setup that look like a row's (issue 21): a retired model (404),
a spent per-day quota or none at all (429), a key blocked for having no API restrictions
(403). Each halts the tick on every channel: a Failed run with one line naming the cause and
the fix, nothing parked, no attempt kept; the night settles once the fault is gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from tests.halt.conftest import CHANNELS, GOOD_KEY, Channel, tick_command

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemini-2.5-flash"  # every channel's test pipeline uses it

FAULTS: dict[str, tuple[dict[str, Any], str, tuple[str, ...]]] = {
    "retired model": (
        {"retired_models": [MODEL]},
        "model_not_found",
        (f"does not serve model {MODEL}", "is not found for API version", "model="),
    ),
    "per-day quota": (
        {"quota_fault": "per_day"},
        "daily_quota",
        ("GenerateRequestsPerDayPerProjectPerModel", "midnight Pacific time"),
    ),
    "limit 0": ({"quota_fault": "limit_zero"}, "no_quota", ("limit: 0", MODEL, "billing")),
    "unrestricted key": (
        {"project_fault": "key_unrestricted"},
        "key_unrestricted",
        (
            "API_KEY_SERVICE_BLOCKED",
            "restrict the key in GEMINI_API_KEY (the worker's environment) to the Gemini API",
        ),
    ),
}


def _no_harm_done(ledger: Ledger, ch: Channel) -> None:
    counts = ledger.counts(pipeline=ch.pipeline)
    assert set(counts.by_status) <= {"pending"}, counts.by_status  # nothing parked or held
    assert counts.attempts == 0  # every attempt given back
    assert counts.possible_duplicates == 0


def _settle(ch: Channel, ledger: Ledger, max_ticks: int = 6) -> None:
    for _ in range(max_ticks):
        ch.tick()
        if set(ledger.counts(pipeline=ch.pipeline).by_status) == {"consumed"}:
            return
    raise AssertionError(f"{ch.name} not settled: {ledger.counts(pipeline=ch.pipeline)}")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("channel", list(CHANNELS))
def test_a_real_setup_fault_halts_every_channel_and_parks_nothing(world, channel, fault):
    """Retired model, spent daily quota, limit 0, unrestricted key: the run is Failed with
    one line naming the cause and the fix, nothing parked, no attempt counted, on the next
    tick too; once fixed, the same night ends all consumed on one attempt each."""
    scenario, kind, words = FAULTS[fault]
    emulator = world["emulator"]
    emulator.set_scenario({"name": "real-setup", "valid_api_keys": [GOOD_KEY], **scenario})
    ch = CHANNELS[channel]
    ledger = Ledger(world["url"])
    for _ in range(2):
        state = ch.tick(return_state=True)
        assert state.is_failed()
        found = state.result(raise_on_failure=False)
        assert found.kind.value == kind, state.message
        message = state.message or ""
        assert "\n" not in message and "Fix:" in message
        for word in words:
            assert word in message, message
        _no_harm_done(ledger, ch)
    emulator.set_scenario({"name": "fixed", "valid_api_keys": [GOOD_KEY]})
    _settle(ch, ledger)
    assert ledger.counts(pipeline=ch.pipeline).attempts == ch.rows


def test_a_daily_quota_spent_mid_run_halts_the_direct_calls_left(world):
    """A per-day 429 on one call of a direct run: that row gets its attempt back, the calls
    not yet made are not made, rows already answered stay delivered; nothing is parked."""
    ch = CHANNELS["direct"]
    world["emulator"].set_scenario(
        {
            "name": "daily-mid-run",
            "valid_api_keys": [GOOD_KEY],
            "scripts": [{"match": "*:c:*", "steps": ["429_daily", "ok"]}],
        }
    )
    ledger = Ledger(world["url"])
    state = ch.tick(return_state=True)
    assert state.is_failed() and state.result(raise_on_failure=False).kind.value == "daily_quota"
    counts = ledger.counts(pipeline=ch.pipeline)
    assert "parked" not in counts.by_status, counts.by_status
    row = next(j for j in ledger.jobs(pipeline=ch.pipeline) if ":c:" in j.key)
    assert (row.status, row.attempts, row.error_class) == ("pending", 0, None)
    _settle(ch, ledger)
    done = ledger.counts(pipeline=ch.pipeline)
    assert done.by_status == {"consumed": ch.rows}


def test_the_tick_command_names_the_retired_model_and_exits_1(world, prefect_api):
    """``gemini-ledger tick`` on a retired model: exit 1, one ``error:`` line naming the model
    and the fix, no traceback, nothing parked."""
    ch = CHANNELS["batch"]
    world["emulator"].set_scenario(
        {"name": "retired", "valid_api_keys": [GOOD_KEY], "retired_models": [MODEL]}
    )
    done, errors = tick_command(world, prefect_api, ch, key=GOOD_KEY)
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(errors) == 1, done.stderr[-2000:]
    assert f"does not serve model {MODEL}" in errors[0] and "Fix: set the pipeline's" in errors[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert Ledger(world["url"]).counts(pipeline=ch.pipeline).by_status.get("parked", 0) == 0


def test_a_full_files_api_storage_halts_the_batch_tick_and_parks_nothing(world):
    """An upload refused by the Files API storage quota (429, FileStorageBytesPerProject): the
    tick halts at once (Failed, one line naming the quota and the fix: delete files), nothing
    parked, no attempt kept, no refusal counted toward the refused-submission streak; once
    there is room, the night settles on one attempt per row."""
    ch = CHANNELS["batch"]
    emulator = world["emulator"]
    emulator.set_scenario(
        {"name": "full", "valid_api_keys": [GOOD_KEY], "files_storage_limit_bytes": 1}
    )
    ledger = Ledger(world["url"])
    state = ch.tick(return_state=True)
    assert state.is_failed(), state.message
    assert state.result(raise_on_failure=False).kind.value == "file_storage"
    message = state.message or ""
    assert "\n" not in message and "FileStorageBytesPerProject" in message
    assert "Fix: delete Files API files" in message
    _no_harm_done(ledger, ch)
    assert ledger.submission_refusals(ch.pipeline).refused == 0
    emulator.set_scenario({"name": "room", "valid_api_keys": [GOOD_KEY]})
    _settle(ch, ledger)
    assert ledger.counts(pipeline=ch.pipeline).attempts == ch.rows
