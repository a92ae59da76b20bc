"""Nights with a plan: what each night of a pipeline planned to spend, and what it spent.

A tick reserves rows under a night (its day, ``YYYY-MM-DD``): ``Ledger.reserve(plan_day=)``
stamps each row with it (``jobs.plan_day``), and the tick adds the estimate it made for
those rows to the night's ``plans`` row (:meth:`PlanVerbs.note_plan`). What the night
actually spent is never stored: it is read from its rows' recorded usage, so an answer that
comes back replaces the estimate of its row as soon as it is recorded. The ledger knows no
prices: it returns token counts per (model, model version, channel), and ``flows`` prices
them (``flows.gemini._pricing``).

A row retried on a later night is stamped with that night, and its tokens (summed over
every attempt, as the jobs table keeps them) count there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import TextClause, bindparam, text

from ledger._base import LedgerBase
from ledger._lines import NO_USAGE, Usage
from ledger._models import DIRECT_HANDLE_PREFIX, Channel, Status
from ledger._records import ModelUsage
from ledger._sql import PENDING, RESERVING, RETRYABLE, SUBMITTED, TOKEN_COLUMNS, chunks

__all__ = ["DueRows", "NightSpend", "PlanNight", "PlanVerbs", "Planned"]

# A row of the night still on its way (its cost is its estimate until the answer is back).
_ON_ITS_WAY = f"({RESERVING}, {SUBMITTED})"
# A row sent on the direct channel though its own is another (a deadline's fallback sends a
# batch row directly, under a ``direct:`` handle): billed at the direct rate, which
# ``flows.gemini._pricing.direct_surcharge`` adds for the budget and the morning summary alike.
_SENT_DIRECT = f"(handle LIKE '{DIRECT_HANDLE_PREFIX}%' AND channel <> '{Channel.DIRECT.value}')"


@dataclass(frozen=True, slots=True)
class Planned:
    """What a night's ticks planned: rows reserved and their estimated tokens and cost."""

    rows: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0  # answer and thinking tokens
    usd: float = 0.0
    source: str = ""
    held: int = 0
    cap_usd: float | None = None
    reached_at: float | None = None

    @property
    def usd_per_row(self) -> float:
        return self.usd / self.rows if self.rows else 0.0


@dataclass(frozen=True, slots=True)
class PlanNight:
    """One night of one pipeline: planned (None when no tick planned it) against actual.

    ``answered`` rows have their usage back (an answer billed tokens: a failure that brought
    none is not counted) (in ``usage``, per model, model version and
    channel, and ``tokens`` in all; ``sent_direct``: those of them a deadline sent directly,
    as in :class:`NightSpend`); ``in_flight`` rows were reserved that night and have
    not answered yet. ``reserved``: the rows whose last reservation was that night, each
    once (``planned.rows`` counts every reservation: a row sent again after a failure, or a
    batch job that failed, counts each time)."""

    pipeline: str
    day: str
    planned: Planned | None
    answered: int = 0
    in_flight: int = 0
    tokens: Usage = NO_USAGE
    usage: tuple[ModelUsage, ...] = ()
    reserved: int = 0
    sent_direct: tuple[ModelUsage, ...] = ()


@dataclass(frozen=True, slots=True)
class NightSpend:
    """What one night has spent so far, across one pipeline or all: the answered rows' usage
    (to price) under their own channel, those of them sent directly from another channel
    (``sent_direct``: a deadline's fallback, to price at the direct rate), and the rows still
    on their way with their planned cost per row. An answer recorded without tokens (its
    usage missing) was billed all the same: ``unmetered`` counts such rows, at the planned
    cost per row too."""

    usage: tuple[ModelUsage, ...] = ()
    in_flight: dict[str, int] = field(default_factory=dict)  # pipeline -> rows
    usd_per_row: dict[str, float] = field(default_factory=dict)  # pipeline -> planned
    sent_direct: tuple[ModelUsage, ...] = ()  # a subset of ``usage``
    unmetered: dict[str, int] = field(default_factory=dict)  # pipeline -> answered, 0 tokens

    @property
    def in_flight_usd(self) -> float:
        """The estimate of the rows still on their way (their night's planned cost per row)."""
        return sum(n * self.usd_per_row.get(p, 0.0) for p, n in self.in_flight.items())

    @property
    def unmetered_usd(self) -> float:
        """The estimate of the answers recorded without tokens (the planned cost per row)."""
        return sum(n * self.usd_per_row.get(p, 0.0) for p, n in self.unmetered.items())


