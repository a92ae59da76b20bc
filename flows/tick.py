"""One tick of a pipeline, whatever its channel: what a schedule and ``gemini-ledger tick`` run.

The flow builds the run's context once (settings validated, ledger opened, the pipeline
loaded and its name claimed), opens the pipeline's channel, then runs the same steps as
Prefect tasks with the same names on every channel: ``recover``, ``collect``, ``deliver``,
``enroll``, ``submit`` (``flows.channels._channel`` says what each does), publishing a
progress artifact, rows settled of rows due, as they go (``flows.run._progress``). A fault of the
setup in any step halts the tick (``flows.run._halt``); anything else is a bug and keeps its
traceback. SIGTERM or SIGINT stops the tick between rows and ends it Cancelled
(``flows.run._stop``): the flag is checked inside each step's loops and again after each step.

Adding a channel: one module with a class that has the four steps of
:class:`flows.channels._channel.ChannelSteps`, and one line in :data:`CHANNELS`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from datetime import date
from typing import Any, TypeVar

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows._ledger import open_ledger
from flows.channels._channel import (
    ChannelSteps,
    Collected,
    Recovered,
    RunContext,
    Submitted,
    TickOptions,
    TickReport,
    today_utc,
)
from flows.identity import claim_pipeline
from flows.run._budget import Budget
from flows.run._deliver import Delivery, enroll_day
from flows.run._ending import own_endings
from flows.run._halt import checked, halts, preflight
from flows.run._names import name_refused_run, run_name, slug, tick_name
from flows.run._parameters import (
    BudgetUsd,
    Concurrency,
    Day,
    DeadlineText,
    PipelineSpec,
    Seconds,
)
from flows.run._prefix_cache import clean_caches
from flows.run._progress import TickProgress, progress_key
from flows.run._stop import raise_if_stopped, stops
from flows.run._upload_rows import clean_uploads
from flows.settings import Settings, load_settings
from ledger import Channel, Enrollment

__all__ = ["CHANNELS", "TickOptions", "open_channel", "run_tick", "start_run", "tick"]

# Where each channel's class lives, imported when a tick of that channel starts.
CHANNELS: dict[Channel, str] = {
    Channel.BATCH: "flows.channels.batch:BatchChannel",
    Channel.BACKGROUND: "flows.channels.background:BackgroundChannel",
    Channel.DIRECT: "flows.channels.direct:DirectChannel",
}


def start_run(
    spec: str,
    settings: Settings,
    day: date | None = None,
    params: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
) -> RunContext:
    """The run's context, the one way a run gets one (a tick, the reconcile flow, replay):
    the settings its flow loaded once, the ledger they name, the pipeline loaded and its
    name claimed before anything is touched. The client is built on first use
    (``RunContext.client``; ``preflight`` builds it before anything is reserved).
    ``params`` reach the hooks that take a ``flows.Run``; ``budget`` is the run's spending
    caps (default: the pipeline's ``budget_usd`` and the settings' daily total)."""
    ledger = open_ledger(settings.database_url)
    p, _ = claim_pipeline(spec, ledger=ledger, settings=settings)
    return RunContext(
        spec=spec,
        pipeline=p,
        ledger=ledger,
        settings=settings,
        day=day or today_utc(),
        params=dict(params or {}),
        budget=budget or Budget(),
    )


def open_channel(ctx: RunContext, options: TickOptions | None = None) -> ChannelSteps:
    """The pipeline's channel, ready to run its steps."""
    module_name, _, attr = CHANNELS[Channel(ctx.pipeline.channel)].partition(":")
    cls: Any = getattr(importlib.import_module(module_name), attr)
    options = options or TickOptions()
    ignored = options.given() - cls.uses
    if ignored:
        ctx.log.warning(
            "%s runs on the %s channel, which does not use %s: ignored",
            ctx.name,
            cls.kind.value,
            ", ".join(sorted(ignored)),
        )
    steps: ChannelSteps = cls(ctx, options)
    return steps


# --- the steps, as tasks with one name on every channel --------------------------------------


@task(name="recover", cache_policy=NO_CACHE, persist_result=False)
@halts()
def recover(channel: ChannelSteps) -> Recovered:
    """Take back what a dead tick left in flight."""
    return channel.recover()


@task(name="collect", cache_policy=NO_CACHE, persist_result=False)
@halts()
def collect(channel: ChannelSteps) -> Collected:
    """Read the answers the API has finished and apply them to the ledger."""
    return channel.collect()


@task(name="deliver", cache_policy=NO_CACHE, persist_result=False)
@halts()
def deliver(channel: ChannelSteps) -> Delivery:
    """Run on_result once for every done row."""
    return channel.deliver()


@task(name="enroll", cache_policy=NO_CACHE, persist_result=False)
@halts()
def enroll(ctx: RunContext) -> Enrollment:
    """Enroll the day's items: new keys become pending; known keys are never changed."""
    return enroll_day(ctx.ledger, ctx.pipeline, ctx.day, params=ctx.params, log=ctx.log)


@task(name="submit", cache_policy=NO_CACHE, persist_result=False)
@halts()
def submit(channel: ChannelSteps, ctx: RunContext) -> Submitted:
    """Reserve the due rows the night's budget has room for and send them; the rows it held
    back are counted (``held_by_budget``)."""
    out = channel.submit()
    out.held_by_budget = ctx.budget.finish(ctx)
    return out


