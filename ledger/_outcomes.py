"""Jobs coming back: results, failures, parking, delivery claims, consume, replay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, text

from ledger._errors import InvalidTransition
from ledger._failure import Failure
from ledger._models import Status
from ledger._records import (
    DELIVERY_CLASS_PREFIX,
    PROMPT_CLASS_PREFIX,
    Claimed,
    FailureRow,
    JobView,
    Policy,
    ResultRow,
    TakenOver,
)
from ledger._redact import redact
from ledger._revisions import RevisionVerbs
from ledger._sql import (
    CONSUMED,
    DONE,
    FAILURE_SET,
    MESSAGE_LIMIT,
    MOVES,
    PARKED,
    SQLITE_FAILURE_UPDATE,
    TOKEN_COLUMNS,
    S,
    failure_params,
    handle_of,
    pg_copy_failures,
    pg_copy_results,
    sqlite_failure_params,
)
from ledger._transitions import sql_in

__all__ = ["OutcomeVerbs"]


class OutcomeVerbs(RevisionVerbs):
    """Verbs that settle a submitted job and see its result delivered."""

    def apply_results(self, rows: Sequence[ResultRow], *, handle: str | Mapping[str, str]) -> int:
        """Move submitted jobs under ``handle`` to done with their results, in one transaction.

        Rows not ``submitted`` under that handle are left alone, so applying the same output
        twice changes nothing. ``handle`` may map each key to its own handle (background
        interactions: one handle per job, still one transaction). Returns how many were applied.
        """
        if not rows:
            return 0
        now = self.clock()
        tokens = ", ".join(f"{c} = {c} + ?" for c in TOKEN_COLUMNS)
        sql = f"""UPDATE jobs SET status = {MOVES["apply_results"].to(S.DONE)},
                result = ?, done_at = ?, updated_at = ?,
                error_class = NULL, reservation = NULL, {tokens},
                model_version = COALESCE(?, model_version),
                response_id = COALESCE(?, response_id)
            WHERE key = ? AND {MOVES["apply_results"].where()} AND handle = ?"""
        if self._is_pg:
            with self._write() as conn:
                return pg_copy_results(conn, rows, handle, now)
        params = [(r[1], now, now, *r[2:10], r[0], handle_of(handle, r[0])) for r in rows]
        with self._write() as conn:
            return self._bulk(conn, sql, params)

    def record_result(self, row: ResultRow, *, handle: str) -> None:
        """One job's result; refuses (InvalidTransition) unless it is submitted under handle."""
        if self.apply_results([row], handle=handle) != 1:
            with self._read() as conn:
                actual = self._status_of(conn, row.key)
            raise InvalidTransition(
                row.key,
                action="record a result for",
                expected=f"submitted under {handle}",
                actual=actual,
            )

    def apply_failures(
        self, rows: Sequence[FailureRow], *, handle: str | Mapping[str, str], policy: Policy
    ) -> int:
        """Apply classified failures to jobs submitted under ``handle`` (retryable or parked).

        ``handle`` may map each key to its own handle, as for :meth:`apply_results`. A
        ``schema`` failure of a row reserved under an earlier revision of its pipeline is
        sent back instead (:meth:`requeue_outdated`, in the same transaction); it counts
        among the rows applied.
        """
        if not rows:
            return 0
        now = self.clock()
        if self._is_pg:
            with self._write() as conn:
                requeued = self._requeue_outdated(conn, rows, handle, now)
                return requeued + pg_copy_failures(conn, rows, handle, policy, now)
        params = sqlite_failure_params(rows, handle, policy, now)
        with self._write() as conn:
            requeued = self._requeue_outdated(conn, rows, handle, now)
            return requeued + self._bulk(conn, SQLITE_FAILURE_UPDATE, params)

    def record_failure(
        self,
        key: str,
        failure: Failure,
        *,
        policy: Policy,
        handle: str | None = None,
        reservation: str | None = None,
    ) -> str:
        """Record one job's failure; returns the status it moved to (retryable or parked).

        Give ``handle`` for a submitted job, ``reservation`` for one whose submission failed
        before a handle was bound. A submitted job's ``schema`` failure under an earlier
        revision of its pipeline sends it back (:meth:`requeue_outdated`): pending or
        retryable.
        """
        if (handle is None) == (reservation is None):
            raise ValueError("give exactly one of handle or reservation")
        now = self.clock()
        if handle is not None:
            where, expected = (
                f"status = {MOVES['record_failure'].source_is(S.SUBMITTED)} AND handle = :handle",
                f"submitted under {handle}",
            )
        else:
            where, expected = (
                f"status = {MOVES['record_failure'].source_is(S.RESERVING)} AND reservation ="
                " :reservation",
                f"reserving under {reservation}",
            )
        params = failure_params(failure, policy, now)
        params.update(key=key, handle=handle, reservation=reservation)
        with self._write() as conn:
            if handle is not None and self._requeue_outdated(
                conn, [FailureRow(key, failure)], handle, now
            ):
                return self._status_of(conn, key) or ""
            self._cas_one(
                conn,
                f"UPDATE jobs SET {FAILURE_SET} WHERE key = :key AND {where}",
                params,
                action="record a failure for",
                expected=expected,
            )
            status = self._status_of(conn, key)
        assert status is not None
        return status

    def fail_outstanding(self, *, handle: str, failure: Failure, policy: Policy) -> int:
        """Fail every job still submitted under ``handle`` (rows an output never mentioned,
        or every row of a batch job that ended FAILED, CANCELLED or EXPIRED)."""
        now = self.clock()
        params = failure_params(failure, policy, now)
        params["handle"] = handle
        with self._write() as conn:
            return conn.execute(
                text(
                    f"UPDATE jobs SET {FAILURE_SET}"
                    " WHERE handle = :handle"
                    f" AND {MOVES['fail_outstanding'].where()}"
                ),
                params,
            ).rowcount

    def park(self, key: str, failure: Failure, *, from_status: Sequence[str]) -> None:
        """Park one job as it is (dead letter), whatever its attempts, from one of the states."""
        now = self.clock()
        with self._write() as conn:
            statuses = sql_in(Status(s) for s in from_status)
            self._cas_one(
                conn,
                f"UPDATE jobs SET status = {MOVES['park'].to(S.PARKED)}, error_class = :cls,"
                " error_message = :msg,"
                " parked_at = :now, first_failure_at = COALESCE(first_failure_at, :now),"
                " last_failure_at = :now, reservation = NULL, delivery_claim = NULL,"
                " claimed_at = NULL, updated_at = :now"
                f" WHERE key = :key AND status IN ({statuses})",
                {
                    "key": key,
                    "cls": failure.parked_class(),
                    "msg": redact(failure.message)[:MESSAGE_LIMIT],
                    "now": now,
                },
                action="park",
                expected=" or ".join(from_status),
            )

    def done_unconsumed(self, *, pipeline: str, limit: int = 10_000) -> list[tuple[str, str]]:
        """Jobs whose result is recorded but whose side effect has not completed."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT key, result FROM jobs WHERE pipeline = :p AND status = {DONE}"
                    " ORDER BY done_at, key LIMIT :n"
                ),
                {"p": pipeline, "n": limit},
            ).all()
        return [(row[0], row[1]) for row in rows]

    def claim_done(
        self, *, pipeline: str, token: str, limit: int = 10_000, older_than: float = 300.0
    ) -> Claimed:
        """Claim done jobs for delivery under ``token``: (key, result) of those claimed.

        Two ticks that find the same done rows never both run the side effect: the claim is a
        compare-and-set on the row's own ``delivery_claim`` column (token) and ``claimed_at``.
        A claim older than ``older_than`` seconds (its tick died inside the side effect) can
        be taken over; the result's ``taken_over`` says how many of the rows were, and when
        the dead pass last held one.
        """
        if limit <= 0:
            return Claimed([])
        now = self.clock()
        lock = " FOR UPDATE SKIP LOCKED" if self._is_pg else ""
        free = f"status = {DONE} AND (delivery_claim IS NULL OR claimed_at < :cutoff)"
        params = {"p": pipeline, "t": token, "now": now, "cutoff": now - older_than, "n": limit}
        with self._write() as conn:
            # The free rows are read (and, on PostgreSQL, locked) first, in the same
            # transaction, so the claims a dead pass held are known before they are replaced.
            found = conn.execute(
                text(
                    "SELECT key, delivery_claim, claimed_at FROM jobs"
                    f" WHERE pipeline = :p AND {free} ORDER BY done_at, key LIMIT :n{lock}"
                ),
                params,
            ).all()
            if found:
                conn.execute(
                    text(
                        "UPDATE jobs SET delivery_claim = :t, claimed_at = :now,"
                        f" updated_at = :now WHERE key IN :keys AND {free}"
                    ).bindparams(bindparam("keys", expanding=True)),
                    {**params, "keys": [row[0] for row in found]},
                )
            rows = conn.execute(
                text(
                    f"SELECT key, result FROM jobs WHERE delivery_claim = :t AND status = {DONE}"
                    " ORDER BY done_at, key"
                ),
                {"t": token},
            ).all()
        held: list[float | None] = [
            row[2] for row in found if row[1] is not None and row[1] != token
        ]
        return Claimed([(row[0], row[1]) for row in rows], TakenOver.of(held))

    def renew_delivery(self, token: str, *, key: str | None = None) -> int:
        """Renew the delivery claims held under ``token`` (``claimed_at`` = now), so no
        other pass takes them over while this one is alive; with ``key`` only that row.

        Returns how many rows were renewed: 0 for ``key`` means the row is no longer this
        pass's (another pass took the claim over once it had gone unrenewed for its age,
        or it was consumed): the pass must not run its side effect.
        """
        with self._write() as conn:
            return self._renew(conn, token, key, self.clock())

    def _renew(self, conn: Connection, token: str, key: str | None, now: float) -> int:
        only = " AND key = :key" if key is not None else ""
        # On the driver's cursor: a delivery pass renews a row per side effect.
        return self._bulk(
            conn,
            "UPDATE jobs SET claimed_at = :now"
            f" WHERE delivery_claim = :t AND {MOVES['renew_delivery'].where()}{only}",
            [{"t": token, "now": now, "key": key}],
        )

    def release_done(self, keys: Sequence[str], *, token: str) -> int:
        """Give back delivery claims (the side effect failed): the next tick may retry them."""
        if not keys:
            return 0
        now = self.clock()
        with self._write() as conn:
            return conn.execute(
                text(
                    "UPDATE jobs SET delivery_claim = NULL, claimed_at = NULL, updated_at = :now"
                    f" WHERE key = :key AND status = {DONE} AND delivery_claim = :t"
                ),
                [{"key": k, "t": token, "now": now} for k in keys],
            ).rowcount

    def fail_delivery(
        self, key: str, *, token: str, error_class: str, message: str, cap: int
    ) -> str:
        """A claimed row's delivery failed: count it and give the claim back; at ``cap``
        failures park it as ``error_class`` (``delivery:<Error>``), its result kept so a
        replay only delivers again. Returns the row's status (done, parked, or '' if the
        claim was no longer ours)."""
        now = self.clock()
        parks = "delivery_failures + 1 >= :cap"
        with self._write() as conn:
            changed = conn.execute(
                text(
                    "UPDATE jobs SET delivery_failures = delivery_failures + 1,"
                    f" status = CASE WHEN {parks} THEN {MOVES['fail_delivery'].to(S.PARKED)} ELSE"
                    " status END,"
                    f" error_class = CASE WHEN {parks} THEN :cls ELSE error_class END,"
                    f" error_message = CASE WHEN {parks} THEN :msg ELSE error_message END,"
                    f" parked_at = CASE WHEN {parks} THEN :now ELSE parked_at END,"
                    " first_failure_at = COALESCE(first_failure_at, :now),"
                    " last_failure_at = :now, delivery_claim = NULL, claimed_at = NULL,"
                    " updated_at = :now"
                    f" WHERE key = :key AND {MOVES['fail_delivery'].where()} AND"
                    " delivery_claim = :t"
                ),
                {
                    "key": key,
                    "t": token,
                    "cap": cap,
                    "cls": error_class[:96],
                    "msg": redact(message)[:MESSAGE_LIMIT],
                    "now": now,
                },
            ).rowcount
            return (self._status_of(conn, key) or "") if changed else ""

    def consume(self, keys: Sequence[str], *, token: str | None = None) -> int:
        """Mark jobs whose side effect completed (done -> consumed); returns how many moved.

        With ``token`` only rows still claimed under it move (a compare-and-set on the
        claim): a pass whose claim was taken over records nothing.
        """
        if not keys:
            return 0
        now = self.clock()
        claimed = " AND delivery_claim = :t" if token is not None else ""
        with self._write() as conn:
            # On the driver's cursor: a delivery pass consumes a row per side effect.
            return self._bulk(
                conn,
                # The delivery claim goes too: consumed rows, the ledger's bulk, stay out of
                # the delivery claim index.
                f"UPDATE jobs SET status = {MOVES['consume'].to(S.CONSUMED)},"
                " consumed_at = :now, updated_at = :now,"
                " delivery_claim = NULL, claimed_at = NULL WHERE key = :key AND"
                f" {MOVES['consume'].where()}{claimed}",
                [{"key": k, "now": now, "t": token} for k in keys],
            )

    def consume_and_renew(self, key: str, *, token: str, next_key: str) -> tuple[int, int]:
        """``consume([key], token=token)`` and ``renew_delivery(token, key=next_key)`` in one
        transaction: a delivery pass records the side effect it ran and renews its claim on
        the row it runs next at the same moment (one write a row, not two). Returns
        (consumed, renewed): each 0 when that row is no longer the pass's."""
        now = self.clock()
        move = MOVES["consume_and_renew"]
        with self._write() as conn:
            consumed = self._bulk(
                conn,
                f"UPDATE jobs SET status = {move.to(S.CONSUMED)},"
                " consumed_at = :now, updated_at = :now, delivery_claim = NULL,"
                f" claimed_at = NULL WHERE key = :key AND {move.where()}"
                " AND delivery_claim = :t",
                [{"key": key, "now": now, "t": token}],
            )
            return consumed, self._renew(conn, token, next_key, now)

    def consume_one(self, key: str) -> None:
        """Mark one job consumed; refuses unless it is done."""
        if self.consume([key]) != 1:
            with self._read() as conn:
                actual = self._status_of(conn, key)
            raise InvalidTransition(key, action="consume", expected="done", actual=actual)

    def select_for_replay(
        self, *, limit: int = 20, error_class: str | None = None, pipeline: str | None = None
    ) -> list[JobView]:
        """Parked jobs, oldest failure first, optionally of one error class or pipeline."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        clauses = [f"status = {PARKED}"]
        params: dict[str, Any] = {"n": limit}
        if error_class is not None:
            clauses.append("error_class = :cls")
            params["cls"] = error_class
        if pipeline is not None:
            clauses.append("pipeline = :p")
            params["p"] = pipeline
        return self._views(
            f"WHERE {' AND '.join(clauses)} ORDER BY first_failure_at, key LIMIT :n", params
        )

    def replay(self, keys: Sequence[str]) -> int:
        """Return parked jobs to pending with a fresh allowance of attempts.

        The attempts already spent stay counted (they were billed); the caps count from
        here. The row remembers how many times it was replayed. A job parked by its
        delivery (``delivery:<Error>``) still has its result: it goes back to ``done``, so
        only the delivery runs again (no API call, no new attempt).
        """
        if not keys:
            return 0
        now = self.clock()
        redeliver = "error_class LIKE :delivery"
        with self._write() as conn:
            return conn.execute(
                text(
                    f"UPDATE jobs SET status = CASE WHEN {redeliver} THEN"
                    f" {MOVES['replay'].to(S.DONE)} ELSE {MOVES['replay'].to(S.PENDING)}"
                    f" END, handle = CASE WHEN {redeliver} THEN handle ELSE NULL END,"
                    " attempts_base = attempts, unknown_failures = 0, delivery_failures = 0,"
                    " replayed = replayed + 1, due_at = :now,"
                    " parked_at = NULL, reservation = NULL, delivery_claim = NULL,"
                    " claimed_at = NULL, updated_at = :now"
                    f" WHERE key = :key AND {MOVES['replay'].where()}"
                    # A row parked prompt:<Error> holds no request to send: a tick of its
                    # day rebuilds it (rebuild_prompts) once its prompt builds.
                    " AND (error_class IS NULL OR error_class NOT LIKE :prompt)"
                ),
                [
                    {
                        "key": k,
                        "now": now,
                        "delivery": f"{DELIVERY_CLASS_PREFIX}%",
                        "prompt": f"{PROMPT_CLASS_PREFIX}%",
                    }
                    for k in keys
                ],
            ).rowcount

    def purge(self, *, older_than_days: float = 30.0) -> int:
        """Delete consumed jobs settled longer ago than the retention window."""
        cutoff = self.clock() - older_than_days * 86400
        with self._write() as conn:
            return conn.execute(
                text(f"DELETE FROM jobs WHERE status = {CONSUMED} AND consumed_at < :c"),
                {"c": cutoff},
            ).rowcount
