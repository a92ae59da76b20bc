"""Night by night: per pipeline, what each night delivered, parked and used (the trend).

Read-only. The caller says where the nights begin and end (epoch seconds: it knows the
time zone); the ledger counts each row on the night its own timestamps fall in:

- delivered: ``consumed_at`` (when its side effect was recorded);
- parked: ``parked_at`` (a row replayed since has none: it is counted where it ends next);
- usage: the night of its last answer (``done_at``, else its last failure's, else when it
  was sent). A row's tokens are summed over all its attempts, so a row answered after a
  retry on an earlier night has all of them on the night it was answered: the ledger keeps
  one row per key, not one per attempt.

One scan of the jobs table per measure, each row put in its night by a ``CASE`` over the
bounds (portable: SQLite and PostgreSQL alike, and right across a change of UTC offset since
the bounds are the caller's).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from ledger._base import LedgerBase
from ledger._errors import UsageError
from ledger._lines import Usage
from ledger._records import ModelUsage
from ledger._sql import TOKEN_COLUMNS

__all__ = ["NightCounts", "NightVerbs"]

# When a row's tokens were billed: its answer, else its last failure, else its sending.
_BILLED_AT = "COALESCE(done_at, last_failure_at, submitted_at)"


@dataclass(frozen=True, slots=True)
class NightCounts:
    """One pipeline's night: rows delivered and parked, and the usage billed, by model."""

    start: float  # epoch seconds, included
    end: float  # epoch seconds, excluded
    delivered: int = 0
    parked: int = 0
    usage: tuple[ModelUsage, ...] = field(default_factory=tuple)


def _night_of(column: str, n: int) -> str:
    """The index of the night ``column`` falls in (the WHERE clause keeps it in range)."""
    whens = " ".join(f"WHEN {column} < :b{i + 1} THEN {i}" for i in range(n - 1))
    return f"CASE {whens} ELSE {n - 1} END" if whens else "0"


class NightVerbs(LedgerBase):
    """The trend of the morning summary: counts and usage per pipeline and night."""

    def nightly(
        self, bounds: Sequence[float], *, pipeline: str | None = None
    ) -> dict[str, list[NightCounts]]:
        """Per pipeline with anything in the window, one :class:`NightCounts` per night
        (zeros included, oldest first): night ``i`` is ``[bounds[i], bounds[i + 1])``.

        ``bounds``: at least two increasing epoch seconds."""
        edges = [float(b) for b in bounds]
        if len(edges) < 2 or any(a >= b for a, b in itertools.pairwise(edges)):
            raise UsageError("nightly needs at least two increasing bounds")
        n = len(edges) - 1
        params: dict[str, Any] = {f"b{i}": b for i, b in enumerate(edges)}
        where_p = " AND pipeline = :p" if pipeline is not None else ""
        if pipeline is not None:
            params["p"] = pipeline
        counted: dict[str, dict[str, dict[int, int]]] = {"delivered": {}, "parked": {}}
        used: dict[tuple[str, int], list[ModelUsage]] = {}

        def _in(column: str) -> str:
            return f"{column} >= :b0 AND {column} < :b{n}{where_p}"

        tokens = ", ".join(f"COALESCE(SUM({c}), 0)" for c in TOKEN_COLUMNS)
        with self._read() as conn:
            for measure, column in (("delivered", "consumed_at"), ("parked", "parked_at")):
                for name, night, rows in conn.execute(
                    text(
                        f"SELECT pipeline, {_night_of(column, n)}, COUNT(*) FROM jobs"
                        f" WHERE {_in(column)} GROUP BY 1, 2"
                    ),
                    params,
                ):
                    counted[measure].setdefault(name, {})[int(night)] = int(rows)
            for row in conn.execute(
                text(
                    f"SELECT pipeline, {_night_of(_BILLED_AT, n)}, model, model_version, channel,"
                    f" COUNT(*), COALESCE(SUM(attempts), 0), {tokens} FROM jobs"
                    f" WHERE {_in(_BILLED_AT)} GROUP BY 1, 2, 3, 4, 5"
                ),
                params,
            ):
                usage = Usage(*(int(v) for v in row[7:]))
                line = ModelUsage(row[2], row[3], row[4], int(row[5]), int(row[6]), usage)
                used.setdefault((row[0], int(row[1])), []).append(line)
        names = set(counted["delivered"]) | set(counted["parked"]) | {p for p, _ in used}
        return {
            name: [
                NightCounts(
                    start=edges[i],
                    end=edges[i + 1],
                    delivered=counted["delivered"].get(name, {}).get(i, 0),
                    parked=counted["parked"].get(name, {}).get(i, 0),
                    usage=tuple(
                        sorted(
                            used.get((name, i), []),
                            key=lambda u: (u.model, u.model_version or "", u.channel),
                        )
                    ),
                )
                for i in range(n)
            ]
            for name in sorted(names)
        }
