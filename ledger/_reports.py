"""Read-only views of the ledger: rows, counts, usage, in flight, poison inputs, snapshots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import bindparam, text

from ledger._base import LedgerBase
from ledger._errors import UnknownJob
from ledger._lines import Usage
from ledger._records import Counts, JobView, ModelUsage
from ledger._sql import DONE, PARKED, PENDING, RESERVING, RETRYABLE, SUBMITTED, TOKEN_COLUMNS
from ledger._transitions import ACTIVE, sql_in

__all__ = ["ReportVerbs"]


_TOTAL = "*"


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern for values starting with ``prefix`` (handles hold no ``%`` or ``_``
    wildcards of their own: ``direct:``, ``batches/``)."""
    if "%" in prefix or "_" in prefix:
        raise ValueError(f"a handle prefix without LIKE wildcards, got {prefix!r}")
    return f"{prefix}%"


class ReportVerbs(LedgerBase):
    """What the ledger can tell: reads, plus the daily parked snapshot."""

    def in_flight(self, *, pipeline: str | None = None) -> dict[str, tuple[int, float]]:
        """Rows in each non-final state and the age in seconds of the oldest, by how long
        it has been in that state."""
        since = (
            f"CASE status WHEN {PENDING} THEN created_at WHEN {RESERVING} THEN reserved_at"
            f" WHEN {SUBMITTED} THEN submitted_at WHEN {DONE} THEN done_at"
            " ELSE last_failure_at END"
        )
        where = " AND pipeline = :p" if pipeline else ""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT status, COUNT(*), MIN(COALESCE({since}, updated_at)) FROM jobs"
                    f" WHERE status IN ({sql_in(ACTIVE)})"
                    f"{where} GROUP BY status"
                ),
                {"p": pipeline} if pipeline else {},
            ).all()
        now = self.clock()
        return {str(row[0]): (int(row[1]), max(0.0, now - float(row[2] or now))) for row in rows}

    def poison_inputs(self, *, min_keys: int = 2) -> list[tuple[str, int, str]]:
        """Payload fingerprints parked under at least ``min_keys`` keys: (fingerprint, keys,
        one error class)."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT fingerprint, COUNT(*), MIN(error_class) FROM jobs"
                    f" WHERE status = {PARKED} GROUP BY fingerprint HAVING COUNT(*) >= :m"
                    " ORDER BY COUNT(*) DESC, fingerprint"
                ),
                {"m": min_keys},
            ).all()
        return [(row[0], int(row[1]), row[2]) for row in rows]

    def get(self, key: str) -> JobView:
        """One job's row; raises UnknownJob if there is none."""
        views = self._views("WHERE key = :key", {"key": key})
        if not views:
            raise UnknownJob(key)
        return views[0]

    def latest_due_at(self, keys: Sequence[str]) -> float | None:
        """The latest ``due_at`` of the jobs ``keys`` (None when none of them is known): one
        read for a group of rows sent together, not one per row."""
        if not keys:
            return None
        with self._read() as conn:
            value = conn.execute(
                text("SELECT MAX(due_at) FROM jobs WHERE key IN :keys").bindparams(
                    bindparam("keys", expanding=True)
                ),
                {"keys": list(keys)},
            ).scalar()
        return None if value is None else float(value)

    def jobs(self, *, pipeline: str | None = None, status: str | None = None) -> list[JobView]:
        """Every job (of a pipeline, in a state): for tests, reports and small ledgers."""
        clauses, params = ["1 = 1"], {}
        if pipeline is not None:
            clauses.append("pipeline = :p")
            params["p"] = pipeline
        if status is not None:
            clauses.append("status = :s")
            params["s"] = status
        return self._views(f"WHERE {' AND '.join(clauses)} ORDER BY key", params)

    def outstanding(
        self, *, pipeline: str, handle_prefix: str | None = None
    ) -> list[tuple[str, str, float]]:
        """Submitted jobs and their handles: (key, handle, submitted_at); with
        ``handle_prefix``, only those whose handle starts with it."""
        params: dict[str, str] = {"p": pipeline}
        where = ""
        if handle_prefix is not None:
            where = " AND handle LIKE :prefix"
            params["prefix"] = _like_prefix(handle_prefix)
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT key, handle, submitted_at FROM jobs WHERE pipeline = :p"
                    f" AND status = {SUBMITTED}{where} ORDER BY submitted_at, key"
                ),
                params,
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]

    def rows_out(
        self, *, pipeline: str, enrolled_by: float | None = None
    ) -> tuple[int, float | None]:
        """Rows of a pipeline not yet answered (pending, reserving, submitted, retryable) and
        when the oldest of them was enrolled (epoch seconds; None when there is none); with
        ``enrolled_by``, only those enrolled at or before that instant (a deadline's rows due
        by its first time after it)."""
        by = " AND created_at <= :by" if enrolled_by is not None else ""
        with self._read() as conn:
            row = conn.execute(
                text(
                    "SELECT COUNT(*), MIN(created_at) FROM jobs WHERE pipeline = :p AND status"
                    f" IN ({PENDING}, {RESERVING}, {SUBMITTED}, {RETRYABLE}){by}"
                ),
                {"p": pipeline, "by": enrolled_by},
            ).one()
        return int(row[0] or 0), (float(row[1]) if row[1] is not None else None)

    def call_seconds(self, *, model: str, handle_prefix: str, sample: int = 200) -> float | None:
        """The median time from send to answer of the last ``sample`` calls of ``model``
        answered under a handle starting with ``handle_prefix`` (a call's handle is bound
        as it leaves, its answer recorded as it arrives): None when there is none."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT done_at - submitted_at FROM jobs WHERE model = :m"
                    " AND handle LIKE :prefix AND done_at IS NOT NULL"
                    " AND submitted_at IS NOT NULL AND done_at >= submitted_at"
                    " ORDER BY done_at DESC LIMIT :n"
                ),
                {"m": model, "prefix": _like_prefix(handle_prefix), "n": sample},
            ).all()
        seconds = sorted(float(r[0]) for r in rows)
        return seconds[len(seconds) // 2] if seconds else None

    def usage_sent_as(self, *, pipeline: str, handle_prefix: str) -> list[ModelUsage]:
        """Usage of a pipeline's rows last sent under a handle starting with
        ``handle_prefix`` on a channel that is not their own (a batch row sent directly to
        meet a deadline): their lines as :meth:`usage_by_model` gives them, under their own
        channel."""
        tokens = ", ".join(f"COALESCE(SUM({c}), 0)" for c in TOKEN_COLUMNS)
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT model, model_version, channel, COUNT(*), COALESCE(SUM(attempts), 0),"
                    f" {tokens} FROM jobs WHERE pipeline = :p AND handle LIKE :prefix"
                    " GROUP BY model, model_version, channel"
                ),
                {"p": pipeline, "prefix": _like_prefix(handle_prefix)},
            ).all()
        return [
            ModelUsage(
                row[0], row[1], row[2], int(row[3]), int(row[4]), Usage(*(int(n) for n in row[5:]))
            )
            for row in rows
        ]

    def counts(self, *, pipeline: str | None = None) -> Counts:
        """Counts by status and by error class, attempts and tokens."""
        where = "WHERE pipeline = :p" if pipeline else ""
        params = {"p": pipeline} if pipeline else {}
        with self._read() as conn:
            by_status = {
                row[0]: int(row[1])
                for row in conn.execute(
                    text(f"SELECT status, COUNT(*) FROM jobs {where} GROUP BY status"), params
                )
            }
            by_class: dict[str, dict[str, int]] = {"parked": {}, "retryable": {}}
            for status, cls, n in conn.execute(
                text(
                    "SELECT status, error_class, COUNT(*) FROM jobs"
                    f" {where + ' AND' if where else 'WHERE'} status IN ({PARKED}, {RETRYABLE})"
                    " GROUP BY status, error_class"
                ),
                params,
            ):
                by_class[status][cls or "unclassified"] = int(n)
            tokens = ", ".join(f"COALESCE(SUM({c}), 0)" for c in TOKEN_COLUMNS)
            totals = conn.execute(
                text(
                    "SELECT COALESCE(SUM(attempts), 0),"
                    " COALESCE(SUM(possible_duplicates), 0), COALESCE(SUM(replayed), 0),"
                    f" {tokens} FROM jobs {where}"
                ),
                params,
            ).one()
        return Counts(
            by_status=by_status,
            by_error_class=dict(sorted(by_class["parked"].items())),
            retrying_by_class=dict(sorted(by_class["retryable"].items())),
            attempts=int(totals[0]),
            usage=Usage(*(int(n) for n in totals[3:])),
            possible_duplicates=int(totals[1]),
            replayed=int(totals[2]),
        )

    def counts_by_pipeline(self) -> dict[str, dict[str, int]]:
        """Jobs of every pipeline that has any, by status (one pass over the claim index)."""
        out: dict[str, dict[str, int]] = {}
        with self._read() as conn:
            for pipeline, status, n in conn.execute(
                text("SELECT pipeline, status, COUNT(*) FROM jobs GROUP BY pipeline, status")
            ):
                out.setdefault(pipeline, {})[status] = int(n)
        return out

    def usage_by_model(self, *, pipeline: str | None = None) -> list[ModelUsage]:
        """Rows, attempts and tokens per (model, model version, channel), for cost estimates.

        The model version is what the last answer named (``modelVersion``); rows without an
        answer have none. A pipeline on an alias (``gemini-flash-latest``) is thus priced by
        what actually ran where that is known."""
        where = "WHERE pipeline = :p" if pipeline else ""
        params = {"p": pipeline} if pipeline else {}
        tokens = ", ".join(f"COALESCE(SUM({c}), 0)" for c in TOKEN_COLUMNS)
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT model, model_version, channel, COUNT(*), COALESCE(SUM(attempts), 0),"
                    f" {tokens} FROM jobs {where}"
                    " GROUP BY model, model_version, channel"
                ),
                params,
            ).all()
        out = [
            ModelUsage(
                row[0], row[1], row[2], int(row[3]), int(row[4]), Usage(*(int(n) for n in row[5:]))
            )
            for row in rows
        ]
        return sorted(out, key=lambda u: (u.model, u.model_version or "", u.channel))

    def handle_counts(self, handle: str) -> dict[tuple[str, str | None], int]:
        """(status, error_class) -> jobs last submitted under one handle."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, error_class, COUNT(*) FROM jobs WHERE handle = :h"
                    " GROUP BY status, error_class"
                ),
                {"h": handle},
            ).all()
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def save_snapshot(self, day: str, parked_by_class: Mapping[str, int]) -> None:
        """Store parked-jobs-per-class for ``day`` (YYYY-MM-DD), replacing that day's."""
        now = self.clock()
        # The total row is always written, so a day with nothing parked is told apart from a
        # day the summary did not run.
        rows = {**parked_by_class, _TOTAL: sum(parked_by_class.values())}
        with self._write() as conn:
            conn.execute(text("DELETE FROM parked_snapshots WHERE day = :d"), {"d": day})
            conn.execute(
                text(
                    "INSERT INTO parked_snapshots (day, error_class, parked, taken_at)"
                    " VALUES (:d, :c, :n, :now)"
                ),
                [{"d": day, "c": c, "n": n, "now": now} for c, n in rows.items()],
            )

    def snapshot(self, day: str) -> dict[str, int] | None:
        """Parked-per-class stored for ``day``, or None if no summary ran that day."""
        with self._read() as conn:
            rows = conn.execute(
                text("SELECT error_class, parked FROM parked_snapshots WHERE day = :d"), {"d": day}
            ).all()
        if not rows:
            return None
        return {row[0]: int(row[1]) for row in rows if row[0] != _TOTAL}
