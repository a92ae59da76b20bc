"""The daily dead-letter summary: what is parked, how that changed since yesterday, what it cost.

:func:`build_summary` is a read-only report (parked jobs by error class with the change
since the previous snapshot, jobs by status, attempts, tokens, an estimated cost from the
price table in :mod:`flows.gemini._pricing`, poison inputs). ``gemini-ledger dead-letter`` prints
it; the ``summary`` flow builds the same report, stores today's snapshot of parked jobs
per class, publishes it as Prefect artifacts (``dead-letter-summary``,
``dead-letter-summary-table``) and emits the event ``gemini-ledger.parked.increased``
(resource ``gemini-ledger.ledger``) when parked jobs grew by at least ``threshold`` since
the previous day, for an automation to act on (see ``automations/``).

The report leads with the morning view, per pipeline: delivered, parked by class with one
example reason each, retrying, still in flight (with the age of the oldest), the rows held
by the budget (pending for a night with room, never parked: ``flows.run._budget``) and the
estimated cost, in plain words; then the trend of the last 14 nights, per pipeline, one
sparkline per measure (delivered, parked, cost, actual against planned cost:
:mod:`flows.ops._trend`), whose numbers are also the ``dead-letter-summary-trend`` table.

The baseline is yesterday's snapshot. When yesterday has none (the summary did not run
that day), the most recent snapshot of the :data:`LOOKBACK_DAYS` days before is used and
named in the report (``baseline_day``), so a missed morning does not hide a rise; the
change then covers more than one day. With no snapshot in that window (the first night)
the baseline is zero: a first night that parks many jobs is news and does alert.
Running the flow twice on one day replaces that day's snapshot and compares with the same
baseline.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import Field

from flows._ledger import open_ledger
from flows.channels._channel import today_utc
from flows.channels.direct import HANDLE_PREFIX
from flows.errors import UsageError
from flows.gemini._pricing import (
    PriceTable,
    UsageLine,
    direct_surcharge,
    estimate_cost,
    load_prices,
)
from flows.ops._halt_history import WINDOW, HaltHistory, read_halts
from flows.ops._trend import build_trend, trend_lines, trend_table
from flows.ops.plan import priced_night
from flows.run._names import name_refused_run, run_name, summary_name
from flows.run._parameters import Day
from flows.settings import Settings, load_settings
from ledger import Channel, Ledger, PlanNight, Status, morning_view

__all__ = [
    "EVENT_NAME",
    "LOOKBACK_DAYS",
    "RESOURCE_ID",
    "build_summary",
    "deadline_cost",
    "deadline_lines",
    "halt_lines",
    "held_lines",
    "pipeline_standing",
    "plan_lines",
    "refusal_lines",
    "render_markdown",
    "summary",
]

EVENT_NAME = "gemini-ledger.parked.increased"
RESOURCE_ID = "gemini-ledger.ledger"
LOOKBACK_DAYS = 7
_WINDOW_H = int(WINDOW.total_seconds() // 3600)


# What each state means to a person reading the report in the morning.
STATE_WORDS = {
    Status.CONSUMED: "delivered",
    Status.PARKED: "parked (dead letter)",
    Status.RETRYABLE: "retrying",
    Status.DONE: "answered, awaiting delivery",
    Status.SUBMITTED: "sent, awaiting the answer",
    Status.RESERVING: "being sent",
    Status.PENDING: "waiting to be sent",
}


def _baseline(ledger: Ledger, day: date) -> tuple[str | None, dict[str, int]]:
    """The latest snapshot within LOOKBACK_DAYS before ``day``; none is a baseline of zero."""
    for back in range(1, LOOKBACK_DAYS + 1):
        earlier = (day - timedelta(days=back)).isoformat()
        snap = ledger.snapshot(earlier)
        if snap is not None:
            return earlier, snap
    return None, {}


def _age(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours // 24} days"


def deadline_cost(ledger: Ledger, pipeline: str, prices: PriceTable) -> tuple[int, float]:
    """A batch pipeline's rows sent directly to meet its deadline (``flows.channels._deadline``:
    answered under a ``direct:`` handle) and what that cost above the batch price: their
    tokens at the direct price less the same tokens at the batch multiplier."""
    lines = [
        UsageLine.of(u)
        for u in ledger.usage_sent_as(pipeline=pipeline, handle_prefix=HANDLE_PREFIX)
        if u.channel != Channel.DIRECT
    ]
    if not lines:
        return 0, 0.0
    return sum(u.rows for u in lines), direct_surcharge(lines, prices)


def _pipelines(
    ledger: Ledger, prices: PriceTable, only: str | None = None, day: date | None = None
) -> list[dict[str, Any]]:
    """The morning table's rows; with ``day``, each carries its night's plan (``plan``)."""
    rows = []
    held_since = today_utc() - timedelta(days=LOOKBACK_DAYS)
    # One read of the plans serves the held rows (the last LOOKBACK_DAYS) and the night of
    # `day`: from whichever of the two begins first.
    since = held_since if day is None else min(held_since, day)
    for view in morning_view(ledger):
        if only is not None and view.pipeline != only:
            continue  # its usage is not read
        usage = [UsageLine.of(u) for u in ledger.usage_by_model(pipeline=view.pipeline)]
        cost = estimate_cost(usage, prices)
        nights = ledger.plans_for(view.pipeline, since.isoformat())
        held, held_night = _held(ledger, view.pipeline, nights, held_since)
        # The rows a deadline sent directly are priced above as batch rows: add the rest.
        fallback_rows, fallback_extra = deadline_cost(ledger, view.pipeline, prices)
        rows.append(
            {
                "pipeline": view.pipeline,
                "delivered": view.delivered,
                "parked": view.parked_total,
                "parked_by_class": [
                    {"error_class": p.error_class, "jobs": p.jobs, "example": p.example}
                    for p in view.parked
                ],
                "retrying": view.retrying,
                "in_flight": view.in_flight,
                "oldest_in_flight_s": view.oldest_in_flight_s,
                "oldest_in_flight": _age(view.oldest_in_flight_s),
                "cost_usd": cost.usd + fallback_extra,
                "deadline_direct_rows": fallback_rows,
                "deadline_extra_usd": round(fallback_extra, 6),
                "unpriced": cost.unpriced_text(),
                "held_by_budget": held,
                "held_by_budget_night": held_night,
                "batch_submission_refused": view.submission_refused,
                "batch_submission_refused_since": _when(view.submission_refused_since),
            }
        )
        if day is not None:
            rows[-1]["plan"] = _night_plan(nights, day, prices)
    return rows


def _held(
    ledger: Ledger, pipeline: str, nights: list[PlanNight], since: date
) -> tuple[int, str | None]:
    """Rows of the pipeline's latest night planned from ``since`` on (``nights``: its
    ``plans_for``) held by its budget and still waiting (pending, not parked), and that night
    (``flows.run._budget``)."""
    planned = [n for n in nights if n.day >= since.isoformat() and n.planned is not None]
    if not planned or planned[-1].planned is None or not planned[-1].planned.held:
        return 0, None
    waiting = ledger.due_rows(pipeline, sample=0).total
    return min(planned[-1].planned.held, waiting), planned[-1].day


def _night_plan(nights: list[PlanNight], day: date, prices: PriceTable) -> dict[str, Any] | None:
    """The night of ``day`` (among ``nights``: the pipeline's ``plans_for``) planned against
    actual (``flows.ops.plan``), or None when no tick planned it."""
    night = next((n for n in nights if n.day == day.isoformat()), None)
    if night is None or night.planned is None:
        return None
    return priced_night(night, prices).as_dict()


def plan_lines(report: dict[str, Any]) -> list[str]:
    """One plain line per pipeline whose night was planned: planned against actual rows,
    tokens and cost (``gemini-ledger plan`` shows the nights before)."""
    out = []
    for p in report["pipelines"]:
        n = p.get("plan")
        if not n:
            continue
        planned, actual = n["planned"], n["actual"]
        sends = planned["sends"]
        rows = f"{planned['rows']} rows" + (
            f" ({sends} sends)" if sends and sends != planned["rows"] else ""
        )
        off = "" if n["off_by"] is None else f" ({n['off_by']:+.1%} per row against the plan)"
        still = f", {actual['in_flight']} still out" if actual["in_flight"] else ""
        out.append(
            f"{p['pipeline']}: the night of {n['day']} planned {rows}, {planned['tokens'] or 0:,}"
            f" tokens, ${planned['usd'] or 0:.4f}; actual {actual['rows']} rows answered,"
            f" {actual['tokens']:,} tokens, ${actual['usd']:.4f}{still}{off}"
        )
    return out


def held_lines(report: dict[str, Any]) -> list[str]:
    """One plain line per pipeline whose rows wait for a night with room in its budget."""
    return [
        f"{p['pipeline']}: {p['held_by_budget']} rows held by the budget of the night of"
        f" {p['held_by_budget_night']} (pending, not parked); `gemini-ledger plan"
        f" {p['pipeline']}` shows what they would cost"
        for p in report["pipelines"]
        if p.get("held_by_budget")
    ]


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M} UTC"


def refusal_lines(report: dict[str, Any]) -> list[str]:
    """One plain line per pipeline whose batch submissions the API keeps refusing."""
    return [
        f"{p['pipeline']}: batch submission refused {p['batch_submission_refused']} time"
        f"{'s' if p['batch_submission_refused'] != 1 else ''} since"
        f" {p['batch_submission_refused_since']}; its rows wait, pending and unbilled"
        for p in report["pipelines"]
        if p.get("batch_submission_refused")
    ]


def deadline_lines(report: dict[str, Any]) -> list[str]:
    """One plain line per pipeline whose deadline sent rows directly: what it cost."""
    return [
        f"{p['pipeline']}: {p['deadline_direct_rows']} row"
        f"{'s' if p['deadline_direct_rows'] != 1 else ''} sent directly to meet the deadline,"
        f" ${p['deadline_extra_usd']:.4f} above the batch price"
        for p in report["pipelines"]
        if p.get("deadline_direct_rows")
    ]


def pipeline_standing(ledger: Ledger, pipeline: str, prices: PriceTable) -> dict[str, Any] | None:
    """Where one pipeline stands now (the morning table's row), or None if it has no jobs."""
    return next(iter(_pipelines(ledger, prices, only=pipeline)), None)


def build_summary(
    ledger: Ledger,
    day: date,
    prices: PriceTable,
    halts: HaltHistory | None = None,
) -> dict[str, Any]:
    """The dead-letter report for ``day`` (read-only: nothing is stored or published), costs
    at ``prices`` (``load_prices(settings.prices_file)``).

    ``halts`` defaults to the setup halts of the last 24 h read from the Prefect API."""
    halts = halts if halts is not None else read_halts()
    counts = ledger.counts()
    parked = dict(counts.by_error_class)
    baseline_day, previous = _baseline(ledger, day)

    by_class = []
    for cls in sorted(set(parked) | set(previous)):
        now_n = parked.get(cls, 0)
        before = previous.get(cls, 0)
        by_class.append(
            {"error_class": cls, "parked": now_n, "previous": before, "delta": now_n - before}
        )
    total = sum(parked.values())
    previous_total = sum(previous.values())

    usage = [UsageLine.of(u) for u in ledger.usage_by_model()]
    cost = estimate_cost(usage, prices)
    pipelines = _pipelines(ledger, prices, day=day)
    extra = sum(p["deadline_extra_usd"] for p in pipelines)
    return {
        "day": day.isoformat(),
        "baseline_day": baseline_day,
        "pipelines": pipelines,
        "trend": build_trend(ledger, day, prices),
        "halts": halts.as_dict(),
        "parked": {"total": total, "previous": previous_total, "delta": total - previous_total},
        "parked_by_class": by_class,
        "retrying_by_class": dict(counts.retrying_by_class),
        "by_status": dict(sorted(counts.by_status.items())),
        "jobs": counts.total,
        "attempts": counts.attempts,
        "tokens": {
            "prompt": counts.prompt_tokens,
            "candidates": counts.candidates_tokens,
            "total": counts.total_tokens,
            "thoughts": counts.usage.thoughts_tokens,
            "cached": counts.usage.cached_tokens,
            "audio": counts.usage.audio_tokens,
        },
        "cost": {
            **cost.as_dict(),
            "usd": round(cost.usd + extra, 6),
            "deadline_extra_usd": round(extra, 6),
            "prices": prices.source,
            "unpriced": cost.unpriced_text(),
        },
        "poison_inputs": [
            {"fingerprint": fp, "keys": n, "error_class": cls}
            for fp, n, cls in ledger.poison_inputs()
        ],
        "replayed": counts.replayed,
        "possible_duplicates": counts.possible_duplicates,
    }


def _signed(n: int | None) -> str:
    return "n/a" if n is None else f"{n:+d}"


def _cell(text: str | None, width: int = 110) -> str:
    """One table cell: a single line, pipes escaped, cut to ``width``."""
    if not text:
        return ""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _pipeline_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        "| pipeline | delivered | parked | retrying | still in flight | oldest in flight | cost |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for p in report["pipelines"]:
        lines.append(
            f"| {p['pipeline']} | {p['delivered']} | {p['parked']} | {p['retrying']}"
            f" | {p['in_flight']} | {p['oldest_in_flight'] or '-'} | ${p['cost_usd']:.4f} |"
        )
    if not report["pipelines"]:
        lines.append("| (no jobs yet) | | | | | | |")
    fallback = plan_lines(report) + deadline_lines(report)
    if fallback:
        lines += ["", *(f"- {line}" for line in fallback)]
    refused = refusal_lines(report) + held_lines(report)
    if refused:
        lines += ["", *(f"- {_cell(line, 400)}" for line in refused)]
    unpriced = [p for p in report["pipelines"] if p.get("unpriced")]
    if unpriced:
        # Never a silent $0: a cost above that leaves these rows out.
        lines.append("")
        lines += [
            f"**{p['pipeline']}**: {p['unpriced']}; its cost above leaves them out."
            for p in unpriced
        ]
    parked = [(p["pipeline"], c) for p in report["pipelines"] for c in p["parked_by_class"]]
    if parked:
        lines += [
            "",
            "## Why jobs were parked",
            "",
            "| pipeline | reason class | jobs | one example |",
            "|---|---|---:|---|",
        ]
        lines += [
            f"| {name} | `{c['error_class']}` | {c['jobs']} | {_cell(c['example'])} |"
            for name, c in parked
        ]
        lines += ["", "Fix the cause, then `gemini-ledger replay --error-class CLASS` (a dry run)."]
    return lines


def halt_lines(halts: dict[str, Any]) -> list[str]:
    """One plain line per halted pipeline channel (or why the halts could not be read)."""
    if not halts["readable"]:
        return [f"Setup halts of the last {_WINDOW_H} h could not be read: {halts['error']}."]
    lines = []
    for h in halts["channels"]:
        after = {
            True: "a later tick succeeded",
            False: "no tick has succeeded since",
            None: "unknown whether a later tick succeeded",
        }[h["recovered"]]
        lines.append(
            f"{h['pipeline']} {h['channel']}: halted {h['ticks']} tick"
            f"{'s' if h['ticks'] != 1 else ''} since {h['since']} (last {h['last']});"
            f" {after}. Last cause: {h['cause']}. Fix: {h['fix']}"
        )
    return lines or [f"No setup halts in the last {_WINDOW_H} h."]


def render_markdown(report: dict[str, Any], threshold: int | None = None) -> str:
    """The report as Markdown (the ``dead-letter-summary`` artifact)."""
    parked = report["parked"]
    since = (
        f" since {report['baseline_day']}"
        if report["baseline_day"]
        else "; no earlier summary, so counted from zero"
    )
    lines = [
        f"# Morning report for {report['day']}",
        "",
        f"**{parked['total']} parked** ({_signed(parked['delta'])}{since})"
        + (f"; alert threshold {threshold}" if threshold is not None else ""),
        "",
        *_pipeline_lines(report),
        "",
        *([*trend_lines(report["trend"]), ""] if report.get("trend") else []),
        "## Setup halts (nothing parked; every tick retries)",
        "",
        *(f"- {_cell(line, 400)}" for line in halt_lines(report["halts"])),
        "",
        "## Parked by class, day over day",
        "",
        "| reason class | parked | previous | change |",
        "|---|---:|---:|---:|",
    ]
    for row in report["parked_by_class"]:
        lines.append(
            f"| `{row['error_class']}` | {row['parked']} | {row['previous']}"
            f" | {_signed(row['delta'])} |"
        )
    if not report["parked_by_class"]:
        lines.append("| (none) | 0 | | |")
    lines += ["", "## All jobs by state", "", "| state | jobs |", "|---|---:|"]
    lines += [
        f"| {STATE_WORDS.get(Status(s), s) if s in set(Status) else s} | {n} |"
        for s, n in report["by_status"].items()
    ]
    tokens, cost = report["tokens"], report["cost"]
    lines += [
        "",
        "## Attempts and cost",
        "",
        f"{report['attempts']} attempts, {tokens['total']} tokens"
        f" ({tokens['prompt']} prompt of which {tokens['cached']} cached,"
        f" {tokens['candidates']} answer, {tokens['thoughts']} thinking);"
        f" estimated cost **${cost['usd']:.4f}** (prices: {cost['prices']})"
        + (f"; {cost['unpriced']}" if cost["unpriced"] else ""),
    ]
    if report["replayed"] or report["possible_duplicates"]:
        lines += [
            "",
            f"Replayed {report['replayed']} times in all; possible duplicate submissions:"
            f" {report['possible_duplicates']}.",
        ]
    if report["poison_inputs"]:
        lines += [
            "",
            "## Poison inputs (one payload parked under several keys)",
            "",
            "| fingerprint | keys | error class |",
            "|---|---:|---|",
        ]
        lines += [
            f"| `{p['fingerprint']}` | {p['keys']} | `{p['error_class']}` |"
            for p in report["poison_inputs"]
        ]
    return "\n".join(lines) + "\n"


def _table(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "error_class": r["error_class"],
            "parked": r["parked"],
            "previous": r["previous"],
            "change": r["delta"],
        }
        for r in report["parked_by_class"]
    ]
    parked = report["parked"]
    rows.append(
        {
            "error_class": "TOTAL",
            "parked": parked["total"],
            "previous": parked["previous"],
            "change": parked["delta"],
        }
    )
    return rows


@task(name="count-dead-letters", cache_policy=NO_CACHE, persist_result=False)
def count_dead_letters(day: date, settings: Settings) -> dict[str, Any]:
    """Build the report from the ledger (read-only)."""
    return build_summary(open_ledger(settings.database_url), day, load_prices(settings.prices_file))


@task(name="save-parked-snapshot", cache_policy=NO_CACHE, persist_result=False)
def save_parked_snapshot(day: date, parked_by_class: dict[str, int], settings: Settings) -> None:
    """Store today's parked jobs per class: tomorrow's baseline."""
    open_ledger(settings.database_url).save_snapshot(day.isoformat(), parked_by_class)


@task(name="publish-summary", cache_policy=NO_CACHE, persist_result=False)
def publish_summary(report: dict[str, Any], threshold: int) -> None:
    """Publish the report as markdown and table artifacts (the trend's numbers in a table of
    their own)."""
    create_markdown_artifact(
        key="dead-letter-summary",
        markdown=render_markdown(report, threshold),
        description=f"dead letters on {report['day']}",
    )
    create_table_artifact(
        key="dead-letter-summary-table",
        table=_table(report),
        description=f"parked jobs by error class on {report['day']}",
    )
    if report.get("trend"):
        trend = report["trend"]
        create_table_artifact(
            key="dead-letter-summary-trend",
            table=trend_table(trend),
            description=f"per pipeline and night, {trend['first']} to {trend['last']}",
        )


@task(name="raise-parked-alert", cache_policy=NO_CACHE, persist_result=False)
def raise_parked_alert(report: dict[str, Any], threshold: int, ledger_url: str) -> str | None:
    """Emit gemini-ledger.parked.increased; returns the event id (None if events are off)."""
    parked = report["parked"]
    event = emit_event(
        event=EVENT_NAME,
        resource={"prefect.resource.id": RESOURCE_ID, "prefect.resource.name": "gemini-ledger"},
        payload={
            "day": report["day"],
            "baseline_day": report["baseline_day"],
            "parked": parked["total"],
            "previous": parked["previous"],
            "delta": parked["delta"],
            "threshold": threshold,
            "by_class": {
                r["error_class"]: r["delta"] for r in report["parked_by_class"] if r["delta"]
            },
            "ledger": ledger_url,
        },
    )
    return None if event is None else str(event.id)


@flow(
    name="summary",
    flow_run_name=run_name(summary_name),
    on_failure=[name_refused_run(summary_name)],
)
def summary(day: Day | None = None, threshold: Annotated[int, Field(ge=1)] = 10) -> dict[str, Any]:
    """Count the dead letters, store today's snapshot, publish artifacts, and raise an event
    when parked jobs grew by ``threshold`` or more since the previous day.

    Args:
        day: The day to report on, YYYY-MM-DD (default: today, UTC); its snapshot of parked
            jobs replaces any earlier one of that day.
        threshold: Parked jobs added since the previous snapshot that raise the
            gemini-ledger.parked.increased event (at least 1).
    """
    if threshold < 1:
        raise UsageError("threshold must be at least 1")
    logger = get_run_logger()
    the_day = day or today_utc()
    settings = load_settings()  # the run's one read of the settings
    ledger = open_ledger(settings.database_url)
    report = count_dead_letters(the_day, settings)
    today_parked = {r["error_class"]: r["parked"] for r in report["parked_by_class"] if r["parked"]}
    save_parked_snapshot(the_day, today_parked, settings)
    publish_summary(report, threshold)

    delta = report["parked"]["delta"]
    event_id = None
    if delta >= threshold:
        event_id = raise_parked_alert(report, threshold, ledger.url)
        logger.warning(
            "parked jobs rose by %d (>= %d) since %s",
            delta,
            threshold,
            report["baseline_day"] or f"zero (no summary in the last {LOOKBACK_DAYS} days)",
        )
    logger.info(
        "%d parked (%s), %d jobs, estimated cost $%.4f",
        report["parked"]["total"],
        _signed(delta),
        report["jobs"],
        report["cost"]["usd"],
    )
    return {
        **report,
        "threshold": threshold,
        "threshold_crossed": delta >= threshold,
        "event_emitted": event_id is not None,
        "event_id": event_id,
    }
