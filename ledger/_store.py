"""The ledger: one row per idempotency key and the verbs that move it between states.

Every transition is a compare-and-set (``UPDATE ... WHERE key = ? AND status = ?``) whose
affected row count is checked, so overlapping ticks and many workers on one PostgreSQL
ledger never submit or consume the same job twice. Bulk paths (enroll, reserve, applying
results) run many rows per transaction, never a commit per row.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ledger._classify import Failure
from ledger._db import atomic, ensure_schema, make_engine
from ledger._errors import InvalidTransition, LedgerConfigError, PipelineConflict, UnknownJob
from ledger._models import Job, PipelineRow, Status, WebhookDelivery
from ledger._redact import redact
from ledger._transitions import ACTIVE, TRANSITIONS, BatchState, sql_in, sql_literal

__all__ = [
    "DELIVERY_CLASS_PREFIX",
    "BatchRecord",
    "Counts",
    "Enrollment",
    "FailureRow",
    "JobView",
    "Ledger",
    "NewJob",
    "PipelineChange",
    "PipelineRecord",
    "Policy",
    "Reserved",
    "ResultRow",
    "fingerprint_of",
]

_TOTAL = "*"
_ANALYZE_AFTER = 1000
_MESSAGE_LIMIT = 2000
# Error classes of rows parked by their delivery, not by the API: their result is kept.
DELIVERY_CLASS_PREFIX = "delivery:"


@dataclass(frozen=True, slots=True)
class Policy:
    """How many times a job may be tried before it is parked."""

    attempt_cap: int = 4
    unknown_cap: int = 2

    def __post_init__(self) -> None:
        if self.attempt_cap < 1 or self.unknown_cap < 1:
            raise ValueError("attempt_cap and unknown_cap must be at least 1")


@dataclass(frozen=True, slots=True)
class NewJob:
    """An input item to enroll: its idempotency key and the request it stands for."""

    key: str
    payload: Mapping[str, Any] | str


class Reserved(NamedTuple):
    """A job claimed for submission."""

    key: str
    payload: str
    model: str
    attempts: int
    reservation: str


class ResultRow(NamedTuple):
    """A validated result for one submitted job."""

    key: str
    result: str  # JSON text of the validated output
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0


class FailureRow(NamedTuple):
    """A classified failure for one job."""

    key: str
    failure: Failure
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0


class BatchRecord(NamedTuple):
    """One batch job we asked for."""

    reservation: str
    pipeline: str
    model: str
    name: str | None
    state: str
    rows: int
    created_at: float
    leased_at: float
    submitted_at: float | None
    reconciled_at: float | None


@dataclass(slots=True)
class Enrollment:
    """What one enrollment did: new keys, keys this pipeline already had, and keys another
    pipeline owns (left untouched; ``foreign_examples`` names a few of them)."""

    enrolled: int = 0
    already_known: int = 0
    foreign: int = 0
    foreign_examples: list[tuple[str, str]] = field(default_factory=list)  # (key, owner)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            "already_known": self.already_known,
            "owned_by_other_pipeline": self.foreign,
            "owned_by_other_examples": [f"{k} ({owner})" for k, owner in self.foreign_examples],
        }


class PipelineRecord(NamedTuple):
    """The ledger's record of a pipeline: where it is loaded from and what it produces."""

    name: str
    spec: str
    channel: str
    model: str
    schema_fingerprint: str
    revision: int
    created_at: float
    updated_at: float


class PipelineChange(NamedTuple):
    """What recording a pipeline did: ``new``, ``same`` or ``changed`` (with the fields)."""

    outcome: str
    record: PipelineRecord
    changed: tuple[str, ...] = ()


_FOREIGN_EXAMPLES = 5

# The verbs' moves come from the transition table; reads name their states through these.
S = Status
_T = TRANSITIONS
_FAIL = TRANSITIONS["apply_failures"]
_PENDING, _RESERVING, _SUBMITTED, _DONE, _CONSUMED, _RETRYABLE, _PARKED = (
    sql_literal(s)
    for s in (S.PENDING, S.RESERVING, S.SUBMITTED, S.DONE, S.CONSUMED, S.RETRYABLE, S.PARKED)
)
_B_RESERVING, _B_SUBMITTED, _B_RELEASED = (
    sql_literal(b) for b in (BatchState.RESERVING, BatchState.SUBMITTED, BatchState.RELEASED)
)


@dataclass(frozen=True, slots=True)
class Counts:
    """Counts by status and by error class, with attempts and tokens."""

    by_status: dict[str, int]
    by_error_class: dict[str, int]  # parked jobs only
    retrying_by_class: dict[str, int]  # retryable jobs, by their last failure
    attempts: int
    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int
    possible_duplicates: int
    replayed: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_status": dict(self.by_status),
            "by_error_class": dict(self.by_error_class),
            "retrying_by_class": dict(self.retrying_by_class),
            "jobs": self.total,
            "attempts": self.attempts,
            "tokens": {
                "prompt": self.prompt_tokens,
                "candidates": self.candidates_tokens,
                "total": self.total_tokens,
            },
            "possible_duplicates": self.possible_duplicates,
            "replayed": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class JobView:
    """A read-only snapshot of one ledger row."""

    key: str
    pipeline: str
    channel: str
    model: str
    payload: str
    fingerprint: str
    status: str
    handle: str | None
    reservation: str | None
    attempts: int
    attempts_base: int
    unknown_failures: int
    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int
    result: str | None
    error_class: str | None
    error_message: str | None
    first_failure_at: float | None
    last_failure_at: float | None
    due_at: float
    possible_duplicates: int
    replayed: int
    created_at: float
    updated_at: float
    reserved_at: float | None
    submitted_at: float | None
    done_at: float | None
    consumed_at: float | None
    parked_at: float | None
    delivery_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def payload_dict(self) -> Any:
        return orjson.loads(self.payload)

    @property
    def result_dict(self) -> Any:
        return None if self.result is None else orjson.loads(self.result)


