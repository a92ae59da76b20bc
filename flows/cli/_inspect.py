"""The commands that read: ``status``, ``config``, ``pipelines``, ``dead-letter``.

They never write the ledger, and never create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

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
    print_json,
)
from flows.errors import UsageError
from ledger import Ledger, UnknownJob, morning_view


@app.command()
@handles_errors
def status(
    key: Annotated[
        str | None, typer.Argument(help="One job's idempotency key: show that row.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts by status and error class, attempts and tokens; rows in flight and their age.

    With KEY: that one row (status, attempts, error, tokens, model and model version)."""
    ledger = existing_ledger()
    if key is not None:
        _show_job(ledger, key, as_json=as_json)
        return
    counts = ledger.counts(pipeline=pipeline)
    # Per non-final state, the oldest row's time in it: what is stuck shows as an age.
    in_flight = ledger.in_flight(pipeline=pipeline)
    # Batch submissions the API keeps refusing (their rows wait, pending): per pipeline.
    names = [pipeline] if pipeline else [v.pipeline for v in morning_view(ledger)]
    refused = {n: r for n in names if (r := ledger.submission_refusals(n)).refused}
    if as_json:
        print_json(
            {
                **counts.as_dict(),
                "in_flight": {
                    state: {"rows": n, "oldest_age_s": round(age, 1)}
                    for state, (n, age) in sorted(in_flight.items())
                },
                "batch_submission_refused": {
                    n: {"times": r.refused, "since": r.since, "last": r.last_reason}
                    for n, r in refused.items()
                },
            }
        )
        return
    table = Table(title=f"ledger{f' - {pipeline}' if pipeline else ''}")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    table.add_column("oldest in this state", justify="right")
    for name, n in sorted(counts.by_status.items()):
        age = in_flight[name][1] if name in in_flight else None
        table.add_row(name, str(n), "" if age is None else _age(age))
    console.print(table)
    if counts.by_error_class or counts.retrying_by_class:
        classes = Table(title="by error class")
        classes.add_column("class")
        classes.add_column("parked", justify="right")
        classes.add_column("retrying", justify="right")
        for cls in sorted(set(counts.by_error_class) | set(counts.retrying_by_class)):
            classes.add_row(
                cls,
                str(counts.by_error_class.get(cls, 0)),
                str(counts.retrying_by_class.get(cls, 0)),
            )
        console.print(classes)
    console.print(
        f"attempts {counts.attempts}  tokens {counts.total_tokens}"
        f" (prompt {counts.prompt_tokens} of which cached {counts.usage.cached_tokens},"
        f" answer {counts.candidates_tokens}, thinking {counts.usage.thoughts_tokens})"
        f"  possible duplicates {counts.possible_duplicates}  replayed {counts.replayed}"
    )
    for name, r in refused.items():
        since = datetime.fromtimestamp(r.since or 0, UTC)
        console.print(
            f"{name}: batch submission refused {r.refused} times since {since:%Y-%m-%d %H:%M}"
            f" UTC (last: {r.last_reason}); its rows wait, pending and unbilled",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _job_dict(view: Any) -> dict[str, Any]:
    """One row as ``status KEY`` / ``dead-letter KEY`` show it (never the payload or result)."""
    return {
        "key": view.key,
        "pipeline": view.pipeline,
        "channel": view.channel,
        "status": view.status,
        "model": view.model,
        "model_version": view.model_version,
        "response_id": view.response_id,
        "attempts": view.attempts,
        "attempts_since_replay": view.attempts - view.attempts_base,
        "error_class": view.error_class,
        "error_message": view.error_message,
        "tokens": {
            "prompt": view.prompt_tokens,
            "candidates": view.candidates_tokens,
            "total": view.total_tokens,
            "thoughts": view.thoughts_tokens,
            "cached": view.cached_tokens,
            "audio": view.audio_tokens,
        },
        "possible_duplicates": view.possible_duplicates,
        "replayed": view.replayed,
        "handle": view.handle,
    }


def _show_job(ledger: Ledger, key: str, *, as_json: bool) -> None:
    """Print one row; an unknown key is one error line (exit 1)."""
    try:
        view = ledger.get(key)
    except UnknownJob:
        raise UsageError(f"no job with key {key!r} in {ledger.url}") from None
    job = _job_dict(view)
    if as_json:
        print_json(job)
        return
    t = job["tokens"]
    version = job["model_version"] or "(no answer recorded)"
    lines = [
        f"{job['key']}  ({job['pipeline']}, {job['channel']})",
        f"status        {job['status']}"
        + (f"  {job['error_class']}" if job["error_class"] else ""),
        f"model         {job['model']}",
        f"model version {version}"
        + (f"  response {job['response_id']}" if job["response_id"] else ""),
        f"attempts      {job['attempts']} ({job['attempts_since_replay']} since the last replay,"
        f" replayed {job['replayed']}, possible duplicates {job['possible_duplicates']})",
        f"tokens        {t['total']} (prompt {t['prompt']} of which cached {t['cached']},"
        f" answer {t['candidates']}, thinking {t['thoughts']})",
    ]
    if job["error_message"]:
        lines.append(f"last error    {job['error_message']}")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


@app.command()
@handles_errors
def config(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The effective settings and where each came from (secrets masked); reads nothing else."""
    from flows.settings import describe

    rows = describe(command_settings())
    if as_json:
        print_json([{"variable": v, "value": val, "source": src} for v, val, src in rows])
        return
    table = Table(title="settings")
    for column in ("variable", "value", "from"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
@handles_errors
def pipelines(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The pipelines the ledger records (module:attr, channel, model, schema revision, jobs),
    then the shipped examples not run yet; reads the ledger, never creates it."""
    from flows.registry import BUILTIN, get_pipeline
    from ledger import Status, ledger_exists, missing_ledger_message
    from ledger._transitions import ACTIVE

    settings = command_settings()
    exists = ledger_exists(settings.database_url)
    recorded = _recorded_pipelines(existing_ledger()) if exists else []
    names = {r["name"] for r in recorded}
    examples = []
    for name in sorted(set(BUILTIN) - names):
        p = get_pipeline(name, settings)
        examples.append(
            {
                "name": name,
                "spec": BUILTIN[name],
                "channel": str(p.channel),
                "model": p.model,
                "description": p.description,
            }
        )
    if as_json:
        print_json({"recorded": recorded, "examples": examples})
        return
    # One line per pipeline (soft-wrapped): a table of nine columns folds every cell at 80.
    if recorded:
        console.print("pipelines in the ledger:")
        for r in recorded:
            by_status = r["by_status"]
            where = (
                f"{r['spec']}, {r['channel']} channel, model {r['model']},"
                f" schema revision {r['revision']}"
                if r["spec"]
                else "not recorded (jobs enrolled before pipelines were recorded)"
            )
            console.print(
                f"  {escape(r['name'])}: {escape(where)}; {r['jobs']} jobs:"
                f" {by_status.get(Status.CONSUMED, 0)} consumed,"
                f" {by_status.get(Status.PARKED, 0)} parked,"
                f" {sum(by_status.get(s, 0) for s in ACTIVE)} in flight",
                soft_wrap=True,
            )
    elif not exists:
        console.print(
            f"no pipeline recorded: {missing_ledger_message(settings.database_url)}",
            soft_wrap=True,
        )
    else:
        console.print("no pipeline recorded in the ledger yet")
    if examples:
        console.print("shipped examples:")
        for e in examples:
            console.print(
                f"  {e['name']}: {e['channel']} channel, model {e['model']}. {e['description']}",
                soft_wrap=True,
            )


def _recorded_pipelines(ledger: Ledger) -> list[dict[str, Any]]:
    """Each recorded pipeline with its jobs by status; a pipeline with jobs but no record
    (jobs enrolled before pipelines were recorded) is listed too, without a spec."""
    counts = ledger.counts_by_pipeline()
    rows: list[dict[str, Any]] = [
        {
            "name": rec.name,
            "spec": rec.spec,
            "channel": rec.channel,
            "model": rec.model,
            "revision": rec.revision,
            "by_status": counts.get(rec.name, {}),
        }
        for rec in ledger.pipelines()
    ]
    known = {r["name"] for r in rows}
    for name in sorted(set(counts) - known):
        rows.append(
            {
                "name": name,
                "spec": None,
                "channel": "",
                "model": "",
                "revision": None,
                "by_status": counts[name],
            }
        )
    for r in rows:
        r["jobs"] = sum(r["by_status"].values())
    return sorted(rows, key=lambda r: r["name"])


@app.command("dead-letter")
@handles_errors
def dead_letter(
    key: Annotated[
        str | None, typer.Argument(help="One job's idempotency key: show that row.")
    ] = None,
    day: Annotated[
        str | None, typer.Option(help="Day to report on (YYYY-MM-DD), default today (UTC).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Parked jobs by error class with the change since yesterday, attempts, tokens, cost.

    With KEY: that one row, with its class, last error and the model version that answered.
    Read-only: unlike the summary flow it stores no snapshot and publishes nothing.
    """
    from flows.channels._channel import today_utc
    from flows.ops.summary import (
        LOOKBACK_DAYS,
        build_summary,
        deadline_lines,
        halt_lines,
        held_lines,
        plan_lines,
        refusal_lines,
    )

    if key is not None:
        _show_job(existing_ledger(), key, as_json=as_json)
        return
    the_day = parse_day(day) or today_utc()
    from flows.gemini._pricing import load_prices

    prices = load_prices(command_settings().prices_file)
    report = build_summary(existing_ledger(), the_day, prices)
    if as_json:
        print_json(report)
        return
    parked = report["parked"]
    morning = Table(title=f"morning report for {report['day']}")
    for column in ("pipeline", "delivered", "parked", "retrying", "in flight", "oldest", "cost"):
        morning.add_column(column, justify="left" if column == "pipeline" else "right")
    for p in report["pipelines"]:
        morning.add_row(
            p["pipeline"],
            str(p["delivered"]),
            str(p["parked"]),
            str(p["retrying"]),
            str(p["in_flight"]),
            p["oldest_in_flight"] or "-",
            f"${p['cost_usd']:.4f}",
        )
    console.print(morning)
    for p in report["pipelines"]:
        for c in p["parked_by_class"]:
            example = " ".join(str(c["example"] or "").split())[:100]
            console.print(f"  {p['pipeline']}: {c['jobs']} parked {c['error_class']}: {example}")
    lines = plan_lines(report) + halt_lines(report["halts"]) + refusal_lines(report)
    lines += deadline_lines(report)
    for line in lines + held_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    table = Table(title=f"dead letters on {report['day']}: {parked['total']} parked")
    for column in ("error class", "parked", "previous", "change"):
        table.add_column(column, justify="left" if column == "error class" else "right")
    for row in report["parked_by_class"]:
        table.add_row(
            row["error_class"], str(row["parked"]), str(row["previous"]), f"{row['delta']:+d}"
        )
    console.print(table)
    since = report["baseline_day"] or f"zero (no summary in the last {LOOKBACK_DAYS} days)"
    console.print(f"change: {parked['delta']:+d} since {since}")
    statuses = "  ".join(f"{s} {n}" for s, n in report["by_status"].items())
    console.print(f"jobs {report['jobs']}: {statuses or 'none'}")
    tokens, cost = report["tokens"], report["cost"]
    console.print(
        f"attempts {report['attempts']}  tokens {tokens['total']} (prompt {tokens['prompt']},"
        f" cached {tokens['cached']}, answer {tokens['candidates']},"
        f" thinking {tokens['thoughts']})  estimated cost ${cost['usd']:.4f}",
        highlight=False,
    )
    if cost["unpriced"]:
        console.print(cost["unpriced"], highlight=False, markup=False, soft_wrap=True)
    for poison in report["poison_inputs"]:
        console.print(
            f"poison input {poison['fingerprint']}: parked under {poison['keys']} keys"
            f" ({poison['error_class']})"
        )
