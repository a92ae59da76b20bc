"""Uploads of prompts' media (``uploads``, ``upload_uses``): reserved by content hash before
the Files API call, bound to the file after it, shared by every row reading the same bytes,
uploaded again once expired, deleted when every row using it is final. Never a row's attempt.

The moves are declared once in ``ledger._transitions.UPLOAD_MOVES``; each ``UPDATE`` names
the state (and token) it moves from, so two passes never both upload the same bytes: the one
whose compare-and-set changed no row uses the other's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import text

from ledger._base import LedgerBase
from ledger._models import Status
from ledger._transitions import UPLOAD_MOVES, UploadState, sql_in, sql_literal

__all__ = ["FINAL_SQL", "UploadClaim", "UploadRecord", "UploadVerbs"]

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


class UploadClaim(NamedTuple):
    """What ``reserve_upload`` decided: ``use`` the bound file, ``upload`` under our token
    (``taken_over``: a dead pass had reserved it, so look for its file by display name
    first), or ``wait`` (another live pass is uploading these bytes)."""

    action: str
    record: UploadRecord
    taken_over: bool = False


class UploadVerbs(LedgerBase):
    """Verbs over the Files API uploads of prompts' media."""

    def _upload(self, conn: object, pipeline: str, digest: str) -> UploadRecord | None:
        row = conn.execute(  # type: ignore[attr-defined]
            text(f"SELECT {_COLUMNS} FROM uploads WHERE pipeline = :p AND content_hash = :h"),
            {"p": pipeline, "h": digest},
        ).first()
        return None if row is None else UploadRecord(*row)

    def get_upload(self, pipeline: str, digest: str) -> UploadRecord | None:
        with self._read() as conn:
            return self._upload(conn, pipeline, digest)

    def uploads(self, pipeline: str) -> list[UploadRecord]:
        """Every upload the pipeline's rows have read, by content hash (``uploads`` counts
        the Files API uploads made for it: more than one when it expired and was sent again)."""
        with self._read() as conn:
            rows = conn.execute(
                text(f"SELECT {_COLUMNS} FROM uploads WHERE pipeline = :p ORDER BY content_hash"),
                {"p": pipeline},
            ).all()
        return [UploadRecord(*r) for r in rows]

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
            found = self._upload(conn, pipeline, digest)
            if found is None:
                inserted = conn.execute(
                    text(
                        "INSERT INTO uploads (pipeline, content_hash, state, token,"
                        " reserved_at, mime_type, size_bytes, uploads, delete_failures)"
                        f" VALUES (:p, :h, {_RESERVING}, :t, :now, :m, :s, 0, 0)"
                        " ON CONFLICT DO NOTHING"
                    ),
                    {
                        "p": pipeline,
                        "h": digest,
                        "t": token,
                        "now": now,
                        "m": mime_type,
                        "s": size_bytes,
                    },
                ).rowcount
                record = self._upload(conn, pipeline, digest)
                assert record is not None
                return UploadClaim("upload" if inserted == 1 else "wait", record)
            if found.state == UploadState.ACTIVE and (found.expires_at or 0) > fresh_until:
                return UploadClaim("use", found)
            if found.state == UploadState.RESERVING and found.reserved_at >= stale_before:
                return UploadClaim("upload" if found.token == token else "wait", found)
            taken_over = found.state == UploadState.RESERVING
            moved = conn.execute(
                text(
                    f"UPDATE uploads SET state = {_RESERVING}, token = :t, reserved_at = :now,"
                    " mime_type = :m, size_bytes = :s, deleted_at = NULL"
                    " WHERE pipeline = :p AND content_hash = :h AND state = :state"
                    " AND reserved_at = :was"
                ),
                {
                    "t": token,
                    "now": now,
                    "m": mime_type,
                    "s": size_bytes,
                    "p": pipeline,
                    "h": digest,
                    "state": found.state,
                    "was": found.reserved_at,
                },
            ).rowcount
            record = self._upload(conn, pipeline, digest)
            assert record is not None
            return UploadClaim("upload" if moved == 1 else "wait", record, taken_over)

    def bind_upload(
        self, pipeline: str, digest: str, *, token: str, name: str, uri: str, expires_at: float
    ) -> bool:
        """The upload reserved under ``token`` is the file ``name``; False if the reservation
        was taken over meanwhile (the other pass binds its own)."""
        assert UPLOAD_MOVES["bind_upload"][1] is UploadState.ACTIVE
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        f"UPDATE uploads SET state = {_ACTIVE}, name = :n, uri = :u,"
                        " expires_at = :e, bound_at = :now, uploads = uploads + 1"
                        f" WHERE pipeline = :p AND content_hash = :h AND state = {_RESERVING}"
                        " AND token = :t"
                    ),
                    {
                        "n": name,
                        "u": uri,
                        "e": expires_at,
                        "now": self.clock(),
                        "p": pipeline,
                        "h": digest,
                        "t": token,
                    },
                ).rowcount
                == 1
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
            return (
                conn.execute(
                    text(
                        "DELETE FROM uploads WHERE pipeline = :p AND content_hash = :h"
                        f" AND state = {_RESERVING} AND token = :t"
                    ),
                    {"p": pipeline, "h": digest, "t": token},
                ).rowcount
                == 1
            )

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
            return (
                conn.execute(
                    text(
                        f"UPDATE uploads SET state = {_DELETED}, deleted_at = :now"
                        f" WHERE pipeline = :p AND content_hash = :h AND state = {_ACTIVE}"
                        " AND name = :n"
                    ),
                    {"now": self.clock(), "p": pipeline, "h": digest, "n": name},
                ).rowcount
                == 1
            )

    def upload_delete_failed(self, pipeline: str, digest: str, *, error: str) -> None:
        """A delete failed: counted on the upload (never on a row), retried later."""
        with self._write() as conn:
            conn.execute(
                text(
                    "UPDATE uploads SET delete_failures = delete_failures + 1, last_error = :e"
                    f" WHERE pipeline = :p AND content_hash = :h AND state = {_ACTIVE}"
                ),
                {"e": error[:500], "p": pipeline, "h": digest},
            )
