"""``gemini-ledger plan``: what the next tick of a pipeline would do, touching nothing.

Before a night runs it answers: which items are due (new ones, i.e. the day's items the
ledger does not have yet; rows retrying; replays asked for), how many tokens they will take
(prompt tokens from ``models.count_tokens`` on a sample of their prompts, which bills
nothing, or counted offline when there is no key or no API; answer and thinking tokens
from the pipeline's own last nights, or its output budget), what that costs on each channel
(``flows.gemini._pricing``; batch at its multiplier), how long it needs under the quota
``gemini-ledger limits apply`` set (``flows.gemini.quota``), and whether it fits the
night's budget (``flows.run._budget``) and a deadline. Each estimate comes with how far the
plan was off on the last nights: the ticks record their plan in the ledger (``plans``) and
the actual figures are read from the rows' recorded usage (``Ledger.plans_for``).

Nothing is written: no row enrolled or reserved, no plan recorded; ``load_items`` and
``build_prompt`` run (for the items and a sample of prompts), as the tick would run them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flows._ledger import open_ledger
from flows.deadline import Deadline
from flows.gemini._pricing import (
    PriceTable,
    UsageLine,
    direct_surcharge,
    estimate_cost,
    load_prices,
)
from flows.pipeline import Pipeline, Prompt, Run
from flows.registry import get_pipeline
from flows.run._budget import (
    HISTORY_NIGHTS,
    MEDIA_PART_TOKENS,
    Budget,
    RowEstimate,
    estimate_rows,
    local_prompt_tokens,
    night_cost,
    row_cost,
)
from flows.settings import Settings
from ledger import Channel, Ledger, PlanNight

__all__ = ["SAMPLE", "NightFigures", "plan_night", "priced_night", "priced_nights"]

#: How many prompts are counted (``count_tokens``, or offline) for the mean per row.
SAMPLE = 20


@dataclass(frozen=True, slots=True)
class NightFigures:
    """One night of a pipeline, planned against actual (USD priced here: the ledger keeps
    tokens); ``None`` where no tick planned the night."""

    day: str
    planned_rows: int | None  # rows the night reserved, each once
    planned_sends: int | None  # reservations planned: a row sent again counts again
    planned_tokens: int | None  # prompt + answer + thinking, over the sends
    planned_usd: float | None
    actual_rows: int
    actual_tokens: int
    actual_usd: float
    in_flight: int
    held: int
    reached: bool

    @property
    def off_by(self) -> float | None:
        """Actual cost over planned, less one (+0.25: a quarter more than planned)."""
        if not self.planned_usd or not self.actual_rows or self.in_flight:
            return None
        # Per answered row against per planned send: rows still held or failed, or sent
        # again, do not make the plan look wrong.
        planned_per_row = self.planned_usd / (self.planned_sends or 1)
        return (self.actual_usd / self.actual_rows) / planned_per_row - 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "planned": {
                "rows": self.planned_rows,
                "sends": self.planned_sends,
                "tokens": self.planned_tokens,
                "usd": None if self.planned_usd is None else round(self.planned_usd, 6),
            },
            "actual": {
                "rows": self.actual_rows,
                "tokens": self.actual_tokens,
                "usd": round(self.actual_usd, 6),
                "in_flight": self.in_flight,
            },
            "off_by": None if self.off_by is None else round(self.off_by, 4),
            "held_by_budget": self.held,
            "budget_reached": self.reached,
        }


def priced_nights(
    ledger: Ledger, pipeline: str, since: date, prices: PriceTable
) -> list[NightFigures]:
    """``Ledger.plans_for`` with the actual usage priced: planned against actual per night."""
    return [priced_night(n, prices) for n in ledger.plans_for(pipeline, since.isoformat())]


def priced_night(night: PlanNight, prices: PriceTable) -> NightFigures:
    """One night of ``Ledger.plans_for`` with its actual usage priced."""
    plan = night.planned
    actual = estimate_cost([UsageLine.of(u) for u in night.usage], prices).usd
    actual += direct_surcharge([UsageLine.of(u) for u in night.sent_direct], prices)
    return NightFigures(
        day=night.day,
        planned_rows=night.reserved if plan else None,
        planned_sends=plan.rows if plan else None,
        planned_tokens=plan.prompt_tokens + plan.output_tokens if plan else None,
        planned_usd=plan.usd if plan else None,
        actual_rows=night.answered,
        actual_tokens=night.tokens.total_tokens,
        actual_usd=actual,
        in_flight=night.in_flight,
        held=plan.held if plan else 0,
        reached=bool(plan and plan.reached_at),
    )


def _new_items(
    ledger: Ledger, p: Pipeline[Any], day: date, params: dict[str, Any]
) -> tuple[int, list[Prompt]]:
    """The day's items the ledger does not have yet, and the prompts of a sample of them."""
    run = Run(day, params)
    keyed: dict[str, Any] = {}
    for item in p.items_of(run):
        try:
            keyed.setdefault(p.key_for(item, run), item)
        except Exception:
            continue
    known = ledger.known_keys(list(keyed))
    new = [item for key, item in keyed.items() if key not in known]
    prompts = []
    for item in new[:SAMPLE]:
        try:
            prompts.append(p.prompt_for(item, run))
        except Exception:
            continue
    return len(new), prompts


