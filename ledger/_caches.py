"""Context caches of pipelines' shared prefixes (``caches``): reserved by the prefix's digest
before ``caches.create``, bound to the cache after it, found again by display name after a
crash, created again once expired, deleted when every row of the pipeline is final. Never a
row's attempt.

The moves are declared once in ``ledger._transitions.CACHE_MOVES``; each ``UPDATE`` names the
state (and token) it moves from, so two passes never both create the night's cache: the one
whose compare-and-set changed no row uses the other's (or sends its rows inline meanwhile).
The same discipline as ``ledger._uploads``, whose "every row final" rule it shares.
"""

from __future__ import annotations

import enum
import hashlib
from typing import NamedTuple

from sqlalchemy import text

from ledger._base import LedgerBase
from ledger._side_rows import ReserveStep, SideTable
from ledger._transitions import CACHE_MOVES, CacheState, sql_literal
from ledger._uploads import FINAL_SQL

__all__ = ["CacheAction", "CacheClaim", "CacheRecord", "CacheVerbs"]

_RESERVING = sql_literal(CacheState.RESERVING)
_ACTIVE = sql_literal(CacheState.ACTIVE)
_EXPIRED = sql_literal(CacheState.EXPIRED)
_DELETED = sql_literal(CacheState.DELETED)
_RETIRED = sql_literal(CacheState.RETIRED)


def retired_key(name: str) -> str:
    """The key (``prefix_hash`` column) of the row keeping a superseded cache ``name``: the
    prefix's own digest keys its current cache, so a retired one is keyed by its name's."""
    return hashlib.sha256(name.encode()).hexdigest()


class CacheRecord(NamedTuple):
    pipeline: str
    prefix_hash: str
    state: str
    token: str | None
    reserved_at: float
    model: str
    name: str | None
    expires_at: float | None
    tokens: int
    creates: int
    delete_failures: int


_COLUMNS = (
    "pipeline, prefix_hash, state, token, reserved_at, model, name, expires_at, tokens,"
    " creates, delete_failures"
)


class CacheAction(enum.StrEnum):
    """What a pass does with its prefix's cache after ``reserve_cache``."""

    USE = "use"  # a bound cache that lives long enough: name it
    CREATE = "create"  # reserved under our token: create it (or find a dead pass's)
    WAIT = "wait"  # another live pass is creating it: send the prefix inline meanwhile


class CacheClaim(NamedTuple):
    """What ``reserve_cache`` decided: ``use`` the bound cache, ``create`` under our token
    (``taken_over``: a dead pass had reserved it, so look for its cache by display name
    first), or ``wait`` (another live pass is creating it)."""

    action: CacheAction
    record: CacheRecord
    taken_over: bool = False


_ACTIONS = {
    ReserveStep.USE: CacheAction.USE,
    ReserveStep.OURS: CacheAction.CREATE,
    ReserveStep.WAIT: CacheAction.WAIT,
}
_TABLE = SideTable(
    "caches",
    "prefix_hash",
    _COLUMNS,
    CacheRecord,
    CacheState.RESERVING,
    CacheState.ACTIVE,
    CacheState.DELETED,
)


