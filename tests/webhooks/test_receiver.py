"""The webhook receiver against signed requests built with standardwebhooks."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest

from .conftest import OTHER_SECRET, SECRET, Receiver, signed, wait_until


def batch_event(name: str = "batches/job-1", **extra: object) -> str:
    """A batch.succeeded event in the emulator's shape."""
    data = {"name": name, "display_name": "nightly", "state": "BATCH_STATE_SUCCEEDED", **extra}
    return json.dumps(
        {"type": "batch.succeeded", "timestamp": "2026-11-22T02:00:00Z", "data": data}
    )


def test_valid_batch_webhook_is_recorded_and_reconciled(
    serve_receiver: Callable[..., Receiver], ledger_url: str
) -> None:
    """A signed batch completion is answered 200, recorded once and starts one reconcile."""
    receiver = serve_receiver(ledger_url=ledger_url)
    receiver.know("batches/abc123")
    body = batch_event("batches/abc123")
    resp = receiver.post(body, signed(body, msg_id="msg_valid"))
    assert resp.status_code == 200
    assert resp.json() == {"status": "accepted"}
    wait_until(lambda: receiver.calls, what="reconcile to be started")
    assert receiver.calls == ["batches/abc123"]
    rows = wait_until(
        lambda: [r for r in receiver.deliveries() if r["processed_at"] is not None],
        what="the delivery to be marked processed",
    )
    assert [(r["webhook_id"], r["event_type"], r["subject"]) for r in rows] == [
        ("msg_valid", "batch.succeeded", "batches/abc123")
    ]


def test_gemini_shape_batch_id_is_accepted(receiver: Receiver) -> None:
    """A batch named by data.id without the batches/ prefix still reconciles batches/ID."""
    receiver.know("batches/id-batch.failed", "batches/id-batch.expired")
    for kind in ("batch.failed", "batch.expired"):
        body = json.dumps({"type": kind, "data": {"id": f"id-{kind}"}})
        assert receiver.post(body, signed(body)).status_code == 200
    wait_until(lambda: len(receiver.calls) == 2, what="two reconciles")
    assert sorted(receiver.calls) == ["batches/id-batch.expired", "batches/id-batch.failed"]


def test_forged_signature_is_refused(receiver: Receiver) -> None:
    """A wrong secret, a tampered body or a garbled signature gets 401 and records nothing."""
    body = batch_event()
    assert receiver.post(body, signed(body, secret=OTHER_SECRET)).status_code == 401
    headers = signed(body)
    tampered = body.replace("nightly", "nightlx")
    assert receiver.post(tampered, headers).status_code == 401
    for garbled in ("v1,not-base64!!", "nonsense", "v2," + headers["webhook-signature"][3:]):
        assert receiver.post(body, {**headers, "webhook-signature": garbled}).status_code == 401
    assert receiver.deliveries() == []
    assert receiver.calls == []


def test_missing_headers_are_refused(receiver: Receiver) -> None:
    """Without any one of the three Standard Webhooks headers the answer is 401."""
    body = batch_event()
    headers = signed(body)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k != name}
        assert receiver.post(body, partial).status_code == 401
    assert receiver.post(body, {"content-type": "application/json"}).status_code == 401
    assert receiver.deliveries() == []


def test_stale_or_future_timestamp_is_refused(receiver: Receiver) -> None:
    """A correctly signed delivery more than five minutes old or ahead gets 401."""
    receiver.know("batches/job-1")
    body = batch_event()
    now = time.time()
    assert receiver.post(body, signed(body, at=now - 301)).status_code == 401
    assert receiver.post(body, signed(body, at=now + 301)).status_code == 401
    headers = signed(body)
    assert receiver.post(body, {**headers, "webhook-timestamp": "soon"}).status_code == 401
    assert receiver.post(body, signed(body, at=now - 200)).status_code == 200
    assert len(receiver.deliveries()) == 1


def test_timestamp_is_checked_against_the_injected_clock(
    serve_receiver: Callable[..., Receiver],
) -> None:
    """The tolerance is measured from the app's clock, not the machine's."""
    t0 = 1_800_000_000.0
    receiver = serve_receiver(clock=lambda: t0)
    receiver.know("batches/job-1")
    body = batch_event()
    assert receiver.post(body, signed(body, at=t0 - 290)).status_code == 200
    assert receiver.post(body, signed(body, at=t0 - 310)).status_code == 401
    assert receiver.post(body, signed(body)).status_code == 401  # real now is years away


