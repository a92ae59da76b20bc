"""The spending cap: a night's rows are reserved only while their estimated cost fits.

Every channel reserves through :func:`reserve` (batch, background, direct and its embedding
calls, and replay's direct calls through them): the one place the cap is applied. A run's
:class:`Budget` (``RunContext.budget``) knows its caps: the pipeline's nightly
``budget_usd`` (or the tick's ``budget_usd`` parameter over it) and the settings'
``GEMINI_LEDGER_DAILY_BUDGET_USD`` across every pipeline of the night. What is left of a cap
is the cap less what the night has spent: the priced usage of the night's answered rows
(``Ledger.night_spend``: actual usage replaces a row's estimate as soon as its answer is
recorded) plus the planned cost of its rows still on their way. A reservation takes only
as many rows as fit in what is left at the estimated cost per row (:class:`RowEstimate`);
the others stay ``pending``, "held by the budget" (never parked), and go out on a later
night with room. Nothing already sent is cancelled for the budget. The first tick of a night
that meets a cap emits ``gemini-ledger.budget.reached`` (once per pipeline and night: the
ledger's ``plans.reached_at`` decides which tick), which ``automations/budget-reached.yaml``
turns into a notification.

Each reservation also adds its rows' estimate to the night's plan (``Ledger.note_plan``),
cap or not: ``gemini-ledger plan`` and the morning summary read planned against actual
from there (``Ledger.plans_for``).

Two ticks of one pipeline running at once each count the other's rows only once they are
reserved (the ledger's in-flight rows): a deployment's concurrency limit of one keeps a
night within one row per tick of its cap.

The daily cap is shared by pipelines that run at once, each with a run of its own: a run
knows its own reservations at once, the others' only when it reads the night again. So while
a daily cap applies, a reservation first reads the night again when the last read is
:data:`REFRESH_EVERY_S` old (by the ledger's clock); without one, only a run short of room
does (answers may have come back below their estimate). The race that remains: a run does
not see the reservations the others made since its last read, so the night may pass the
daily cap by at most what the other pipelines running at once reserve within one refresh
interval (the direct channel reserves a row a call; a batch tick, a job's rows at a time).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

from prefect.events import emit_event

from flows.errors import UsageError
from flows.gemini._pricing import (
    PriceTable,
    UsageLine,
    direct_surcharge,
    estimate_cost,
    line_cost,
    load_prices,
)
from flows.pipeline import Pipeline
from flows.settings import Settings
from ledger import Channel, Ledger, NightSpend, SetupFault, SetupKind, Usage

__all__ = [
    "BUDGET_EVENT",
    "DEFAULT_OUTPUT_TOKENS",
    "HISTORY_NIGHTS",
    "MEDIA_PART_TOKENS",
    "REFRESH_EVERY_S",
    "Budget",
    "RowEstimate",
    "estimate_rows",
    "local_prompt_tokens",
    "night_cost",
    "prefix_tokens",
    "reserve",
    "row_cost",
]

BUDGET_EVENT = "gemini-ledger.budget.reached"
# How many nights back a pipeline's own history is read for its mean tokens per row.
HISTORY_NIGHTS = 14
# An answer's length when neither history nor max_output_tokens bounds it: an assumption,
# said so wherever it is used (set max_output_tokens for a bound of the pipeline's own).
DEFAULT_OUTPUT_TOKENS = 8192
# A media part (image, page) counted offline: the 258 tokens the API counts for one image
# (ai.google.dev/gemini-api/docs/tokens, "Images"). Other media are longer: count_tokens
# (``gemini-ledger plan`` with a key) counts them as the API does.
MEDIA_PART_TOKENS = 258
_CHARS_PER_TOKEN = 4  # the docs' rule of thumb: "about 4 characters" a token
# How old a read of the night may be before a reservation reads it again (see above).
REFRESH_EVERY_S = 1.0


class _Run(Protocol):
    """What the budget needs of a run's context (``flows.channels.RunContext``)."""

    @property
    def ledger(self) -> Ledger: ...
    @property
    def pipeline(self) -> Pipeline[Any]: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def day(self) -> date: ...
    @property
    def budget(self) -> Budget: ...
    @property
    def log(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class RowEstimate:
    """Estimated tokens of one row, and where each figure came from (said in ``plan``)."""

    prompt_tokens: float
    answer_tokens: float
    thoughts_tokens: float
    prompt_source: str
    output_source: str

    @property
    def output_tokens(self) -> float:
        return self.answer_tokens + self.thoughts_tokens

    @property
    def source(self) -> str:
        return f"prompt: {self.prompt_source}; output: {self.output_source}"


def row_cost(estimate: RowEstimate, model: str, channel: str, prices: PriceTable) -> float | None:
    """USD of one row at ``estimate`` on ``channel`` (batch at its multiplier); None when the
    model has no price."""
    price = prices.price_of(model)
    if price is None:
        return None
    prompt = math.ceil(estimate.prompt_tokens)
    answer = math.ceil(estimate.answer_tokens)
    thoughts = math.ceil(estimate.thoughts_tokens)
    line = UsageLine(model, channel, prompt, answer, prompt + answer + thoughts, thoughts)
    return line_cost(line, price, prices.batch_multiplier)


def prefix_tokens(pipeline: Pipeline[Any]) -> int:
    """The tokens of the pipeline's cached shared prefix (``flows.prefix.CachedPrefix``: its
    system instruction and parts) every request starts with, counted offline; 0 without one.

    The budget prices them at the prompt rate, the safe bound: a request that names the cache
    is billed them at the lower cache rate (and the cache's storage by the hour, which no
    row's estimate counts), one sent with the prefix inline at the prompt rate."""
    prefix = pipeline.cached_prefix
    if prefix is None:
        return 0
    chars = len(prefix.system or "") + sum(len(part.text or "") for part in prefix.parts)
    media = sum(1 for part in prefix.parts if part.text is None)
    return chars // _CHARS_PER_TOKEN + MEDIA_PART_TOKENS * media


def local_prompt_tokens(payloads: list[str], pipeline: Pipeline[Any]) -> float | None:
    """Mean prompt tokens of stored prompts with the pipeline's cached prefix, counted
    offline (about four characters a token, :data:`MEDIA_PART_TOKENS` per media part);
    None without any."""
    counts = []
    shared = prefix_tokens(pipeline)
    for payload in payloads:
        prompt = pipeline.prompt_of(payload)
        chars = len(prompt.text) + len(prompt.system or "")
        media = MEDIA_PART_TOKENS * len(prompt.parts)
        counts.append(max(1, chars // _CHARS_PER_TOKEN) + media + shared)
    return sum(counts) / len(counts) if counts else None


def _history(ledger: Ledger, pipeline: str, day: date) -> tuple[int, int, Usage]:
    """(answered rows, nights, their tokens) of the pipeline's last nights up to ``day``."""
    since = (day - timedelta(days=HISTORY_NIGHTS)).isoformat()
    nights = [n for n in ledger.plans_for(pipeline, since) if n.answered and n.day <= str(day)]
    rows = sum(n.answered for n in nights)
    tokens = [sum(n.tokens[i] for n in nights) for i in range(6)]
    return rows, len(nights), Usage(*tokens)


def estimate_rows(
    ledger: Ledger,
    pipeline: Pipeline[Any],
    day: date,
    *,
    prompts: list[str] | None = None,
    counted: tuple[float, str] | None = None,
) -> RowEstimate:
    """The estimated tokens of one row of ``pipeline`` tonight.

    Prompt tokens: ``counted`` (a mean and its source: ``count_tokens`` on a sample, from
    ``gemini-ledger plan``), else the mean of the pipeline's answered rows over its last
    nights, else a local count of ``prompts`` (stored payloads; the due rows' when None).
    Each includes the cached shared prefix (:func:`prefix_tokens`): the API's prompt token
    count of an answer includes the cached tokens, and the others add them.
    Answer and thinking tokens: the mean per row over its last nights, else the output
    budget ``max_output_tokens`` (and ``thinking_budget``), else :data:`DEFAULT_OUTPUT_TOKENS`.
    """
    rows, nights, tokens = _history(ledger, pipeline.name, day)
    plural = "s" if nights != 1 else ""
    history = f"history: mean of {rows} rows over {nights} night{plural}"
    if counted is not None:
        prompt, prompt_source = counted
    elif rows:
        prompt, prompt_source = tokens.prompt_tokens / rows, history
    else:
        sample = prompts if prompts is not None else list(ledger.due_rows(pipeline.name).sample)
        local = local_prompt_tokens(sample, pipeline)
        prompt = local or 0.0
        prompt_source = (
            f"local estimate (4 characters a token) on {len(sample)} prompts"
            if local is not None
            else "nothing due"
        )
    if rows:
        thoughts = tokens.thoughts_tokens or max(
            tokens.total_tokens - tokens.prompt_tokens - tokens.candidates_tokens, 0
        )
        return RowEstimate(
            prompt, tokens.candidates_tokens / rows, thoughts / rows, prompt_source, history
        )
    if pipeline.is_embedding:  # a vector is billed by its input alone
        return RowEstimate(prompt, 0.0, 0.0, prompt_source, "embeddings: no output tokens")
    settings = pipeline.generation
    thinking = float(max(settings.thinking_budget or 0, 0))
    if settings.max_output_tokens is not None:
        source = "output budget: max_output_tokens"
        if thinking:
            source += " and thinking_budget"
        return RowEstimate(
            prompt, float(settings.max_output_tokens), thinking, prompt_source, source
        )
    return RowEstimate(
        prompt,
        float(DEFAULT_OUTPUT_TOKENS),
        thinking,
        prompt_source,
        f"assumed {DEFAULT_OUTPUT_TOKENS} tokens (no history, no max_output_tokens)",
    )


def night_cost(spend: NightSpend, prices: PriceTable) -> float:
    """USD a night has spent: its answered rows priced (those a deadline sent directly at the
    direct rate; those answered without recorded tokens at their planned cost), its rows on
    their way at their planned cost."""
    answered = estimate_cost([UsageLine.of(u) for u in spend.usage], prices).usd
    fallback = direct_surcharge([UsageLine.of(u) for u in spend.sent_direct], prices)
    return answered + fallback + spend.unmetered_usd + spend.in_flight_usd


@dataclass(frozen=True, slots=True)
class _Rows:
    """Which rows a reservation takes (``Ledger.reserve``'s arguments of that name)."""

    reservation: str
    batch_model: str | None
    keys: list[str] | None
    enrolled_after: float | None


@dataclass(frozen=True, slots=True)
class _Cap:
    name: str  # "pipeline" or "daily"
    usd: float
    spent: float  # as the ledger said when last read


class Budget:
    """One run's spending caps and what it reserved (thread-safe: the direct channel's
    calls reserve from several threads). ``usd`` overrides the pipeline's ``budget_usd``
    (the tick's parameter); ``ignore`` reserves as if there were no cap (``replay
    --ignore-budget``), the plan still recorded."""

    def __init__(self, usd: float | None = None, *, ignore: bool = False) -> None:
        if usd is not None and not (math.isfinite(usd) and usd >= 0):
            raise ValueError(f"budget_usd must be a finite number >= 0, got {usd}")
        self.usd = usd
        self.ignore = ignore
        self._lock = threading.RLock()
        self._ready = False
        self._prices: PriceTable | None = None
        self.estimate: RowEstimate | None = None
        self.usd_per_row: float | None = None
        self._caps: list[_Cap] = []
        self._added = 0.0  # estimated USD reserved since the caps were last read
        self._read_at = 0.0
        self.reserved = 0
        self.reached: _Cap | None = None

    # --- reading the night ---------------------------------------------------------------

    def cap_of(self, pipeline: Pipeline[Any]) -> float | None:
        """The pipeline's nightly cap for this run: the run's value, else the pipeline's."""
        return self.usd if self.usd is not None else pipeline.budget_usd

    def _start(self, ctx: _Run) -> None:
        if self._ready:
            return
        p = ctx.pipeline
        try:
            self._prices = load_prices(ctx.settings.prices_file)
        except UsageError as exc:
            capped = self.cap_of(p) is not None or ctx.settings.daily_budget_usd is not None
            if capped and not self.ignore:
                raise  # a cap cannot be kept without prices: the tick stops before sending
            # No cap to keep: the plan is estimated at the built-in prices, said so.
            ctx.log.warning("%s: %s; the night's plan uses the built-in prices", p.name, exc)
            self._prices = load_prices(None)
        self.estimate = estimate_rows(ctx.ledger, p, ctx.day)
        self.usd_per_row = row_cost(self.estimate, p.model, Channel(p.channel).value, self._prices)
        self._read_caps(ctx)
        if self._caps and self.usd_per_row is None:
            # A cap that cannot be kept is no cap: refused before anything is reserved, a
            # fault of the setup (the tick halts, nothing parked), never a silent overspend.
            caps = " and ".join(f"the {c.name} budget of {c.usd:g} USD" for c in self._caps)
            raise SetupFault(
                SetupKind.UNPRICED,
                f"{p.name}: model {p.model} has no price, so {caps} cannot be kept",
            )
        self._ready = True

    def _read_caps(self, ctx: _Run) -> None:
        assert self._prices is not None
        night = ctx.day.isoformat()
        caps = []
        if not self.ignore:
            mine = self.cap_of(ctx.pipeline)
            if mine is not None:
                spend = ctx.ledger.night_spend(night, pipeline=ctx.pipeline.name)
                caps.append(_Cap("pipeline", mine, night_cost(spend, self._prices)))
            daily = ctx.settings.daily_budget_usd
            if daily is not None:
                caps.append(
                    _Cap("daily", daily, night_cost(ctx.ledger.night_spend(night), self._prices))
                )
        self._caps = caps
        self._added = 0.0
        self._read_at = ctx.ledger.clock()

    def _per_row(self, ctx: _Run, channel: str | None) -> float | None:
        """The estimated cost of one row sent on ``channel`` (the pipeline's by default; a
        deadline's fallback sends a batch pipeline's rows directly, at the direct price)."""
        if channel is None or channel == Channel(ctx.pipeline.channel).value:
            return self.usd_per_row
        assert self.estimate is not None and self._prices is not None
        return row_cost(self.estimate, ctx.pipeline.model, channel, self._prices)

    def _room(self, per_row: float | None = None) -> tuple[int | None, _Cap | None]:
        """Rows that still fit (None: no cap applies) and the cap that binds."""
        per_row = self.usd_per_row if per_row is None else per_row
        if not self._caps or not per_row:
            return None, None
        tightest = min(self._caps, key=lambda c: c.usd - c.spent)
        left = tightest.usd - tightest.spent - self._added
        # A tiny tolerance: a cap met exactly by the estimates is not missed by rounding.
        return max(0, math.floor(left / per_row + 1e-9)), tightest

    def room(self, ctx: _Run) -> int | None:
        """How many more rows fit tonight (None: no cap applies)."""
        with self._lock:
            self._start(ctx)
            return self._room()[0]

    def admit(self, ctx: _Run, wanted: int) -> int:
        """How many of ``wanted`` due rows to try now: all of them, or as many as still fit
        (the cap then counts as met for this run)."""
        with self._lock:
            self._start(ctx)
            allowed, cap = self._room()
            if allowed is None or allowed >= wanted:
                return wanted
            self.reached = cap
            return allowed

    # --- reserving -----------------------------------------------------------------------

    def reserve(
        self,
        ctx: _Run,
        *,
        limit: int,
        reservation: str,
        batch_model: str | None = None,
        keys: list[str] | None = None,
        channel: str | None = None,
        enrolled_after: float | None = None,
    ) -> int:
        """``Ledger.reserve`` of at most the rows that fit, the night stamped on them and
        their estimate added to its plan; ``channel`` is the channel the rows go out on when it
        is not the pipeline's (a deadline's direct fallback), priced as such;
        ``enrolled_after``: only rows enrolled after it (``Ledger.reserve``)."""
        rows = _Rows(reservation, batch_model, keys, enrolled_after)
        with self._lock:
            self._start(ctx)
            per_row = self._per_row(ctx, channel)
            allowed, cap = self._room(per_row)
            stale = ctx.ledger.clock() - self._read_at >= REFRESH_EVERY_S
            short = allowed is not None and allowed < limit
            shared = any(c.name == "daily" for c in self._caps)
            if stale and (short or shared):
                # Short: answers may have come back below their estimate. Shared: other
                # pipelines may have reserved from the daily cap since the last read.
                self._read_caps(ctx)
                allowed, cap = self._room(per_row)
            if allowed is not None:
                # A cap applies: reserved under the lock, so two of the run's threads never
                # both take the room that is left.
                n = min(limit, allowed)
                got = self._reserve(ctx, n, per_row, rows)
                if allowed < limit and got == n:
                    self.reached = cap
                return got
        # No cap (nor can one appear: the caps are the settings', read once): nothing to
        # share out, so the run's threads reserve side by side (the direct channel's calls).
        return self._reserve(ctx, limit, per_row, rows)

    def _reserve(self, ctx: _Run, n: int, per_row: float | None, rows: _Rows) -> int:
        if n <= 0:
            return 0
        got = ctx.ledger.reserve(
            pipeline=ctx.pipeline.name,
            limit=n,
            reservation=rows.reservation,
            batch_model=rows.batch_model,
            keys=rows.keys,
            plan_day=ctx.day.isoformat(),
            enrolled_after=rows.enrolled_after,
        )
        if got:
            self._note(ctx, got, per_row)
        return got

    def _note(self, ctx: _Run, rows: int, per_row: float | None) -> None:
        assert self.estimate is not None
        usd = (per_row or 0.0) * rows
        with self._lock:  # reentrant: held already when a cap applies
            self._added += usd
            self.reserved += rows
        caps = [c.usd for c in self._caps if c.name == "pipeline"]
        ctx.ledger.note_plan(
            pipeline=ctx.pipeline.name,
            day=ctx.day.isoformat(),
            channel=Channel(ctx.pipeline.channel).value,
            rows=rows,
            prompt_tokens=round(self.estimate.prompt_tokens * rows),
            output_tokens=round(self.estimate.output_tokens * rows),
            usd=usd,
            source=self.estimate.source,
            cap_usd=caps[0] if caps else None,
        )

    def finish(self, ctx: _Run) -> int:
        """After the run's reservations: the due rows held back by the budget (0 when no cap
        was met), recorded on the night's plan; the event emitted by the night's first tick
        that met its cap."""
        with self._lock:
            cap = self.reached
        if cap is None:
            return 0
        p = ctx.pipeline
        night = ctx.day.isoformat()
        channel = Channel(p.channel).value
        held = ctx.ledger.due_rows(p.name, sample=0).total
        if not held:
            return 0  # the cap was met by the last rows due: nothing waits for it
        ctx.ledger.note_held(
            pipeline=p.name,
            day=night,
            channel=channel,
            held=held,
            cap_usd=cap.usd if cap.name == "pipeline" else self.cap_of(p),
        )
        spent = cap.spent + self._added
        ctx.log.warning(
            "%s: the %s budget of %.4f USD for %s is reached (spent or on its way: %.4f USD,"
            " %.6f USD a row): %d rows held by the budget, pending for a night with room",
            p.name,
            cap.name,
            cap.usd,
            night,
            spent,
            self.usd_per_row or 0.0,
            held,
        )
        if ctx.ledger.mark_reached(pipeline=p.name, day=night, channel=channel):
            _emit(p.name, channel, night, cap, spent, self.usd_per_row or 0.0, held, ctx.log)
        return held


def _emit(
    pipeline: str,
    channel: str,
    night: str,
    cap: _Cap,
    spent: float,
    per_row: float,
    held: int,
    log: Any,
) -> None:
    from flows.run._halt import resource_id

    try:
        emit_event(
            event=BUDGET_EVENT,
            resource={
                "prefect.resource.id": resource_id(pipeline, channel),
                "prefect.resource.name": f"{pipeline} ({channel})",
                "gemini-ledger.pipeline": pipeline,
                "gemini-ledger.channel": channel,
            },
            payload={
                "day": night,
                "cap": cap.name,
                "cap_usd": round(cap.usd, 6),
                "spent_usd": round(spent, 6),
                "usd_per_row": round(per_row, 8),
                "held": held,
            },
        )
    except Exception as exc:  # the tick's work must not be lost to an event client error
        log.warning("could not emit %s: %s", BUDGET_EVENT, exc)


def reserve(
    ctx: _Run,
    *,
    limit: int,
    reservation: str,
    batch_model: str | None = None,
    keys: list[str] | None = None,
    channel: str | None = None,
    enrolled_after: float | None = None,
) -> int:
    """Reserve due rows of the run's pipeline within its budget: the one way a channel
    reserves (see the module docstring); ``channel``: the one the rows go out on, when it is
    not the pipeline's (a deadline's direct fallback); ``enrolled_after``: only rows enrolled
    after that instant (a deadline's batch submit leaves the rows it sends directly)."""
    return ctx.budget.reserve(
        ctx,
        limit=limit,
        reservation=reservation,
        batch_model=batch_model,
        keys=keys,
        channel=channel,
        enrolled_after=enrolled_after,
    )