_JOB_COLUMNS = [c.name for c in Job.__table__.columns]  # type: ignore[attr-defined]
_BATCH_COLUMNS = ", ".join(BatchRecord._fields)
_PIPELINE_COLUMNS = ", ".join(PipelineRecord._fields)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def fingerprint_of(payload: str) -> str:
    """A stable digest of a request, to spot the same poison input under many keys."""
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _payload_text(payload: Mapping[str, Any] | str) -> str:
    if isinstance(payload, str):
        return payload
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def _handle_of(handle: str | Mapping[str, str], key: str) -> str:
    """One handle for every row, or each row's own handle from a key -> handle mapping."""
    return handle if isinstance(handle, str) else handle[key]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# One expression decides whether a failure parks the job; the same predicate is used for
# the status, the class and the parking time so they can never disagree.
_PARKS = (
    "(:verdict = 'permanent'"
    " OR (:verdict = 'unknown' AND unknown_failures + 1 >= :unknown_cap)"
    " OR attempts - attempts_base >= :attempt_cap)"
)
_FAILURE_SET = f"""
    status = CASE WHEN {_PARKS} THEN {_FAIL.to(S.PARKED)} ELSE {_FAIL.to(S.RETRYABLE)} END,
    error_class = CASE WHEN {_PARKS} THEN :parked_class ELSE :error_class END,
    parked_at = CASE WHEN {_PARKS} THEN :now ELSE NULL END,
    unknown_failures = unknown_failures + CASE WHEN :verdict = 'unknown' THEN 1 ELSE 0 END,
    error_message = :message,
    first_failure_at = COALESCE(first_failure_at, :now),
    last_failure_at = :now,
    due_at = :due_at,
    reservation = NULL,
    prompt_tokens = prompt_tokens + :prompt_tokens,
    candidates_tokens = candidates_tokens + :candidates_tokens,
    total_tokens = total_tokens + :total_tokens,
    updated_at = :now
"""


def _failure_params(
    failure: Failure, policy: Policy, now: float, usage: Sequence[int] = (0, 0, 0)
) -> dict[str, Any]:
    return {
        "verdict": failure.verdict.value,
        "unknown_cap": policy.unknown_cap,
        "attempt_cap": policy.attempt_cap,
        "parked_class": failure.parked_class(),
        "error_class": failure.error_class,
        "message": redact(failure.message)[:_MESSAGE_LIMIT],
        "now": now,
        "due_at": now + (failure.retry_delay or 0.0),
        "prompt_tokens": usage[0],
        "candidates_tokens": usage[1],
        "total_tokens": usage[2],
    }


# -- PostgreSQL bulk paths: COPY into a staging table, then one set-based statement ---------
#
# executemany sends one statement per row (about 40,000 rows/s here, whatever the batching);
# COPY streams the rows and one INSERT ... SELECT or UPDATE ... FROM applies them, with the
# same compare-and-set conditions as the per-row statements. A key given twice in one call
# is staged once, first occurrence kept: the per-row statements would apply only the first
# too (the second finds the row no longer in the state it expects). The staging table is a
# temporary one dropped at commit, so it is never shared between sessions or transactions.


def _first_per_key(rows: Iterable[Any], key_of: Callable[[Any], str]) -> Iterator[Any]:
    seen: set[str] = set()
    add = seen.add
    for row in rows:
        key = key_of(row)
        if key not in seen:
            add(key)
            yield row


