"""The morning summary's trend: per pipeline over the last 14 nights, delivered, parked, cost
and plan against actual, drawn so that a person sees the shape at a glance in the Prefect UI.

The numbers come from the ledger (:meth:`ledger.Ledger.nightly`: each row on the night its
own timestamps fall in); the drawing is a Markdown table with one unicode sparkline
(``▁▂▃▄▅▆▇█``) per measure, oldest night first. Prefect's UI renders a markdown artifact's
tables and inline code as they are, with no script and no chart widget; text sparklines need
no image host and read the same in ``gemini-ledger dead-letter`` on a terminal.

A night is a calendar day in ``zone`` (UTC in the summary flow, whose ``day`` is the UTC
day): the shipped schedules tick between 02:00 and 06:00 Europe/Berlin and the summary runs
at 07:30, all on one UTC day.

Plan against actual: :func:`planned_cost` is where the cost planned for a night comes from:
the estimate the night's ticks recorded for the rows they reserved (``Ledger.planned``, the
``plans`` table, ``flows.run._budget``); a night no tick planned has none and the column
says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from flows.gemini._pricing import PriceTable, UsageLine, estimate_cost
from ledger import Ledger

__all__ = [
    "NIGHTS",
    "PlannedCost",
    "build_trend",
    "night_bounds",
    "planned_cost",
    "sparkline",
    "trend_lines",
    "trend_table",
]

NIGHTS = 14
# The eight heights; the lowest is a night with nothing, any other value is at least the
# second, so a small night is never drawn as an empty one.
_BARS = "▁▂▃▄▅▆▇█"
_NONE = "·"  # a night with no value at all (no plan recorded)

PlannedCost = Callable[[Ledger, str, date], float | None]


def planned_cost(ledger: Ledger, pipeline: str, night: date) -> float | None:
    """The cost in USD the plan estimated for ``pipeline``'s night of ``night`` (the ticks of
    that day, summed over their reservations), or None when no plan was recorded."""
    plan = ledger.planned(pipeline, night.isoformat())
    return None if plan is None else plan.usd


def night_bounds(day: date, nights: int = NIGHTS, zone: tzinfo = UTC) -> list[float]:
    """The epoch-second edges of the ``nights`` days ending with ``day`` in ``zone``: midnight
    to midnight, so a day of a change of UTC offset is 23 or 25 hours long."""
    first = day - timedelta(days=nights - 1)
    return [
        datetime.combine(first + timedelta(days=i), time(0), tzinfo=zone).timestamp()
        for i in range(nights + 1)
    ]


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled to the largest: ``▁`` for zero, ``▂``..``█`` for more,
    ``·`` for no value."""
    top = max((v for v in values if v is not None), default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(_NONE)
        elif v <= 0 or top <= 0:
            out.append(_BARS[0])
        else:
            out.append(_BARS[1 + round(v / top * (len(_BARS) - 2))])
    return "".join(out)


def build_trend(
    ledger: Ledger,
    day: date,
    prices: PriceTable,
    *,
    nights: int = NIGHTS,
    zone: tzinfo = UTC,
    planned: PlannedCost = planned_cost,
) -> dict[str, Any]:
    """Per pipeline with anything in the window, one entry per night (oldest first):
    delivered, parked, estimated cost, planned cost (None without a plan)."""
    first = day - timedelta(days=nights - 1)
    series = ledger.nightly(night_bounds(day, nights, zone))
    pipelines = []
    for name, counts in series.items():
        rows = []
        for i, night in enumerate(counts):
            the_day = first + timedelta(days=i)
            cost = estimate_cost([UsageLine.of(u) for u in night.usage], prices)
            rows.append(
                {
                    "night": the_day.isoformat(),
                    "delivered": night.delivered,
                    "parked": night.parked,
                    "cost_usd": round(cost.usd, 6),
                    "unpriced": cost.unpriced_text(),
                    "planned_cost_usd": planned(ledger, name, the_day),
                }
            )
        pipelines.append({"pipeline": name, "nights": rows})
    return {
        "nights": nights,
        "first": first.isoformat(),
        "last": day.isoformat(),
        "zone": str(zone),
        "pipelines": pipelines,
    }


def _ratio(night: dict[str, Any]) -> float | None:
    planned = night["planned_cost_usd"]
    return None if not planned else night["cost_usd"] / planned


def _plan_row(nights: list[dict[str, Any]]) -> str:
    """Actual ÷ planned cost: per night with a plan, and over all of them."""
    ratios = [_ratio(n) for n in nights]
    planned = [n for n, r in zip(nights, ratios, strict=True) if r is not None]
    if not planned:
        return "|  | actual ÷ planned cost | no plan recorded | | |"
    last = next(r for r in reversed(ratios) if r is not None)
    whole = sum(n["cost_usd"] for n in planned) / sum(n["planned_cost_usd"] for n in planned)
    return f"|  | actual ÷ planned cost | `{sparkline(ratios)}` | {last:.2f}× | {whole:.2f}× |"


def trend_lines(trend: dict[str, Any]) -> list[str]:
    """The trend as Markdown: per pipeline one row per measure, its sparkline in one column
    (so a night lines up across the measures), last night's value and the window's total."""
    lines = [
        f"## Trend, last {trend['nights']} nights ({trend['first']} to {trend['last']},"
        f" {trend['zone']}, oldest first)",
        "",
        f"| pipeline | measure | {trend['nights']} nights | last night | in all |",
        "|---|---|---|---:|---:|",
    ]
    for p in trend["pipelines"]:
        nights = p["nights"]
        name = p["pipeline"]
        for measure, word, shown in (
            ("delivered", "delivered", lambda v: f"{v:,}"),
            ("parked", "parked", lambda v: f"{v:,}"),
            ("cost_usd", "cost", lambda v: f"${v:.4f}"),
        ):
            values = [n[measure] for n in nights]
            if measure == "cost_usd" and any(n["unpriced"] for n in nights):
                word = "cost (some rows unpriced: see above)"  # never a silent $0
            lines.append(
                f"| {name} | {word} | `{sparkline(values)}` | {shown(values[-1])}"
                f" | {shown(sum(values))} |"
            )
            name = ""  # the pipeline is named on its first row only
        lines.append(_plan_row(nights))
    if not trend["pipelines"]:
        lines.append("| (nothing in these nights) | | | | |")
    return lines


def trend_table(trend: dict[str, Any]) -> list[dict[str, Any]]:
    """The trend's numbers, one row per pipeline and night: the table artifact."""
    return [
        {
            "pipeline": p["pipeline"],
            "night": n["night"],
            "delivered": n["delivered"],
            "parked": n["parked"],
            "cost_usd": n["cost_usd"],
            "planned_cost_usd": n["planned_cost_usd"],
        }
        for p in trend["pipelines"]
        for n in p["nights"]
    ]
