"""Uploads as ledger rows: reserved by content hash, bound, shared, taken over from a dead
pass, reserved again when expiring or deleted, and deletable only once every row is final."""

from __future__ import annotations

import pytest

from ledger import Failure, Ledger, NewJob, Status, UploadState, Verdict

H = "a" * 64
P = "media"


@pytest.fixture
def clocked(ledger_url):
    now = [1_000_000.0]
    led = Ledger(ledger_url, clock=lambda: now[0])
    led.enroll(
        [NewJob(k, {"text": k}) for k in ("r1", "r2")], pipeline=P, channel="direct", model="m"
    )
    yield led, now
    led.dispose()


def _reserve(led: Ledger, token: str, key: str, now: float):
    return led.reserve_upload(
        P,
        H,
        token=token,
        key=key,
        mime_type="application/pdf",
        size_bytes=10,
        fresh_until=now + 100,
        stale_before=now - 50,
    )


def test_one_upload_is_shared_and_a_second_pass_waits(clocked) -> None:
    """The first row reserves the upload; a second pass meanwhile waits (never uploads the
    same bytes twice); once bound every row uses the file."""
    led, now = clocked
    assert _reserve(led, "t1", "r1", now[0]).action == "upload"
    assert _reserve(led, "t2", "r2", now[0]).action == "wait"
    assert led.bind_upload(P, H, token="t1", name="files/f", uri="u", expires_at=now[0] + 1000)
    claim = _reserve(led, "t3", "r2", now[0])
    assert (claim.action, claim.record.name, claim.record.uploads) == ("use", "files/f", 1)


def test_a_dead_pass_reservation_is_taken_over_and_its_bind_refused(clocked) -> None:
    """A reservation unrenewed past the stale age is taken over (flagged, so the file is
    looked for by display name first); the dead pass's late bind changes nothing."""
    led, now = clocked
    _reserve(led, "t1", "r1", now[0])
    now[0] += 60
    claim = _reserve(led, "t2", "r1", now[0])
    assert (claim.action, claim.taken_over) == ("upload", True)
    assert not led.bind_upload(
        P, H, token="t1", name="files/old", uri="u", expires_at=now[0] + 1000
    )
    assert led.bind_upload(P, H, token="t2", name="files/new", uri="u", expires_at=now[0] + 1000)


def test_an_expiring_or_deleted_file_is_uploaded_again(clocked) -> None:
    """A bound file that expires before the row could be read is reserved again, and so is
    one deleted after its rows were final (a replayed row)."""
    led, now = clocked
    _reserve(led, "t1", "r1", now[0])
    led.bind_upload(P, H, token="t1", name="files/f", uri="u", expires_at=now[0] + 50)
    assert _reserve(led, "t2", "r1", now[0]).action == "upload"  # 50 s left < 100 needed
    led.bind_upload(P, H, token="t2", name="files/g", uri="u", expires_at=now[0] + 1000)
    assert led.get_upload(P, H).uploads == 2
    led.upload_deleted(P, H, name="files/g")
    assert _reserve(led, "t3", "r1", now[0]).action == "upload"


def test_deleted_only_when_every_row_using_it_is_final(clocked) -> None:
    """An upload is due for deletion only once each row reading it is done, consumed or
    parked; a failed delete is counted on the upload, not on a row."""
    led, now = clocked
    _reserve(led, "t1", "r1", now[0])
    led.note_upload_uses(P, H, ["r2"])
    led.bind_upload(P, H, token="t1", name="files/f", uri="u", expires_at=now[0] + 1000)
    assert led.uploads_to_delete(pipeline=P) == []
    nope = Failure(Verdict.PERMANENT, "x", "x")
    led.park("r1", nope, from_status=(Status.PENDING,))
    assert led.uploads_to_delete(pipeline=P) == []  # r2 still pending
    led.park("r2", nope, from_status=(Status.PENDING,))
    (due,) = led.uploads_to_delete(pipeline=P)
    led.upload_delete_failed(P, H, error="503")
    assert led.get_upload(P, H).delete_failures == 1
    assert due.name == "files/f" and led.get("r1").attempts == 0  # never a row attempt
    assert led.upload_deleted(P, H, name="files/f")
    assert led.get_upload(P, H).state == UploadState.DELETED.value
    assert led.uploads_to_delete(pipeline=P) == []
