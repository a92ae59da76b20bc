"""The ledger: one row per idempotency key and the verbs that move it between states.

Every transition is a compare-and-set (``UPDATE ... WHERE key = ? AND status = ?``) whose
affected row count is checked, so overlapping ticks and many workers on one PostgreSQL
ledger never submit or consume the same job twice. Bulk paths (enroll, reserve, applying
results) run many rows per transaction, never a commit per row.

:class:`Ledger` is one facade over focused parts, each a class of verbs over the same
engine and clock (:class:`ledger._base.LedgerBase`):

============================  ==========================================================
``ledger._transitions``       every move between states, declared once (the table)
``ledger._jobs``              enroll, reserve, bind a handle, take over, release
``ledger._outcomes``          results, failures, park, delivery claims, consume, replay
``ledger._revisions``         answers of an earlier pipeline revision sent back, not parked
``ledger._batches``           batch jobs and their members
``ledger._uploads``           Files API uploads of prompts' media, shared by content hash
``ledger._webhooks``          webhook deliveries
``ledger._reports``           rows, counts, usage, in flight, poison inputs, snapshots
``ledger._nights``            night by night: delivered, parked and usage (the trend)
``ledger._pipelines``         pipeline identity records
``ledger._plans``             each night's plan (estimated rows, tokens, cost) and spend
``ledger._records``           the values taken and returned
``ledger._sql``               SQL shared by the verbs, PostgreSQL's COPY paths
============================  ==========================================================
"""

from __future__ import annotations

from ledger._batches import BatchVerbs
from ledger._caches import CacheVerbs
from ledger._jobs import JobVerbs
from ledger._nights import NightVerbs
from ledger._outcomes import OutcomeVerbs
from ledger._pipelines import PipelineVerbs
from ledger._plans import PlanVerbs
from ledger._reports import ReportVerbs
from ledger._uploads import UploadVerbs
from ledger._webhooks import WebhookVerbs

__all__ = ["Ledger"]


class Ledger(
    JobVerbs,
    OutcomeVerbs,
    BatchVerbs,
    UploadVerbs,
    CacheVerbs,
    ReportVerbs,
    NightVerbs,
    PipelineVerbs,
    PlanVerbs,
    WebhookVerbs,
):
    """The ledger over one database (SQLite file or PostgreSQL), upgraded on first use.

    ``clock`` returns epoch seconds and is injectable so tests can move time; ``chunk_size``
    is how many rows one bulk transaction carries.
    """
