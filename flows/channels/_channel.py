"""What a channel is: the steps one tick runs, the run context they share, the report they make.

A tick (``flows.tick``) runs the same five steps on every channel, in this order:

1. **recover**: take back what a dead tick left in flight (a reservation never bound, a
   delivery claim never released, a call cut off);
2. **collect**: read the answers the API has finished and apply them to the ledger (done,
   retryable or parked);
3. **deliver**: run ``on_result`` for every done row, once (``flows.run._deliver``);
4. **enroll**: the day's items become pending rows (the same on every channel);
5. **submit**: reserve the due rows and send them.

A channel is a class with ``recover``, ``collect``, ``deliver`` and ``submit`` (the
:class:`ChannelSteps` protocol), built from a :class:`RunContext`. Each step returns one of
the small records below; a channel may return a subclass with its own extra counters. A
channel whose submit step already settles rows (direct: the call is the answer) has them
delivered in the same tick: the tick runs deliver again when ``Submitted.settled`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Protocol, TypeVar

from flows.deadline import Deadline
from flows.errors import UsageError
from flows.pipeline import Pipeline
from flows.run._budget import Budget
from flows.run._deliver import Delivery
from flows.settings import Settings
from ledger import Channel, Enrollment, Ledger, Status, TakenOver, Usage

__all__ = [
    "ChannelSteps",
    "Collected",
    "Logger",
    "Recovered",
    "RunContext",
    "Submitted",
    "TickOptions",
    "TickReport",
    "own_pipeline",
    "pick",
    "run_logger",
    "today_utc",
]

T = TypeVar("T")

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def today_utc() -> date:
    """The default day of a tick (UTC, so a schedule and a laptop agree)."""
    return datetime.now(UTC).date()


def run_logger(fallback: str = "gemini_ledger") -> Logger:
    """The Prefect run logger, or a plain logger when a step runs outside a run (benches)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)


@dataclass(frozen=True, slots=True)
class RunContext:
    """One flow run's settings, ledger, pipeline and Gemini client: built once when the run
    starts (``flows.tick.start_run``: a bad setting fails there, before any work) and handed
    to every step, and to the direct calls, replay and the reconcile flow."""

    spec: str  # the name or module:attr the run was started with
    pipeline: Pipeline[Any]
    ledger: Ledger
    settings: Settings
    day: date
    # The run's parameters for the pipeline's hooks (flows.pipeline.Run.params).
    params: Mapping[str, Any] = field(default_factory=dict)
    # The run's spending caps and what it reserved (flows.run._budget): every channel
    # reserves through it.
    budget: Budget = field(default_factory=Budget)

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def log(self) -> Logger:
        return run_logger(f"gemini_ledger.{Channel(self.pipeline.channel).value}")

    @property
    def client(self) -> Any:
        """The run's SDK client (the process's one for these settings: its HTTP pool is
        shared by the run's threads); a missing key raises ``GatewayConfigError``."""
        from flows.gemini.gateway import shared_client

        return shared_client(self.settings)

    def new_client(self) -> Any:
        """A client of the run's own, for a caller that closes it (an event loop's)."""
        from flows.gemini.gateway import gemini_client

        return gemini_client(self.settings)


