"""A tick's progress in the Prefect UI: one progress artifact, "rows settled of rows due",
that moves while the tick runs (issue 23).

- **due**: the rows this tick has settled so far plus the pipeline's rows still owed (every
  active state: waiting to be sent, being sent, sent, answered and awaiting delivery,
  retrying), read from the ledger's claim index when the tick starts and after each step.
  The day's new items join it after ``enroll``, so the figure can drop once then.
- **settled**: rows this tick delivered or parked, from each step's own record (the same
  counts as the tick's report), and, between steps, counted by the long loops as they go
  (:func:`note`: the delivery pass per delivered row, the direct calls per parked row and
  per answer).

The artifact is created when the tick starts (``tick-progress-<pipeline>``), updated after
every step, and from inside the loops at most every :data:`EVERY_S` seconds unless the
figure moved by :data:`EVERY_POINTS` points (so a pass of a million rows makes a few hundred
updates, a pass of twenty rows one per row). A batch tick that sends its rows ends below 100:
they are owed until a later tick collects them.

The progress is a view, never part of the work: an API that refuses an update is logged once
and the tick carries on without it. The loops find the tick's progress in a context variable
(Prefect copies the context into its task threads); outside a tick :func:`note` does nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from ledger import Ledger, Status

__all__ = [
    "EVERY_POINTS",
    "EVERY_S",
    "Publisher",
    "TickProgress",
    "note",
    "progress_key",
]

EVERY_S = 2.0
EVERY_POINTS = 5.0

_current: contextvars.ContextVar[TickProgress | None] = contextvars.ContextVar(
    "gemini_ledger_tick_progress", default=None
)
_PARKED = f"{Status.PARKED.value} "


def progress_key(slug: str) -> str:
    """The artifact's key for a pipeline's slug: the UI's Artifacts page lists it by key."""
    return f"tick-progress-{slug}"


@dataclass(frozen=True, slots=True)
class Publisher:
    """Where the figures go: Prefect's progress artifact (tests give their own)."""

    create: Callable[[float, str, str], Any] = lambda pct, key, text: create_progress_artifact(
        pct, key=key, description=text
    )
    update: Callable[[Any, float, str], Any] = lambda ident, pct, text: update_progress_artifact(
        ident, pct, description=text
    )


def _parked_refusals(refused: dict[str, int]) -> int:
    return sum(n for what, n in refused.items() if what.startswith(_PARKED))


@dataclass
class TickProgress:
    """One tick's figures and its artifact (see the module docstring)."""

    ledger: Ledger
    pipeline: str
    key: str
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    publisher: Publisher = field(default_factory=Publisher)
    clock: Callable[[], float] = time.monotonic
    delivered: int = 0
    parked: int = 0
    owed: int = 0  # active rows at the last step's end
    stage: str = "starting"
    finished: bool = False
    # Counted by the loops since the last step's end (the step's record replaces them).
    live_delivered: int = 0
    live_parked: int = 0
    live_answered: int = 0
    updates: int = 0
    _artifact: UUID | None = None
    _shown: tuple[float, str] | None = None
    _last_at: float = 0.0
    _broken: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the figures ---------------------------------------------------------------------------

    @property
    def due(self) -> int:
        return self.delivered + self.parked + self.owed

    @property
    def settled(self) -> int:
        return min(self.due, self.delivered + self.parked + self.live_delivered + self.live_parked)

    @property
    def percent(self) -> float:
        """Settled of due; nothing due is 0 while the tick runs (its items are not enrolled
        yet) and 100 once it has finished."""
        if self.due == 0:
            return 100.0 if self.finished else 0.0
        return round(100.0 * self.settled / self.due, 1)

    def text(self) -> str:
        """The artifact's description: the figures in words."""
        delivered = self.delivered + self.live_delivered
        parked = self.parked + self.live_parked
        answered = f"; {self.live_answered} answered in this step" if self.live_answered else ""
        return (
            f"{self.settled} of {self.due} rows settled ({delivered} delivered, {parked}"
            f" parked); {self.due - self.settled} still owed{answered}; {self.stage}"
        )

    # --- what the tick and the loops call ------------------------------------------------------

    def start(self) -> None:
        """Read what is owed and create the artifact."""
        self.owed = self._owed()
        try:
            self._artifact = self.publisher.create(self.percent, self.key, self.text())
            self._shown, self._last_at = (self.percent, self.text()), self.clock()
            self.updates += 1
        except Exception as exc:  # a view: the tick goes on without it
            self._give_up(exc)

    def after(self, step: str, record: Any) -> None:
        """A step (``recover``, ``collect``, ``deliver``, ``enroll``, ``submit``) ended: its
        record's counts replace what the loops counted, the ledger says what is still owed,
        the artifact shows it."""
        # The records by the step's name: the channels' classes are a layer above this one
        # (and the delivery loop, which imports this module, defines Delivery).
        if step == "deliver":
            self.delivered += record.consumed
            self.parked += len(record.parked)
        elif step == "collect":
            self.parked += sum(record.parked.values())
        elif step in ("recover", "submit"):
            self.parked += _parked_refusals(record.refused)
        elif step == "enroll":
            self.parked += record.prompt_parked
        owed = self._owed()
        with self._lock:
            self.owed = owed
            self.live_delivered = self.live_parked = self.live_answered = 0
            self.stage = f"after {step}"
            self._publish(force=True)

    def finish(self, seconds: float) -> None:
        """The tick's end: the last figures."""
        with self._lock:
            self.stage = f"tick finished in {seconds:.1f} s"
            self.finished = True
            self._publish(force=True)

    def note(self, *, delivered: int = 0, parked: int = 0, answered: int = 0) -> None:
        """Rows a loop just settled (or answered); the artifact follows when due."""
        with self._lock:
            self.live_delivered += delivered
            self.live_parked += parked
            self.live_answered += answered
            self._publish(force=False)

    @contextlib.contextmanager
    def current(self) -> Iterator[TickProgress]:
        """Make this the progress :func:`note` reaches, for the tick's steps."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    # --- inside ----------------------------------------------------------------------------------

    def _owed(self) -> int:
        return sum(n for n, _ in self.ledger.in_flight(pipeline=self.pipeline).values())

    def _publish(self, *, force: bool) -> None:
        """Update the artifact (the caller holds the lock): after a step always, from a loop
        when EVERY_S seconds passed or the figure moved EVERY_POINTS points."""
        if self._artifact is None or self._broken:
            return
        shown = (self.percent, self.text())
        if shown == self._shown:
            return
        now = self.clock()
        moved = self._shown is None or abs(shown[0] - self._shown[0]) >= EVERY_POINTS
        if not (force or moved or now - self._last_at >= EVERY_S):
            return
        try:
            self.publisher.update(self._artifact, *shown)
        except Exception as exc:  # a view: the tick goes on without it
            self._give_up(exc)
            return
        self._shown, self._last_at = shown, now
        self.updates += 1

    def _give_up(self, exc: Exception) -> None:
        self._broken = True
        self.log.warning(
            "%s: the progress artifact could not be written (%s: %s); the tick goes on without it",
            self.pipeline,
            type(exc).__name__,
            exc,
        )


def note(*, delivered: int = 0, parked: int = 0, answered: int = 0) -> None:
    """Tell the running tick's progress about rows a loop settled; nothing outside a tick."""
    progress = _current.get()
    if progress is not None:
        progress.note(delivered=delivered, parked=parked, answered=answered)