def _count_tokens(
    settings: Settings, p: Pipeline[Any], prompts: list[Prompt]
) -> tuple[float, str] | str:
    """The mean prompt tokens of ``prompts`` by ``models.count_tokens`` (free), or why it
    could not be asked."""
    if not prompts:
        return "nothing to count"
    try:
        from flows.gemini.gateway import gemini_client

        client = gemini_client(settings)
    except Exception as exc:
        return f"no API client ({type(exc).__name__})"
    counts = []
    try:
        shared = _count_prefix(client, p)
        for prompt in prompts:
            # SDK Models.count_tokens(model=, contents=) -> CountTokensResponse.total_tokens
            # (POST models/{model}:countTokens). Media parts would need their uploads: they
            # are counted offline.
            found = client.models.count_tokens(model=p.model, contents=prompt.text)
            total = getattr(found, "total_tokens", None) or 0
            counts.append(int(total) + MEDIA_PART_TOKENS * len(prompt.parts) + shared)
    except Exception as exc:
        return f"count_tokens failed ({type(exc).__name__})"
    finally:
        client.close()
    media = " (media parts counted offline)" if any(p_.parts for p_ in prompts) else ""
    prefix = " with the cached prefix" if p.cached_prefix is not None else ""
    return sum(counts) / len(counts), f"count_tokens on {len(counts)} prompts{prefix}{media}"


def _count_prefix(client: Any, p: Pipeline[Any]) -> int:
    """The tokens of the pipeline's cached shared prefix, asked once of ``count_tokens``
    (its media parts counted offline); 0 without one. The Gemini Developer API's
    count_tokens takes no system instruction (google-genai ``models.py``
    ``_CountTokensConfig_to_mldev`` raises ValueError for one): the prefix's system text is
    counted as a text part of the contents instead, the same text."""
    prefix = p.cached_prefix
    if prefix is None:
        return 0
    texts = [prefix.system] if prefix.system else []
    texts += [part.text for part in prefix.parts if part.text is not None]
    media = MEDIA_PART_TOKENS * sum(1 for part in prefix.parts if part.text is None)
    if not texts:
        return media
    found = client.models.count_tokens(model=p.model, contents=texts)
    return int(getattr(found, "total_tokens", None) or 0) + media


def _time_needed(p: Pipeline[Any], rows: int) -> dict[str, Any]:
    """Requests and seconds the rows need under the shared quota (``flows.gemini.quota``)."""
    from flows.gemini.quota import limits_for

    channel = Channel(p.channel)
    if channel is Channel.BATCH:
        jobs = math.ceil(rows / p.batch_size_limit) if rows else 0
        return {
            "requests": jobs,
            "seconds": None,
            "note": f"{jobs} batch job{'' if jobs == 1 else 's'}; the batch API's target is"
            " within 24 hours",
        }
    per_call = p.embedding.group_size if p.embedding is not None else 1
    requests = math.ceil(rows / per_call) if rows else 0
    try:
        limits = limits_for(p.model)
    except Exception as exc:
        return {"requests": requests, "seconds": None, "note": f"quota unknown ({exc})"}
    if limits.per_minute:
        seconds = requests / limits.per_minute * 60
        return {
            "requests": requests,
            "seconds": round(seconds, 1),
            "note": f"at most {limits.per_minute:.0f} requests a minute (gemini-ledger limits)",
        }
    return {
        "requests": requests,
        "seconds": None,
        "note": "no rate limit on the Prefect server: bound by concurrency and latency only",
    }


