"""SQL shared by the ledger's verbs: states as literals, the failure update, bulk paths.

The states come from :mod:`ledger._transitions`; PostgreSQL's bulk paths stage rows
through COPY and apply them with the same compare-and-set conditions as the per-row
statements.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
import psycopg.errors
from sqlalchemy import BigInteger, Connection, Float, Integer, text

from ledger._failure import (
    FREE_ATTEMPT_CODES,
    GRACE_ATTEMPT_CODES,
    POSSIBLY_BILLED_CODES,
    Failure,
)
from ledger._models import Job, Status
from ledger._records import FailureRow, NewJob, Policy, ResultRow
from ledger._redact import redact
from ledger._transitions import TRANSITIONS, BatchState, sql_literal

__all__ = [
    "BATCH_REFUSED",
    "BATCH_RELEASED",
    "BATCH_RESERVING",
    "BATCH_SUBMITTED",
    "CONSUMED",
    "DONE",
    "FAIL",
    "FAILURE_SET",
    "FOREIGN_EXAMPLES",
    "MESSAGE_LIMIT",
    "MOVES",
    "NAMED",
    "PARKED",
    "PENDING",
    "RESERVING",
    "RETRYABLE",
    "REVISION_OF",
    "SCHEMA_CODE",
    "SQLITE_FAILURE_UPDATE",
    "SUBMITTED",
    "TOKEN_COLUMNS",
    "USAGE_SET",
    "S",
    "chunks",
    "failure_params",
    "handle_of",
    "payload_text",
    "pg_copy_enroll",
    "pg_copy_failures",
    "pg_copy_new_jobs",
    "pg_copy_results",
    "sqlite_failure_params",
    "usage_params",
]


MESSAGE_LIMIT = 2000

FOREIGN_EXAMPLES = 5

# The verbs' moves come from the transition table; reads name their states through these.
S = Status

MOVES = TRANSITIONS

FAIL = TRANSITIONS["apply_failures"]

PENDING, RESERVING, SUBMITTED, DONE, CONSUMED, RETRYABLE, PARKED = (
    sql_literal(s)
    for s in (S.PENDING, S.RESERVING, S.SUBMITTED, S.DONE, S.CONSUMED, S.RETRYABLE, S.PARKED)
)

BATCH_RESERVING, BATCH_SUBMITTED, BATCH_RELEASED, BATCH_REFUSED = (
    sql_literal(b)
    for b in (BatchState.RESERVING, BatchState.SUBMITTED, BatchState.RELEASED, BatchState.REFUSED)
)

# The failure code of an answer the output schema refuses (ledger._verdicts names it).
SCHEMA_CODE = "schema"

# The current revision of the pipeline named by the ``:pipeline`` parameter (NULL when the
# pipeline was never recorded), stamped on a job when it is reserved.
REVISION_OF = "(SELECT revision FROM pipelines WHERE name = :pipeline)"

NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def payload_text(payload: Mapping[str, Any] | str) -> str:
    if isinstance(payload, str):
        return payload
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def handle_of(handle: str | Mapping[str, str], key: str) -> str:
    """One handle for every row, or each row's own handle from a key -> handle mapping."""
    return handle if isinstance(handle, str) else handle[key]


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# One expression decides whether a failure parks the job; the same predicate is used for
# the status, the class and the parking time so they can never disagree.
_PARKS = (
    "(:verdict = 'permanent'"
    " OR (:verdict = 'unknown' AND unknown_failures + 1 >= :unknown_cap)"
    " OR attempts - :free - attempts_base >= :attempt_cap + :grace)"
)

# The token counts an answer adds to its row (summed over every attempt: each was billed),
# in the order of ledger.Usage and of ResultRow / FailureRow after their first two fields.
TOKEN_COLUMNS = (
    "prompt_tokens",
    "candidates_tokens",
    "total_tokens",
    "thoughts_tokens",
    "cached_tokens",
    "audio_tokens",
)

# Adds an answer's tokens and keeps its model version and response id (the last answer's;
# a failure that brought no answer leaves the earlier ones).
USAGE_SET = ",\n".join(
    [f"    {c} = {c} + :{c}" for c in TOKEN_COLUMNS]
    + [
        "    model_version = COALESCE(:model_version, model_version)",
        "    response_id = COALESCE(:response_id, response_id)",
    ]
)

