"""The morning view: per pipeline, what was delivered, what is parked and why, what is still
on its way. Read-only; one grouped scan of the jobs table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text

from ledger._batches import REFUSED_SINCE_SUCCESS
from ledger._models import Status

if TYPE_CHECKING:
    from ledger._store import Ledger

__all__ = ["IN_FLIGHT", "ParkedClass", "PipelineMorning", "morning_view"]

# Not final yet: waiting to be sent, being sent, sent and awaiting the answer, or answered
# and awaiting delivery. Retryable rows are counted apart ("retrying").
IN_FLIGHT = (Status.PENDING, Status.RESERVING, Status.SUBMITTED, Status.DONE)


@dataclass(frozen=True, slots=True)
class ParkedClass:
    """Parked jobs of one error class, with one of their reasons as an example."""

    error_class: str
    jobs: int
    example: str | None


@dataclass(slots=True)
class PipelineMorning:
    """One pipeline's rows by where they ended (or have not yet)."""

    pipeline: str
    delivered: int = 0
    retrying: int = 0
    in_flight: int = 0
    oldest_in_flight_s: float | None = None
    parked: list[ParkedClass] = field(default_factory=list)
    # Batch submissions the API refused since the pipeline's last batch job was created.
    submission_refused: int = 0
    submission_refused_since: float | None = None

    @property
    def parked_total(self) -> int:
        return sum(p.jobs for p in self.parked)


def morning_view(ledger: Ledger) -> list[PipelineMorning]:
    """Every pipeline in the ledger, by name."""
    now = ledger.clock()
    views: dict[str, PipelineMorning] = {}
    with ledger._read() as conn:
        for pipeline, status, n, oldest in conn.execute(
            text("SELECT pipeline, status, COUNT(*), MIN(created_at) FROM jobs GROUP BY 1, 2")
        ):
            view = views.setdefault(pipeline, PipelineMorning(pipeline))
            n = int(n)
            if status == Status.CONSUMED:
                view.delivered += n
            elif status == Status.RETRYABLE:
                view.retrying += n
            elif status in IN_FLIGHT:
                view.in_flight += n
                age = max(0.0, now - float(oldest or now))
                view.oldest_in_flight_s = max(view.oldest_in_flight_s or 0.0, age)
        for pipeline, cls, n, example in conn.execute(
            text(
                "SELECT pipeline, error_class, COUNT(*), MIN(error_message) FROM jobs"
                " WHERE status = :parked GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"
            ),
            {"parked": Status.PARKED.value},
        ):
            view = views.setdefault(pipeline, PipelineMorning(pipeline))
            view.parked.append(ParkedClass(cls or "unclassified", int(n), example))
        for pipeline, n, since in conn.execute(
            text(
                "SELECT b.pipeline, COUNT(*), MIN(b.finished_at) FROM batch_jobs b"
                f" WHERE {REFUSED_SINCE_SUCCESS} GROUP BY 1"
            )
        ):
            view = views.setdefault(pipeline, PipelineMorning(pipeline))
            view.submission_refused = int(n)
            view.submission_refused_since = float(since)
    return [views[name] for name in sorted(views)]