def plan_night(
    settings: Settings,
    spec: str,
    day: date,
    *,
    budget_usd: float | None = None,
    deadline: datetime | None = None,
    params: dict[str, Any] | None = None,
    count: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """What the next tick of ``spec`` for ``day`` would do (read-only; see the module doc).
    ``budget_usd`` stands for the tick's parameter; ``count=False`` never asks the API."""
    p = get_pipeline(spec, settings)
    ledger = open_ledger(settings.database_url)
    prices = load_prices(settings.prices_file)
    new, new_prompts = _new_items(ledger, p, day, dict(params or {}))
    due = ledger.due_rows(p.name, sample=SAMPLE)
    stored = [p.prompt_of(s) for s in due.sample]
    sample = (stored + new_prompts)[:SAMPLE]
    counted = _count_tokens(settings, p, sample) if count else "not asked (--offline)"
    payloads = [s.model_dump_json() for s in sample]
    if isinstance(counted, tuple):
        estimate = estimate_rows(ledger, p, day, prompts=payloads, counted=counted)
    else:
        estimate = estimate_rows(ledger, p, day, prompts=payloads)
        if local_prompt_tokens(payloads, p) is not None and "history" not in (
            estimate.prompt_source
        ):
            estimate = _with_reason(estimate, counted)
    rows = new + due.total
    channel = Channel(p.channel).value
    costs = {}
    for ch in Channel:
        per_row = row_cost(estimate, p.model, ch.value, prices)
        costs[ch.value] = None if per_row is None else {"per_row": per_row, "usd": per_row * rows}
    mine = costs[channel]
    needed = _time_needed(p, rows)
    since = day - timedelta(days=HISTORY_NIGHTS)
    nights = priced_nights(ledger, p.name, since, prices)
    return {
        "pipeline": p.name,
        "channel": channel,
        "model": p.model,
        "day": day.isoformat(),
        "due": {
            "rows": rows,
            "new": new,
            "pending": due.pending - due.replays,
            "retrying": due.retrying,
            "replays": due.replays,
        },
        "estimate": {
            "prompt_tokens_per_row": round(estimate.prompt_tokens, 1),
            "answer_tokens_per_row": round(estimate.answer_tokens, 1),
            "thinking_tokens_per_row": round(estimate.thoughts_tokens, 1),
            "prompt_source": estimate.prompt_source,
            "output_source": estimate.output_source,
            "tokens": round((estimate.prompt_tokens + estimate.output_tokens) * rows),
        },
        "cost": {
            "channels": {
                c: None if v is None else {k: round(x, 8) for k, x in v.items()}
                for c, v in costs.items()
            },
            "prices": prices.source,
        },
        "time": needed,
        "budget": _budget(ledger, p, settings, day, prices, budget_usd, mine, rows),
        "deadline": _deadline(deadline or _pipeline_deadline(p, now), needed, now),
        "history": [n.as_dict() for n in nights],
    }


def _with_reason(estimate: RowEstimate, reason: str) -> RowEstimate:
    return RowEstimate(
        estimate.prompt_tokens,
        estimate.answer_tokens,
        estimate.thoughts_tokens,
        f"{estimate.prompt_source}; {reason}",
        estimate.output_source,
    )


def _budget(
    ledger: Ledger,
    p: Pipeline[Any],
    settings: Settings,
    day: date,
    prices: PriceTable,
    budget_usd: float | None,
    mine: dict[str, float] | None,
    rows: int,
) -> dict[str, Any]:
    """The night's caps, what is spent, and how many of the due rows fit."""
    cap = Budget(budget_usd).cap_of(p)
    night = day.isoformat()
    caps = []
    if cap is not None:
        spent = night_cost(ledger.night_spend(night, pipeline=p.name), prices)
        caps.append(("pipeline", cap, spent))
    if settings.daily_budget_usd is not None:
        spent = night_cost(ledger.night_spend(night), prices)
        caps.append(("daily", settings.daily_budget_usd, spent))
    out: dict[str, Any] = {
        "caps": [{"cap": n, "usd": c, "spent_usd": round(s, 6)} for n, c, s in caps],
    }
    if not caps:
        out.update(fits=None, rows_that_fit=None, note="no budget set")
        return out
    if mine is None:
        out.update(fits=None, rows_that_fit=None, note=f"model {p.model} has no price")
        return out
    left = min(c - s for _, c, s in caps)
    per_row = mine["per_row"]
    fit = rows if not per_row else max(0, math.floor(left / per_row + 1e-9))
    out.update(
        left_usd=round(left, 6),
        rows_that_fit=min(fit, rows),
        held=max(0, rows - fit),
        fits=fit >= rows,
    )
    return out


def _pipeline_deadline(p: Pipeline[Any], now: datetime | None) -> datetime | None:
    """The next time the pipeline's own deadline (``Pipeline.deadline``) comes, if it has one."""
    if p.deadline is None:
        return None
    return Deadline.of(p.deadline).next_after(now or datetime.now(UTC))


def _deadline(
    deadline: datetime | None, needed: dict[str, Any], now: datetime | None
) -> dict[str, Any] | None:
    """Whether the time needed ends before ``deadline`` (None: no deadline given)."""
    if deadline is None:
        return None
    now = now or datetime.now(UTC)
    seconds = needed.get("seconds")
    left = (deadline - now).total_seconds()
    return {
        "deadline": deadline.isoformat(),
        "seconds_left": round(left, 1),
        "seconds_needed": seconds,
        "fits": None if seconds is None else seconds <= left,
    }
