"""The ledger's plumbing: the engine, the clock, transactions and bulk execution."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ledger._db import atomic, make_engine, require_schema
from ledger._errors import InvalidTransition, LedgerConfigError
from ledger._records import JOB_COLUMNS, JobView
from ledger._sql import NAMED

__all__ = ["LedgerBase"]


_ANALYZE_AFTER = 1000
_PLANNED = "key, pipeline, status, handle, reservation, due_at, done_at, reserved_at"


class LedgerBase:
    """The plumbing every part of the ledger shares: the engine, the clock, transactions
    (``atomic()`` owns every commit and rollback) and bulk execution."""

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
        chunk_size: int = 20_000,
        migrate: bool = True,
        create: bool = False,
    ) -> None:
        """Open the ledger at ``url`` (or on ``engine``). A missing one is
        refused (``LedgerMissing``) unless ``create``: only ``gemini-ledger db upgrade``, the
        demo and tests create a ledger. ``migrate=False`` skips the check (a process that
        was handed an open ledger's URL)."""
        if engine is None:
            if url is None:
                raise TypeError("Ledger needs a url or an engine")
            engine = make_engine(url)
        self.engine = engine
        self.clock = clock
        self.chunk_size = chunk_size
        self._is_pg = self.engine.dialect.name == "postgresql"
        if migrate:
            require_schema(self.engine, create=create)

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

    def _refresh_stats(self, changed: int) -> None:
        """After a bulk change on PostgreSQL, refresh the planner's statistics.

        Otherwise, until autovacuum gets round to it, the planner believes a just-bound
        batch handle matches one row and walks the handle index for every per-key update
        instead of the primary key (measured: 200 rows/s instead of thousands).

        Only the columns the verbs filter and join on: statistics on the payload and result
        texts (sorted and compared for every sampled row) cost most of a full ANALYZE and no
        plan here reads them.
        """
        if self._is_pg and changed >= _ANALYZE_AFTER:
            with self.engine.connect() as conn:
                conn.execute(text(f"ANALYZE jobs ({_PLANNED})"))
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
            names = NAMED.findall(sql)
            sql = NAMED.sub("?", sql)
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

    def _views(self, where: str, params: Mapping[str, Any]) -> list[JobView]:
        cols = ", ".join(JOB_COLUMNS)
        with self._read() as conn:
            rows = conn.execute(text(f"SELECT {cols} FROM jobs {where}"), params).all()
        return [JobView(**dict(zip(JOB_COLUMNS, row, strict=True))) for row in rows]

    def check_writable(self) -> None:
        """Raise :class:`LedgerConfigError` unless this process can write to the ledger
        (a read-only file or directory, a read-only database user), changing nothing."""
        try:
            with self._write() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
        except LedgerConfigError as exc:
            raise LedgerConfigError(f"cannot write to the ledger at {self.url}: {exc}") from exc
