"""``gemini-ledger plan``: what the next tick of a pipeline would do and cost, touching
nothing (``flows.ops.plan``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
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
from flows.deadline import Deadline
from flows.errors import UsageError


def _deadline(value: str | None) -> datetime | None:
    """``--deadline``: the tick's form (``07:00 Europe/Paris``, the next time the clock shows
    it), or an ISO instant with its zone."""
    if value is None:
        return None
    try:
        return Deadline.of(value).next_after(datetime.now(UTC))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--deadline {value!r} is not a deadline: use 'HH:MM Zone/Name' (as the tick's"
            " --deadline) or an ISO time with its zone"
        ) from None
    if when.tzinfo is None:
        raise UsageError(f"--deadline {value!r} names no time zone: add one (+01:00, Z)")
    return when


@app.command()
@handles_errors
def plan(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name or module:attr.")],
    day: Annotated[
        str | None, typer.Option(help="The night to plan (YYYY-MM-DD), default today.")
    ] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option("--budget-usd", help="Plan with this cap (a tick's budget_usd parameter)."),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="When the results must be there: '07:00 Europe/Paris' (default: the"
            " pipeline's own deadline) or an ISO time with its zone."
        ),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never ask the API: count prompt tokens locally.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """What the next tick would do and cost, and how far the last nights' plans were off."""
    from flows.channels._channel import today_utc
    from flows.ops.plan import plan_night

    the_day = parse_day(day) or today_utc()
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd >= 0):
        raise UsageError(f"--budget-usd must be a finite number >= 0, got {budget_usd}")
    when = _deadline(deadline)
    existing_ledger()
    report = plan_night(
        command_settings(),
        pipeline,
        the_day,
        budget_usd=budget_usd,
        deadline=when,
        count=not offline,
    )
    if as_json:
        print_json(report)
    else:
        _print(report)


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _print(r: dict[str, Any]) -> None:
    due, est = r["due"], r["estimate"]
    console.print(
        f"[bold]{r['pipeline']}[/] ({r['channel']}, {r['model']}) next tick for {r['day']}:"
        f" {due['rows']} rows due ({due['new']} new, {due['pending']} pending,"
        f" {due['retrying']} retrying, {due['replays']} replays)",
        highlight=False,
    )
    console.print(
        f"  per row: {est['prompt_tokens_per_row']} prompt tokens ({est['prompt_source']}),"
        f" {est['answer_tokens_per_row']} answer + {est['thinking_tokens_per_row']} thinking"
        f" tokens ({est['output_source']})",
        highlight=False,
        soft_wrap=True,
    )
    costs = r["cost"]["channels"]
    console.print(
        "  cost: "
        + ", ".join(
            f"{c} {_usd(v['usd']) if v else 'unpriced'}"
            + (" (its channel)" if c == r["channel"] else "")
            for c, v in costs.items()
        ),
        highlight=False,
    )
    t = r["time"]
    needed = "unbounded by a quota" if t["seconds"] is None else f"{t['seconds']:.0f} s"
    requests = f"{t['requests']} request{'' if t['requests'] == 1 else 's'}"
    console.print(f"  time: {requests}, {needed}: {t['note']}", highlight=False)
    b = r["budget"]
    if b.get("fits") is None:
        console.print(f"  budget: {b.get('note')}", highlight=False)
    else:
        caps = "; ".join(
            f"{c['cap']} ${c['usd']:.4f}, spent ${c['spent_usd']:.4f}" for c in b["caps"]
        )
        verdict = "fits" if b["fits"] else f"does not fit: {b['held']} rows would be held"
        console.print(
            f"  budget: {caps}; {b['rows_that_fit']} rows fit: {verdict}", highlight=False
        )
    d = r["deadline"]
    if d is not None:
        fits = {True: "fits", False: "does NOT fit", None: "unknown (no quota figure)"}[d["fits"]]
        console.print(
            f"  deadline {d['deadline']}: {d['seconds_left']:.0f} s left: {fits}", highlight=False
        )
    if r["history"]:
        table = Table(title="planned against actual, last nights")
        for col in (
            "night",
            "planned rows",
            "planned $",
            "actual rows",
            "actual $",
            "off by",
            "held",
        ):
            table.add_column(col)
        for n in r["history"]:
            off = "-" if n["off_by"] is None else f"{n['off_by']:+.1%}"
            table.add_row(
                n["day"],
                _planned_rows(n["planned"]),
                _usd(n["planned"]["usd"]),
                str(n["actual"]["rows"]),
                _usd(n["actual"]["usd"]),
                off,
                str(n["held_by_budget"]),
            )
        console.print(table)


def _planned_rows(planned: dict[str, Any]) -> str:
    """The rows a night reserved, and its sends when a row went out more than once (a row
    sent again after a failure, a batch job that failed)."""
    rows, sends = planned["rows"], planned["sends"]
    if rows is None:
        return "-"
    return str(rows) if sends in (None, rows) else f"{rows} ({sends} sends)"