def _pg_copy(conn: Connection, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` (a staging table made in this transaction)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(row)
    finally:
        cursor.close()


def _pg_plan_by_key(conn: Connection) -> None:
    """Have the next statements look each staged key up through the primary key.

    A chunk is small beside the ledger: a hash join (the planner's guess for a fresh
    temporary table with no statistics) reads the whole jobs table once per chunk, a merge
    join walks the primary key from its start; both grow with the ledger, the lookups don't.
    """
    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
    conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")


def _pg_stage(conn: Connection, table: str, columns: str) -> None:
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {table} ({columns}) ON COMMIT DROP")


def _pg_copy_enroll(
    conn: Connection, chunk: Sequence[NewJob], pipeline: str, channel: str, model: str, now: float
) -> int:
    _pg_stage(conn, "gl_stage_enroll", "key text, payload text, fingerprint text")
    staged = (
        (i.key, payload, fingerprint_of(payload))
        for i in _first_per_key(chunk, _key_attr)
        for payload in (_payload_text(i.payload),)
    )
    _pg_copy(conn, "gl_stage_enroll", "key, payload, fingerprint", staged)
    return conn.execute(
        text(
            "INSERT INTO jobs (key, pipeline, channel, model, payload, fingerprint, status,"
            " attempts, attempts_base, unknown_failures, prompt_tokens, candidates_tokens,"
            " total_tokens, due_at, possible_duplicates, replayed, created_at, updated_at)"
            " SELECT key, :pipeline, :channel, :model, payload, fingerprint,"
            f" {_T['enroll'].to(S.PENDING)},"
            " 0, 0, 0, 0, 0, 0, :now, 0, 0, :now, :now FROM gl_stage_enroll"
            " ON CONFLICT (key) DO NOTHING"
        ),
        {"pipeline": pipeline, "channel": channel, "model": model, "now": now},
    ).rowcount


def _pg_copy_results(
    conn: Connection, rows: Sequence[ResultRow], handle: str | Mapping[str, str], now: float
) -> int:
    _pg_stage(
        conn,
        "gl_stage_results",
        "key text, handle text, result text, p bigint, c bigint, t bigint",
    )
    one = handle if isinstance(handle, str) else None
    staged = (
        (r[0], one if one is not None else handle[r[0]], r[1], r[2], r[3], r[4])
        for r in _first_per_key(rows, _key_item)
    )
    _pg_copy(conn, "gl_stage_results", "key, handle, result, p, c, t", staged)
    _pg_plan_by_key(conn)
    return conn.execute(
        text(
            f"UPDATE jobs SET status = {_T['apply_results'].to(S.DONE)}, result = s.result,"
            " done_at = :now,"
            " updated_at = :now, error_class = NULL, reservation = NULL,"
            " prompt_tokens = jobs.prompt_tokens + s.p,"
            " candidates_tokens = jobs.candidates_tokens + s.c,"
            " total_tokens = jobs.total_tokens + s.t"
            " FROM gl_stage_results s"
            f" WHERE jobs.key = s.key AND jobs.status = {_T['apply_results'].sql_source} AND"
            " jobs.handle = s.handle"
        ),
        {"now": now},
    ).rowcount


# The per-row parameters of _FAILURE_SET, read from the staging table's columns instead
# (prefixed, so that no staging column shares a name with one of the jobs table).
_STAGED_FAILURE = ("verdict", "parked_class", "error_class", "message", "due_at")
_STAGED_TOKENS = ("prompt_tokens", "candidates_tokens", "total_tokens")
_PG_FAILURE_SET = _NAMED.sub(
    lambda m: f"s.s_{m.group(1)}" if m.group(1) in _STAGED_FAILURE + _STAGED_TOKENS else m.group(0),
    _FAILURE_SET,
)


def _pg_copy_failures(
    conn: Connection,
    rows: Sequence[FailureRow],
    handle: str | Mapping[str, str],
    policy: Policy,
    now: float,
) -> int:
    _pg_stage(
        conn,
        "gl_stage_failures",
        "key text, handle text, s_verdict text, s_parked_class text, s_error_class text,"
        " s_message text, s_due_at double precision, s_prompt_tokens bigint,"
        " s_candidates_tokens bigint, s_total_tokens bigint",
    )

    def staged() -> Iterator[tuple[Any, ...]]:
        for r in _first_per_key(rows, _key_item):
            p = _failure_params(r[1], policy, now, (r[2], r[3], r[4]))
            yield (
                r[0],
                _handle_of(handle, r[0]),
                *(p[name] for name in _STAGED_FAILURE),
                r[2],
                r[3],
                r[4],
            )

    _pg_copy(
        conn,
        "gl_stage_failures",
        "key, handle, s_verdict, s_parked_class, s_error_class, s_message, s_due_at,"
        " s_prompt_tokens, s_candidates_tokens, s_total_tokens",
        staged(),
    )
    _pg_plan_by_key(conn)
    # Unqualified columns in SET expressions are the jobs row's (the staging ones are s_*).
    return conn.execute(
        text(
            f"UPDATE jobs SET {_PG_FAILURE_SET} FROM gl_stage_failures s"
            f" WHERE jobs.key = s.key AND jobs.status IN ({_FAIL.sql_source}) AND jobs.handle ="
            " s.handle"
        ),
        {"unknown_cap": policy.unknown_cap, "attempt_cap": policy.attempt_cap, "now": now},
    ).rowcount


def _key_attr(item: NewJob) -> str:
    return item.key


def _key_item(row: Sequence[Any]) -> str:
    return str(row[0])


class Ledger:
    """The ledger over one database (SQLite file or PostgreSQL), upgraded on first use.

    ``clock`` returns epoch seconds and is injectable so tests can move time; ``chunk_size``
    is how many rows one bulk transaction carries.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
        chunk_size: int = 20_000,
        migrate: bool = True,
    ) -> None:
        self.engine = engine if engine is not None else make_engine(url)
        self.clock = clock
        self.chunk_size = chunk_size
        self._is_pg = self.engine.dialect.name == "postgresql"
        if migrate:
            ensure_schema(self.engine)

    # -- plumbing --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the database; LedgerConfigError (a short reason) if it fails."""
        try:
            with self._read() as conn:
                conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, LedgerConfigError) as exc:
            cause = exc.__cause__ if isinstance(exc, LedgerConfigError) else exc
            # The type only: the driver's message can carry the URL and its password.
            raise LedgerConfigError(f"ledger unreachable ({type(cause).__name__})") from exc

    def _write(self) -> Any:
        return atomic(self.engine, write=True)

    def _read(self) -> Any:
        return atomic(self.engine, write=False)

    def _status_of(self, conn: Connection, key: str) -> str | None:
        return conn.execute(text("SELECT status FROM jobs WHERE key = :key"), {"key": key}).scalar()

    def _cas_one(
        self, conn: Connection, sql: str, params: Mapping[str, Any], *, action: str, expected: str
    ) -> None:
        if conn.execute(text(sql), params).rowcount != 1:
            key = params["key"]
            raise InvalidTransition(
                key, action=action, expected=expected, actual=self._status_of(conn, key)
            )

    # -- enroll ----------------------------------------------------------------------------

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
            f" VALUES (?, ?, ?, ?, ?, ?, {_T['enroll'].to(S.PENDING)}, 0, 0, 0, 0, 0, 0, ?, 0, 0,"
            " ?, ?)"
            " ON CONFLICT (key) DO NOTHING"
        )
        out = Enrollment()
        owners = text("SELECT key, pipeline FROM jobs WHERE key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        for chunk in _chunks(items, self.chunk_size):
            now = self.clock()
            with self._write() as conn:
                if self._is_pg:
                    added = _pg_copy_enroll(conn, chunk, pipeline, channel, model, now)
                    keys = [i.key for i in chunk]
                else:
                    rows = [
                        (i.key, pipeline, channel, model, p, fingerprint_of(p), now, now, now)
                        for i in chunk
                        for p in (_payload_text(i.payload),)
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
            room = _FOREIGN_EXAMPLES - len(out.foreign_examples)
            out.foreign_examples.extend(sorted(foreign)[: max(room, 0)])
        self._refresh_stats(out.enrolled)
        return out

    def _refresh_stats(self, changed: int) -> None:
        """After a bulk change on PostgreSQL, refresh the planner's statistics.

        Otherwise, until autovacuum gets round to it, the planner believes a just-bound
        batch handle matches one row and walks the handle index for every per-key update
        instead of the primary key (measured: 200 rows/s instead of thousands).
        """
        if self._is_pg and changed >= _ANALYZE_AFTER:
            with self.engine.connect() as conn:
                conn.execute(text("ANALYZE jobs"))
                conn.commit()

    def _bulk(
        self,
        conn: Connection,
        sql: str,
        rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]],
        *,
        returning: bool = False,
    ) -> int:
        """executemany on the driver's cursor; returns the rows affected (or returned).

        ``sql`` takes tuples with ``?`` placeholders, or mappings with ``:name`` ones.
        """
        if not rows:
            return 0
        if isinstance(rows[0], Mapping):
            # One placeholder style for both drivers: positional, which sqlite3 binds faster.
            names = _NAMED.findall(sql)
            sql = _NAMED.sub("?", sql)
            rows = [tuple([row[n] for n in names]) for row in rows]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if not self._is_pg:
                cursor.executemany(sql, rows)
                return int(cursor.rowcount)
            cursor.executemany(sql.replace("?", "%s"), rows, returning=returning)
            if not returning:
                return int(cursor.rowcount)
            n = 0
            while True:
                n += len(cursor.fetchall())
                if not cursor.nextset():
                    return n
        finally:
            cursor.close()

    def _insert_ignore(self, table: Any, key: str) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING for this backend."""
        insert = (postgresql.insert if self._is_pg else sqlite.insert)(table)
        stmt = insert.on_conflict_do_nothing(index_elements=[key])
        # psycopg reports no reliable row count for these; RETURNING tells us instead.
        return stmt.returning(table.c[key]) if self._is_pg else stmt

    def _inserted(self, result: Any) -> int:
        return len(result.all()) if self._is_pg else int(result.rowcount)

    # -- reserve and bind ------------------------------------------------------------------

    def reserve(
        self,
        *,
        pipeline: str,
        limit: int,
        reservation: str,
        batch_model: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Claim up to ``limit`` due jobs (pending or retryable) under ``reservation``.

        Each claimed job's attempts go up by one: an attempt is counted when we commit to
        submitting it. With ``batch_model`` the reservation is also recorded as a batch job
        (its display name) with its members, in the same transactions. With ``keys`` only
        those jobs are considered. Returns how many were claimed; read them with
        :meth:`reserved`.
        """
        if limit <= 0:
            return 0
        claimed = 0
        lock = " FOR UPDATE SKIP LOCKED" if self._is_pg else ""
        only_keys = " AND key IN :keys" if keys is not None else ""
        select = (
            "SELECT key FROM jobs WHERE pipeline = :pipeline AND status IN"
            f" ({_T['reserve'].sql_source})"
            f" AND due_at <= :now{only_keys} ORDER BY due_at, key LIMIT :n{lock}"
        )
        update = text(
            f"""UPDATE jobs SET status = {_T["reserve"].to(S.RESERVING)},
                reservation = :reservation,
                handle = NULL, reserved_at = :now, updated_at = :now, attempts = attempts + 1
            WHERE key IN ({select}) AND status IN ({_T["reserve"].sql_source})"""
        )
        if keys is not None:
            from sqlalchemy import bindparam

            update = update.bindparams(bindparam("keys", expanding=True))
        members = text(
            "INSERT INTO batch_members (reservation, key) SELECT reservation, key FROM jobs"
            f" WHERE reservation = :reservation AND status = {_RESERVING}"
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
            }
            if keys is not None:
                params["keys"] = list(keys)
            with self._write() as conn:
                if batch_model is not None and first:
                    conn.execute(
                        text(
                            "INSERT INTO batch_jobs (reservation, pipeline, model, state, rows,"
                            " created_at, leased_at) VALUES (:reservation, :pipeline, :model,"
                            f" {_B_RESERVING}, 0, :now, :now) ON CONFLICT DO NOTHING"
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
            "SELECT key, payload, model, attempts, reservation FROM jobs"
            f" WHERE reservation = :r AND status = {_RESERVING} AND key > :last"
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
            "SELECT key, payload, model, attempts, reservation FROM jobs"
            f" WHERE reservation = :r AND status = {_RESERVING}"
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
                    "SELECT key, payload, model, attempts, reservation FROM jobs"
                    f" WHERE reservation = ? AND status = {_RESERVING}",
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
                f"UPDATE jobs SET status = {_T['bind_handle'].to(S.SUBMITTED)}, handle = :handle,"
                " submitted_at = :now,"
                " reservation = NULL,"
                " updated_at = :now WHERE key = :key AND status IN"
                f" ({_T['bind_handle'].sql_source})"
                " AND reservation = :reservation",
                {"key": key, "handle": handle, "reservation": reservation, "now": now},
                action="bind a handle to",
                expected=f"reserving under {reservation}",
            )

    def bind_batch(self, reservation: str, *, name: str) -> int:
        """Bind a created batch job to its reservation; its rows become submitted.

        Binding the same name twice is a no-op; returns how many rows were bound.
        """
        now = self.clock()
        with self._write() as conn:
            changed = conn.execute(
                text(
                    f"UPDATE batch_jobs SET name = :name, state = {_B_SUBMITTED}, submitted_at ="
                    " :now"
                    f" WHERE reservation = :r AND state = {_B_RESERVING}"
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
                    f"UPDATE jobs SET status = {_T['bind_batch'].to(S.SUBMITTED)}, handle = :name,"
                    " submitted_at = :now,"
                    " reservation = NULL,"
                    " updated_at = :now WHERE reservation = :r AND status IN"
                    f" ({_T['bind_batch'].sql_source})"
                ),
                {"name": name, "r": reservation, "now": now},
            ).rowcount
        self._refresh_stats(bound_rows)
        return bound_rows

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
                        " possible_duplicates = possible_duplicates + 1"
                        f" WHERE key = :key AND status = {_RESERVING} AND reservation = :old"
                    ),
                    {"key": key, "old": old_reservation, "new": new_reservation, "now": now},
                ).rowcount
                == 1
            )

    def lease_batch(self, reservation: str, *, seen_lease: float) -> bool:
        """Take a stale batch reservation over (only one tick wins) before re-sending it."""
        now = self.clock()
        with self._write() as conn:
            return (
                conn.execute(
                    text(
                        "UPDATE batch_jobs SET leased_at = :now WHERE reservation = :r"
                        f" AND state = {_B_RESERVING} AND leased_at = :seen"
                    ),
                    {"r": reservation, "seen": seen_lease, "now": now},
                ).rowcount
                == 1
            )

    def stale_reservations(self, *, pipeline: str, older_than: float) -> list[Reserved]:
        """Jobs left ``reserving`` for longer than ``older_than`` seconds (orphan candidates)."""
        cutoff = self.clock() - older_than
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT key, payload, model, attempts, reservation FROM jobs"
                    f" WHERE pipeline = :p AND status = {_RESERVING} AND reserved_at < :cutoff"
                    " ORDER BY reserved_at"
                ),
                {"p": pipeline, "cutoff": cutoff},
            ).all()
        return [Reserved(*row) for row in rows]

    def release(
        self, reservation: str, *, keys: Sequence[str] | None = None, refund: bool = True
    ) -> int:
        """Return jobs reserved under ``reservation`` to their queue.

        For a submission that certainly never reached the API (the input file could not be
        written, the API refused the key): with ``refund`` the attempt taken at reserve is
        given back. ``refund=False`` keeps it counted (a taken-over reservation whose first
        sending may have been billed). With ``keys`` only those jobs are released and the
        reservation stays open for the others.
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
            f" THEN {_T['release'].to(S.RETRYABLE)} ELSE {_T['release'].to(S.PENDING)} END,"
            " attempts = attempts - :step,"
            " reservation = NULL, updated_at = :now"
            f" WHERE reservation = :r AND status IN ({_T['release'].sql_source}){only}"
        )
        if keys is not None:
            update = update.bindparams(bindparam("keys", expanding=True))
        with self._write() as conn:
            n = conn.execute(update, params).rowcount
            if keys is None:
                conn.execute(
                    text(
                        f"UPDATE batch_jobs SET state = {_B_RELEASED}, finished_at = :now"
                        f" WHERE reservation = :r AND state = {_B_RESERVING}"
                    ),
                    {"r": reservation, "now": now},
                )
            return n

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
                        f" THEN {_T['unsubmit'].to(S.RETRYABLE)} ELSE"
                        f" {_T['unsubmit'].to(S.PENDING)} END, attempts = attempts - 1,"
                        " handle = NULL, submitted_at = NULL, reservation = NULL,"
                        " updated_at = :now WHERE key = :key AND status IN"
                        f" ({_T['unsubmit'].sql_source})"
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
            for chunk in _chunks(keys, 5000):
                params = {"r": reservation, "now": now, "keys": chunk}
                released += conn.execute(
                    text(
                        "UPDATE jobs SET status = CASE WHEN attempts - 1 > attempts_base"
                        f" THEN {_T['release_keys'].to(S.RETRYABLE)} ELSE"
                        f" {_T['release_keys'].to(S.PENDING)} END, attempts = attempts - 1,"
                        " reservation = NULL, updated_at = :now"
                        " WHERE key IN :keys AND reservation = :r AND status IN"
                        f" ({_T['release_keys'].sql_source})"
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

    # -- outcomes --------------------------------------------------------------------------

    def apply_results(self, rows: Sequence[ResultRow], *, handle: str | Mapping[str, str]) -> int:
        """Move submitted jobs under ``handle`` to done with their results, in one transaction.

        Rows not ``submitted`` under that handle are left alone, so applying the same output
        twice changes nothing. ``handle`` may map each key to its own handle (background
        interactions: one handle per job, still one transaction). Returns how many were applied.
        """
        if not rows:
            return 0
        now = self.clock()
        sql = f"""UPDATE jobs SET status = {_T["apply_results"].to(S.DONE)},
                result = ?, done_at = ?, updated_at = ?,
                error_class = NULL, reservation = NULL, prompt_tokens = prompt_tokens + ?,
                candidates_tokens = candidates_tokens + ?, total_tokens = total_tokens + ?
            WHERE key = ? AND status IN ({_T["apply_results"].sql_source}) AND handle = ?"""
        if self._is_pg:
            with self._write() as conn:
                return _pg_copy_results(conn, rows, handle, now)
        if isinstance(handle, str):
            params = [(r[1], now, now, r[2], r[3], r[4], r[0], handle) for r in rows]
        else:
            params = [(r[1], now, now, r[2], r[3], r[4], r[0], handle[r[0]]) for r in rows]
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

        ``handle`` may map each key to its own handle, as for :meth:`apply_results`.
        """
        if not rows:
            return 0
        now = self.clock()
        if self._is_pg:
            with self._write() as conn:
                return _pg_copy_failures(conn, rows, handle, policy, now)
        sql = (
            f"UPDATE jobs SET {_FAILURE_SET}"
            f" WHERE key = :key AND status IN ({_FAIL.sql_source}) AND handle = :handle"
        )
        params = []
        for r in rows:
            p = _failure_params(r.failure, policy, now, (r[2], r[3], r[4]))
            p["key"] = r.key
            p["handle"] = _handle_of(handle, r.key)
            params.append(p)
        with self._write() as conn:
            return self._bulk(conn, sql, params)

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
        before a handle was bound.
        """
        if (handle is None) == (reservation is None):
            raise ValueError("give exactly one of handle or reservation")
        now = self.clock()
        if handle is not None:
            where, expected = (
                f"status = {_T['record_failure'].source_is(S.SUBMITTED)} AND handle = :handle",
                f"submitted under {handle}",
            )
        else:
            where, expected = (
                f"status = {_T['record_failure'].source_is(S.RESERVING)} AND reservation ="
                " :reservation",
                f"reserving under {reservation}",
            )
        params = _failure_params(failure, policy, now)
        params.update(key=key, handle=handle, reservation=reservation)
        with self._write() as conn:
            self._cas_one(
                conn,
                f"UPDATE jobs SET {_FAILURE_SET} WHERE key = :key AND {where}",
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
        params = _failure_params(failure, policy, now)
        params["handle"] = handle
        with self._write() as conn:
            return conn.execute(
                text(
                    f"UPDATE jobs SET {_FAILURE_SET}"
                    f" WHERE handle = :handle AND status IN ({_T['fail_outstanding'].sql_source})"
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
                f"UPDATE jobs SET status = {_T['park'].to(S.PARKED)}, error_class = :cls,"
                " error_message = :msg,"
                " parked_at = :now, first_failure_at = COALESCE(first_failure_at, :now),"
                " last_failure_at = :now, reservation = NULL, updated_at = :now"
                f" WHERE key = :key AND status IN ({statuses})",
                {
                    "key": key,
                    "cls": failure.parked_class(),
                    "msg": redact(failure.message)[:_MESSAGE_LIMIT],
                    "now": now,
                },
                action="park",
                expected=" or ".join(from_status),
            )

    # -- side effects ----------------------------------------------------------------------

    def done_unconsumed(self, *, pipeline: str, limit: int = 10_000) -> list[tuple[str, str]]:
        """Jobs whose result is recorded but whose side effect has not completed."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT key, result FROM jobs WHERE pipeline = :p AND status = {_DONE}"
                    " ORDER BY done_at, key LIMIT :n"
                ),
                {"p": pipeline, "n": limit},
            ).all()
        return [(row[0], row[1]) for row in rows]

    def claim_done(
        self, *, pipeline: str, token: str, limit: int = 10_000, older_than: float = 300.0
    ) -> list[tuple[str, str]]:
        """Claim done jobs for delivery under ``token``: (key, result) of those claimed.

        Two ticks that find the same done rows never both run the side effect: the claim is a
        compare-and-set on the reservation column (unused on done rows). A claim older than
        ``older_than`` seconds (its tick died inside the side effect) can be taken over.
        """
        if limit <= 0:
            return []
        now = self.clock()
        lock = " FOR UPDATE SKIP LOCKED" if self._is_pg else ""
        free = f"status = {_DONE} AND (reservation IS NULL OR updated_at < :cutoff)"
        params = {"p": pipeline, "t": token, "now": now, "cutoff": now - older_than, "n": limit}
        with self._write() as conn:
            conn.execute(
                text(
                    "UPDATE jobs SET reservation = :t, updated_at = :now WHERE key IN"
                    f" (SELECT key FROM jobs WHERE pipeline = :p AND {free}"
                    f" ORDER BY done_at, key LIMIT :n{lock}) AND {free}"
                ),
                params,
            )
            rows = conn.execute(
                text(
                    f"SELECT key, result FROM jobs WHERE reservation = :t AND status = {_DONE}"
                    " ORDER BY done_at, key"
                ),
                {"t": token},
            ).all()
        return [(row[0], row[1]) for row in rows]

    def release_done(self, keys: Sequence[str], *, token: str) -> int:
        """Give back delivery claims (the side effect failed): the next tick may retry them."""
        if not keys:
            return 0
        now = self.clock()
        with self._write() as conn:
            return conn.execute(
                text(
                    "UPDATE jobs SET reservation = NULL, updated_at = :now"
                    f" WHERE key = :key AND status = {_DONE} AND reservation = :t"
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
                    f" status = CASE WHEN {parks} THEN {_T['fail_delivery'].to(S.PARKED)} ELSE"
                    " status END,"
                    f" error_class = CASE WHEN {parks} THEN :cls ELSE error_class END,"
                    f" error_message = CASE WHEN {parks} THEN :msg ELSE error_message END,"
                    f" parked_at = CASE WHEN {parks} THEN :now ELSE parked_at END,"
                    " first_failure_at = COALESCE(first_failure_at, :now),"
                    " last_failure_at = :now, reservation = NULL, updated_at = :now"
                    f" WHERE key = :key AND status IN ({_T['fail_delivery'].sql_source}) AND"
                    " reservation = :t"
                ),
                {
                    "key": key,
                    "t": token,
                    "cap": cap,
                    "cls": error_class[:96],
                    "msg": redact(message)[:_MESSAGE_LIMIT],
                    "now": now,
                },
            ).rowcount
            return (self._status_of(conn, key) or "") if changed else ""

    def in_flight(self, *, pipeline: str | None = None) -> dict[str, tuple[int, float]]:
        """Rows in each non-final state and the age in seconds of the oldest, by how long
        it has been in that state."""
        since = (
            f"CASE status WHEN {_PENDING} THEN created_at WHEN {_RESERVING} THEN reserved_at"
            f" WHEN {_SUBMITTED} THEN submitted_at WHEN {_DONE} THEN done_at"
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

    def consume(self, keys: Sequence[str]) -> int:
        """Mark jobs whose side effect completed (done -> consumed); returns how many moved."""
        if not keys:
            return 0
        now = self.clock()
        with self._write() as conn:
            return conn.execute(
                text(
                    # The delivery claim's token goes too: consumed rows, the ledger's
                    # bulk, stay out of the reservation index.
                    f"UPDATE jobs SET status = {_T['consume'].to(S.CONSUMED)}, consumed_at = :now,"
                    " updated_at = :now,"
                    " reservation = NULL WHERE key = :key AND status IN"
                    f" ({_T['consume'].sql_source})"
                ),
                [{"key": k, "now": now} for k in keys],
            ).rowcount

    def consume_one(self, key: str) -> None:
        """Mark one job consumed; refuses unless it is done."""
        if self.consume([key]) != 1:
            with self._read() as conn:
                actual = self._status_of(conn, key)
            raise InvalidTransition(key, action="consume", expected="done", actual=actual)

    # -- replay ----------------------------------------------------------------------------

    def select_for_replay(
        self, *, limit: int = 20, error_class: str | None = None, pipeline: str | None = None
    ) -> list[JobView]:
        """Parked jobs, oldest failure first, optionally of one error class or pipeline."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        clauses = [f"status = {_PARKED}"]
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
                    f" {_T['replay'].to(S.DONE)} ELSE {_T['replay'].to(S.PENDING)}"
                    f" END, handle = CASE WHEN {redeliver} THEN handle ELSE NULL END,"
                    " attempts_base = attempts, unknown_failures = 0, delivery_failures = 0,"
                    " replayed = replayed + 1, due_at = :now,"
                    " parked_at = NULL, reservation = NULL, updated_at = :now"
                    f" WHERE key = :key AND status IN ({_T['replay'].sql_source})"
                ),
                [{"key": k, "now": now, "delivery": f"{DELIVERY_CLASS_PREFIX}%"} for k in keys],
            ).rowcount

    def poison_inputs(self, *, min_keys: int = 2) -> list[tuple[str, int, str]]:
        """Payload fingerprints parked under at least ``min_keys`` keys: (fingerprint, keys,
        one error class)."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT fingerprint, COUNT(*), MIN(error_class) FROM jobs"
                    f" WHERE status = {_PARKED} GROUP BY fingerprint HAVING COUNT(*) >= :m"
                    " ORDER BY COUNT(*) DESC, fingerprint"
                ),
                {"m": min_keys},
            ).all()
        return [(row[0], int(row[1]), row[2]) for row in rows]

    # -- reading ---------------------------------------------------------------------------

    def _views(self, where: str, params: Mapping[str, Any]) -> list[JobView]:
        cols = ", ".join(_JOB_COLUMNS)
        with self._read() as conn:
            rows = conn.execute(text(f"SELECT {cols} FROM jobs {where}"), params).all()
        return [JobView(**dict(zip(_JOB_COLUMNS, row, strict=True))) for row in rows]

    def get(self, key: str) -> JobView:
        """One job's row; raises UnknownJob if there is none."""
        views = self._views("WHERE key = :key", {"key": key})
        if not views:
            raise UnknownJob(key)
        return views[0]

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

    def outstanding(self, *, pipeline: str) -> list[tuple[str, str, float]]:
        """Submitted jobs and their handles: (key, handle, submitted_at)."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT key, handle, submitted_at FROM jobs WHERE pipeline = :p"
                    f" AND status = {_SUBMITTED} ORDER BY submitted_at, key"
                ),
                {"p": pipeline},
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]

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
                    f" {where + ' AND' if where else 'WHERE'} status IN ({_PARKED}, {_RETRYABLE})"
                    " GROUP BY status, error_class"
                ),
                params,
            ):
                by_class[status][cls or "unclassified"] = int(n)
            totals = conn.execute(
                text(
                    "SELECT COALESCE(SUM(attempts), 0), COALESCE(SUM(prompt_tokens), 0),"
                    " COALESCE(SUM(candidates_tokens), 0), COALESCE(SUM(total_tokens), 0),"
                    " COALESCE(SUM(possible_duplicates), 0), COALESCE(SUM(replayed), 0)"
                    f" FROM jobs {where}"
                ),
                params,
            ).one()
        return Counts(
            by_status=by_status,
            by_error_class=dict(sorted(by_class["parked"].items())),
            retrying_by_class=dict(sorted(by_class["retryable"].items())),
            attempts=int(totals[0]),
            prompt_tokens=int(totals[1]),
            candidates_tokens=int(totals[2]),
            total_tokens=int(totals[3]),
            possible_duplicates=int(totals[4]),
            replayed=int(totals[5]),
        )

    def usage_by_model(
        self, *, pipeline: str | None = None
    ) -> list[tuple[str, str, int, int, int, int]]:
        """Attempts and tokens per (model, channel), for cost estimates: (model, channel,
        attempts, prompt_tokens, candidates_tokens, total_tokens)."""
        where = "WHERE pipeline = :p" if pipeline else ""
        params = {"p": pipeline} if pipeline else {}
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT model, channel, COALESCE(SUM(attempts), 0),"
                    " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(candidates_tokens), 0),"
                    f" COALESCE(SUM(total_tokens), 0) FROM jobs {where}"
                    " GROUP BY model, channel ORDER BY model, channel"
                ),
                params,
            ).all()
        return [
            (row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5])) for row in rows
        ]

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

    # -- batch jobs ------------------------------------------------------------------------

    def _batches(self, where: str, params: Mapping[str, Any]) -> list[BatchRecord]:
        with self._read() as conn:
            rows = conn.execute(
                text(f"SELECT {_BATCH_COLUMNS} FROM batch_jobs {where}"), params
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
            f"WHERE pipeline = :p AND state = {_B_RESERVING} AND leased_at < :c ORDER BY"
            " created_at",
            {"p": pipeline, "c": cutoff},
        )

    def submitted_batches(self, *, pipeline: str | None = None) -> list[BatchRecord]:
        """Batch jobs created and bound but not reconciled yet."""
        if pipeline is None:
            return self._batches(f"WHERE state = {_B_SUBMITTED} ORDER BY submitted_at", {})
        return self._batches(
            f"WHERE pipeline = :p AND state = {_B_SUBMITTED} ORDER BY submitted_at", {"p": pipeline}
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
            for chunk in _chunks(keys, 5000):
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
                        f" WHERE name = :name AND state = {_B_SUBMITTED}"
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

    # -- pipelines -------------------------------------------------------------------------

    def pipeline_record(self, name: str) -> PipelineRecord | None:
        """The recorded identity of the pipeline called ``name``, or None."""
        with self._read() as conn:
            row = conn.execute(
                text(f"SELECT {_PIPELINE_COLUMNS} FROM pipelines WHERE name = :name"),
                {"name": name},
            ).one_or_none()
        return None if row is None else PipelineRecord(*row)

    def pipelines(self) -> list[PipelineRecord]:
        with self._read() as conn:
            rows = conn.execute(text(f"SELECT {_PIPELINE_COLUMNS} FROM pipelines ORDER BY name"))
            return [PipelineRecord(*row) for row in rows]

    def record_pipeline(
        self, name: str, *, spec: str, channel: str, model: str, schema_fingerprint: str
    ) -> PipelineChange:
        """Record the pipeline called ``name`` as defined by ``spec`` (``module:attribute``).

        A name first seen is recorded; the same ``spec`` with another channel, model or
        schema fingerprint is a deliberate change, recorded with its revision counted up.
        Another ``spec`` under a recorded name raises :class:`PipelineConflict` and changes
        nothing.
        """
        now = self.clock()
        fields = {"channel": channel, "model": model, "schema_fingerprint": schema_fingerprint}
        with self._write() as conn:
            row = conn.execute(
                text(f"SELECT {_PIPELINE_COLUMNS} FROM pipelines WHERE name = :name"),
                {"name": name},
            ).one_or_none()
            if row is None:
                inserted = conn.execute(
                    self._insert_ignore(PipelineRow.__table__, "name"),  # type: ignore[attr-defined]
                    {
                        "name": name,
                        "spec": spec,
                        **fields,
                        "revision": 1,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                if self._inserted(inserted) == 1:
                    return PipelineChange(
                        "new",
                        PipelineRecord(name, spec, channel, model, schema_fingerprint, 1, now, now),
                    )
                row = conn.execute(
                    text(f"SELECT {_PIPELINE_COLUMNS} FROM pipelines WHERE name = :name"),
                    {"name": name},
                ).one()
            record = PipelineRecord(*row)
            if record.spec != spec:
                raise PipelineConflict(name, owner=record.spec, given=spec)
            changed = tuple(k for k, v in fields.items() if getattr(record, k) != v)
            if not changed:
                return PipelineChange("same", record)
            conn.execute(
                text(
                    "UPDATE pipelines SET channel = :channel, model = :model,"
                    " schema_fingerprint = :schema_fingerprint, revision = revision + 1,"
                    " updated_at = :now WHERE name = :name"
                ),
                {**fields, "now": now, "name": name},
            )
            return PipelineChange(
                "changed",
                record._replace(
                    channel=channel,
                    model=model,
                    schema_fingerprint=schema_fingerprint,
                    revision=record.revision + 1,
                    updated_at=now,
                ),
                changed,
            )

    def check_writable(self) -> None:
        """Raise :class:`LedgerConfigError` unless this process can write to the ledger
        (a read-only file or directory, a read-only database user), changing nothing."""
        try:
            with self._write() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
        except LedgerConfigError as exc:
            raise LedgerConfigError(f"cannot write to the ledger at {self.url}: {exc}") from exc

    # -- webhooks --------------------------------------------------------------------------

    def record_delivery(
        self, webhook_id: str, *, event_type: str, subject: str, processed: bool = False
    ) -> bool:
        """Record a webhook delivery by id; False when it was seen before (a repeat).

        ``processed``: nothing is left to do for it (one write instead of two).
        """
        stmt = self._insert_ignore(WebhookDelivery.__table__, "webhook_id")  # type: ignore[attr-defined]
        now = self.clock()
        row = {
            "webhook_id": webhook_id,
            "event_type": event_type[:128],
            "subject": subject[:256],
            "received_at": now,
            "processed_at": now if processed else None,
        }
        with self._write() as conn:
            return self._inserted(conn.execute(stmt, row)) == 1

    def delivery(self, webhook_id: str) -> tuple[float, float | None] | None:
        """(received_at, processed_at) of a recorded delivery, or None if never seen."""
        with self._read() as conn:
            row = conn.execute(
                text(
                    "SELECT received_at, processed_at FROM webhook_deliveries"
                    " WHERE webhook_id = :id"
                ),
                {"id": webhook_id},
            ).one_or_none()
        return None if row is None else (float(row[0]), row[1])

    def mark_delivery_processed(self, webhook_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                text("UPDATE webhook_deliveries SET processed_at = :now WHERE webhook_id = :id"),
                {"now": self.clock(), "id": webhook_id},
            )

    # -- daily snapshots -------------------------------------------------------------------

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

    # -- retention -------------------------------------------------------------------------

    def purge(self, *, older_than_days: float = 30.0) -> int:
        """Delete consumed jobs settled longer ago than the retention window."""
        cutoff = self.clock() - older_than_days * 86400
        with self._write() as conn:
            return conn.execute(
                text(f"DELETE FROM jobs WHERE status = {_CONSUMED} AND consumed_at < :c"),
                {"c": cutoff},
            ).rowcount
