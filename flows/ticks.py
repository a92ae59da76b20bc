"""One tick of a pipeline, whatever its channel: what ``gemini-ledger tick NAME`` runs."""

from __future__ import annotations

from datetime import date
from typing import Any

from flows.registry import get_pipeline
from ledger import Channel

__all__ = ["BACKGROUND_STALE_ENV", "run_tick"]

# Age (s) after which a background tick takes over a reservation or a delivery claim left by
# a dead tick; read by the flow itself (flows.settings), so deployed runs honour it too.
BACKGROUND_STALE_ENV = "GEMINI_LEDGER_BACKGROUND_STALE_S"


def run_tick(name: str, *, day: date | None = None) -> dict[str, Any]:
    """Run the pipeline's tick flow once (the same flow its schedule runs) and return its report."""
    pipeline = get_pipeline(name)
    if pipeline.channel == Channel.BATCH:
        from flows.batch import batch_tick

        return batch_tick(pipeline=name, day=day)
    if pipeline.channel == Channel.BACKGROUND:
        from flows.background import background_tick

        return background_tick(pipeline=name, day=day)
    from flows.direct import direct_run

    return direct_run(pipeline=name, day=day)
