"""The ``reconcile`` flow: one batch job by name, settled and delivered now instead of at the
next tick. The webhook receiver starts it when the API says a job finished
(``flows.webhooks.receiver.start_reconcile``: the ``reconcile/webhook`` deployment, or in
process), and ``gemini-ledger reconcile`` runs it by hand.

It does what a tick does for that one job, with the tick's own code: the batch channel's
:meth:`flows.channels.batch.BatchChannel.settle` (poll, lost or not yet, output grace, reconcile,
failing what must be failed) and the tick's ``deliver`` task. So a job reconciled here and one
reconciled by a tick end the same, and running both, or this flow twice, changes no row twice:
a job already reconciled is not read again, and rows already settled are never changed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows._ledger import open_ledger
from flows.channels.batch import BatchChannel, Settle, Settled
from flows.errors import UsageError
from flows.run._halt import checked, halts
from flows.run._names import name_refused_run, reconcile_name, run_name, slug
from flows.run._parameters import BatchJobName, PipelineSpec
from flows.settings import load_settings
from flows.tick import deliver, start_run
from ledger import BatchState, Channel

__all__ = ["reconcile"]


@flow(
    name="reconcile",
    flow_run_name=run_name(reconcile_name),
    on_failure=[name_refused_run(reconcile_name)],
    task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
)
@halts(Channel.BATCH, flow=True)
def reconcile(job_name: BatchJobName, pipeline: PipelineSpec | None = None) -> dict[str, Any]:
    """Reconcile one batch job by name (``batches/...``) if it has finished, then deliver
    its results. Safe to call again: a job already reconciled is not read twice, and rows
    already settled are never changed.

    Args:
        job_name: The batch job, as the API names it (batches/...).
        pipeline: The pipeline whose job it is (default: the one the ledger recorded for it).
    """
    settings = load_settings()  # the run's one read of the settings (and the URL's block)
    rec = open_ledger(settings.database_url).batch_named(job_name)
    if rec is None:
        raise UsageError(f"no batch job named {job_name!r} in the ledger")
    # The run's context, as a tick builds it: the pipeline loaded and its name claimed.
    ctx = start_run(pipeline or rec.pipeline, settings)
    p = ctx.pipeline
    channel = BatchChannel(ctx)
    report: dict[str, Any] = {"batch": job_name, "pipeline": p.name, "ledger_state": rec.state}
    if rec.state != BatchState.SUBMITTED:
        report.update(reconciled=0, already_reconciled=True)
    else:
        report.update(checked(_settle_task(channel, job_name)))
    delivered = checked(deliver(channel))
    report["delivered"] = {
        "consumed": delivered.consumed,
        "side_effect_failed": len(delivered.failed),
        "parked": len(delivered.parked),
    }
    create_table_artifact(
        key=f"batch-reconcile-{slug(p.name)}",
        table=[{"what": k, "value": str(v)} for k, v in report.items() if k != "rows"],
        description=f"reconcile {job_name} ({p.name})",
    )
    return report


@task(
    name="reconcile-batch-job",
    task_run_name="reconcile {job_name}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
@halts(Channel.BATCH)
def _settle_task(channel: BatchChannel, job_name: str) -> dict[str, Any]:
    """Poll one batch job and, if it has finished, reconcile it."""
    rec = channel.ctx.ledger.batch_named(job_name)
    assert rec is not None
    # The channel's own settle: a job a deadline cancelled (batch.cancelled fires right after
    # the cancel) ends as in the tick, its rows retryable:deadline and its late responses file
    # waited for, by the mark the switch-over left on its ledger row before the cancel; so
    # also when that deadline was only a tick's parameter, which never reaches this flow.
    return _report(channel.settle(channel.ctx.client, rec))


def _report(settled: Settled) -> dict[str, Any]:
    """The flow's words for one job's settling. A failed poll or reconcile fails the run
    with its own error (the job stays submitted: the next tick, or a repeated call, tries
    again)."""
    if settled.error is not None:
        raise settled.error
    if settled.report is not None:
        return {"reconciled": 1, **settled.report}
    if settled.outcome is Settle.LOST:
        return {"state": Settle.LOST.value, "reconciled": 0, "lost_rows": settled.lost_rows}
    return {"state": settled.state or settled.outcome.value, "reconciled": 0}