def test_replayed_id_is_acknowledged_and_not_processed_twice(receiver: Receiver) -> None:
    """The same webhook-id delivered again is answered 200 but reconciles only once."""
    receiver.know("batches/once")
    body = batch_event("batches/once")
    first = receiver.post(body, signed(body, msg_id="msg_replayed"))
    second = receiver.post(body, signed(body, msg_id="msg_replayed"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"status": "duplicate"}
    wait_until(lambda: receiver.calls, what="reconcile to be started")
    wait_until(lambda: receiver.deliveries()[0]["processed_at"], what="processed")
    assert receiver.calls == ["batches/once"]
    assert len(receiver.deliveries()) == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        "[1, 2, 3]",
        '"a string"',
        '{"type": "batch.succeeded"}',
        '{"data": {"name": "batches/x"}}',
        '{"type": "batch.succeeded", "data": {"state": "BATCH_STATE_SUCCEEDED"}}',
        '{"type": "interaction.completed", "data": {"status": "completed"}}',
        '{"type": 7, "data": {}}',
    ],
)
def test_malformed_body_is_refused(receiver: Receiver, body: str) -> None:
    """A signed body that is not JSON or not an event we can read gets 400 and no record."""
    resp = receiver.post(body, signed(body))
    assert resp.status_code == 400
    assert receiver.deliveries() == []
    assert receiver.calls == []


def test_interaction_event_is_recorded_but_not_reconciled(receiver: Receiver) -> None:
    """An interaction completion is acknowledged and recorded; the background tick reclaims it."""
    body = json.dumps(
        {"type": "interaction.completed", "data": {"id": "int-9", "status": "completed"}}
    )
    resp = receiver.post(body, signed(body, msg_id="msg_int"))
    assert resp.status_code == 200
    assert resp.json() == {"status": "acknowledged"}
    (row,) = receiver.deliveries()
    assert (row["webhook_id"], row["event_type"], row["subject"]) == (
        "msg_int",
        "interaction.completed",
        "int-9",
    )
    assert row["processed_at"] is not None
    assert receiver.calls == []


def test_failed_hand_off_still_answers_and_stays_unprocessed(
    serve_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    """If starting reconcile fails the sender still gets 200; the delivery is left unprocessed."""
    attempts: list[str] = []

    def broken(job_name: str) -> None:
        attempts.append(job_name)
        raise RuntimeError(f"cannot reach server with {SECRET}")

    caplog.set_level(logging.DEBUG)
    receiver = serve_receiver(on_batch_complete=broken)
    receiver.know("batches/broken")
    body = batch_event("batches/broken")
    assert receiver.post(body, signed(body)).status_code == 200
    wait_until(lambda: "starting reconcile of batches/broken failed" in caplog.text)
    assert attempts == ["batches/broken"]
    (row,) = receiver.deliveries()
    assert row["processed_at"] is None
    assert SECRET not in caplog.text


def test_secret_and_payload_never_logged_or_stored(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Across accepted, forged, stale and malformed deliveries, logs and ledger hold no secret."""
    caplog.set_level(logging.DEBUG)
    marker = "private-payload-marker-4711"
    receiver.know("batches/logged")
    body = batch_event("batches/logged", responses_file=f"files/{marker}")
    assert receiver.post(body, signed(body, msg_id="msg_ok")).status_code == 200
    assert receiver.post(body, signed(body, secret=OTHER_SECRET)).status_code == 401
    assert receiver.post(body, signed(body, at=time.time() - 1000)).status_code == 401
    bad = f'{{"secret": "{SECRET}", "note": "{marker}"'
    assert receiver.post(bad, signed(bad)).status_code == 400
    wait_until(lambda: receiver.calls)
    logged = caplog.text
    assert "msg_ok" in logged and "batches/logged" in logged  # it does log what it may
    stored = json.dumps(receiver.deliveries(), default=str)
    raw = SECRET.removeprefix("whsec_")
    for text in (logged, stored):
        assert SECRET not in text and raw not in text
        assert marker not in text