FAILURE_SET = f"""
    status = CASE WHEN {_PARKS} THEN {FAIL.to(S.PARKED)} ELSE {FAIL.to(S.RETRYABLE)} END,
    error_class = CASE WHEN {_PARKS} THEN :parked_class ELSE :error_class END,
    parked_at = CASE WHEN {_PARKS} THEN :now ELSE NULL END,
    unknown_failures = unknown_failures + CASE WHEN :verdict = 'unknown' THEN 1 ELSE 0 END,
    error_message = :message,
    first_failure_at = COALESCE(first_failure_at, :now),
    last_failure_at = :now,
    due_at = :due_at,
    attempts = attempts - :free,
    reservation = NULL,
    possible_duplicates = possible_duplicates + :duplicate,
{USAGE_SET},
    updated_at = :now
"""


def usage_params(row: Sequence[Any] | None) -> dict[str, Any]:
    """The :data:`USAGE_SET` parameters of a ResultRow or FailureRow (zeros for None)."""
    if row is None:
        return {**dict.fromkeys(TOKEN_COLUMNS, 0), "model_version": None, "response_id": None}
    out: dict[str, Any] = {c: int(row[i + 2] or 0) for i, c in enumerate(TOKEN_COLUMNS)}
    out["model_version"] = row[8]
    out["response_id"] = row[9]
    return out


def failure_params(
    failure: Failure, policy: Policy, now: float, row: Sequence[Any] | None = None
) -> dict[str, Any]:
    return {
        "verdict": failure.verdict.value,
        "unknown_cap": policy.unknown_cap,
        "attempt_cap": policy.attempt_cap,
        "parked_class": failure.parked_class(),
        "error_class": failure.error_class,
        "message": redact(failure.message)[:MESSAGE_LIMIT],
        "now": now,
        "due_at": now + (failure.retry_delay or 0.0),
        # A job whose outcome was lost after the API accepted it (a deleted or expired
        # interaction) may have been billed already: its next sending is a possible duplicate.
        "duplicate": 1 if failure.code in POSSIBLY_BILLED_CODES else 0,
        # A request refused for a reason of ours (its cache gone) gives the attempt back.
        "free": 1 if failure.code in FREE_ATTEMPT_CODES else 0,
        # A row whose batch job the deadline cancelled keeps the attempt counted but is
        # allowed one beyond the cap: it is never parked for our cancel.
        "grace": 1 if failure.code in GRACE_ATTEMPT_CODES else 0,
        **usage_params(row),
    }


# -- SQLite's bulk failure update ----------------------------------------------------------
#
# FAILURE_SET names some parameters several times (the parking predicate is spelt three
# times); with plain ``?`` each use is a value bound again for every row. SQLite's numbered
# ``?N`` binds each name once, and numbering the parameters that are the same for every row
# of one failure first lets a row's values be that failure's part (computed once per
# distinct failure in a call: a chunk's failures are mostly a few kinds) plus its own.

_FAILURE_SHARED = (
    "verdict",
    "unknown_cap",
    "attempt_cap",
    "parked_class",
    "error_class",
    "message",
    "now",
    "due_at",
    "duplicate",
    "free",
    "grace",
)
_FAILURE_OWN = (*TOKEN_COLUMNS, "model_version", "response_id", "key", "handle")


def _numbered(sql: str, order: Sequence[str]) -> str:
    """``:name`` placeholders as ``?N``, N the name's place in ``order`` (a name missing from
    ``order`` fails here, at import)."""
    index = {name: i for i, name in enumerate(order, 1)}
    return NAMED.sub(lambda m: f"?{index[m.group(1)]}", sql)


SQLITE_FAILURE_UPDATE = _numbered(
    f"UPDATE jobs SET {FAILURE_SET} WHERE key = :key AND {FAIL.where()} AND handle = :handle",
    _FAILURE_SHARED + _FAILURE_OWN,
)


