"""Batch jobs (``batch_jobs`` and ``batch_members``): bind, lease, look up, finish; and the
files they put in the Files API (``batch_files``), kept until deleted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, text

from ledger._base import LedgerBase
from ledger._errors import InvalidTransition
from ledger._models import FileRole
from ledger._records import BATCH_COLUMNS, BatchFileRecord, BatchRecord, SubmissionRefusals
from ledger._sql import (
    BATCH_REFUSED,
    BATCH_RESERVING,
    BATCH_SUBMITTED,
    MOVES,
    SUBMITTED,
    S,
    chunks,
)
from ledger._transitions import sql_literal

__all__ = ["REFUSED_SINCE_SUCCESS", "BatchVerbs"]

MISS_COLUMNS = ("misses", "missed_since")

# The refused batch reservations of pipeline ``b.pipeline`` refused after its last batch job
# was created (bound): the current run of refusals.
REFUSED_SINCE_SUCCESS = (
    f"b.state = {BATCH_REFUSED} AND b.finished_at > COALESCE((SELECT MAX(s.submitted_at)"
    " FROM batch_jobs s WHERE s.pipeline = b.pipeline), 0)"
)


class BatchVerbs(LedgerBase):
    """Verbs over the batch jobs the ledger asked the API for."""

    def bind_batch(self, reservation: str, *, name: str) -> int:
        """Bind a created batch job to its reservation; its rows become submitted.

        Binding the same name twice is a no-op; returns how many rows were bound.
        """
        now = self.clock()
        with self._write() as conn:
            changed = conn.execute(
                text(
                    f"UPDATE batch_jobs SET name = :name, state = {BATCH_SUBMITTED}, submitted_at ="
                    " :now"
                    f" WHERE reservation = :r AND state = {BATCH_RESERVING}"
                ),
                {"name": name, "r": reservation, "now": now},
            ).rowcount
            if changed != 1:
                bound = conn.execute(
                    text("SELECT name FROM batch_jobs WHERE reservation = :r"), {"r": reservation}
                ).scalar()
                if bound == name:
                    return 0
                raise InvalidTransition(
                    reservation,
                    action="bind batch job",
                    expected="a batch reservation not yet bound",
                    actual=f"bound to {bound}" if bound else None,
                )
            bound_rows = conn.execute(
                text(
                    f"UPDATE jobs SET status = {MOVES['bind_batch'].to(S.SUBMITTED)},"
                    " handle = :name, submitted_at = :now,"
                    " reservation = NULL,"
                    " updated_at = :now WHERE reservation = :r AND "
                    f" {MOVES['bind_batch'].where()}"
                ),
                {"name": name, "r": reservation, "now": now},
            ).rowcount
        self._refresh_stats(bound_rows)
        return bound_rows

    def lease_batch(self, reservation: str, *, seen_lease: float) -> bool:
        """Take a stale batch reservation over (only one tick wins) before re-sending it."""
        now = self.clock()
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE batch_jobs SET leased_at = :now WHERE reservation = :r"
                        f" AND state = {BATCH_RESERVING} AND leased_at = :seen"
                    ),
                    {"r": reservation, "seen": seen_lease, "now": now},
                ).rowcount
                == 1
            )

    def renew_batch_lease(self, reservation: str, *, seen_lease: float) -> float | None:
        """Renew the lease of a batch reservation this pass holds (its ``leased_at`` is still
        ``seen_lease``, the value this pass last wrote): the new lease, or None when another
        pass took it over (or it is no longer reserving) and this one must not send it."""
        now = self.clock()
        with self._write() as conn:
            changed = conn.execute(
                text(
                    "UPDATE batch_jobs SET leased_at = :now WHERE reservation = :r"
                    f" AND state = {BATCH_RESERVING} AND leased_at = :seen"
                ),
                {"r": reservation, "seen": seen_lease, "now": now},
            ).rowcount
        return now if changed == 1 else None

    def _batches(self, where: str, params: Mapping[str, Any]) -> list[BatchRecord]:
        with self._read() as conn:
            rows = conn.execute(
                text(f"SELECT {BATCH_COLUMNS} FROM batch_jobs {where}"), params
            ).all()
        return [BatchRecord(*row) for row in rows]

    def batch(self, reservation: str) -> BatchRecord | None:
        found = self._batches("WHERE reservation = :r", {"r": reservation})
        return found[0] if found else None

    def batch_named(self, name: str) -> BatchRecord | None:
        found = self._batches("WHERE name = :n", {"n": name})
        return found[0] if found else None

    def stale_batches(self, *, pipeline: str, older_than: float) -> list[BatchRecord]:
        """Batch reservations never bound to a created job, older than ``older_than`` s."""
        cutoff = self.clock() - older_than
        return self._batches(
            f"WHERE pipeline = :p AND state = {BATCH_RESERVING} AND leased_at < :c ORDER BY"
            " created_at",
            {"p": pipeline, "c": cutoff},
        )

    def submitted_batches(self, *, pipeline: str | None = None) -> list[BatchRecord]:
        """Batch jobs created and bound but not reconciled yet."""
        if pipeline is None:
            return self._batches(f"WHERE state = {BATCH_SUBMITTED} ORDER BY submitted_at", {})
        return self._batches(
            f"WHERE pipeline = :p AND state = {BATCH_SUBMITTED} ORDER BY submitted_at",
            {"p": pipeline},
        )

    def batches_holding(self, *, pipeline: str, enrolled_by: float) -> list[BatchRecord]:
        """Submitted batch jobs of a pipeline holding a row still submitted under them that
        was enrolled at or before ``enrolled_by`` (a deadline's switch-over cancels those)."""
        return self._batches(
            f"WHERE pipeline = :p AND state = {BATCH_SUBMITTED} AND name IN (SELECT handle"
            f" FROM jobs WHERE pipeline = :p AND status = {SUBMITTED} AND created_at <= :by)"
            " ORDER BY submitted_at",
            {"p": pipeline, "by": enrolled_by},
        )

    def mark_deadline_cancel(self, name: str) -> bool:
        """Record that we are cancelling the submitted job ``name`` to meet a deadline, before
        ``batches.cancel`` is asked: whoever settles it later (a tick, the ``reconcile`` flow
        a webhook starts, after a crash) reads its CANCELLED end as the deadline's, whatever
        gave the deadline. The first mark is kept; False if the job is not submitted."""
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE batch_jobs SET deadline_cancel_at = COALESCE(deadline_cancel_at,"
                        f" :now) WHERE name = :name AND state = {BATCH_SUBMITTED}"
                    ),
                    {"name": name, "now": self.clock()},
                ).rowcount
                == 1
            )

    def batch_members(self, reservation: str) -> list[str]:
        with self._read() as conn:
            return list(
                conn.execute(
                    text("SELECT key FROM batch_members WHERE reservation = :r ORDER BY key"),
                    {"r": reservation},
                ).scalars()
            )

    def count_members(self, reservation: str, keys: Sequence[str]) -> int:
        """How many of ``keys`` (distinct) went into the batch reserved as ``reservation``.

        Reconcile uses it to tell an output line for a row that was never in the batch (an
        unknown key) from one for a row that was already settled.
        """
        found = 0
        sql = text(
            "SELECT COUNT(*) FROM batch_members WHERE reservation = :r AND key IN :keys"
        ).bindparams(bindparam("keys", expanding=True))
        with self._read() as conn:
            for chunk in chunks(keys, 5000):
                found += int(conn.execute(sql, {"r": reservation, "keys": chunk}).scalar() or 0)
        return found

    def finish_batch(self, name: str, *, state: str, summary: Mapping[str, Any]) -> bool:
        """Mark a submitted batch job reconciled with its final state; False if it already was."""
        now = self.clock()
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE batch_jobs SET state = :state, finished_at = :now,"
                        " reconciled_at = :now, summary = :summary"
                        f" WHERE name = :name AND state = {BATCH_SUBMITTED}"
                    ),
                    {
                        "state": state,
                        "now": now,
                        "name": name,
                        "summary": orjson.dumps(dict(summary)).decode(),
                    },
                ).rowcount
                == 1
            )

    def note_batch_miss(self, name: str, *, output: bool = False) -> tuple[int, float]:
        """Count one failed read of the submitted job ``name``: a poll answered 404, or with
        ``output`` a responses file that could not be downloaded. Returns how many in a row
        and since when."""
        now = self.clock()
        count, since = ("output_misses", "output_missed_since") if output else MISS_COLUMNS
        with self._write() as conn:
            conn.execute(
                text(
                    f"UPDATE batch_jobs SET {count} = {count} + 1,"
                    f" {since} = COALESCE({since}, :now)"
                    f" WHERE name = :name AND state = {BATCH_SUBMITTED}"
                ),
                {"name": name, "now": now},
            )
            row = conn.execute(
                text(f"SELECT {count}, {since} FROM batch_jobs WHERE name = :name"),
                {"name": name},
            ).one_or_none()
        if row is None:
            return 0, now
        return int(row[0] or 0), float(row[1] if row[1] is not None else now)

    def clear_batch_misses(self, name: str) -> None:
        """A poll of the job ``name`` succeeded: its run of 404s is over."""
        with self._write() as conn:
            conn.execute(
                text(
                    "UPDATE batch_jobs SET misses = 0, missed_since = NULL"
                    " WHERE name = :name AND misses > 0"
                ),
                {"name": name},
            )

    def submission_refusals(self, pipeline: str) -> SubmissionRefusals:
        """The batch submissions of ``pipeline`` the API refused since its last batch job
        was created: how many, since when, and the last reason given."""
        with self._read() as conn:
            count, since, last_at = conn.execute(
                text(
                    "SELECT COUNT(*), MIN(b.finished_at), MAX(b.finished_at) FROM batch_jobs b"
                    f" WHERE b.pipeline = :p AND {REFUSED_SINCE_SUCCESS}"
                ),
                {"p": pipeline},
            ).one()
            last = conn.execute(
                text(
                    "SELECT b.summary FROM batch_jobs b"
                    f" WHERE b.pipeline = :p AND {REFUSED_SINCE_SUCCESS}"
                    " ORDER BY b.finished_at DESC LIMIT 1"
                ),
                {"p": pipeline},
            ).scalar()
        reason = None
        if last:
            try:
                reason = orjson.loads(last).get("refused")
            except (orjson.JSONDecodeError, AttributeError):
                reason = None
        return SubmissionRefusals(
            int(count or 0),
            float(since) if since is not None else None,
            float(last_at) if last_at is not None else None,
            reason,
        )

    # --- the Files API's files of a batch job (batch_files) ---------------------------------

    def note_file(
        self, name: str, *, reservation: str, pipeline: str, role: FileRole, size_bytes: int = 0
    ) -> bool:
        """Record a file of the batch reserved as ``reservation`` so it is deleted later;
        False if it was already recorded."""
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "INSERT INTO batch_files (name, reservation, pipeline, role, size_bytes,"
                        " recorded_at, delete_failures) VALUES (:name, :r, :p, :role, :size,"
                        " :now, 0) ON CONFLICT (name) DO NOTHING"
                    ),
                    {
                        "name": name,
                        "r": reservation,
                        "p": pipeline,
                        "role": str(role),
                        "size": int(size_bytes),
                        "now": self.clock(),
                    },
                ).rowcount
                == 1
            )

    def files_to_delete(self, *, pipeline: str, limit: int = 200) -> list[BatchFileRecord]:
        """Files of ``pipeline`` not deleted yet whose use is over: a responses file (it is
        recorded once reconciled), or an input file whose batch job is no longer reserving or
        submitted (terminal and reconciled, released or refused before creation, or given up as
        lost). Files whose deletes failed least come first, so one that keeps failing never
        holds up the rest."""
        busy = f"{BATCH_RESERVING}, {BATCH_SUBMITTED}"
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT f.name, f.reservation, f.role, f.size_bytes, f.recorded_at,"
                    " f.delete_failures FROM batch_files f"
                    " LEFT JOIN batch_jobs b ON b.reservation = f.reservation"
                    " WHERE f.pipeline = :p AND f.deleted_at IS NULL"
                    f" AND (f.role = {sql_literal(FileRole.OUTPUT)} OR b.state IS NULL"
                    f" OR b.state NOT IN ({busy}))"
                    " ORDER BY f.delete_failures, f.recorded_at, f.name LIMIT :n"
                ),
                {"p": pipeline, "n": limit},
            ).all()
        return [BatchFileRecord(*row) for row in rows]

    def file_deleted(self, name: str, *, note: str | None = None) -> bool:
        """The file is gone from the Files API (deleted, or already gone); False if it was
        already marked."""
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE batch_files SET deleted_at = :now,"
                        " last_error = COALESCE(:note, last_error)"
                        " WHERE name = :name AND deleted_at IS NULL"
                    ),
                    {"name": name, "now": self.clock(), "note": note},
                ).rowcount
                == 1
            )

    def file_delete_failed(self, name: str, *, error: str) -> None:
        """A delete of the file failed: counted on the file (never on a row), retried later."""
        with self._write() as conn:
            conn.execute(
                text(
                    "UPDATE batch_files SET delete_failures = delete_failures + 1,"
                    " last_error = :error WHERE name = :name AND deleted_at IS NULL"
                ),
                {"name": name, "error": error[:500]},
            )

    def files_not_deleted(self, *, pipeline: str | None = None) -> tuple[int, int]:
        """How many recorded files are not deleted yet, and their bytes."""
        where = "deleted_at IS NULL" + (" AND pipeline = :p" if pipeline is not None else "")
        with self._read() as conn:
            n, size = conn.execute(
                text(
                    f"SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM batch_files WHERE {where}"
                ),
                {"p": pipeline},
            ).one()
        return int(n), int(size)
