"""Replay: return parked jobs to their channel after a fix, by hand, carefully.

A dry run unless ``execute``: it selects at most ``limit`` parked jobs, oldest failure
first (optionally of one error class and one pipeline), and lists what it would do, writing
nothing. Executing, it returns each job to ``pending`` with a fresh allowance of attempts
(``Ledger.replay``: the row's ``replayed`` counter goes up, the attempts already billed stay
counted) at no more than ``rate_per_second`` jobs a second, then:

- ``direct`` jobs are called right away through the direct channel's task (same retries
  and classifier), and their results delivered: recovered means ``done`` (then consumed),
  still failing means parked again (or retryable, for the next run);
- ``batch`` and ``background`` jobs are left ``pending``: the channel's next tick submits
  them. Recovered means returned to the queue;
- a direct job the night's budget (``flows.run._budget``) has no room for stays ``pending``,
  "held by the budget", for a later tick, unless ``ignore_budget``;
- jobs parked by their delivery (``delivery:<Error>``: ``on_result`` kept raising, or the
  stored result no longer validated) still hold their result: they go back to ``done`` and
  only the delivery runs again, right away when the pipeline resolves (else at the
  channel's next tick). No API call, no new attempt.

Calling a direct job needs its pipeline (the output schema and the policy). The ledger
stores the pipeline's name; a shipped example resolves by name, a pipeline of your own by
``--pipeline module:attribute``. A direct job whose pipeline cannot be resolved is returned
to the queue instead, for the next tick of its pipeline.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows._ledger import open_ledger
from flows.channels.direct import deliver_direct, run_calls
from flows.errors import UsageError
from flows.pipeline import Pipeline
from flows.registry import UnknownPipeline, get_pipeline
from flows.run._budget import Budget
from flows.run._halt import halts
from flows.run._names import name_refused_run, replay_name, run_name
from flows.settings import Settings, load_settings
from flows.tick import open_channel, start_run
from ledger import DELIVERY_CLASS_PREFIX, PROMPT_CLASS_PREFIX, Channel, JobView, Status

__all__ = ["HELD", "MAX_LIMIT", "check_text", "dry_run", "plan_replay", "replay", "select_plan"]

_MAX_DIRECT_WORKERS = 8
# The action for a row parked prompt:<Error>: it has no request, so replay leaves it alone.
# The outcome of a direct job the night's budget had no room for: pending, sent on a later
# night (or with --ignore-budget).
HELD = "held by the budget (pending)"
REBUILD_BY_TICK = "left parked: fix build_prompt, then tick its day (--day D) to rebuild it"


MAX_LIMIT = 2**31 - 1


def check_text(name: str, value: str | None) -> None:
    """Refuse a filter no database can compare (PostgreSQL refuses NUL; surrogates from
    undecodable command-line bytes cannot be encoded) with a message, not a driver error."""
    if value is None:
        return
    if "\x00" in value:
        raise UsageError(f"the {name} filter must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"the {name} filter is not valid UTF-8 text") from None


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _resolve(name: str, given: dict[str, str], settings: Settings) -> str | None:
    """The spec that loads the pipeline stored as ``name``, or None."""
    if name in given:
        return given[name]
    try:
        get_pipeline(name, settings)
    except UnknownPipeline:
        return None
    return name


def select_plan(
    limit: int, error_class: str | None, pipeline: str | None, settings: Settings
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Parked jobs to replay, oldest first, each with what replay would do (read-only)."""
    if limit < 0:
        raise UsageError("limit must not be negative")
    if limit > MAX_LIMIT:
        # Past this the database refuses the number itself (SQLite: OverflowError; PostgreSQL:
        # bigint out of range), which would surface as a crash instead of a message.
        raise UsageError(f"limit must be at most {MAX_LIMIT}")
    for name, value in (("error class", error_class), ("pipeline", pipeline)):
        check_text(name, value)
    given: dict[str, str] = {}
    ledger_name = pipeline
    if pipeline is not None:
        try:
            p: Pipeline[Any] = get_pipeline(pipeline, settings)
        except UnknownPipeline:
            pass  # a pipeline name as the ledger stores it
        else:
            ledger_name = p.name
            given[p.name] = pipeline
    jobs: list[JobView] = open_ledger(settings.database_url).select_for_replay(
        limit=limit, error_class=error_class, pipeline=ledger_name
    )
    plan = []
    for job in jobs:
        redeliver = (job.error_class or "").startswith(DELIVERY_CLASS_PREFIX)
        if (job.error_class or "").startswith(PROMPT_CLASS_PREFIX):
            # No request was ever built: the next tick of the item's day rebuilds it once
            # build_prompt is fixed (`gemini-ledger tick P --day D`); Ledger.replay refuses it.
            plan.append(_planned(job, REBUILD_BY_TICK))
            continue
        wants_spec = redeliver or job.channel == Channel.DIRECT
        spec = _resolve(job.pipeline, given, settings) if wants_spec else None
        if spec is not None:
            given[job.pipeline] = spec
        if redeliver:
            action = "deliver again" if spec is not None else "return to done"
        else:
            action = "call now" if spec is not None else "return to queue"
        plan.append(_planned(job, action))
    return plan, given


