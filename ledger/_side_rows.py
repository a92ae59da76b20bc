"""The row verbs ``uploads`` and ``caches`` share: a resource kept beside a pipeline's rows
(never a row's attempt), keyed by pipeline and a digest column, reserved under a token before
the API call that makes it, bound after it, taken over once its reservation goes stale.

Both tables keep the same discipline (every ``UPDATE`` names the state and token it moves
from), so the compare-and-set moves and the reserve decision are written once here, named by
table and key column; ``ledger._uploads`` and ``ledger._caches`` say only what differs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from sqlalchemy import text

from ledger._transitions import sql_literal

__all__ = ["Reservation", "ReserveStep", "SideTable"]


class _Row(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def token(self) -> str | None: ...
    @property
    def reserved_at(self) -> float: ...
    @property
    def expires_at(self) -> float | None: ...


R = TypeVar("R", bound=_Row)


class ReserveStep(enum.Enum):
    """What a reservation decided, before each table names it (``CacheAction``,
    ``UploadAction``)."""

    USE = enum.auto()  # a bound resource that lives long enough
    OURS = enum.auto()  # reserved under our token: make it
    WAIT = enum.auto()  # another live pass is making it


class Reservation(NamedTuple, Generic[R]):
    """``reserve``'s answer: the verdict, the row as it now is, whether a dead pass's
    reservation was taken over, and (``superseded``) the row as it was before our
    compare-and-set moved it (None when nothing moved)."""

    verdict: ReserveStep
    record: R
    taken_over: bool = False
    superseded: R | None = None


@dataclass(frozen=True)
class SideTable(Generic[R]):
    """One side table: its name, its digest column, its columns in ``record``'s order, and
    its own enum's ``reserving``, ``active`` and ``deleted`` states."""

    table: str
    key: str
    columns: str
    record: Callable[..., R]
    reserving: enum.StrEnum
    active: enum.StrEnum
    deleted: enum.StrEnum

    def _where(self) -> str:
        return f"pipeline = :p AND {self.key} = :h"

    def get(self, conn: Any, pipeline: str, digest: str) -> R | None:
        row = conn.execute(
            text(f"SELECT {self.columns} FROM {self.table} WHERE {self._where()}"),
            {"p": pipeline, "h": digest},
        ).first()
        return None if row is None else self.record(*row)

    def all(self, conn: Any, pipeline: str) -> list[R]:
        rows = conn.execute(
            text(
                f"SELECT {self.columns} FROM {self.table} WHERE pipeline = :p ORDER BY {self.key}"
            ),
            {"p": pipeline},
        ).all()
        return [self.record(*r) for r in rows]

    def move(
        self, conn: Any, pipeline: str, digest: str, sets: str, where: str, **params: object
    ) -> bool:
        """``UPDATE ... SET sets WHERE`` this row ``AND where``: True if it moved (the
        compare-and-set every move of both tables is)."""
        return (
            conn.execute(
                text(f"UPDATE {self.table} SET {sets} WHERE {self._where()} AND {where}"),
                {"p": pipeline, "h": digest, **params},
            ).rowcount
            == 1
        )

    def bind(
        self,
        conn: Any,
        pipeline: str,
        digest: str,
        token: str,
        now: float,
        sets: str,
        **params: object,
    ) -> bool:
        """The resource reserved under ``token`` is made (``sets``: what it is): False if the
        reservation was taken over meanwhile (the other pass binds its own)."""
        return self.move(
            conn,
            pipeline,
            digest,
            f"state = {sql_literal(self.active)}, {sets}, bound_at = :now",
            f"state = {sql_literal(self.reserving)} AND token = :t",
            now=now,
            t=token,
            **params,
        )

    def gone(
        self, conn: Any, pipeline: str, digest: str, now: float, where: str, **params: object
    ) -> bool:
        """The resource is deleted at the API: moved to ``deleted`` from the row ``where``
        says."""
        return self.move(
            conn,
            pipeline,
            digest,
            f"state = {sql_literal(self.deleted)}, deleted_at = :now",
            where,
            now=now,
            **params,
        )

    def release(self, conn: Any, pipeline: str, digest: str, token: str) -> bool:
        """Remove the reservation held under ``token`` (its API call was refused)."""
        return (
            conn.execute(
                text(
                    f"DELETE FROM {self.table} WHERE {self._where()}"
                    f" AND state = {sql_literal(self.reserving)} AND token = :t"
                ),
                {"p": pipeline, "h": digest, "t": token},
            ).rowcount
            == 1
        )

    def delete_failed(
        self, conn: Any, pipeline: str, digest: str, error: str, states_sql: str
    ) -> None:
        """A delete failed: counted on the resource (never on a row), retried later."""
        self.move(
            conn,
            pipeline,
            digest,
            "delete_failures = delete_failures + 1, last_error = :e",
            f"state IN ({states_sql})",
            e=error[:500],
        )

    def reserve(
        self,
        conn: Any,
        pipeline: str,
        digest: str,
        *,
        token: str,
        now: float,
        fresh_until: float,
        stale_before: float,
        insert: Mapping[str, object],
        take_over: Mapping[str, str],
        **params: object,
    ) -> Reservation[R]:
        """Reserve the row under ``token``: inserted when missing (``insert``: column to
        value, besides pipeline, key, state, token and reserved_at), used when bound and
        expiring after ``fresh_until``, left to its pass when reserved since
        ``stale_before``, else moved to ``reserving`` (``take_over``: column to the SQL it
        is set to; ``params`` bind them) by a compare-and-set on the state and reservation
        time it was found in."""
        found = self.get(conn, pipeline, digest)
        if found is None:
            cols = ", ".join(insert)
            marks = ", ".join(f":i_{c}" for c in insert)
            inserted = conn.execute(
                text(
                    f"INSERT INTO {self.table} (pipeline, {self.key}, state, token, reserved_at,"
                    f" {cols}) VALUES (:p, :h, {sql_literal(self.reserving)}, :t, :now, {marks})"
                    " ON CONFLICT DO NOTHING"
                ),
                {
                    "p": pipeline,
                    "h": digest,
                    "t": token,
                    "now": now,
                    **{f"i_{c}": v for c, v in insert.items()},
                },
            ).rowcount
            record = self.get(conn, pipeline, digest)
            assert record is not None
            return Reservation(_ours_or_wait(inserted == 1), record)
        state, reserved_at = found.state, found.reserved_at
        if state == self.active and (found.expires_at or 0) > fresh_until:
            return Reservation(ReserveStep.USE, found)
        if state == self.reserving and reserved_at >= stale_before:
            return Reservation(_ours_or_wait(found.token == token), found)
        sets = ", ".join(f"{c} = {v}" for c, v in take_over.items())
        moved = self.move(
            conn,
            pipeline,
            digest,
            f"state = {sql_literal(self.reserving)}, token = :t, reserved_at = :now, {sets}",
            "state = :state AND reserved_at = :was",
            t=token,
            now=now,
            state=state,
            was=reserved_at,
            **params,
        )
        record = self.get(conn, pipeline, digest)
        assert record is not None
        return Reservation(
            _ours_or_wait(moved), record, state == self.reserving, found if moved else None
        )


def _ours_or_wait(ours: bool) -> ReserveStep:
    return ReserveStep.OURS if ours else ReserveStep.WAIT