def sqlite_failure_params(
    rows: Sequence[FailureRow], handle: str | Mapping[str, str], policy: Policy, now: float
) -> list[tuple[Any, ...]]:
    """Each row's values for :data:`SQLITE_FAILURE_UPDATE`, as :func:`failure_params` gives
    them."""
    shared: dict[Failure, tuple[Any, ...]] = {}
    params = []
    for r in rows:
        failure = r[1]
        head = shared.get(failure)
        if head is None:
            values = failure_params(failure, policy, now)
            head = shared[failure] = tuple([values[name] for name in _FAILURE_SHARED])
        # The row's tokens and answer ids (FailureRow's fields 2-9), then where it goes.
        params.append((*head, *r[2:10], r[0], handle_of(handle, r[0])))
    return params


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


def pg_copy_enroll(
    conn: Connection, chunk: Sequence[NewJob], pipeline: str, channel: str, model: str, now: float
) -> int:
    _pg_stage(conn, "gl_stage_enroll", "key text, payload text, fingerprint text")
    staged = (
        (i.key, payload, i.digest(payload))
        for i in _first_per_key(chunk, _key_attr)
        for payload in (payload_text(i.payload),)
    )
    _pg_copy(conn, "gl_stage_enroll", "key, payload, fingerprint", staged)
    return conn.execute(
        text(
            "INSERT INTO jobs (key, pipeline, channel, model, payload, fingerprint, status,"
            " attempts, attempts_base, unknown_failures, prompt_tokens, candidates_tokens,"
            " total_tokens, due_at, possible_duplicates, replayed, created_at, updated_at)"
            " SELECT key, :pipeline, :channel, :model, payload, fingerprint,"
            f" {MOVES['enroll'].to(S.PENDING)},"
            " 0, 0, 0, 0, 0, 0, :now, 0, 0, :now, :now FROM gl_stage_enroll"
            " ON CONFLICT (key) DO NOTHING"
        ),
        {"pipeline": pipeline, "channel": channel, "model": model, "now": now},
    ).rowcount


# A fresh row as enroll writes it: every NOT NULL column without a server default.
_NEW_JOB_COLUMNS = (
    "key",
    "pipeline",
    "channel",
    "model",
    "payload",
    "fingerprint",
    "status",
    "attempts",
    "attempts_base",
    "unknown_failures",
    "prompt_tokens",
    "candidates_tokens",
    "total_tokens",
    "due_at",
    "possible_duplicates",
    "replayed",
    "created_at",
    "updated_at",
)


def _binary_type(column: str) -> str:
    """The PostgreSQL type a binary COPY sends for a jobs column, read from the model."""
    kind = Job.__table__.c[column].type  # type: ignore[attr-defined]
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, Float):
        return "float8"
    return "text"


_NEW_JOB_TYPES = [_binary_type(c) for c in _NEW_JOB_COLUMNS]