def _planned(job: JobView, action: str) -> dict[str, Any]:
    return {
        "key": job.key,
        "pipeline": job.pipeline,
        "channel": job.channel,
        "error_class": job.error_class,
        "attempts": job.attempts,
        "replayed": job.replayed,
        "first_failure": _when(job.first_failure_at),
        "last_failure": _when(job.last_failure_at),
        "action": action,
    }


plan_replay = task(name="select-parked-jobs", cache_policy=NO_CACHE, persist_result=False)(
    select_plan
)


def _dry_run_report(plan: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "execute": False,
        "scanned": len(plan),
        "jobs": plan,
        "would_call": sum(i["action"] == "call now" for i in plan),
        "would_queue": sum(i["action"] not in ("call now", REBUILD_BY_TICK) for i in plan),
    }


def dry_run(
    settings: Settings,
    *,
    limit: int = 20,
    error_class: str | None = None,
    pipeline: str | None = None,
) -> dict[str, Any]:
    """What replay would do, read from the ledger alone: no flow, no Prefect API needed."""
    plan, _ = select_plan(limit, error_class, pipeline, settings)
    return _dry_run_report(plan)


def _paced(n: int, rate: float, start: float) -> None:
    # Pacing, not synchronisation: the n-th job is released no earlier than n / rate.
    delay = start + n / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