def _merge(first: Delivery, second: Delivery) -> Delivery:
    return Delivery(
        claimed=first.claimed + second.claimed,
        consumed=first.consumed + second.consumed,
        failed=first.failed + second.failed,
        errors=first.errors + second.errors,
        parked=first.parked + second.parked,
        lost_claim=first.lost_claim or second.lost_claim,
        taken_over=first.taken_over + second.taken_over,
        took_over=first.took_over + second.took_over,
    )


@flow(
    name="tick",
    flow_run_name=run_name(tick_name),
    on_failure=[name_refused_run(tick_name)],
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
    persist_result=False,
)
@halts(flow=True)
@stops
def tick(
    pipeline: PipelineSpec,
    day: Day | None = None,
    stale_s: Seconds | None = None,
    max_concurrency: Concurrency | None = None,
    running_limit_s: Seconds | None = None,
    params: dict[str, Any] | None = None,
    budget_usd: BudgetUsd | None = None,
    deadline: DeadlineText | None = None,
) -> TickReport:
    """One tick of a pipeline on its channel: recover, collect, deliver, enroll, submit
    (and deliver what the submit settled at once), then exit. A SIGTERM stops it between
    rows and it ends Cancelled.

    Args:
        pipeline: The pipeline to tick: a shipped example, a name GEMINI_LEDGER_PIPELINES
            gives, or its module:attribute (importable from the worker's directory).
        day: The day whose items are enrolled, YYYY-MM-DD (default: today, UTC). Leftovers
            of every day are collected and delivered whatever the day.
        stale_s: Seconds after which a dead tick's reservation or delivery claim is taken
            over (default: the channel's stale-age setting).
        max_concurrency: Requests in flight at once (background and direct channels;
            default 32 background, 8 direct).
        running_limit_s: Seconds after which a background answer still running is cancelled
            and sent again (background channel; default 3600).
        params: The pipeline's own parameters (e.g. {"language": "fr"}), given to its
            load_items, key_of and build_prompt as run.params.
        deadline: When the results must be there, "HH:MM Zone/Name" (e.g. "07:00
            Europe/Paris"; batch channel), overriding the pipeline's own deadline: rows still
            out when the time left is no more than the direct channel needs for them are
            taken back from their batch jobs (cancelled) and sent directly.
        budget_usd: The most this night of the pipeline may spend, in USD at the price
            table's estimate, over the pipeline's own budget_usd (default: the pipeline's;
            none: no cap). Rows that would pass it stay pending, held by the budget, for a
            night with room; nothing already sent is cancelled.
    """
    started = time.monotonic()
    # Checked before any work.
    options = TickOptions(stale_s, max_concurrency, running_limit_s, deadline)
    return _steps(pipeline, day, options, started, params, Budget(budget_usd))


T = TypeVar("T")


def _step(value: T, progress: TickProgress, name: str) -> T:
    """A step's record; the tick ends here if the step halted or a stop was asked for. The
    progress artifact shows what it settled."""
    value = checked(value)
    progress.after(name, value)
    raise_if_stopped()
    return value


def _steps(
    pipeline: str,
    day: date | None,
    options: TickOptions,
    started: float,
    params: dict[str, Any] | None = None,
    budget: Budget | None = None,
) -> TickReport:
    ctx = start_run(pipeline, load_settings(), day, params, budget)  # the run's one read of them
    channel = open_channel(ctx, options)
    preflight(ctx)
    raise_if_stopped()
    progress = TickProgress(ctx.ledger, ctx.name, progress_key(slug(ctx.name)), ctx.log)
    progress.start()  # "rows settled of rows due", moving while the steps run
    with progress.current():
        recovered = _step(recover(channel), progress, "recover")
        collected = _step(collect(channel), progress, "collect")
        delivered = _step(deliver(channel), progress, "deliver")
        enrolled = _step(enroll(ctx), progress, "enroll")
        submitted = _step(submit(channel, ctx), progress, "submit")
        if submitted.settled:
            delivered = _merge(delivered, _step(deliver(channel), progress, "deliver"))
    # Media uploads every row of which is final are deleted (none: no API call).
    clean_uploads(ctx.ledger, ctx.name, ctx.log, ctx.settings)
    # So is the night's cache of a shared prefix, once every row of the pipeline is final.
    clean_caches(ctx.ledger, ctx.name, ctx.log, ctx.settings)
    report = TickReport(
        pipeline=ctx.name,
        channel=Channel(ctx.pipeline.channel).value,
        day=ctx.day,
        recover=recovered,
        collect=collected,
        deliver=delivered,
        enroll=enrolled,
        submit=submitted,
        seconds=round(time.monotonic() - started, 3),
    )
    create_table_artifact(
        key=f"tick-{slug(ctx.name)}", table=report.rows(), description=report.summary()
    )
    progress.finish(report.seconds)
    ctx.log.info("%s", report.summary())
    return report


def run_tick(
    spec: str,
    *,
    day: date | None = None,
    params: dict[str, Any] | None = None,
    budget_usd: float | None = None,
    deadline: str | None = None,
) -> TickReport:
    """Run one tick of the pipeline (the same flow its schedule runs) and return its report;
    a halt raises its :class:`ledger.SetupFault`, a stop its ``Stopped``."""
    with own_endings():
        return tick(pipeline=spec, day=day, params=params, budget_usd=budget_usd, deadline=deadline)
