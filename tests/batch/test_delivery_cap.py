"""A row whose delivery keeps failing is parked as delivery:<Error> at the cap, and replaying
it runs only the delivery again: no API call, no new attempt."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import BaseModel

from flows.ops.replay import replay
from flows.pipeline import Pipeline, Prompt
from flows.settings import Settings
from flows.testing import DELIVERY_CAP_ENV, DeliveryPoints, deliver_done
from flows.tick import tick
from ledger import Channel, Ledger, NewJob, ResultRow
from tests.ledgers import run_ledger

from .conftest import DAY, submissions

log = logging.getLogger("tests.delivery_cap")


class Renamed(BaseModel):
    """The output schema after a change the stored results predate."""

    verdict: str


delivered: list[str] = []


def _pipeline() -> Pipeline[dict[str, Any]]:
    return Pipeline(
        name="schema-change",
        model="m",
        channel=Channel.BATCH,
        output=Renamed,
        load_items=lambda day: [],
        key_of=lambda item, day: str(item),
        build_prompt=lambda item: Prompt(text="x"),
        on_result=lambda key, result: delivered.append(key),
    )


def _one_done_row(ledger: Ledger) -> str:
    ledger.enroll([NewJob("sc:1", {"t": 1})], pipeline="schema-change", channel="batch", model="m")
    ledger.reserve(pipeline="schema-change", limit=1, reservation="r1", batch_model="m")
    ledger.bind_batch("r1", name="batches/sc")
    ledger.apply_results([ResultRow("sc:1", '{"label": "bug"}')], handle="batches/sc")
    return "sc:1"


def test_a_result_that_no_longer_validates_is_parked_at_the_default_cap(
    ledger_url: str,
) -> None:
    """Five failed deliveries park the row as delivery:ValidationError, result kept; a replay
    returns it to done without a new attempt."""
    cap = Settings.given().delivery_cap  # the default
    ledger = Ledger(ledger_url)
    key = _one_done_row(ledger)
    p = _pipeline()
    for n in range(1, 6):
        out = deliver_done(
            ledger, p, token=f"t{n}", older_than=900, log=log, points=DeliveryPoints(), cap=cap
        )
        assert out.failed == [key]
        assert ledger.get(key).status == ("parked" if n == 5 else "done")
    job = ledger.get(key)
    assert job.error_class == "delivery:ValidationError"
    assert job.error_message and "verdict" in job.error_message
    assert (job.attempts, job.result) == (1, '{"label": "bug"}')
    assert [j.key for j in ledger.select_for_replay(error_class=job.error_class)] == [key]
    assert ledger.replay([key]) == 1
    back = ledger.get(key)
    assert (back.status, back.attempts, back.result, back.handle) == (
        "done",
        1,
        '{"label": "bug"}',
        "batches/sc",
    )
    assert back.delivery_failures == 0 and back.replayed == 1


def test_delivery_cap_setting() -> None:
    """GEMINI_LEDGER_DELIVERY_CAP defaults to 5; anything but a whole number >= 1 is refused."""
    assert Settings.given().delivery_cap == 5
    assert Settings.given(**{DELIVERY_CAP_ENV: "2"}).delivery_cap == 2
    for bad in ("0", "-1", "two", "2.5"):
        with pytest.raises(ValueError, match=DELIVERY_CAP_ENV):
            Settings.given(**{DELIVERY_CAP_ENV: bad})


def test_on_result_that_keeps_raising_is_parked_and_replayed_by_delivery_only(
    batch_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink that keeps failing parks its row; after the fix, replay delivers it with no API
    call and no new attempt."""
    from tests.batch import pipelines

    monkeypatch.setenv(DELIVERY_CAP_ENV, "2")
    emu = batch_env["emulator"]
    emu.set_scenario({"batch_polls_to_complete": 1})
    spec, name = "tests.batch.pipelines:flaky_sink", "flaky-sink"
    victim = f"{name}:{DAY.isoformat()}:rv-00003:v1"
    pipelines.sink_failures[victim] = 1000
    try:
        tick(pipeline=spec, day=DAY)
        tick(pipeline=spec, day=DAY)  # reconciled; the first delivery fails
        third = tick(pipeline=spec, day=DAY)
        assert len(third.deliver.parked) == 1
        ledger = run_ledger()
        job = ledger.get(victim)
        assert (job.status, job.error_class) == ("parked", "delivery:RuntimeError")
        assert "results store unavailable" in (job.error_message or "")
        billed = submissions(emu, f"{name}:")
        pipelines.sink_failures[victim] = 0  # the sink is fixed
        report = replay(execute=True, limit=10, error_class="delivery:RuntimeError", pipeline=spec)
    finally:
        pipelines.sink_failures.pop(victim, None)
    (item,) = report["jobs"]
    assert (item["action"], item["outcome"]) == ("deliver again", "consumed")
    after = ledger.get(victim)
    assert (after.status, after.attempts, after.replayed) == ("consumed", 1, 1)
    assert submissions(emu, f"{name}:") == billed
