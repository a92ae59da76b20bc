"""The graceful stop's parts in one process: the signal handlers (a first SIGTERM asks, a
second goes to the handler that was there before) and a delivery pass that stops after the
row in hand, recording it and giving back the claims it had not delivered."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from pydantic import BaseModel

from flows.pipeline import Pipeline, Prompt
from flows.testing import (
    DeliveryPoints,
    Stopped,
    deliver_done,
    raise_if_stopped,
    request_stop,
    stop_on_signals,
    stop_requested,
)
from ledger import Channel, Ledger, NewJob, ResultRow

log = logging.getLogger("tests.stop")


def test_first_sigterm_asks_for_a_stop_and_a_second_reaches_the_previous_handler() -> None:
    """Inside a run the first SIGTERM only sets the flag; the second goes to the handler that
    was installed before; after the run both handlers and the flag are as they were."""
    seen: list[int] = []

    def before(signum: int, frame: Any) -> None:
        seen.append(signum)

    old = signal.signal(signal.SIGTERM, before)
    try:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop_requested() and seen == []
            try:
                raise_if_stopped()
            except Stopped as exc:
                assert exc.exit_code == 143 and "SIGTERM" in str(exc)
            else:
                raise AssertionError("raise_if_stopped did not raise")
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [signal.SIGTERM]  # the second: at once, to the previous handler
        assert signal.getsignal(signal.SIGTERM) is before
        assert not stop_requested()
    finally:
        signal.signal(signal.SIGTERM, old)


class Note(BaseModel):
    """The stored answer."""

    title: str


def test_a_delivery_pass_stops_after_the_row_in_hand(ledger_url: str) -> None:
    """A stop asked for during the third side effect: three rows delivered and consumed, the
    seven others left done with no claim, so the next pass delivers them at once."""
    delivered: list[str] = []

    def on_result(key: str, result: Note) -> None:
        delivered.append(key)
        if len(delivered) == 3:
            request_stop(signal.SIGTERM)

    p: Pipeline[Any] = Pipeline(
        name="stopping",
        model="m",
        channel=Channel.BATCH,
        output=Note,
        load_items=lambda day: [],
        key_of=lambda item, day: str(item),
        build_prompt=lambda item: Prompt(text="x"),
        on_result=on_result,
    )
    ledger = Ledger(ledger_url)
    keys = [f"stop:{i}" for i in range(10)]
    ledger.enroll([NewJob(k, {"t": k}) for k in keys], pipeline=p.name, channel="batch", model="m")
    ledger.reserve(pipeline=p.name, limit=10, reservation="r1", batch_model="m")
    ledger.bind_batch("r1", name="batches/stop")
    ledger.apply_results([ResultRow(k, '{"title": "t"}') for k in keys], handle="batches/stop")
    with stop_on_signals():  # clears the flag when the pass is over
        out = deliver_done(
            ledger, p, token="first", older_than=900, log=log, points=DeliveryPoints(), cap=5
        )
    assert (out.consumed, len(delivered)) == (3, 3)
    assert {j.key for j in ledger.jobs(pipeline=p.name, status="consumed")} == set(delivered)
    # No stale age to wait out: the claims not delivered were given back.
    after = deliver_done(
        ledger, p, token="next", older_than=900, log=log, points=DeliveryPoints(), cap=5
    )
    assert after.consumed == 7 and sorted(delivered) == sorted(keys)
    ledger.dispose()


def test_a_stop_leaves_the_upload_deletes_to_the_next_tick(emulator, sqlite_url: str) -> None:
    """Upload deletes are a step like the others: a stop asked for before the next delete
    leaves the file and its row for the next tick and ends the tick (Stopped); once the stop
    is over, the next pass deletes both files."""
    import io

    from flows.settings import Settings
    from flows.testing import clean_uploads
    from ledger import UploadState

    ledger = Ledger(sqlite_url)
    client = emulator.client()
    digests = ("a" * 64, "b" * 64)
    for digest in digests:
        up = client.files.upload(
            file=io.BytesIO(b"%PDF-1.4\n" + digest.encode()),
            config={"mime_type": "application/pdf", "display_name": digest},
        )
        # No row reads it: due for deletion at once.
        ledger.reserve_upload(
            "p",
            digest,
            token="t",
            key=None,
            mime_type="application/pdf",
            size_bytes=10,
            fresh_until=0.0,
            stale_before=0.0,
        )
        ledger.bind_upload(
            "p", digest, token="t", name=str(up.name), uri=str(up.uri), expires_at=4e9
        )
    settings = Settings.given(
        database_url=sqlite_url, api_key="test-key", gemini_base_url=emulator.base_url
    )
    with stop_on_signals():
        request_stop(signal.SIGTERM)
        try:
            clean_uploads(ledger, "p", log, settings)
        except Stopped:
            pass
        else:
            raise AssertionError("clean_uploads did not end the tick")
    assert emulator.stats()["files"]["stored"] == 2
    assert {r.state for r in ledger.uploads("p")} == {UploadState.ACTIVE.value}
    assert clean_uploads(ledger, "p", log, settings) == 2
    assert emulator.stats()["files"]["stored"] == 0
