"""The commands that run flows or servers: ``tick``, ``reconcile``, ``replay``, ``demo``,
``emulator``."""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli._app import (
    app,
    command_settings,
    console,
    existing_ledger,
    handles_errors,
    parse_day,
    prefect_for_flows,
    print_json,
    print_report,
    without_ledger_block,
)
from flows.errors import UsageError
from ledger import Ledger

if TYPE_CHECKING:  # the tick's module imports Prefect: only when a tick runs
    from flows.channels._channel import TickReport


@app.command()
@handles_errors
@without_ledger_block
def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    scenario: Annotated[
        str, typer.Option(help="Built-in name (default, clean, ...) or a JSON/YAML file.")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Seed for every random decision.")] = 0,
    webhook_url: Annotated[str | None, typer.Option(help="Where to POST completions.")] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="whsec_... secret to sign webhooks with.")
    ] = None,
) -> None:
    """Serve the local Gemini API emulator (point the SDK at it with GOOGLE_GEMINI_BASE_URL)."""
    from flows._emulator_process import emulator_command

    # The emulator stands apart from flows (never imported here): this process becomes
    # ``python -m emulator``, which says where it listens, or gives one line and exits 1 for
    # a bad scenario or a taken port.
    cmd = emulator_command(
        host=host,
        port=port,
        scenario=scenario,
        seed=seed,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


@app.command()
@handles_errors
def tick(
    pipeline: Annotated[
        str, typer.Argument(help="Pipeline name (reviews, articles) or module:attr.")
    ],
    day: Annotated[
        str | None, typer.Option(help="Day whose items to enroll (YYYY-MM-DD), default today.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A run parameter NAME=VALUE for the pipeline's hooks (run.params); repeatable.",
        ),
    ] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(
            "--budget-usd",
            help="Tonight's cap in USD over the pipeline's budget_usd (rows past it wait).",
        ),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="When the results must be there, 'HH:MM Zone/Name' (batch): overrides the"
            " pipeline's deadline; rows still out too close to it are sent directly.",
        ),
    ] = None,
) -> None:
    """Run one tick of a pipeline: the same flow its schedule runs, then exit."""
    from flows._ledger import open_ledger
    from flows.identity import claim_pipeline
    from flows.registry import load_pipeline
    from flows.tick import run_tick

    the_day = parse_day(day)
    params = _params(param or [])
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd >= 0):
        raise UsageError(f"--budget-usd must be a finite number >= 0, got {budget_usd}")
    if deadline is not None:
        from flows.channels._channel import TickOptions

        TickOptions(deadline=deadline)  # a bad one is one line, before anything starts
    settings = command_settings()
    load_pipeline(pipeline, settings)  # a pipeline that cannot load touches no ledger
    ledger = open_ledger(settings.database_url)  # refuses a missing one (db upgrade makes it)
    ledger.check_writable()
    # Refused here, before Prefect starts, when another definition owns the name.
    claim_pipeline(pipeline, ledger=ledger, settings=settings)
    with prefect_for_flows():
        report = run_tick(
            pipeline,
            day=the_day,
            params=params or None,
            budget_usd=budget_usd,
            deadline=deadline,
        )
    if as_json:
        print_json(report.as_dict())
    else:
        _print_tick(report, ledger)