@dataclass(frozen=True, slots=True)
class DueRows:
    """A pipeline's rows waiting to be sent: pending (of which replays asked for) and
    retrying, with a few of their payloads as a sample."""

    pending: int = 0
    replays: int = 0
    retrying: int = 0
    sample: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.pending + self.retrying


# The columns of ``plans`` a ``Planned`` is read from, in its order (``_planned``).
_PLANNED = "rows, prompt_tokens, output_tokens, usd, source, held, cap_usd, reached_at"


def _planned(r: Sequence[Any]) -> Planned:
    return Planned(
        int(r[0]),
        int(r[1]),
        int(r[2]),
        float(r[3]),
        str(r[4] or ""),
        int(r[5]),
        None if r[6] is None else float(r[6]),
        None if r[7] is None else float(r[7]),
    )


def _upsert_plan(values: str, on_conflict: str) -> TextClause:
    """The night's ``plans`` row made with ``values`` (rows, tokens, usd, source, held and
    cap; never reached yet) or, when it is there, ``DO on_conflict``: the one insert every
    tick's note of its plan shares."""
    return text(
        "INSERT INTO plans (pipeline, day, channel, rows, prompt_tokens, output_tokens, usd,"
        " source, held, cap_usd, reached_at, updated_at)"
        f" VALUES (:p, :d, :c, {values}, NULL, :now)"
        f" ON CONFLICT (pipeline, day) DO {on_conflict}"
    )


def _usage_lines(rows: Sequence[Sequence[object]]) -> tuple[ModelUsage, ...]:
    return tuple(
        ModelUsage(
            str(r[0]),
            None if r[1] is None else str(r[1]),
            str(r[2]),
            int(r[3]),  # type: ignore[call-overload]
            int(r[4]),  # type: ignore[call-overload]
            Usage(*(int(n) for n in r[5:])),  # type: ignore[call-overload]
        )
        for r in rows
    )


_TOKENS = ", ".join(f"COALESCE(SUM({c}), 0)" for c in TOKEN_COLUMNS)