@flow(
    name="replay",
    flow_run_name=run_name(replay_name),
    on_failure=[name_refused_run(replay_name)],
)
@halts(Channel.DIRECT, flow=True)  # only its direct calls meet the API
def replay(
    execute: bool = False,
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 20,
    error_class: str | None = None,
    pipeline: str | None = None,
    rate_per_second: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0,
    ignore_budget: bool = False,
) -> dict[str, Any]:
    """Replay parked jobs: a dry run unless ``execute``; at most ``limit``, oldest first,
    optionally of one error class and pipeline, at most ``rate_per_second`` jobs a second.

    Args:
        execute: Replay for real; false only lists what a replay would do.
        limit: The most parked jobs replayed, oldest first.
        error_class: Only jobs parked with this class (permanent:400, exhausted:503, ...).
        pipeline: Only jobs of this pipeline (its name in the ledger).
        rate_per_second: The most jobs replayed a second (direct jobs are called at once).
        ignore_budget: Call direct jobs even past their pipeline's nightly budget (and the
            daily total); without it, the ones the budget has no room for stay pending,
            held by the budget, for a night with room. Batch and background jobs go out
            with their pipeline's next tick, under its budget, either way.
    """
    if not (math.isfinite(rate_per_second) and rate_per_second > 0):
        raise UsageError("rate_per_second must be a positive, finite number")
    logger = get_run_logger()
    settings = load_settings()  # the run's one read of the settings
    plan, specs = plan_replay(limit, error_class, pipeline, settings)
    for item in plan:
        logger.info(
            "%s %s (%s, %s channel, %d attempts, first failed %s)",
            "would" if not execute else "will",
            f"{item['action']}: {item['key']}",
            item["error_class"],
            item["channel"],
            item["attempts"],
            item["first_failure"],
        )
    if not execute:
        report = _dry_run_report(plan)
        _publish(report, "replay plan (dry run)")
        return report
    report = {"execute": execute, "scanned": len(plan), "jobs": plan}

    ledger = open_ledger(settings.database_url)
    start = time.monotonic()
    released = 0
    queued: list[str] = []
    direct: dict[str, list[str]] = defaultdict(list)
    redeliver: dict[str, list[str]] = defaultdict(list)
    skipped: list[str] = []
    for item in plan:
        if item["action"] == "call now":
            direct[specs[item["pipeline"]]].append(item["key"])
            continue
        if item["action"] == REBUILD_BY_TICK:
            continue  # "not replayed": nothing to send until the prompt builds
        _paced(released, rate_per_second, start)
        released += 1
        if ledger.replay([item["key"]]) != 1:
            skipped.append(item["key"])  # no longer parked: someone else moved it
        elif item["action"] == "deliver again":
            redeliver[specs[item["pipeline"]]].append(item["key"])
        else:
            queued.append(item["key"])

    outcome: dict[str, str] = {k: "returned to queue" for k in queued}
    for spec, keys in redeliver.items():
        # Only the delivery runs: the result is the one already recorded (and billed). It is
        # the channel's own deliver step, with its claims and stale age: a tick delivering
        # at the same time never runs a side effect this pass runs.
        open_channel(start_run(spec, settings)).deliver()
        for key in keys:
            outcome[key] = ledger.get(key).status
    held: list[str] = []
    for spec, keys in direct.items():
        # Each call reserves within the night's budget (flows.run._budget) unless told not to.
        ctx = start_run(spec, settings, budget=Budget(ignore=ignore_budget))
        back = [k for k in keys if ledger.replay([k]) == 1]
        skipped += [k for k in keys if k not in back]
        # The calls are paced by run_calls; the rate is shared across phases because the
        # phases run one after another.
        results = run_calls(
            ctx,
            back,
            max_concurrency=min(_MAX_DIRECT_WORKERS, max(1, len(back))),
            rate_per_second=rate_per_second,
        )
        if ctx.budget.finish(ctx):
            held += [k for k in back if results.get(k) == f"skipped:{Status.PENDING}"]
        deliver_direct(ctx)
        for key in back:
            outcome[key] = ledger.get(key).status if results.get(key) != "error" else "error"
        for key in held:
            outcome[key] = HELD
    for key in skipped:
        outcome[key] = "skipped (no longer parked)"

    recovered_direct = sum(s in (Status.DONE, Status.CONSUMED) for s in outcome.values())
    for item in plan:
        item["outcome"] = outcome.get(item["key"], "not replayed")
        if item["outcome"] == Status.PARKED:
            item["error_class_now"] = ledger.get(item["key"]).error_class
    report.update(
        recovered=recovered_direct + len(queued),
        recovered_direct=recovered_direct,
        returned_to_queue=len(queued),
        still_failing=sum(
            s in (Status.PARKED, Status.RETRYABLE, "error") for s in outcome.values()
        ),
        skipped=len(skipped),
        held_by_budget=len(held),
    )
    logger.info(
        "replayed %d: %d recovered (%d called, %d returned to queue), %d still failing",
        len(plan),
        report["recovered"],
        recovered_direct,
        len(queued),
        report["still_failing"],
    )
    _publish(report, "replay")
    return report


def _publish(report: dict[str, Any], title: str) -> None:
    rows = [
        {
            "key": i["key"],
            "pipeline": i["pipeline"],
            "channel": i["channel"],
            "error_class": i["error_class"],
            "action": i["action"],
            "outcome": i.get("outcome", "dry run"),
        }
        for i in report["jobs"]
    ]
    create_table_artifact(
        key="replay",
        table=rows or [{"key": "(no parked jobs matched)"}],
        description=f"{title}: {report['scanned']} parked jobs scanned",
    )
