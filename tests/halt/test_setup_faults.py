"""Faults of the setup halt the channel: a Failed run, a non-zero exit, nothing parked, nothing
counted that was not billed; the same night settles once the fault is gone."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

from flows.gemini import gateway
from flows.testing import HALTED_EVENT, resource_id
from ledger import Ledger
from tests.halt.conftest import CHANNELS, GOOD_KEY, Channel, tick_command

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _break(fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if fault == "refused key":
        monkeypatch.setenv("GEMINI_API_KEY", "halt-test-revoked-key")
    elif fault == "missing key":
        monkeypatch.delenv("GEMINI_API_KEY")
    else:  # unreachable: nothing listens there
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", f"http://127.0.0.1:{_closed_port()}")


def _no_harm_done(ledger: Ledger, ch: Channel) -> None:
    counts = ledger.counts(pipeline=ch.pipeline)
    assert counts.by_status.get("parked", 0) == 0
    assert set(counts.by_status) <= {"pending"}, counts.by_status
    assert counts.attempts == 0  # nothing reached the API: nothing counted
    assert counts.possible_duplicates == 0


def _settle(ch: Channel, ledger: Ledger, max_ticks: int = 6) -> None:
    for _ in range(max_ticks):
        ch.tick()
        by_status = ledger.counts(pipeline=ch.pipeline).by_status
        if set(by_status) == {"consumed"}:
            return
    raise AssertionError(f"{ch.name} not settled: {by_status}")


@pytest.mark.parametrize("fault", ["refused key", "missing key", "unreachable"])
@pytest.mark.parametrize("channel", list(CHANNELS))
def test_fault_fails_the_run_parks_nothing_and_the_night_settles_after(
    world, monkeypatch, channel, fault
):
    """A refused key, a missing key or an unreachable API: Failed run, zero parked, zero
    attempts, on every channel; once the fault is gone the same night ends all consumed."""
    ch = CHANNELS[channel]
    ledger = Ledger(world["url"])
    with monkeypatch.context() as broken:
        _break(fault, broken)
        for _ in range(2):  # the next tick meets the same fault and does no harm either
            state = ch.tick(return_state=True)
            assert state.is_failed()
            assert "Fix:" in (state.message or "")
            assert "\n" not in (state.message or "")
        enrolled = ledger.counts(pipeline=ch.pipeline).total
        assert enrolled in (0, ch.rows)  # the direct and background ticks check before enrolling
        _no_harm_done(ledger, ch)
    _settle(ch, ledger)
    counts = ledger.counts(pipeline=ch.pipeline)
    assert counts.by_status == {"consumed": ch.rows}
    assert counts.attempts == ch.rows  # one billed attempt each: the halted ticks cost none


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_tick_command_prints_one_line_and_exits_non_zero(world, prefect_api, channel):
    """``gemini-ledger tick`` under a refused key: exit 1, the fault printed once (one error
    line naming the cause, its source and the fix; no echo of it in Prefect's log lines, no
    stray ``NoneType: None``), no traceback anywhere, nothing parked."""
    ch = CHANNELS[channel]
    done, errors = tick_command(world, prefect_api, ch, key="halt-test-revoked-key")
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "API_KEY_INVALID" in errors[0]
    assert "the key in GEMINI_API_KEY (the worker's environment) was refused" in errors[0]
    assert "Fix: set GEMINI_API_KEY in the worker's environment" in errors[0]
    said = done.stderr + done.stdout
    assert said.count("API_KEY_INVALID") == 1, said[-3000:]  # printed once
    assert "NoneType: None" not in said
    assert "Traceback" not in done.stderr + done.stdout
    assert "halt-test-revoked-key" not in done.stderr + done.stdout  # secrets never shown
    assert Ledger(world["url"]).counts(pipeline=ch.pipeline).by_status.get("parked", 0) == 0


def test_a_halt_emits_the_channel_halted_event(world, monkeypatch):
    """A halted channel emits gemini-ledger.channel.halted for its pipeline and channel."""
    since = datetime.now(UTC)
    monkeypatch.setenv("GEMINI_API_KEY", "halt-test-revoked-key")
    assert CHANNELS["batch"].tick(return_state=True).is_failed()
    wanted = resource_id("small", "batch")
    deadline = time.monotonic() + 30
    found: list[Any] = []
    while not found and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[HALTED_EVENT]),
                    occurred=EventOccurredFilter(since=since),
                ),
                limit=50,
            )
        found = [e for e in page.events if e.resource.id == wanted]
    assert found, "no halted event"
    assert found[0].payload["kind"] == "key_refused"
    assert "GEMINI_API_KEY" in found[0].payload["fix"]


@pytest.mark.parametrize(
    ("channel", "scenario", "kind"),
    [
        ("batch", {"project_fault": "permission_denied"}, "permission"),
        ("batch", {"project_fault": "failed_precondition"}, "precondition"),
        ("batch", {"refused_upload_mime_types": ["application/jsonl"]}, "upload_refused"),
        ("direct", {"project_fault": "permission_denied"}, "permission"),
        ("background", {"project_fault": "failed_precondition"}, "precondition"),
    ],
)
def test_project_refusals_halt_the_channel(world, channel, scenario, kind):
    """403 PERMISSION_DENIED, 400 FAILED_PRECONDITION and an upload MIME refusal halt the
    tick with their kind; nothing is parked, no attempt counted, the night settles after."""
    emulator = world["emulator"]
    emulator.set_scenario({"name": "project", "valid_api_keys": [GOOD_KEY], **scenario})
    ch = CHANNELS[channel]
    ledger = Ledger(world["url"])
    state = ch.tick(return_state=True)
    assert state.is_failed()
    fault = state.result(raise_on_failure=False)
    assert fault.kind.value == kind, state.message
    _no_harm_done(ledger, ch)
    emulator.set_scenario({"name": "fixed", "valid_api_keys": [GOOD_KEY]})
    _settle(ch, ledger)
    assert ledger.counts(pipeline=ch.pipeline).attempts == ch.rows


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_an_unreachable_ledger_halts_the_tick(world, monkeypatch, channel):
    """A ledger that cannot be reached ends the run Failed with the ledger's fix, not a
    traceback of the driver."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    state = CHANNELS[channel].tick(return_state=True)
    assert state.is_failed()
    fault = state.result(raise_on_failure=False)
    assert fault.kind.value == "ledger_unreachable", state.message
    assert "LEDGER_DATABASE_URL" in (state.message or "")