class CacheVerbs(LedgerBase):
    """Verbs over the context caches of pipelines' shared prefixes."""

    def get_cache(self, pipeline: str, digest: str) -> CacheRecord | None:
        with self._read() as conn:
            return _TABLE.get(conn, pipeline, digest)

    def caches(self, pipeline: str) -> list[CacheRecord]:
        """Every cache of the pipeline's prefixes (``creates`` counts the ``caches.create``
        calls bound to it: more than one when it expired and was created again), and the
        ``retired`` rows of the caches those creates superseded."""
        with self._read() as conn:
            return _TABLE.all(conn, pipeline)

    def reserve_cache(
        self,
        pipeline: str,
        digest: str,
        *,
        token: str,
        model: str,
        fresh_until: float,
        stale_before: float,
    ) -> CacheClaim:
        """Reserve the creation of the cache of this prefix.

        A bound cache that expires after ``fresh_until`` is used as it is; a reservation
        renewed before ``stale_before`` is another pass's (``wait``); anything else (no row,
        a cache expiring too soon, expired or deleted, a dead pass's reservation) is reserved
        under ``token`` (``CACHE_MOVES['reserve_cache']``). A bound cache superseded so is
        kept in a row of its own (``retired``, keyed by :func:`retired_key`): rows submitted
        naming it may still read it, and it is deleted with the others once every row is
        final (``CACHE_MOVES['retire_cache']``)."""
        assert CACHE_MOVES["reserve_cache"][1] is CacheState.RESERVING
        now = self.clock()
        with self._write() as conn:
            got = _TABLE.reserve(
                conn,
                pipeline,
                digest,
                token=token,
                now=now,
                fresh_until=fresh_until,
                stale_before=stale_before,
                insert={"model": model, "tokens": 0, "creates": 0, "delete_failures": 0},
                take_over={
                    "model": ":m",
                    "deleted_at": "NULL",
                    "name": "NULL",
                    "expires_at": "NULL",
                },
                m=model,
            )
            was = got.superseded
            if was is not None and was.name is not None and was.state != CacheState.DELETED:
                self._retire(conn, was, now)
            return CacheClaim(_ACTIONS[got.verdict], got.record, got.taken_over)

    def _retire(self, conn: object, found: CacheRecord, now: float) -> None:
        assert CACHE_MOVES["retire_cache"][1] is CacheState.RETIRED
        assert found.name is not None
        conn.execute(  # type: ignore[attr-defined]
            text(
                "INSERT INTO caches (pipeline, prefix_hash, state, reserved_at, model, name,"
                " expires_at, bound_at, tokens, creates, delete_failures)"
                f" VALUES (:p, :h, {_RETIRED}, :now, :m, :n, :e, :now, :k, 0, 0)"
                " ON CONFLICT DO NOTHING"
            ),
            {
                "p": found.pipeline,
                "h": retired_key(found.name),
                "now": now,
                "m": found.model,
                "n": found.name,
                "e": found.expires_at,
                "k": found.tokens,
            },
        )

    def bind_cache(
        self, pipeline: str, digest: str, *, token: str, name: str, expires_at: float, tokens: int
    ) -> bool:
        """The cache reserved under ``token`` is ``name``; False if the reservation was taken
        over meanwhile (the other pass binds its own)."""
        assert CACHE_MOVES["bind_cache"][1] is CacheState.ACTIVE
        with self._write() as conn:
            sets = "name = :n, expires_at = :e, tokens = :k, creates = creates + 1"
            return _TABLE.bind(
                conn, pipeline, digest, token, self.clock(), sets, n=name, e=expires_at, k=tokens
            )

    def release_cache(self, pipeline: str, digest: str, *, token: str) -> bool:
        """The create reserved under ``token`` was refused: the reservation is removed (a
        later pass reserves it again)."""
        assert CACHE_MOVES["release_cache"][1] is None
        with self._write() as conn:
            return _TABLE.release(conn, pipeline, digest, token)

    def cache_expired(self, pipeline: str, digest: str, *, name: str) -> bool:
        """A request naming the cache ``name`` was refused for it (expired or gone): the next
        row reserves it again and creates a new one."""
        assert CACHE_MOVES["cache_expired"][1] is CacheState.EXPIRED
        with self._write() as conn:
            return _TABLE.move(
                conn,
                pipeline,
                digest,
                f"state = {_EXPIRED}",
                f"state = {_ACTIVE} AND name = :n",
                n=name,
            )

    def caches_to_delete(
        self, *, pipeline: str, stale_before: float | None = None
    ) -> list[CacheRecord]:
        """Bound, expired or retired caches of ``pipeline`` when every row of it is final
        (done, consumed or parked): no row will be sent with them again. With
        ``stale_before``, reservations unrenewed since then too (a dead pass's, whose
        create may have made a cache: look for it by display name, then
        :meth:`abandoned_cache_deleted`)."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM caches c WHERE c.pipeline = :p"
                    f" AND (c.state IN ({_ACTIVE}, {_EXPIRED}, {_RETIRED})"
                    f" OR (c.state = {_RESERVING} AND c.reserved_at < :stale))"
                    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.pipeline = c.pipeline"
                    f" AND j.status NOT IN ({FINAL_SQL}))"
                    " ORDER BY c.delete_failures, c.bound_at"
                ),
                {"p": pipeline, "stale": stale_before if stale_before is not None else -1.0},
            ).all()
        return [CacheRecord(*row) for row in rows]

    def cache_deleted(self, pipeline: str, digest: str, *, name: str | None) -> bool:
        """The cache ``name`` is gone from the API (deleted, or already expired)."""
        sources = ", ".join(sql_literal(s) for s in CACHE_MOVES["cache_deleted"][0] if s)
        with self._write() as conn:
            where = f"state IN ({sources}) AND name = :n"
            return _TABLE.gone(conn, pipeline, digest, self.clock(), where, n=name)

    def abandoned_cache_deleted(self, pipeline: str, digest: str, *, token: str | None) -> bool:
        """A dead pass's reservation (``token``) was cleaned up: the cache its create may
        have made was looked for by display name and deleted (or none was found)."""
        assert CACHE_MOVES["abandoned_cache_deleted"][1] is CacheState.DELETED
        with self._write() as conn:
            where = f"state = {_RESERVING} AND token = :t"
            return _TABLE.gone(conn, pipeline, digest, self.clock(), where, t=token)

    def cache_delete_failed(self, pipeline: str, digest: str, *, error: str) -> None:
        """A delete failed: counted on the cache (never on a row), retried on a later tick."""
        with self._write() as conn:
            _TABLE.delete_failed(
                conn, pipeline, digest, error, f"{_ACTIVE}, {_EXPIRED}, {_RETIRED}, {_RESERVING}"
            )
