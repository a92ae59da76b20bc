"""A tick killed (SIGKILL, a real subprocess) at each upload crash point: the next pass
takes the upload over (after a kill right after files.upload, finding the file by its
display name), never uploading the same bytes twice and never counting the upload as a
row's attempt."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from flows.contents import content_hash
from ledger import Status, UploadState
from tests.killed_tick import tick_killed_at
from tests.test_media_ticks import DAY, PDF_ENV, write_pdf

SPEC = "tests.test_media_ticks:direct"
NAME = "media-direct"


def _uploads_sent(emulator) -> int:
    """Files created at the emulator (each resumable upload finalizes once)."""
    return sum(n for label, n in emulator.stats()["requests"].items() if "/upload/" in label) // 2


@pytest.mark.parametrize(
    ("point", "sent", "state"),
    [
        # Reserved, nothing uploaded: taken over once stale, uploaded once.
        ("upload.after_reserve", 0, UploadState.RESERVING),
        # Uploaded, not bound: taken over once stale, found by display name, bound.
        ("upload.after_upload", 1, UploadState.RESERVING),
        # Bound, the row not sent: the next pass uses the bound file.
        ("upload.after_bind", 1, UploadState.ACTIVE),
        # Deleted at the API, not marked: the next tick's delete meets a 404 and marks it.
        ("upload.after_delete", 1, UploadState.ACTIVE),
    ],
)
def test_a_tick_killed_around_an_upload_never_uploads_twice(
    emulator,
    prefect_api,
    sqlite_url,
    monkeypatch,
    tmp_path: Path,
    point: str,
    sent: int,
    state: UploadState,
) -> None:
    """After a kill at each upload crash point the next tick (once the dead pass's
    reservation is stale) sends both rows on their first attempt, the bytes having been
    uploaded exactly once, and the file is deleted once both rows are final."""
    from flows.testing import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    pdf = write_pdf(tmp_path)
    monkeypatch.setenv(PDF_ENV, str(pdf))
    tick_killed_at(point, spec=SPEC, day=DAY, prefect_api=prefect_api, trace=tmp_path / "trace.txt")
    assert _uploads_sent(emulator) == sent

    ledger = open_ledger(sqlite_url)
    digest = content_hash(pdf.read_bytes())
    upload = ledger.get_upload(NAME, digest)
    assert upload is not None and upload.state == state.value
    # The upload's stale age (30 min) passes: nothing to wait on in a test, so its clock is
    # moved instead.
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE uploads SET reserved_at = reserved_at - 7200"))
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_STALE_S", "0")
    tick(pipeline=SPEC, day=DAY)

    assert _uploads_sent(emulator) == 1  # after_upload: found by display name, not sent again
    for item in ("a", "b"):
        row = ledger.get(f"{NAME}:{item}")
        assert (row.status, row.attempts) == (Status.CONSUMED.value, 1)
    upload = ledger.get_upload(NAME, digest)
    assert upload is not None
    assert (upload.state, upload.uploads) == (UploadState.DELETED.value, 1)
