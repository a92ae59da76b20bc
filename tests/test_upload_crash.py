"""A tick killed (SIGKILL, a real subprocess) right after a media upload: the next pass
finds the file by its display name and binds it, never uploading the same bytes twice and
never counting the upload as a row's attempt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from flows.contents import content_hash
from ledger import Status, UploadState
from tests.test_media_ticks import DAY, PDF_ENV, write_pdf

ROOT = Path(__file__).resolve().parents[1]
SPEC = "tests.test_media_ticks:direct"
NAME = "media-direct"


def _uploads_sent(emulator) -> int:
    """Files created at the emulator (each resumable upload finalizes once)."""
    return sum(n for label, n in emulator.stats()["requests"].items() if "/upload/" in label) // 2


def test_an_upload_whose_answer_was_lost_is_found_again_not_sent_twice(
    emulator, prefect_api, sqlite_url, monkeypatch, tmp_path: Path
) -> None:
    """Killed after files.upload and before the ledger bound it: the upload row stays
    `reserving`; once its reservation is stale the next tick finds the file by display
    name, binds it, sends both rows on their first attempt, and deletes the file."""
    from flows._ledger import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    pdf = write_pdf(tmp_path)
    monkeypatch.setenv(PDF_ENV, str(pdf))
    trace = tmp_path / "trace.txt"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "GEMINI_LEDGER_CRASH_AT": "upload.after_upload",
        "GEMINI_LEDGER_CRASH_TRACE": str(trace),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "tick", SPEC, "--day", DAY.isoformat()],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert trace.read_text().splitlines()[-1] == "upload.after_upload"
    assert _uploads_sent(emulator) == 1

    ledger = open_ledger()
    digest = content_hash(pdf.read_bytes())
    upload = ledger.get_upload(NAME, digest)
    assert upload is not None and upload.state == UploadState.RESERVING.value
    # The upload's stale age (30 min) passes: nothing to wait on in a test, so its clock is
    # moved instead.
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE uploads SET reserved_at = reserved_at - 7200"))
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_STALE_S", "0")
    tick(pipeline=SPEC, day=DAY)

    assert _uploads_sent(emulator) == 1  # found by display name, not uploaded again
    for item in ("a", "b"):
        row = ledger.get(f"{NAME}:{item}")
        assert (row.status, row.attempts) == (Status.CONSUMED.value, 1)
    upload = ledger.get_upload(NAME, digest)
    assert upload is not None
    assert (upload.state, upload.uploads) == (UploadState.DELETED.value, 1)
