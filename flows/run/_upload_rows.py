"""Uploads as ledger rows: the discipline of a submission for each Files API upload.

``UploadRows`` is the store ``flows.run._uploads.Uploads`` keeps its uploads in: before the
call the upload is reserved by its content hash (``Ledger.reserve_upload``, which records the
row reading it); after it, bound to the file (``bind_upload``). A reservation whose pass died
is taken over after ``UPLOAD_STALE_S``, its file looked for by display name first (the crash
came after the upload: bound, not sent twice). A file closer to its expiry than
``EXPIRY_MARGIN_S`` is uploaded again. ``clean_uploads`` deletes a file once every row
using it is final; a refused delete is retried on a later tick, never a row's attempt.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flows.crash import crash_point
from flows.gemini._errors import is_not_found
from flows.gemini.gateway import shared_client
from flows.run._cleanup import delete_due
from flows.run._uploads import EXPIRY_MARGIN_S, UploadBusy, Uploaded, Uploads
from flows.settings import Settings
from ledger import Ledger, UploadAction, UploadRecord

__all__ = ["UPLOAD_STALE_S", "UploadRows", "clean_uploads", "ledger_uploads"]

# An upload's reservation unrenewed this long belongs to a dead pass (an upload of the
# largest file the API takes, 2 GB, is well within it on a working link).
UPLOAD_STALE_S = 1800.0


def _uploaded(rec: UploadRecord) -> Uploaded:
    return Uploaded(name=str(rec.name), uri=str(rec.uri), expires_at=float(rec.expires_at or 0))


class UploadRows:
    """The ledger's rows for one pipeline's uploads."""

    def __init__(self, ledger: Ledger, pipeline: str) -> None:
        self.ledger = ledger
        self.pipeline = pipeline

    def use(self, digest: str, key: str) -> None:
        self.ledger.note_upload_uses(self.pipeline, digest, [key])

    def upload(
        self, uploads: Uploads, digest: str, data: bytes, mime_type: str, key: str | None
    ) -> Uploaded:
        ledger = self.ledger
        token = uuid.uuid4().hex
        now = ledger.clock()
        claim = ledger.reserve_upload(
            self.pipeline,
            digest,
            token=token,
            key=key,
            mime_type=mime_type,
            size_bytes=len(data),
            fresh_until=now + EXPIRY_MARGIN_S,
            stale_before=now - UPLOAD_STALE_S,
        )
        if claim.action is UploadAction.USE:
            return _uploaded(claim.record)
        if claim.action is UploadAction.WAIT:
            raise UploadBusy(f"{digest[:12]}... is being uploaded by another pass")
        crash_point("upload.after_reserve")
        up = uploads.find(digest) if claim.taken_over else None
        if up is None:
            try:
                up = uploads.send(digest, data, mime_type)
            except Exception:
                ledger.release_upload(self.pipeline, digest, token=token)
                raise
        ledger.bind_upload(
            self.pipeline, digest, token=token, name=up.name, uri=up.uri, expires_at=up.expires_at
        )
        crash_point("upload.after_bind")
        return up


def ledger_uploads(client: Any, ledger: Ledger, pipeline: str) -> Uploads:
    """A pass's uploads for ``pipeline``, kept as ledger rows."""
    return Uploads(
        client, store=UploadRows(ledger, pipeline), pipeline=pipeline, clock=ledger.clock
    )


def clean_uploads(
    ledger: Ledger, pipeline: str, log: logging.Logger | Any, settings: Settings
) -> int:
    """Delete the uploads of ``pipeline`` every row of which is final; returns how many.
    The run's shared client (``settings``' API and key) is made only when one is due. A stop
    (SIGTERM) ends the tick after the delete in hand (``flows.run._cleanup.delete_due``)."""
    due = ledger.uploads_to_delete(pipeline=pipeline)
    if not due:
        return 0
    client = shared_client(settings)
    deleted = delete_due(
        due,
        delete=lambda rec: client.files.delete(name=str(rec.name)),
        gone=is_not_found,  # expired already: as good as deleted
        failed=lambda rec, error: ledger.upload_delete_failed(
            pipeline, rec.content_hash, error=error
        ),
        deleted=lambda rec: ledger.upload_deleted(pipeline, rec.content_hash, name=str(rec.name)),
        point="upload.after_delete",
        what=lambda rec: f"upload {rec.name}",
        log=log,
        pipeline=pipeline,
    )
    if deleted:
        log.info("%s: deleted %d media uploads from the Files API", pipeline, deleted)
    return deleted