class PlanVerbs(LedgerBase):
    """The plans of the nights and what they spent."""

    def note_plan(
        self,
        *,
        pipeline: str,
        day: str,
        channel: str,
        rows: int,
        prompt_tokens: int,
        output_tokens: int,
        usd: float,
        source: str,
        cap_usd: float | None,
    ) -> None:
        """Add the estimate of ``rows`` just reserved to the night's plan (created on its
        first reservation)."""
        now = self.clock()
        with self._write() as conn:
            conn.execute(
                _upsert_plan(
                    ":rows, :pt, :ot, :usd, :src, 0, :cap",
                    "UPDATE SET rows = plans.rows + :rows, prompt_tokens = plans.prompt_tokens"
                    " + :pt, output_tokens = plans.output_tokens + :ot, usd = plans.usd + :usd,"
                    " source = :src, cap_usd = :cap, updated_at = :now",
                ),
                {
                    "p": pipeline,
                    "d": day,
                    "c": channel,
                    "rows": rows,
                    "pt": prompt_tokens,
                    "ot": output_tokens,
                    "usd": usd,
                    "src": source[:256],
                    "cap": cap_usd,
                    "now": now,
                },
            )

    def note_held(
        self, *, pipeline: str, day: str, channel: str, held: int, cap_usd: float | None
    ) -> None:
        """Record how many due rows the night's last tick held back for the budget."""
        now = self.clock()
        with self._write() as conn:
            conn.execute(
                _upsert_plan(
                    "0, 0, 0, 0, '', :held, :cap",
                    "UPDATE SET held = :held, cap_usd = :cap, updated_at = :now",
                ),
                {"p": pipeline, "d": day, "c": channel, "held": held, "cap": cap_usd, "now": now},
            )

    def mark_reached(self, *, pipeline: str, day: str, channel: str) -> bool:
        """Note that the night met its cap; True only for the first tick that notes it (the
        one that emits the event), whichever process it runs in."""
        now = self.clock()
        with self._write() as conn:
            conn.execute(
                _upsert_plan("0, 0, 0, 0, '', 0, NULL", "NOTHING"),
                {"p": pipeline, "d": day, "c": channel, "now": now},
            )
            return (
                conn.execute(
                    text(
                        "UPDATE plans SET reached_at = :now WHERE pipeline = :p AND day = :d"
                        " AND reached_at IS NULL"
                    ),
                    {"p": pipeline, "d": day, "now": now},
                ).rowcount
                == 1
            )

    def night_spend(self, day: str, *, pipeline: str | None = None) -> NightSpend:
        """What the night ``day`` has spent so far, for one pipeline or all of them."""
        where = " AND pipeline = :p" if pipeline is not None else ""
        params = {"d": day, "p": pipeline}
        with self._read() as conn:
            answered = conn.execute(
                text(
                    f"SELECT CASE WHEN {_SENT_DIRECT} THEN 1 ELSE 0 END, model, model_version,"
                    " channel, COUNT(*), COALESCE(SUM(attempts), 0),"
                    f" {_TOKENS} FROM jobs WHERE plan_day = :d{where}"
                    f" AND status NOT IN {_ON_ITS_WAY} AND total_tokens > 0"
                    f" GROUP BY CASE WHEN {_SENT_DIRECT} THEN 1 ELSE 0 END, model,"
                    " model_version, channel"
                ),
                params,
            ).all()
            flying = conn.execute(
                text(
                    "SELECT pipeline, COUNT(*) FROM jobs WHERE plan_day = :d"
                    f"{where} AND status IN {_ON_ITS_WAY} GROUP BY pipeline"
                ),
                params,
            ).all()
            # Answered (done_at: an answer was recorded) without a token recorded: billed,
            # its usage unknown. A failure that brought no tokens is not an answer.
            unmetered = conn.execute(
                text(
                    "SELECT pipeline, COUNT(*) FROM jobs WHERE plan_day = :d"
                    f"{where} AND status NOT IN {_ON_ITS_WAY} AND done_at IS NOT NULL"
                    " AND COALESCE(total_tokens, 0) = 0 GROUP BY pipeline"
                ),
                params,
            ).all()
            plans = conn.execute(
                text(f"SELECT pipeline, rows, usd FROM plans WHERE day = :d{where}"), params
            ).all()
        return NightSpend(
            unmetered={str(p): int(n) for p, n in unmetered},
            usage=_usage_lines([r[1:] for r in answered]),
            sent_direct=_usage_lines([r[1:] for r in answered if int(r[0])]),
            in_flight={str(p): int(n) for p, n in flying},
            usd_per_row={str(p): (float(u) / int(r) if r else 0.0) for p, r, u in plans},
        )

    def plans_for(self, pipeline: str, since: str) -> list[PlanNight]:
        """Planned against actual for each night of ``pipeline`` from ``since`` (a day,
        ``YYYY-MM-DD``, included) on, oldest first: a night a tick planned, or one whose rows
        carry it. The public read for reports (the morning summary's trend, ``plan``)."""
        params = {"p": pipeline, "since": since}
        with self._read() as conn:
            plans = conn.execute(
                text(f"SELECT day, {_PLANNED} FROM plans WHERE pipeline = :p AND day >= :since"),
                params,
            ).all()
            answered = conn.execute(
                text(
                    f"SELECT CASE WHEN {_SENT_DIRECT} THEN 1 ELSE 0 END, plan_day, model,"
                    " model_version, channel, COUNT(*),"
                    f" COALESCE(SUM(attempts), 0), {_TOKENS} FROM jobs WHERE pipeline = :p"
                    f" AND plan_day >= :since AND status NOT IN {_ON_ITS_WAY}"
                    f" AND total_tokens > 0 GROUP BY CASE WHEN {_SENT_DIRECT} THEN 1 ELSE 0 END,"
                    " plan_day, model, model_version, channel"
                ),
                params,
            ).all()
            stamped = conn.execute(
                text(
                    "SELECT plan_day, COUNT(*) FROM jobs WHERE pipeline = :p"
                    " AND plan_day >= :since GROUP BY plan_day"
                ),
                params,
            ).all()
            flying = conn.execute(
                text(
                    "SELECT plan_day, COUNT(*) FROM jobs WHERE pipeline = :p"
                    f" AND plan_day >= :since AND status IN {_ON_ITS_WAY} GROUP BY plan_day"
                ),
                params,
            ).all()
        planned = {str(r[0]): _planned(r[1:]) for r in plans}
        lines: dict[str, list[Sequence[object]]] = {}
        direct: dict[str, list[Sequence[object]]] = {}
        for r in answered:
            lines.setdefault(str(r[1]), []).append(tuple(r[2:]))
            if int(r[0]):
                direct.setdefault(str(r[1]), []).append(tuple(r[2:]))
        in_flight = {str(d): int(n) for d, n in flying}
        reserved = {str(d): int(n) for d, n in stamped}
        nights = []
        for day in sorted(set(planned) | set(lines) | set(in_flight)):
            usage = _usage_lines(lines.get(day, []))
            tokens = [sum(u.usage[i] for u in usage) for i in range(len(TOKEN_COLUMNS))]
            nights.append(
                PlanNight(
                    pipeline=pipeline,
                    day=day,
                    planned=planned.get(day),
                    answered=sum(u.rows for u in usage),
                    in_flight=in_flight.get(day, 0),
                    tokens=Usage(*tokens),
                    usage=usage,
                    reserved=reserved.get(day, 0),
                    sent_direct=_usage_lines(direct.get(day, [])),
                )
            )
        return nights

    def planned(self, pipeline: str, day: str) -> Planned | None:
        """What the ticks of ``pipeline``'s night ``day`` planned (the ``plans`` row alone,
        no read of the jobs), or None when no tick planned it."""
        with self._read() as conn:
            r = conn.execute(
                text(f"SELECT {_PLANNED} FROM plans WHERE pipeline = :p AND day = :d"),
                {"p": pipeline, "d": day},
            ).first()
        return None if r is None else _planned(r)

    def due_rows(self, pipeline: str, *, sample: int = 20) -> DueRows:
        """The rows of ``pipeline`` waiting to be sent (pending, retryable) and a sample of
        their payloads (the oldest due first, as a tick takes them)."""
        with self._read() as conn:
            counts = dict(
                conn.execute(
                    text(
                        "SELECT CASE WHEN status = "
                        f"{PENDING} AND replayed > 0 THEN 'replay' ELSE status END, COUNT(*)"
                        f" FROM jobs WHERE pipeline = :p AND status IN ({PENDING}, {RETRYABLE})"
                        " GROUP BY 1"
                    ),
                    {"p": pipeline},
                ).all()
            )
            payloads = conn.execute(
                text(
                    "SELECT payload FROM jobs WHERE pipeline = :p"
                    f" AND status IN ({PENDING}, {RETRYABLE}) ORDER BY due_at, key LIMIT :n"
                ),
                {"p": pipeline, "n": sample},
            ).all()
        replays = int(counts.get("replay", 0))
        return DueRows(
            pending=int(counts.get(Status.PENDING.value, 0)) + replays,
            replays=replays,
            retrying=int(counts.get(Status.RETRYABLE.value, 0)),
            sample=tuple(str(p[0]) for p in payloads if p[0]),
        )

    def known_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` the ledger already has (any pipeline)."""
        found: set[str] = set()
        sql = text("SELECT key FROM jobs WHERE key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        with self._read() as conn:
            for chunk in chunks(keys, 5000):
                found.update(str(k) for (k,) in conn.execute(sql, {"keys": chunk}))
        return found
