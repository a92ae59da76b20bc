"""Uploads of prompts' media (``uploads``, ``upload_uses``): reserved by content hash before
the Files API call, bound to the file after it, shared by every row reading the same bytes,
uploaded again once expired, deleted when every row using it is final. Never a row's attempt.

The moves are declared once in ``ledger._transitions.UPLOAD_MOVES``; each ``UPDATE`` names
the state (and token) it moves from, so two passes never both upload the same bytes: the one
whose compare-and-set changed no row uses the other's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import text

from ledger._base import LedgerBase
from ledger._models import Status
from ledger._side_rows import ReserveStep, SideTable
from ledger._transitions import UPLOAD_MOVES, UploadState, sql_in, sql_literal

__all__ = ["FINAL_SQL", "UploadAction", "UploadClaim", "UploadRecord", "UploadVerbs"]

_RESERVING = sql_literal(UploadState.RESERVING)
_ACTIVE = sql_literal(UploadState.ACTIVE)
_DELETED = sql_literal(UploadState.DELETED)
# A row in these states will never be sent again by a tick (a replay of a parked row
# reserves the upload anew if it was deleted).
FINAL_SQL = sql_in((Status.DONE, Status.CONSUMED, Status.PARKED))


class UploadRecord(NamedTuple):
    pipeline: str
    content_hash: str
    state: str
    token: str | None
    reserved_at: float
    name: str | None
    uri: str | None
    expires_at: float | None
    uploads: int
    delete_failures: int


_COLUMNS = (
    "pipeline, content_hash, state, token, reserved_at, name, uri, expires_at, uploads,"
    " delete_failures"
)


class UploadAction(enum.StrEnum):
    """What a pass does with an upload after ``reserve_upload``."""

    USE = "use"  # a bound file that lives long enough: send its URI
    UPLOAD = "upload"  # reserved under our token: upload it (or find a dead pass's)
    WAIT = "wait"  # another live pass is uploading these bytes


_ACTIONS = {
    ReserveStep.USE: UploadAction.USE,
    ReserveStep.OURS: UploadAction.UPLOAD,
    ReserveStep.WAIT: UploadAction.WAIT,
}


class UploadClaim(NamedTuple):
    """What ``reserve_upload`` decided: ``use`` the bound file, ``upload`` under our token
    (``taken_over``: a dead pass had reserved it, so look for its file by display name
    first), or ``wait`` (another live pass is uploading these bytes)."""

    action: UploadAction
    record: UploadRecord
    taken_over: bool = False


_TABLE = SideTable(
    "uploads",
    "content_hash",
    _COLUMNS,
    UploadRecord,
    UploadState.RESERVING,
    UploadState.ACTIVE,
    UploadState.DELETED,
)


class UploadVerbs(LedgerBase):
    """Verbs over the Files API uploads of prompts' media."""

    def get_upload(self, pipeline: str, digest: str) -> UploadRecord | None:
        with self._read() as conn:
            return _TABLE.get(conn, pipeline, digest)

    def uploads(self, pipeline: str) -> list[UploadRecord]:
        """Every upload the pipeline's rows have read, by content hash (``uploads`` counts
        the Files API uploads made for it: more than one when it expired and was sent again)."""
        with self._read() as conn:
            return _TABLE.all(conn, pipeline)

    def upload_users(self, pipeline: str) -> dict[str, list[str]]:
        """The job keys that read each of the pipeline's uploads, by content hash."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT content_hash, key FROM upload_uses WHERE pipeline = :p"
                    " ORDER BY content_hash, key"
                ),
                {"p": pipeline},
            ).all()
        out: dict[str, list[str]] = {}
        for digest, key in rows:
            out.setdefault(digest, []).append(key)
        return out

    def reserve_upload(
        self,
        pipeline: str,
        digest: str,
        *,
        token: str,
        key: str | None,
        mime_type: str,
        size_bytes: int,
        fresh_until: float,
        stale_before: float,
    ) -> UploadClaim:
        """Reserve the upload of these bytes for ``key``'s row (recorded as one of its uses).

        A bound file that expires after ``fresh_until`` is used as it is; a reservation
        renewed before ``stale_before`` is another pass's (``wait``); anything else (no
        row, an expiring or deleted file, a dead pass's reservation) is reserved under
        ``token`` (``UPLOAD_MOVES['reserve_upload']``)."""
        now = self.clock()
        with self._write() as conn:
            if key is not None:
                conn.execute(
                    text(
                        "INSERT INTO upload_uses (pipeline, content_hash, key) VALUES"
                        " (:p, :h, :k) ON CONFLICT DO NOTHING"
                    ),
                    {"p": pipeline, "h": digest, "k": key},
                )
            got = _TABLE.reserve(
                conn,
                pipeline,
                digest,
                token=token,
                now=now,
                fresh_until=fresh_until,
                stale_before=stale_before,
                insert={
                    "mime_type": mime_type,
                    "size_bytes": size_bytes,
                    "uploads": 0,
                    "delete_failures": 0,
                },
                take_over={"mime_type": ":m", "size_bytes": ":s", "deleted_at": "NULL"},
                m=mime_type,
                s=size_bytes,
            )
            return UploadClaim(_ACTIONS[got.verdict], got.record, got.taken_over)

    def bind_upload(
        self, pipeline: str, digest: str, *, token: str, name: str, uri: str, expires_at: float
    ) -> bool:
        """The upload reserved under ``token`` is the file ``name``; False if the reservation
        was taken over meanwhile (the other pass binds its own)."""
        assert UPLOAD_MOVES["bind_upload"][1] is UploadState.ACTIVE
        with self._write() as conn:
            sets = "name = :n, uri = :u, expires_at = :e, uploads = uploads + 1"
            return _TABLE.bind(
                conn, pipeline, digest, token, self.clock(), sets, n=name, u=uri, e=expires_at
            )

    def note_upload_uses(self, pipeline: str, digest: str, keys: Sequence[str]) -> None:
        """More rows read these bytes (the upload stays until they are final)."""
        with self._write() as conn:
            for key in keys:
                conn.execute(
                    text(
                        "INSERT INTO upload_uses (pipeline, content_hash, key) VALUES"
                        " (:p, :h, :k) ON CONFLICT DO NOTHING"
                    ),
                    {"p": pipeline, "h": digest, "k": key},
                )

    def release_upload(self, pipeline: str, digest: str, *, token: str) -> bool:
        """The upload reserved under ``token`` was refused: the reservation is removed (the
        next row reserves it again)."""
        with self._write() as conn:
            return _TABLE.release(conn, pipeline, digest, token)

    def uploads_to_delete(self, *, pipeline: str, limit: int = 200) -> list[UploadRecord]:
        """Bound uploads of ``pipeline`` every row of which is final (done, consumed or
        parked); those whose deletes failed least first."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM uploads u WHERE u.pipeline = :p"
                    f" AND u.state = {_ACTIVE} AND NOT EXISTS (SELECT 1 FROM upload_uses x"
                    " JOIN jobs j ON j.key = x.key WHERE x.pipeline = u.pipeline"
                    f" AND x.content_hash = u.content_hash AND j.status NOT IN ({FINAL_SQL}))"
                    " ORDER BY u.delete_failures, u.bound_at LIMIT :n"
                ),
                {"p": pipeline, "n": limit},
            ).all()
        return [UploadRecord(*row) for row in rows]

    def upload_deleted(self, pipeline: str, digest: str, *, name: str) -> bool:
        """The file ``name`` is gone from the Files API (deleted, or already gone)."""
        with self._write() as conn:
            where = f"state = {_ACTIVE} AND name = :n"
            return _TABLE.gone(conn, pipeline, digest, self.clock(), where, n=name)

    def upload_delete_failed(self, pipeline: str, digest: str, *, error: str) -> None:
        """A delete failed: counted on the upload (never on a row), retried later."""
        with self._write() as conn:
            _TABLE.delete_failed(conn, pipeline, digest, error, _ACTIVE)
