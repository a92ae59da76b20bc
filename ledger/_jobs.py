"""Jobs on their way out: enroll, reserve, bind a handle, take over, release (or park
before sending)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, text

from ledger._base import LedgerBase
from ledger._failure import Failure
from ledger._records import (
    PROMPT_CLASS_PREFIX,
    Enrollment,
    NewJob,
    ParkedJob,
    Reserved,
    fingerprint_of,
)
from ledger._redact import redact
from ledger._sql import (
    BATCH_RESERVING,
    FOREIGN_EXAMPLES,
    MESSAGE_LIMIT,
    MOVES,
    PARKED,
    RESERVING,
    REVISION_OF,
    S,
    chunks,
    payload_text,
    pg_copy_enroll,
    pg_copy_new_jobs,
)
from ledger._transitions import BatchState

__all__ = ["JobVerbs"]


class JobVerbs(LedgerBase):
    """Verbs that bring a job from enrollment to submitted (or back to its queue)."""

    def enroll(self, items: Iterable[NewJob], *, pipeline: str, channel: str, model: str) -> int:
        """Insert jobs that are not in the ledger yet; an existing key is never changed.

        Returns how many were new (:meth:`enroll_counted` tells the rest).
        """
        return self.enroll_counted(items, pipeline=pipeline, channel=channel, model=model).enrolled

    def enroll_counted(
        self, items: Iterable[NewJob], *, pipeline: str, channel: str, model: str
    ) -> Enrollment:
        """Insert jobs that are not in the ledger yet; an existing key is never changed.

        Keys already in the ledger are counted as known to this pipeline or owned by
        another one (never taken over: that pipeline's row, result and billing stay).
        """
        # The hot bulk paths hand tuples straight to the driver's executemany: SQLAlchemy's
        # per-row parameter processing, or even a dict per row, costs more than SQLite's work.
        sql = (
            "INSERT INTO jobs (key, pipeline, channel, model, payload, fingerprint, status,"
            " attempts, attempts_base, unknown_failures, prompt_tokens, candidates_tokens,"
            " total_tokens, due_at, possible_duplicates, replayed, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?,"
            f" {MOVES['enroll'].to(S.PENDING)}, 0, 0, 0, 0, 0, 0, ?, 0, 0, ?, ?)"
            " ON CONFLICT (key) DO NOTHING"
        )
        out = Enrollment()
        owners = text("SELECT key, pipeline FROM jobs WHERE key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        # On PostgreSQL, chunks of new keys go straight into jobs by COPY; once a chunk
        # meets a known key (a re-run of the day), the rest take the staging path, which
        # skips known keys without a wasted COPY.
        fresh = True
        for chunk in chunks(items, self.chunk_size):
            now = self.clock()
            with self._write() as conn:
                if self._is_pg:
                    new = (
                        pg_copy_new_jobs(conn, chunk, pipeline, channel, model, now)
                        if fresh
                        else None
                    )
                    if new is None:
                        fresh = False
                        new = pg_copy_enroll(conn, chunk, pipeline, channel, model, now)
                    added = new
                    keys = [i.key for i in chunk]
                else:
                    rows = [
                        (i.key, pipeline, channel, model, p, i.digest(p), now, now, now)
                        for i in chunk
                        for p in (payload_text(i.payload),)
                    ]
                    added = self._bulk(conn, sql, rows)
                    keys = [r[0] for r in rows]
                foreign = []
                if added < len(keys):
                    # Only when some keys were there already (a re-run of the day): whose?
                    foreign = [
                        (key, owner)
                        for key, owner in conn.execute(owners, {"keys": keys})
                        if owner != pipeline
                    ]
            out.enrolled += added
            out.foreign += len(foreign)
            out.already_known += len(keys) - added - len(foreign)
            room = FOREIGN_EXAMPLES - len(out.foreign_examples)
            out.foreign_examples.extend(sorted(foreign)[: max(room, 0)])
        self._refresh_stats(out.enrolled)
        return out

    def enroll_parked(
        self, items: Sequence[ParkedJob], *, pipeline: str, channel: str, model: str
    ) -> int:
        """Enroll items that cannot be sent as they are straight into the dead-letter store
        with their own class (a prompt that could not be built: ``prompt:<Error>``). The row
        holds no request (an empty payload) and nothing was billed; an existing key is never
        changed. Returns how many were new."""
        if not items:
            return 0
        now = self.clock()
        move = MOVES["enroll_parked"]
        sql = text(
            "INSERT INTO jobs (key, pipeline, channel, model, payload, fingerprint, status,"
            " attempts, attempts_base, unknown_failures, prompt_tokens, candidates_tokens,"
            " total_tokens, due_at, possible_duplicates, replayed, created_at, updated_at,"
            " error_class, error_message, first_failure_at, last_failure_at, parked_at)"
            " VALUES (:key, :pipeline, :channel, :model, '', :fingerprint,"
            f" {move.to(S.PARKED)}, 0, 0, 0, 0, 0, 0, :now, 0, 0, :now, :now,"
            " :error_class, :message, :now, :now, :now)"
            " ON CONFLICT (key) DO NOTHING"
        )
        rows = [
            {
                "key": i.key,
                "pipeline": pipeline,
                "channel": channel,
                "model": model,
                # Its own digest per key: rows without a request are no poison input.
                "fingerprint": fingerprint_of(f"{PROMPT_CLASS_PREFIX}{i.key}"),
                "now": now,
                "error_class": i.error_class[:96],
                "message": i.message[:MESSAGE_LIMIT],
            }
            for i in items
        ]
        with self._write() as conn:
            return sum(conn.execute(sql, row).rowcount for row in rows)

    def prompt_parked(self, *, pipeline: str) -> set[str]:
        """Keys of ``pipeline`` parked as ``prompt:<Error>``: the rows a tick of their day
        rebuilds once their prompt builds."""
        with self._read() as conn:
            return {
                key
                for (key,) in conn.execute(
                    text(
                        "SELECT key FROM jobs WHERE pipeline = :p"
                        f" AND status = {PARKED} AND error_class LIKE :prompt"
                    ),
                    {"p": pipeline, "prompt": f"{PROMPT_CLASS_PREFIX}%"},
                )
            }

    def rebuild_prompts(self, items: Sequence[NewJob], *, pipeline: str) -> int:
        """Give rows of ``pipeline`` parked as ``prompt:<Error>`` the request their item
        builds now, and send them back to pending; other rows are never changed. Nothing
        was ever sent for such a row, so its attempts stay as they are (none)."""
        if not items:
            return 0
        now = self.clock()
        move = MOVES["rebuild_prompts"]
        sql = text(
            f"UPDATE jobs SET status = {move.to(S.PENDING)}, payload = :payload,"
            " fingerprint = :fingerprint, error_class = NULL, error_message = NULL,"
            " parked_at = NULL, due_at = :now, updated_at = :now"
            f" WHERE key = :key AND pipeline = :pipeline AND {move.where()}"
            " AND error_class LIKE :prompt"
        )
        rows = [
            {
                "key": i.key,
                "payload": payload,
                "fingerprint": i.digest(payload),
                "now": now,
                "pipeline": pipeline,
                "prompt": f"{PROMPT_CLASS_PREFIX}%",
            }
            for i in items
            for payload in (payload_text(i.payload),)
        ]
        with self._write() as conn:
            return sum(conn.execute(sql, row).rowcount for row in rows)

    def reserve(
        self,
        *,
        pipeline: str,
        limit: int,
        reservation: str,
        batch_model: str | None = None,
        keys: Sequence[str] | None = None,
        plan_day: str | None = None,
        enrolled_after: float | None = None,
    ) -> int:
        """Claim up to ``limit`` due jobs (pending or retryable) under ``reservation``.

        Each claimed job's attempts go up by one: an attempt is counted when we commit to
        submitting it. With ``batch_model`` the reservation is also recorded as a batch job
        (its display name) with its members, in the same transactions. With ``keys`` only
        those jobs are considered. With ``plan_day`` each claimed row is stamped with the
        night whose budget pays for it (``ledger._plans``). With ``enrolled_after`` only jobs
        enrolled after that instant (a deadline's batch submit leaves the rows it takes back
        to the direct channel). Returns how many were claimed; read them with
        :meth:`reserved`.
        """
        if limit <= 0:
            return 0
        claimed = 0
        lock = " FOR UPDATE SKIP LOCKED" if self._is_pg else ""
        only_keys = " AND key IN :keys" if keys is not None else ""
        if enrolled_after is not None:
            only_keys += " AND created_at > :enrolled_after"
        select = (
            "SELECT key FROM jobs WHERE pipeline = :pipeline AND "
            f" {MOVES['reserve'].where()}"
            f" AND due_at <= :now{only_keys} ORDER BY due_at, key LIMIT :n{lock}"
        )
        update = text(
            f"""UPDATE jobs SET status = {MOVES["reserve"].to(S.RESERVING)},
                reservation = :reservation, schema_revision = {REVISION_OF},
                handle = NULL, reserved_at = :now, updated_at = :now, attempts = attempts + 1,
                plan_day = COALESCE(:plan_day, plan_day)
            WHERE key IN ({select}) AND {MOVES["reserve"].where()}"""
        )
        if keys is not None:
            from sqlalchemy import bindparam

            update = update.bindparams(bindparam("keys", expanding=True))
        members = text(
            "INSERT INTO batch_members (reservation, key) SELECT reservation, key FROM jobs"
            f" WHERE reservation = :reservation AND status = {RESERVING}"
            " AND reserved_at = :now ON CONFLICT DO NOTHING"
        )
        first = True
        while claimed < limit:
            n = min(self.chunk_size, limit - claimed)
            now = self.clock()
            params: dict[str, Any] = {
                "pipeline": pipeline,
                "reservation": reservation,
                "now": now,
                "n": n,
                "plan_day": plan_day,
                "enrolled_after": enrolled_after,
            }
            if keys is not None:
                params["keys"] = list(keys)
            with self._write() as conn:
                if batch_model is not None and first:
                    conn.execute(
                        text(
                            "INSERT INTO batch_jobs (reservation, pipeline, model, state, rows,"
                            " created_at, leased_at) VALUES (:reservation, :pipeline, :model,"
                            f" {BATCH_RESERVING}, 0, :now, :now) ON CONFLICT DO NOTHING"
                        ),
                        {
                            "reservation": reservation,
                            "pipeline": pipeline,
                            "model": batch_model,
                            "now": now,
                        },
                    )
                got = conn.execute(update, params).rowcount
                if got and batch_model is not None:
                    conn.execute(members, {"reservation": reservation, "now": now})
                    conn.execute(
                        text("UPDATE batch_jobs SET rows = rows + :n WHERE reservation = :r"),
                        {"n": got, "r": reservation},
                    )
            first = False
            claimed += got
            if got < n:
                break
        self._refresh_stats(claimed)
        return claimed

    def reserved(self, reservation: str, *, page: int = 5000) -> Iterator[Reserved]:
        """Stream the jobs still reserved under ``reservation``, in key order."""
        last = ""
        sql = text(
            "SELECT key, payload, model, attempts, reservation, reserved_at FROM jobs"
            f" WHERE reservation = :r AND status = {RESERVING} AND key > :last"
            " ORDER BY key LIMIT :page"
        )
        while True:
            with self._read() as conn:
                rows = conn.execute(sql, {"r": reservation, "last": last, "page": page}).all()
            for row in rows:
                yield Reserved(*row)
            if len(rows) < page:
                return
            last = rows[-1][0]

    def stream_reserved(self, reservation: str, *, batch: int = 10_000) -> Iterator[Reserved]:
        """Stream the jobs reserved under ``reservation`` through one query, in no set order.

        For writing a large request file: unlike :meth:`reserved` there is no sort and no
        query per page (a million reserved rows are read in one pass of the reservation
        index), and only ``batch`` rows are held at a time. The read transaction stays open
        while the caller iterates.
        """
        sql = text(
            "SELECT key, payload, model, attempts, reservation, reserved_at FROM jobs"
            f" WHERE reservation = :r AND status = {RESERVING}"
        )
        make = Reserved._make
        with self._read() as conn:
            if self._is_pg:
                result = conn.execution_options(stream_results=True).execute(
                    sql, {"r": reservation}
                )
                while rows := result.fetchmany(batch):
                    yield from map(make, rows)
                return
            # SQLite: the driver's own cursor, inside the same transaction, hands out plain
            # tuples (no Row objects per row: a third of the cost at a million rows).
            cursor = conn.connection.driver_connection.cursor()
            try:
                cursor.execute(
                    "SELECT key, payload, model, attempts, reservation, reserved_at FROM jobs"
                    f" WHERE reservation = ? AND status = {RESERVING}",
                    (reservation,),
                )
                while rows := cursor.fetchmany(batch):
                    yield from map(make, rows)
            finally:
                cursor.close()

    def bind_handle(self, key: str, *, reservation: str, handle: str) -> None:
        """Record the handle the API returned for a reserved job (reserving -> submitted)."""
        now = self.clock()
        with self._write() as conn:
            self._cas_one(
                conn,
                f"UPDATE jobs SET status = {MOVES['bind_handle'].to(S.SUBMITTED)},"
                " handle = :handle, submitted_at = :now,"
                " reservation = NULL,"
                " updated_at = :now WHERE key = :key AND "
                f" {MOVES['bind_handle'].where()}"
                " AND reservation = :reservation",
                {"key": key, "handle": handle, "reservation": reservation, "now": now},
                action="bind a handle to",
                expected=f"reserving under {reservation}",
            )

    def bind_reservation(self, reservation: str, *, handle: str) -> int:
        """``bind_handle`` for every row still reserved under ``reservation``, in one
        statement (one call carries them all: an embed call's group); how many were bound."""
        now = self.clock()
        with self._write() as conn:
            result = conn.execute(
                text(
                    f"UPDATE jobs SET status = {MOVES['bind_reservation'].to(S.SUBMITTED)},"
                    " handle = :handle, submitted_at = :now, reservation = NULL,"
                    " updated_at = :now WHERE reservation = :reservation AND"
                    f" {MOVES['bind_reservation'].where()}"
                ),
                {"handle": handle, "reservation": reservation, "now": now},
            )
            return int(result.rowcount or 0)

    def take_over(self, key: str, *, old_reservation: str, new_reservation: str) -> bool:
        """Take a stale reservation over to re-send it, flagging a possible duplicate.

        Only one of several ticks that find the same stale row wins (compare-and-set on the
        reservation token). The attempt count is unchanged: it is the same attempt, re-sent.
        """
        now = self.clock()
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE jobs SET reservation = :new, reserved_at = :now, updated_at = :now,"
                        " possible_duplicates = possible_duplicates + 1,"
                        # Re-sent with the pipeline as it is now, so under its current revision.
                        " schema_revision = (SELECT p.revision FROM pipelines p"
                        " WHERE p.name = jobs.pipeline)"
                        f" WHERE key = :key AND status = {RESERVING} AND reservation = :old"
                    ),
                    {"key": key, "old": old_reservation, "new": new_reservation, "now": now},
                ).rowcount
                == 1
            )

    def renew_reservation(self, reservation: str) -> int:
        """Renew the rows still reserved under ``reservation`` (``reserved_at`` = now) while
        their pass sends them, so they are never taken for a dead tick's; returns how many.

        A row another pass took over (a new token) is no longer renewed: its bind by this
        pass is refused, as before.
        """
        now = self.clock()
        with self._write() as conn:
            return conn.execute(
                text(
                    "UPDATE jobs SET reserved_at = :now"
                    f" WHERE reservation = :r AND {MOVES['renew_reservation'].where()}"
                ),
                {"r": reservation, "now": now},
            ).rowcount

    def stale_reservations(self, *, pipeline: str, older_than: float) -> list[Reserved]:
        """Jobs left ``reserving`` for longer than ``older_than`` seconds (orphan candidates)."""
        cutoff = self.clock() - older_than
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT key, payload, model, attempts, reservation, reserved_at FROM jobs"
                    f" WHERE pipeline = :p AND status = {RESERVING} AND reserved_at < :cutoff"
                    " ORDER BY reserved_at"
                ),
                {"p": pipeline, "cutoff": cutoff},
            ).all()
        return [Reserved(*row) for row in rows]

    def release(
        self,
        reservation: str,
        *,
        keys: Sequence[str] | None = None,
        refund: bool = True,
        refused: str | None = None,
    ) -> int:
        """Return jobs reserved under ``reservation`` to their queue.

        For a submission that certainly never reached the API (the input file could not be
        written, the API refused the key): with ``refund`` the attempt taken at reserve is
        given back. ``refund=False`` keeps it counted (a taken-over reservation whose first
        sending may have been billed). With ``keys`` only those jobs are released and the
        reservation stays open for the others. ``refused`` (why the API refused the batch's
        upload or creation) records its batch reservation as refused instead of released:
        what :meth:`submission_refusals` counts.
        """
        now = self.clock()
        step = 1 if refund else 0
        only = ""
        params: dict[str, Any] = {"r": reservation, "now": now, "step": step}
        if keys is not None:
            if not keys:
                return 0
            only = " AND key IN :keys"
            params["keys"] = list(keys)
        update = text(
            "UPDATE jobs SET status = CASE WHEN attempts - :step > attempts_base"
            f" THEN {MOVES['release'].to(S.RETRYABLE)} ELSE {MOVES['release'].to(S.PENDING)} END,"
            " attempts = attempts - :step,"
            " reservation = NULL, updated_at = :now"
            f" WHERE reservation = :r AND {MOVES['release'].where()}{only}"
        )
        if keys is not None:
            update = update.bindparams(bindparam("keys", expanding=True))
        with self._write() as conn:
            n = conn.execute(update, params).rowcount
            if keys is None:
                conn.execute(
                    text(
                        "UPDATE batch_jobs SET state = :state, finished_at = :now,"
                        " summary = :summary"
                        f" WHERE reservation = :r AND state = {BATCH_RESERVING}"
                    ),
                    {
                        "r": reservation,
                        "now": now,
                        "state": (BatchState.REFUSED if refused else BatchState.RELEASED).value,
                        "summary": orjson.dumps({"refused": redact(refused)[:300]}).decode()
                        if refused
                        else None,
                    },
                )
            return n

    def release_ambiguous(
        self, key: str, *, reservation: str, failure: Failure, bound: int
    ) -> bool:
        """Send ``key`` again after a create whose answer was ambiguous (5xx, a timeout, a
        dropped connection: the interaction may exist, and interactions cannot be listed).

        The attempt stays counted (the request reached the API) and ``possible_duplicates``
        counts the interaction that may exist besides the one delivered. The row goes back
        ``retryable`` (due after the failure's delay) even at its attempt cap: it is never
        parked for an answer that may have been a success. False, changing nothing, once the
        row has been flagged ``bound`` times: the caller then records the failure as the
        row's own (parked at its cap), so a row the API always answers 5xx still ends.
        """
        now = self.clock()
        move = MOVES["release_ambiguous"]
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        f"UPDATE jobs SET status = {move.to(S.RETRYABLE)}, reservation = NULL,"
                        " possible_duplicates = possible_duplicates + 1,"
                        " error_class = :cls, error_message = :msg, due_at = :due,"
                        " updated_at = :now"
                        f" WHERE key = :key AND reservation = :r AND {move.where()}"
                        " AND possible_duplicates < :bound"
                    ),
                    {
                        "key": key,
                        "r": reservation,
                        "cls": f"ambiguous:{failure.code}"[:96],
                        "msg": redact(failure.message)[:500],
                        "due": now + (failure.retry_delay or 0.0),
                        "now": now,
                        "bound": bound,
                    },
                ).rowcount
                == 1
            )

    def unsubmit(self, key: str, *, handle: str) -> bool:
        """Return a job submitted under ``handle`` to its queue, its attempt given back.

        For a call the API certainly never accepted (it refused the key, or could not be
        reached): nothing was billed. False if the row is no longer submitted under it.
        """
        now = self.clock()
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE jobs SET status = CASE WHEN attempts - 1 > attempts_base"
                        f" THEN {MOVES['unsubmit'].to(S.RETRYABLE)} ELSE"
                        f" {MOVES['unsubmit'].to(S.PENDING)} END, attempts = attempts - 1,"
                        " handle = NULL, submitted_at = NULL, reservation = NULL,"
                        " updated_at = :now WHERE key = :key AND "
                        f" {MOVES['unsubmit'].where()}"
                        " AND handle = :handle"
                    ),
                    {"key": key, "handle": handle, "now": now},
                ).rowcount
                == 1
            )

    def release_keys(self, reservation: str, keys: Sequence[str]) -> int:
        """Return some of a reservation's jobs to their queue, as :meth:`release` does.

        For rows reserved into a batch that could not carry them (its input file would have
        passed the API's size limit): they leave the batch's members and go out later.
        """
        if not keys:
            return 0
        now = self.clock()
        released = 0
        with self._write() as conn:
            for chunk in chunks(keys, 5000):
                params = {"r": reservation, "now": now, "keys": chunk}
                released += conn.execute(
                    text(
                        "UPDATE jobs SET status = CASE WHEN attempts - 1 > attempts_base"
                        f" THEN {MOVES['release_keys'].to(S.RETRYABLE)} ELSE"
                        f" {MOVES['release_keys'].to(S.PENDING)} END, attempts = attempts - 1,"
                        " reservation = NULL, updated_at = :now"
                        " WHERE key IN :keys AND reservation = :r AND "
                        f" {MOVES['release_keys'].where()}"
                    ).bindparams(bindparam("keys", expanding=True)),
                    params,
                ).rowcount
                conn.execute(
                    text(
                        "DELETE FROM batch_members WHERE reservation = :r AND key IN :keys"
                    ).bindparams(bindparam("keys", expanding=True)),
                    params,
                )
            conn.execute(
                text("UPDATE batch_jobs SET rows = rows - :n WHERE reservation = :r"),
                {"n": released, "r": reservation},
            )
        return released

    def park_keys(self, reservation: str, keys: Sequence[str], failure: Failure) -> int:
        """Park some of a reservation's jobs before anything was sent: a request the API can
        never take (larger than a whole batch input file) is the row's own fault.

        One transaction, like :meth:`release_keys`: the attempt the reservation counted is
        given back (nothing was sent or billed), the rows leave the batch's members, and no
        other pass can reserve them in between.
        """
        if not keys:
            return 0
        now = self.clock()
        parked = 0
        with self._write() as conn:
            for chunk in chunks(keys, 5000):
                params = {
                    "r": reservation,
                    "now": now,
                    "keys": chunk,
                    "cls": failure.parked_class(),
                    "msg": redact(failure.message)[:MESSAGE_LIMIT],
                }
                parked += conn.execute(
                    text(
                        f"UPDATE jobs SET status = {MOVES['park_keys'].to(S.PARKED)},"
                        " attempts = attempts - 1, reservation = NULL, error_class = :cls,"
                        " error_message = :msg, parked_at = :now,"
                        " first_failure_at = COALESCE(first_failure_at, :now),"
                        " last_failure_at = :now, updated_at = :now"
                        " WHERE key IN :keys AND reservation = :r AND "
                        f" {MOVES['park_keys'].where()}"
                    ).bindparams(bindparam("keys", expanding=True)),
                    params,
                ).rowcount
                conn.execute(
                    text(
                        "DELETE FROM batch_members WHERE reservation = :r AND key IN :keys"
                    ).bindparams(bindparam("keys", expanding=True)),
                    params,
                )
            conn.execute(
                text("UPDATE batch_jobs SET rows = rows - :n WHERE reservation = :r"),
                {"n": parked, "r": reservation},
            )
        return parked