def _params(given: list[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` options as a mapping (a value stays a string)."""
    out: dict[str, str] = {}
    for one in given:
        name, sep, value = one.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {one!r}: write NAME=VALUE")
        out[name.strip()] = value
    return out


def _print_tick(report: TickReport, ledger: Ledger) -> None:
    """What the tick did, then where the pipeline stands in the ledger: a few lines."""
    from flows.ops.summary import pipeline_standing

    def by_class(counts: dict[str, int]) -> str:
        return ", ".join(f"{c} {n}" for c, n in counts.items())

    console.print(
        f"[bold]{report.pipeline}[/] ({report.channel}) tick for {report.day},"
        f" {report.seconds:.1f} s: recovered {report.recovered}, answers done"
        f" {report.completed}, delivered {report.delivered}, enrolled {report.enrolled},"
        f" submitted {report.submitted}"
    )
    if report.submit.held_by_budget:
        console.print(
            f"  held by the budget (pending, not parked): {report.submit.held_by_budget}"
            " rows wait for a night with room (gemini-ledger plan shows it)"
        )
    if report.parked:
        console.print(f"  parked this tick: {by_class(report.parked)}")
    if report.retryable:
        console.print(f"  to be sent again: {by_class(report.retryable)}")
    if report.delivery_failed:
        console.print(f"  side effects failed (left for the next tick): {report.delivery_failed}")
    for line in report.taken_over_lines():
        console.print(f"  {line}", highlight=False, markup=False)
    enrolled = report.enroll
    for n, what, examples in (
        (enrolled.refused, "items refused at enrollment", enrolled.refused_examples),
        (enrolled.duplicates, "items with a key an earlier item gave", enrolled.duplicate_examples),
    ):
        if n:
            console.print(
                f"  {what}: {n} (e.g. {escape(examples[0])})", soft_wrap=True, highlight=False
            )
    try:
        from flows.gemini._pricing import load_prices

        prices = load_prices(command_settings().prices_file)
        now = pipeline_standing(ledger, report.pipeline, prices)
    except UsageError as exc:  # e.g. a bad price file: the tick itself did its work
        console.print(f"  (where the pipeline stands cannot be shown: {escape(str(exc))})")
        now = None
    if now is not None:
        oldest = f" (oldest {now['oldest_in_flight']})" if now["oldest_in_flight"] else ""
        console.print(
            f"  ledger now: delivered {now['delivered']}, parked {now['parked']}, retrying"
            f" {now['retrying']}, in flight {now['in_flight']}{oldest},"
            f" cost ${now['cost_usd']:.4f}; `--json` shows every counter"
        )
        if now.get("batch_submission_refused"):
            console.print(
                f"  batch submission refused {now['batch_submission_refused']} times since"
                f" {now['batch_submission_refused_since']} (rows kept pending, unbilled)"
            )


@app.command()
@handles_errors
def reconcile(
    job_name: Annotated[str, typer.Argument(help="Batch job name, e.g. batches/123abc.")],
    pipeline: Annotated[
        str | None,
        typer.Option(help="Pipeline (name or module:attr); default: the one the ledger recorded."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Reconcile one finished batch job into the ledger and deliver its results (safe to repeat)."""
    from flows.reconcile import reconcile as reconcile_flow

    if existing_ledger(write=True).batch_named(job_name) is None:
        raise UsageError(f"no batch job named {job_name!r} in the ledger")
    if pipeline is not None:
        from flows.registry import get_pipeline

        get_pipeline(pipeline, command_settings())
    with prefect_for_flows():
        report = reconcile_flow(job_name=job_name, pipeline=pipeline)
    print_report(report, title=f"reconcile {job_name}", as_json=as_json)


@app.command()
@handles_errors
@without_ledger_block
def demo(
    scenario: Annotated[str, typer.Option(help="Emulator scenario for the night.")] = "default",
    seed: Annotated[int, typer.Option(help="Emulator seed.")] = 2026,
) -> None:
    """Run a whole night against the local emulator and print the morning report (var/demo/)."""
    from flows.demo import run_demo

    run_demo(scenario=scenario, seed=seed, console=console)


@app.command()
@handles_errors
def replay(
    execute: Annotated[
        bool, typer.Option("--execute", help="Replay for real (default: a dry run).")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many jobs, oldest first.")] = 20,
    error_class: Annotated[
        str | None, typer.Option(help="Only jobs parked with this class (e.g. exhausted:429).")
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option(help="Only this pipeline (name or module:attr).")
    ] = None,
    rate: Annotated[float, typer.Option(help="At most this many jobs per second.")] = 2.0,
    ignore_budget: Annotated[
        bool,
        typer.Option(
            "--ignore-budget",
            help="Call direct jobs even past the night's budget (default: held, pending).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Return parked jobs to their channel: a dry run that lists them unless --execute."""
    from flows.ops.replay import MAX_LIMIT, check_text, dry_run
    from flows.ops.replay import replay as replay_flow

    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not (math.isfinite(rate) and rate > 0):
        raise UsageError(f"--rate must be a positive, finite number of jobs a second, got {rate}")
    check_text("--error-class", error_class)
    check_text("--pipeline", pipeline)
    existing_ledger(write=execute)
    if not execute:
        # Only reads the ledger: no flow, so no Prefect server is needed or started.
        report = dry_run(
            command_settings(), limit=limit, error_class=error_class, pipeline=pipeline
        )
    else:
        with prefect_for_flows():
            report = replay_flow(
                execute=execute,
                limit=limit,
                error_class=error_class,
                pipeline=pipeline,
                rate_per_second=rate,
                ignore_budget=ignore_budget,
            )
    if as_json:
        print_json(report)
        return
    table = Table(title="replay" if execute else "replay (dry run: nothing changed)")
    for column in ("key", "pipeline", "channel", "error class", "attempts", "action"):
        table.add_column(column)
    if execute:
        table.add_column("outcome")
    for job in report["jobs"]:
        row = [
            job["key"],
            job["pipeline"],
            job["channel"],
            str(job["error_class"]),
            str(job["attempts"]),
            job["action"],
        ]
        table.add_row(*row, *([str(job.get("outcome"))] if execute else []))
    console.print(table)
    if execute:
        console.print(
            f"scanned {report['scanned']}  recovered {report['recovered']}"
            f" (called {report['recovered_direct']}, returned to queue"
            f" {report['returned_to_queue']})  still failing {report['still_failing']}"
            + (
                f"  held by the budget {report['held_by_budget']}"
                if report.get("held_by_budget")
                else ""
            )
        )
    else:
        console.print(
            f"scanned {report['scanned']}: would call {report['would_call']}, would return"
            f" {report['would_queue']} to their queue; run again with --execute"
        )
