"""One tick of a pipeline, whatever its channel: what ``gemini-ledger tick NAME`` runs."""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from flows.errors import UsageError
from flows.registry import get_pipeline
from ledger import Channel

__all__ = ["BACKGROUND_STALE_ENV", "run_tick"]

# Age (s) after which a background tick takes over a reservation or a delivery claim left by
# a dead tick (the flow's ``max_age_s``); unset: the flow's default. Batch and direct read
# their own (GEMINI_LEDGER_BATCH_STALE_S, GEMINI_LEDGER_DIRECT_STALE_S) inside the flow.
BACKGROUND_STALE_ENV = "GEMINI_LEDGER_BACKGROUND_STALE_S"


def run_tick(name: str, *, day: date | None = None) -> dict[str, Any]:
    """Run the pipeline's tick flow once (the same flow its schedule runs) and return its report."""
    pipeline = get_pipeline(name)
    if pipeline.channel == Channel.BATCH:
        from flows.batch import batch_tick

        return batch_tick(pipeline=name, day=day)
    if pipeline.channel == Channel.BACKGROUND:
        from flows.background import background_tick

        raw = os.environ.get(BACKGROUND_STALE_ENV, "").strip()
        if not raw:
            return background_tick(pipeline=name, day=day)
        try:
            max_age_s = float(raw)
        except ValueError:
            raise UsageError(
                f"{BACKGROUND_STALE_ENV} must be a number of seconds, got {raw!r}"
            ) from None
        return background_tick(pipeline=name, day=day, max_age_s=max_age_s)
    from flows.direct import direct_run

    return direct_run(pipeline=name, day=day)