def pg_copy_new_jobs(
    conn: Connection, chunk: Sequence[NewJob], pipeline: str, channel: str, model: str, now: float
) -> int | None:
    """Enroll a chunk whose keys are all new with one binary COPY straight into jobs; None
    (and nothing written) when a key was already there: :func:`pg_copy_enroll` then.

    Measured on 100,000 rows (bench/scale.py, CPU of client and server): 5.4 µs a row
    against 7.5 through the staging table and ``INSERT ... ON CONFLICT``, whose speculative
    insertion and second pass over the rows cost more than the COPY itself. A key met twice
    in the chunk is sent once (first kept). The COPY runs under a savepoint, so a key that
    another enroller committed first (a unique violation) rolls back this chunk only; a key
    it has not committed yet makes the COPY wait for it, as an INSERT would.
    """
    MOVES["enroll"].to(S.PENDING)  # raises if the transition table ever disagrees
    # status, attempts, attempts_base, unknown_failures, the three token counts, due_at,
    # possible_duplicates, replayed, created_at, updated_at: as the staging path sets them.
    rest = (S.PENDING.value, 0, 0, 0, 0, 0, 0, now, 0, 0, now, now)
    rows = (
        (i.key, pipeline, channel, model, p, i.digest(p), *rest)
        for i in _first_per_key(chunk, _key_attr)
        for p in (payload_text(i.payload),)
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    n = 0
    try:
        with (
            conn.begin_nested(),
            cursor.copy(
                f"COPY jobs ({', '.join(_NEW_JOB_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(_NEW_JOB_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)
                n += 1
    except psycopg.errors.UniqueViolation:
        return None
    finally:
        cursor.close()
    return n


def pg_copy_results(
    conn: Connection, rows: Sequence[ResultRow], handle: str | Mapping[str, str], now: float
) -> int:
    _pg_stage(
        conn,
        "gl_stage_results",
        "key text, handle text, result text, "
        + ", ".join(f"s_{c} bigint" for c in TOKEN_COLUMNS)
        + ", s_model_version text, s_response_id text",
    )
    one = handle if isinstance(handle, str) else None
    staged = (
        (r[0], one if one is not None else handle[r[0]], r[1], *r[2:10])
        for r in _first_per_key(rows, _key_item)
    )
    _pg_copy(
        conn,
        "gl_stage_results",
        "key, handle, result, "
        + ", ".join(f"s_{c}" for c in TOKEN_COLUMNS)
        + ", s_model_version, s_response_id",
        staged,
    )
    _pg_plan_by_key(conn)
    return conn.execute(
        text(
            f"UPDATE jobs SET status = {MOVES['apply_results'].to(S.DONE)}, result = s.result,"
            " done_at = :now,"
            " updated_at = :now, error_class = NULL, reservation = NULL,"
            f" {_PG_USAGE_SET}"
            " FROM gl_stage_results s"
            f" WHERE jobs.key = s.key AND {MOVES['apply_results'].where('jobs.status')} AND"
            " jobs.handle = s.handle"
        ),
        {"now": now},
    ).rowcount


# The per-row parameters of FAILURE_SET, read from the staging table's columns instead
# (prefixed, so that no staging column shares a name with one of the jobs table).
_STAGED_FAILURE = (
    "verdict",
    "parked_class",
    "error_class",
    "message",
    "due_at",
    "duplicate",
    "free",
    "grace",
)

_STAGED_USAGE = (*TOKEN_COLUMNS, "model_version", "response_id")


def _staged(sql: str, names: tuple[str, ...]) -> str:
    return NAMED.sub(lambda m: f"s.s_{m.group(1)}" if m.group(1) in names else m.group(0), sql)


_PG_FAILURE_SET = _staged(FAILURE_SET, _STAGED_FAILURE + _STAGED_USAGE)

# In an UPDATE ... FROM, the unqualified columns are the jobs row's (the staging ones s_*);
# a column named on both sides of "=" is qualified to be safe.
_PG_USAGE_SET = _staged(USAGE_SET, _STAGED_USAGE).replace("\n", " ")


def pg_copy_failures(
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
        " s_message text, s_due_at double precision, s_duplicate bigint, s_free bigint,"
        " s_grace bigint, "
        + ", ".join(f"s_{c} bigint" for c in TOKEN_COLUMNS)
        + ", s_model_version text, s_response_id text",
    )

    def staged() -> Iterator[tuple[Any, ...]]:
        for r in _first_per_key(rows, _key_item):
            p = failure_params(r[1], policy, now, r)
            yield (
                r[0],
                handle_of(handle, r[0]),
                *(p[name] for name in _STAGED_FAILURE),
                *(p[name] for name in _STAGED_USAGE),
            )

    _pg_copy(
        conn,
        "gl_stage_failures",
        "key, handle, " + ", ".join(f"s_{name}" for name in _STAGED_FAILURE + _STAGED_USAGE),
        staged(),
    )
    _pg_plan_by_key(conn)
    # Unqualified columns in SET expressions are the jobs row's (the staging ones are s_*).
    return conn.execute(
        text(
            f"UPDATE jobs SET {_PG_FAILURE_SET} FROM gl_stage_failures s"
            f" WHERE jobs.key = s.key AND {FAIL.where('jobs.status')} AND jobs.handle ="
            " s.handle"
        ),
        {"unknown_cap": policy.unknown_cap, "attempt_cap": policy.attempt_cap, "now": now},
    ).rowcount


def _key_attr(item: NewJob) -> str:
    return item.key


def _key_item(row: Sequence[Any]) -> str:
    return str(row[0])
