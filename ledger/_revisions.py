"""Results of an earlier pipeline revision: the setup changed, not the row.

A job records the pipeline's revision it was reserved under (``jobs.schema_revision``, from
``pipelines.revision``). When its answer comes back after a deliberate change of the pipeline
(a new output schema), the collector validates it against the *current* schema: an answer that
still fits is delivered as usual; one that does not is no fault of the row, so instead of a
``schema`` failure (permanent: parked) the row goes back to its queue to be sent again under
the new schema. Its attempt stays counted (it was billed, and its tokens are kept) but not
against the caps: ``attempts_base`` moves up by one, as a replay moves it for all of them.

A row reserved under the current revision (or before revisions were recorded: NULL) fails as
it always did, so a row is sent back at most once per revision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from ledger._base import LedgerBase
from ledger._records import FailureRow
from ledger._sql import MOVES, SCHEMA_CODE, USAGE_SET, S, handle_of, usage_params

__all__ = ["RevisionVerbs"]

_REQUEUE = MOVES["requeue_outdated"]

# attempts_base + 1 below: the row is pending when no attempt counts against its caps any
# more, retryable when earlier failures still do (as unsubmit and release decide).
_REQUEUE_SQL = f"""UPDATE jobs SET
        status = CASE WHEN attempts > attempts_base + 1 THEN {_REQUEUE.to(S.RETRYABLE)}
            ELSE {_REQUEUE.to(S.PENDING)} END,
        attempts_base = attempts_base + 1, handle = NULL, submitted_at = NULL,
        reservation = NULL, due_at = :now, updated_at = :now,
{USAGE_SET}
    WHERE key = :key AND {_REQUEUE.where()} AND handle = :handle
        AND schema_revision < (SELECT p.revision FROM pipelines p WHERE p.name = jobs.pipeline)"""


class RevisionVerbs(LedgerBase):
    """The verb that sends back answers refused by a schema changed since they were asked."""

    def requeue_outdated(
        self, rows: Sequence[FailureRow], *, handle: str | Mapping[str, str]
    ) -> int:
        """Send back the rows of ``rows`` whose ``schema`` failure is the pipeline's change.

        Only rows still ``submitted`` under ``handle`` (one, or one per key) and reserved
        under an earlier revision of their pipeline move (to ``pending``, or ``retryable``
        when earlier failures still count); the other rows are left for ``apply_failures``,
        which then finds the moved ones no longer submitted. Returns how many moved.
        """
        with self._write() as conn:
            return self._requeue_outdated(conn, rows, handle, self.clock())

    def _requeue_outdated(
        self,
        conn: Connection,
        rows: Sequence[FailureRow],
        handle: str | Mapping[str, str],
        now: float,
    ) -> int:
        params: list[dict[str, Any]] = [
            {
                "key": r[0],
                "handle": handle_of(handle, r[0]),
                "now": now,
                **usage_params(r),
            }
            for r in rows
            if r[1].code == SCHEMA_CODE
        ]
        return self._bulk(conn, _REQUEUE_SQL, params) if params else 0