@pytest.mark.parametrize("channel", ["batch", "background"])
def test_a_key_revoked_while_jobs_are_in_flight(world, monkeypatch, channel):
    """Polling under a refused key halts the tick and leaves the submitted jobs submitted (no
    verdict on them); once the key is back they are collected, each on its one attempt."""
    ch = CHANNELS[channel]
    ledger = Ledger(world["url"])
    ch.tick()
    assert ledger.counts(pipeline=ch.pipeline).by_status == {"submitted": ch.rows}
    with monkeypatch.context() as broken:
        broken.setenv("GEMINI_API_KEY", "halt-test-revoked-key")
        state = ch.tick(return_state=True)
        assert state.is_failed() and "API_KEY_INVALID" in (state.message or "")
        assert ledger.counts(pipeline=ch.pipeline).by_status == {"submitted": ch.rows}
    _settle(ch, ledger)
    assert ledger.counts(pipeline=ch.pipeline).attempts == ch.rows


@pytest.fixture
def secret_block(world, monkeypatch) -> Iterator[Any]:
    """Saves Secret blocks on the test server; each is deleted after the test, and the key the
    gateway read is forgotten (the block no longer holds it)."""
    from prefect.blocks.system import Secret

    from flows.testing import forget_api_keys as forget

    saved: list[str] = []
    forget()

    def save(name: str, value: str) -> str:
        Secret(value=value).save(name, overwrite=True)
        saved.append(name)
        return name

    try:
        yield save
    finally:
        for name in saved:
            Secret.delete(name)
        forget()


def test_a_refused_key_in_the_block_names_the_block_and_its_fix(world, secret_block):
    """The key in the Secret block is refused: the line names the block and gives the block's
    fix (gemini-ledger secret set api-key), never "set GEMINI_API_KEY", which the block takes
    precedence over (world's GEMINI_API_KEY holds a good key the block overrides)."""
    secret_block(gateway.DEFAULT_API_KEY_BLOCK, "halt-test-revoked-key")
    state = CHANNELS["direct"].tick(return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "the key in Secret block 'gemini-api-key' was refused" in message, message
    assert "Fix: gemini-ledger secret set api-key" in message
    assert "set GEMINI_API_KEY" not in message
    assert "halt-test-revoked-key" not in message


def test_a_block_name_that_does_not_exist_says_so_with_the_blocks_there(
    world, secret_block, monkeypatch
):
    """GEMINI_API_KEY_BLOCK names a block that is not there (and no key is in the
    environment): one line saying so, naming the Secret blocks there, said once, not aimed at
    the emulator."""
    there = secret_block(f"halt-test-present-{uuid.uuid4().hex[:8]}", GOOD_KEY)
    missing = f"gemini-apikey-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GEMINI_API_KEY_BLOCK", missing)
    monkeypatch.delenv("GEMINI_API_KEY")
    state = CHANNELS["direct"].tick(return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "\n" not in message
    assert f"GEMINI_API_KEY_BLOCK names the Secret block {missing!r}, which does not exist" in (
        message
    ), message
    assert repr(there) in message
    assert message.count("Fix:") == 1 and message.count(missing) <= 3
    assert "no Gemini API key" not in message  # said once, as what it is
    assert "emulator" not in message
    assert f"gemini-ledger secret set api-key --block {missing}" in message


def test_a_missing_key_names_both_places_it_was_looked_for(world, monkeypatch):
    """No block and no variable: the line names the block looked for and the variables, and
    gives the block's fix first; said once."""
    monkeypatch.delenv("GEMINI_API_KEY")
    message = CHANNELS["direct"].tick(return_state=True).message or ""
    assert "no Gemini API key: no Secret block 'gemini-api-key' on http" in message, message
    assert "neither GEMINI_API_KEY nor GOOGLE_API_KEY" in message
    assert "Fix: gemini-ledger secret set api-key, or set GEMINI_API_KEY" in message
    assert message.count("no Gemini API key") == 1 and message.count("Fix:") == 1