@dataclass(frozen=True, slots=True)
class TickOptions:
    """A tick's knobs (the flow's parameters); None takes the channel's default or setting.
    Checked when made: a bad value is one clear line before anything is touched."""

    stale_s: float | None = None  # age after which a dead tick's row is taken back
    max_concurrency: int | None = None  # requests in flight at once (background, direct)
    running_limit_s: float | None = None  # an answer running longer is cancelled (background)
    # "07:00 Europe/Paris": overrides the pipeline's deadline (batch; flows.channels._deadline)
    deadline: str | None = None

    def __post_init__(self) -> None:
        if self.deadline is not None:
            try:
                Deadline.of(self.deadline)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        for name in ("stale_s", "running_limit_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a finite number of seconds >= 0, got {value}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise UsageError(f"max_concurrency must be at least 1, got {self.max_concurrency}")

    def given(self) -> set[str]:
        """The options this tick was given (not left to their defaults)."""
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def pick(value: T | None, default: T) -> T:
    """An option as given, or its default when it was not."""
    return default if value is None else value


def own_pipeline(ctx: RunContext, kind: Channel) -> None:
    """A channel opened for a pipeline of another channel: one clear line, nothing touched."""
    if ctx.pipeline.channel != kind:
        raise UsageError(
            f"pipeline {ctx.name!r} runs on the {ctx.pipeline.channel} channel, not {kind.value}"
        )


# --- what each step reports ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A report value as JSON-ready data (dataclasses, Usage, dates, counters)."""
    if isinstance(value, Usage):
        return {
            "prompt": value.prompt_tokens,
            "candidates": value.candidates_tokens,
            "total": value.total_tokens,
        }
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass(kw_only=True)
class Step:
    """Base of the step records: ``as_dict`` for ``--json``, ``details`` for the tables."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def details(self) -> Iterator[tuple[str, Any]]:
        """(what, count) rows for the tick's table; a channel adds its own."""
        return iter(())


@dataclass(kw_only=True)
class Recovered(Step):
    """Rows a dead tick left in flight, taken back by this one; sending them again may be
    refused, by ``"<status> <class>"`` as in :class:`Submitted`."""

    recovered: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    # Reservations a dead tick held (unrenewed past the stale age), and when it last held one.
    took_over: TakenOver = field(default_factory=TakenOver)


@dataclass(kw_only=True)
class Collected(Step):
    """Answers read from the API and applied: done, retryable or parked (by class)."""

    completed: int = 0
    retryable: dict[str, int] = field(default_factory=dict)
    parked: dict[str, int] = field(default_factory=dict)
    still_running: int = 0
    tokens: Usage = field(default_factory=lambda: Usage(0, 0, 0))


@dataclass(kw_only=True)
class Submitted(Step):
    """Rows sent; rows the API refused, by ``"<status> <class>"`` (``parked permanent:400``,
    ``retryable transient:503``); rows already settled by the sending itself (direct)."""

    submitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    settled: int = 0
    # Due rows left pending because the night's budget had no room for them (not parked).
    held_by_budget: int = 0


class ChannelSteps(Protocol):
    """A channel: the steps of a tick that differ from one channel to another."""

    kind: ClassVar[Channel]
    uses: ClassVar[frozenset[str]]  # the TickOptions it honours; others are warned about

    def recover(self) -> Recovered: ...

    def collect(self) -> Collected: ...

    def deliver(self) -> Delivery: ...

    def submit(self) -> Submitted: ...


# --- the tick's report -----------------------------------------------------------------------


def _add(*counts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, n in c.items():
            total[k] = total.get(k, 0) + n
    return dict(sorted(total.items()))


def _refused(refused: dict[str, int], status: Status) -> dict[str, int]:
    """The refusals that left their row in ``status``, by class."""
    prefix = f"{status.value} "
    return {k.removeprefix(prefix): n for k, n in refused.items() if k.startswith(prefix)}


@dataclass(kw_only=True)
class TickReport:
    """What one tick did, the same shape on every channel: the CLI, the run's artifact and
    ``--json`` all render this."""

    pipeline: str
    channel: str
    day: date
    recover: Recovered
    collect: Collected
    deliver: Delivery
    enroll: Enrollment
    submit: Submitted
    seconds: float = 0.0

    @property
    def recovered(self) -> int:
        return self.recover.recovered

    @property
    def completed(self) -> int:
        """Answers that came back done this tick (collected, or settled by the sending)."""
        return self.collect.completed + self.submit.settled

    @property
    def delivered(self) -> int:
        return self.deliver.consumed

    @property
    def delivery_failed(self) -> int:
        return len(self.deliver.failed)

    @property
    def enrolled(self) -> int:
        return self.enroll.enrolled

    @property
    def submitted(self) -> int:
        return self.submit.submitted

    @property
    def parked(self) -> dict[str, int]:
        """Rows parked by this tick, by class: answers collected, refusals when sending
        (recovered or new rows), and deliveries that failed up to the cap."""
        parked_deliveries = {"delivery": len(self.deliver.parked)} if self.deliver.parked else {}
        parked_prompts = {"prompt": self.enroll.prompt_parked} if self.enroll.prompt_parked else {}
        return _add(
            self.collect.parked,
            _refused(self.recover.refused, Status.PARKED),
            _refused(self.submit.refused, Status.PARKED),
            parked_deliveries,
            parked_prompts,
        )

    @property
    def retryable(self) -> dict[str, int]:
        """Rows that failed this tick and will be sent again, by class."""
        return _add(
            self.collect.retryable,
            _refused(self.recover.refused, Status.RETRYABLE),
            _refused(self.submit.refused, Status.RETRYABLE),
        )

    @property
    def tokens(self) -> Usage:
        return self.collect.tokens

    @property
    def taken_over(self) -> dict[str, TakenOver]:
        """What this tick took over from a dead one, by kind (only the kinds it did)."""
        found = {"reservations": self.recover.took_over, "delivery claims": self.deliver.took_over}
        return {what: taken for what, taken in found.items() if taken}

    def taken_over_lines(self) -> list[str]:
        """``24 delivery claims held by a dead tick (last held at ...), taken over``."""
        return [taken.describe(what) for what, taken in self.taken_over.items()]

    def as_dict(self) -> dict[str, Any]:
        """Every counter, for ``--json``: the totals first, then each step in full."""
        return {
            "pipeline": self.pipeline,
            "channel": self.channel,
            "day": self.day.isoformat(),
            "recovered": self.recovered,
            "completed": self.completed,
            "delivered": self.delivered,
            "delivery_failed": self.delivery_failed,
            "enrolled": self.enrolled,
            "submitted": self.submitted,
            "held_by_budget": self.submit.held_by_budget,
            "parked": self.parked,
            "retryable": self.retryable,
            "tokens": _plain(self.tokens),
            "taken_over": {
                what.replace(" ", "_"): taken.as_dict() for what, taken in self.taken_over.items()
            },
            "seconds": self.seconds,
            "steps": {
                "recover": self.recover.as_dict(),
                "collect": self.collect.as_dict(),
                "deliver": {
                    "claimed": self.deliver.claimed,
                    "consumed": self.deliver.consumed,
                    "side_effect_failed": len(self.deliver.failed),
                    "parked": len(self.deliver.parked),
                    "errors": dict(self.deliver.errors),
                    "took_over": self.deliver.took_over.as_dict(),
                },
                "enroll": self.enroll.as_dict(),
                "submit": self.submit.as_dict(),
            },
        }

    def rows(self) -> list[dict[str, Any]]:
        """The table of the run's artifact: one row per counter, by step."""
        table: list[tuple[str, str, Any]] = [
            ("1 recover", "rows taken back from a dead tick", self.recovered),
            *(("1 recover", what, n) for what, n in self.recover.details()),
            *(
                ("1 recover" if what == "reservations" else "3 deliver", taken.describe(what), n)
                for what, taken in self.taken_over.items()
                for n in [taken.rows]
            ),
            ("2 collect", "answers done", self.completed),
            *(("2 collect", f"retryable {c}", n) for c, n in self.collect.retryable.items()),
            *(("2 collect", f"parked {c}", n) for c, n in self.collect.parked.items()),
            ("2 collect", "still running", self.collect.still_running),
            *(("2 collect", what, n) for what, n in self.collect.details()),
            ("2 collect", "tokens", self.tokens.total_tokens),
            ("3 deliver", "delivered", self.delivered),
            ("3 deliver", "side effect failed", self.delivery_failed),
            ("3 deliver", "parked after failed deliveries", len(self.deliver.parked)),
            ("4 enroll", "enrolled (new)", self.enrolled),
            ("4 enroll", "already known", self.enroll.already_known),
            ("4 enroll", "owned by another pipeline", self.enroll.foreign),
            ("4 enroll", "refused (key_of raised, or a bad key)", self.enroll.refused),
            ("4 enroll", "parked prompt:<Error> (build_prompt raised)", self.enroll.prompt_parked),
            ("4 enroll", "duplicate keys (later items dropped)", self.enroll.duplicates),
            ("4 enroll", "parked prompt rows rebuilt", self.enroll.prompt_rebuilt),
            ("5 submit", "submitted", self.submitted),
            ("5 submit", "held by the budget (pending)", self.submit.held_by_budget),
            *(("5 submit", f"refused: {c}", n) for c, n in self.submit.refused.items()),
            *(("5 submit", what, n) for what, n in self.submit.details()),
        ]
        return [{"step": step, "what": what, "rows": n} for step, what, n in table]

    def summary(self) -> str:
        """One line for the run's log and the artifact's description."""
        parked = sum(self.parked.values())
        line = (
            f"{self.channel} tick of {self.pipeline} for {self.day}: {self.recovered} recovered,"
            f" {self.completed} answers done, {self.delivered} delivered, {parked} parked,"
            f" {self.enrolled} enrolled, {self.submitted} submitted"
        )
        if self.submit.held_by_budget:
            line += f", {self.submit.held_by_budget} held by the budget"
        return "; ".join([line, *self.taken_over_lines()])
